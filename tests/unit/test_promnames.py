"""The OTel-to-Prometheus name translation against the examples its reference implementations publish.

Expected values are the test tables of

* ``github.com/prometheus/otlptranslator`` (used by Prometheus's OTLP receiver and, since 2025, by the
  OpenTelemetry Collector's Prometheus exporters): ``metric_namer_test.go`` (``UTF8Allowed: false,
  WithMetricSuffixes: true``), ``unit_namer_test.go`` and ``label_namer_test.go``;
* ``open-telemetry/opentelemetry-collector-contrib`` ``pkg/translator/prometheus``
  (``normalize_name_test.go``, ``normalize_label_test.go``), the Collector's earlier copy of the same rules;
* the OpenTelemetry specification, "Prometheus and OpenMetrics Compatibility", and the issue that asked
  for this (``gen_ai.client.token.usage`` with unit ``{token}`` is ``gen_ai_client_token_usage``).

Cases where the two implementations disagree with each other (the ``$`` unit, ``:`` inside names,
namespaces) are left out: we follow otlptranslator, which both current translators use.
"""

from __future__ import annotations

import pytest

from middleware.telemetry.promnames import (
    MetricKind,
    prometheus_label_name,
    prometheus_metric_name,
    prometheus_unit,
)

OTLPTRANSLATOR: list[tuple[str, str, MetricKind, str]] = [
    ("metric@with#special$chars", "", "gauge", "metric_with_special_chars"),
    ("123metric", "", "gauge", "_123metric"),
    ("metric@@##$$name", "", "gauge", "metric_name"),
    ("requests", "", "counter", "requests_total"),
    ("cpu_usage", "1", "gauge", "cpu_usage_ratio"),
    ("items", "1", "counter", "items_total"),
    ("response_time", "ms", "gauge", "response_time_milliseconds"),
    ("memory_usage", "By", "gauge", "memory_usage_bytes"),
    ("requests", "1/s", "gauge", "requests_per_second"),
    ("throughput", "By/s", "gauge", "throughput_bytes_per_second"),
    ("custom_metric", "custom_unit", "gauge", "custom_metric_custom_unit"),
    ("custom_metric", "{custom}", "gauge", "custom_metric"),
    ("custom_metric", "By/{custom}", "gauge", "custom_metric_bytes"),
    ("requests_total", "", "counter", "requests_total"),
    ("cpu_usage_ratio", "1", "gauge", "cpu_usage_ratio"),
    ("response_time_seconds", "s", "gauge", "response_time_seconds"),
    ("metric__with__multiple__underscores", "unit__multiple__underscores", "gauge",
     "metric_with_multiple_underscores_unit_multiple_underscores"),
    ("custom_metric", "unit@with#special/chars", "gauge", "custom_metric_unit_with_special_per_chars"),
    ("request_duration", "s", "histogram", "request_duration_seconds"),
    ("active_connections", "", "updowncounter", "active_connections"),
    ("uptime", "d", "gauge", "uptime_days"),
    ("duration", "h", "gauge", "duration_hours"),
    ("timeout", "min", "gauge", "timeout_minutes"),
    ("latency", "us", "gauge", "latency_microseconds"),
    ("precision_time", "ns", "gauge", "precision_time_nanoseconds"),
    ("cache_size", "KiBy", "gauge", "cache_size_kibibytes"),
    ("memory", "MiBy", "gauge", "memory_mebibytes"),
    ("storage", "GiBy", "gauge", "storage_gibibytes"),
    ("transfer", "KBy", "gauge", "transfer_kilobytes"),
    ("download", "MBy", "gauge", "download_megabytes"),
    ("backup", "GBy", "gauge", "backup_gigabytes"),
    ("archive", "TBy", "gauge", "archive_terabytes"),
    ("distance", "m", "gauge", "distance_meters"),
    ("voltage", "V", "gauge", "voltage_volts"),
    ("current", "A", "gauge", "current_amperes"),
    ("energy", "J", "gauge", "energy_joules"),
    ("power", "W", "gauge", "power_watts"),
    ("weight", "g", "gauge", "weight_grams"),
    ("temperature", "Cel", "gauge", "temperature_celsius"),
    ("frequency", "Hz", "gauge", "frequency_hertz"),
    ("cpu_usage", "%", "gauge", "cpu_usage_percent"),
    ("requests", "1/m", "gauge", "requests_per_minute"),
    ("events", "1/h", "gauge", "events_per_hour"),
    ("transactions", "1/d", "gauge", "transactions_per_day"),
    ("reports", "1/w", "gauge", "reports_per_week"),
    ("invoices", "1/mo", "gauge", "invoices_per_month"),
    ("renewals", "1/y", "gauge", "renewals_per_year"),
    ("custom", "1/custom_unit", "gauge", "custom_per_custom_unit"),
    ("metric", "By/", "gauge", "metric_bytes"),
    ("metric", " By / s ", "gauge", "metric_bytes_per_second"),
    ("metric", "/", "gauge", "metric"),
    ("http.request.duration", "ms", "histogram", "http_request_duration_milliseconds"),
    ("http.requests", "1", "counter", "http_requests_total"),
    ("http.server.request.duration", "s", "histogram", "http_server_request_duration_seconds"),  # README
]

COLLECTOR_CONTRIB: list[tuple[str, str, MetricKind, str]] = [
    ("system.filesystem.usage", "By", "gauge", "system_filesystem_usage_bytes"),
    ("system.io", "By", "counter", "system_io_bytes_total"),
    ("network_transmitted_bytes_total", "By", "counter", "network_transmitted_bytes_total"),
    ("\t system.filesystem.usage       ", "  By\t", "gauge", "system_filesystem_usage_bytes"),
    ("system.network.dropped", "{packets}", "gauge", "system_network_dropped"),
    ("system.network.dropped", "{packets}", "counter", "system_network_dropped_total"),
    ("system.network.dropped", "packets", "gauge", "system_network_dropped_packets"),
    ("system.network.packets.dropped", "packets", "gauge", "system_network_packets_dropped"),
    ("system.network.packets", "packets", "gauge", "system_network_packets"),
    ("system.network.dropped", "packets", "counter", "system_network_dropped_packets_total"),
    ("system.network.packets", "packets", "counter", "system_network_packets_total"),
    ("hw.gpu.memory.utilization", "1", "gauge", "hw_gpu_memory_utilization_ratio"),
    ("hw.fan.speed_ratio", "1", "gauge", "hw_fan_speed_ratio"),
    ("objects", "1", "counter", "objects_total"),
    ("hw.cpu.speed_limit", "Hz", "gauge", "hw_cpu_speed_limit_hertz"),
    ("broken.metric.speed", "km/h", "gauge", "broken_metric_speed_km_per_hour"),
    ("astro.light.speed_limit", "m/s", "gauge", "astro_light_speed_limit_meters_per_second"),
    ("broken.metric.success_ratio", "%", "gauge", "broken_metric_success_ratio_percent"),
    ("broken.metric.success_percent", "%", "gauge", "broken_metric_success_percent"),
    ("test.metric.no_unit", "", "gauge", "test_metric_no_unit"),
    ("test.metric.spaces", "   \t  ", "gauge", "test_metric_spaces"),
    ("unsupported.metric.temperature", "°F", "gauge", "unsupported_metric_temperature_F"),
    ("unsupported.metric.redundant", "__test $/°C", "gauge", "unsupported_metric_redundant_test_per_C"),
    ("active_directory.ds.replication.network.io", "By", "counter",
     "active_directory_ds_replication_network_io_bytes_total"),
    ("active_directory.ds.replication.sync.object.pending", "{objects}", "counter",
     "active_directory_ds_replication_sync_object_pending_total"),
    ("active_directory.ds.replication.object.rate", "{objects}/s", "gauge",
     "active_directory_ds_replication_object_rate_per_second"),
    ("active_directory.ds.name_cache.hit_rate", "%", "gauge", "active_directory_ds_name_cache_hit_rate_percent"),
    ("active_directory.ds.ldap.bind.last_successful.time", "ms", "gauge",
     "active_directory_ds_ldap_bind_last_successful_time_milliseconds"),
    ("apache.current_connections", "connections", "gauge", "apache_current_connections"),
    ("apache.workers", "connections", "gauge", "apache_workers_connections"),
    ("apache.requests", "1", "counter", "apache_requests_total"),
    ("bigip.virtual_server.request.count", "{requests}", "counter", "bigip_virtual_server_request_count_total"),
    ("system.cpu.utilization", "1", "gauge", "system_cpu_utilization_ratio"),
    ("system.disk.operation_time", "s", "counter", "system_disk_operation_time_seconds_total"),
    ("system.cpu.load_average.15m", "1", "gauge", "system_cpu_load_average_15m_ratio"),
    ("memcached.operation_hit_ratio", "%", "gauge", "memcached_operation_hit_ratio_percent"),
    ("mongodbatlas.process.asserts", "{assertions}/s", "gauge", "mongodbatlas_process_asserts_per_second"),
    ("mongodbatlas.process.journaling.data_files", "MiBy", "gauge",
     "mongodbatlas_process_journaling_data_files_mebibytes"),
    ("mongodbatlas.process.network.io", "By/s", "gauge", "mongodbatlas_process_network_io_bytes_per_second"),
    ("mongodbatlas.process.oplog.rate", "GiBy/h", "gauge", "mongodbatlas_process_oplog_rate_gibibytes_per_hour"),
    ("mongodbatlas.process.db.query_targeting.scanned_per_returned", "{scanned}/{returned}", "gauge",
     "mongodbatlas_process_db_query_targeting_scanned_per_returned"),
    ("nginx.requests", "requests", "gauge", "nginx_requests"),
    ("nginx.connections_accepted", "connections", "gauge", "nginx_connections_accepted"),
    ("nsxt.node.memory.usage", "KBy", "gauge", "nsxt_node_memory_usage_kilobytes"),
    ("redis.latest_fork", "us", "gauge", "redis_latest_fork_microseconds"),
    ("3.14 digits", "", "gauge", "_3_14_digits"),
    ("envoy__rule_engine_zlib_buf_error", "", "gauge", "envoy_rule_engine_zlib_buf_error"),
]

GEN_AI: list[tuple[str, str, MetricKind, str]] = [
    ("gen_ai.client.operation.duration", "s", "histogram", "gen_ai_client_operation_duration_seconds"),
    ("gen_ai.client.token.usage", "{token}", "histogram", "gen_ai_client_token_usage"),
    ("gen_ai.server.time_per_output_token", "s", "histogram", "gen_ai_server_time_per_output_token_seconds"),
]


@pytest.mark.parametrize(("name", "unit", "kind", "expected"), OTLPTRANSLATOR + COLLECTOR_CONTRIB + GEN_AI)
def test_metric_names_match_the_published_examples(name: str, unit: str, kind: MetricKind, expected: str) -> None:
    assert prometheus_metric_name(name, unit, kind) == expected


@pytest.mark.parametrize("name", ["@#$%", "", "..."])
def test_a_name_with_nothing_valid_is_refused(name: str) -> None:
    with pytest.raises(ValueError):
        prometheus_metric_name(name, "", "gauge")


@pytest.mark.parametrize(("unit", "expected"), [
    ("s", "seconds"), ("By/s", "bytes_per_second"), ("1", ""), ("1/s", "per_second"),
    ("requests/s", "requests_per_second"), ("{token}", ""), ("{token}/s", "per_second"), ("ms", "milliseconds"),
])
def test_units(unit: str, expected: str) -> None:
    assert prometheus_unit(unit) == expected


@pytest.mark.parametrize(("key", "expected"), [
    # otlptranslator label_namer_test.go
    ("label:with:colons", "label_with_colons"),
    ("LabelWithCapitalLetters", "LabelWithCapitalLetters"),
    ("label!with&special$chars)", "label_with_special_chars_"),
    ("label_with_foreign_characters_字符", "label_with_foreign_characters___"),
    ("label.with.dots", "label_with_dots"),
    ("123label", "key_123label"),
    ("__label_starting_with_2underscores", "__label_starting_with_2underscores"),
    ("regular label", "regular_label"),
    # collector-contrib normalize_label_test.go (sanitization on, the Collector's default)
    ("_test", "key_test"),
    ("0test", "key_0test"),
    ("test", "test"),
    ("test_/", "test__"),
    ("__test", "__test"),
    # the examples
    ("gen_ai.request.model", "gen_ai_request_model"),
    ("gen_ai.operation.name", "gen_ai_operation_name"),
    ("error.type", "error_type"),
])
def test_label_names(key: str, expected: str) -> None:
    assert prometheus_label_name(key) == expected


@pytest.mark.parametrize("key", ["", "ようこそ", "__"])
def test_a_key_with_nothing_valid_is_refused(key: str) -> None:
    with pytest.raises(ValueError):
        prometheus_label_name(key)
