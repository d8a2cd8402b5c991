"""Optional setup of OpenTelemetry providers, exporters and the Prometheus ``/metrics`` endpoint.

Library etiquette: the middleware records through the *global* OpenTelemetry API and never
replaces providers the application installed. ``setup_telemetry()`` is for applications (and
the demo) that want the middleware to install providers: it reads the standard ``OTEL_*``
variables (an OTLP exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or the signal-specific endpoint
is set), and serves ``/metrics`` on 127.0.0.1 in OpenMetrics format so histograms carry
``trace_id`` exemplars. Exporter failures are counted and logged once; they never reach a call.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

log = logging.getLogger("middleware.telemetry")

DEFAULT_METRICS_PORT = 9464


# Recorders alive in this process: each export failure is also counted in their telemetry-errors metric.
_RECORDERS: weakref.WeakSet[Any] = weakref.WeakSet()


def register_recorder(recorder: Any) -> None:
    """Count export failures in this recorder's ``llm_middleware_telemetry_errors_total`` (weakly held)."""
    _RECORDERS.add(recorder)


class ExportFailures:
    """Counts exporter failures; logs the first one of each exporter; feeds every live recorder's metric."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.on_failure: list[Any] = [_count_in_recorders]

    def failed(self, exporter: str, detail: object) -> None:
        """Record one failed export."""
        with self._lock:
            first = exporter not in self.counts
            self.counts[exporter] = self.counts.get(exporter, 0) + 1
        if first:
            log.warning("telemetry export to %s failed (further failures are counted, not logged): %s",
                        exporter, detail)
        for callback in self.on_failure:
            try:
                callback(exporter)
            except Exception:
                pass


def _count_in_recorders(exporter: str) -> None:
    for recorder in list(_RECORDERS):
        recorder.telemetry_error(f"export_{exporter}")


class SafeSpanExporter(SpanExporter):
    """Wraps a span exporter: exceptions and failures are counted, never raised."""

    def __init__(self, inner: SpanExporter, name: str, failures: ExportFailures) -> None:
        self.inner, self.name, self.failures = inner, name, failures

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:
            self.failures.failed(self.name, exc)
            return SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.failures.failed(self.name, result)
        return result

    def shutdown(self) -> None:
        try:
            self.inner.shutdown()
        except Exception as exc:
            self.failures.failed(self.name, exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return bool(self.inner.force_flush(timeout_millis))
        except Exception as exc:
            self.failures.failed(self.name, exc)
            return False


class SafeMetricExporter(MetricExporter):
    """Wraps a metric exporter: exceptions and failures are counted, never raised."""

    def __init__(self, inner: MetricExporter, name: str, failures: ExportFailures) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self.inner, self.name, self.failures = inner, name, failures

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:
            self.failures.failed(self.name, exc)
            return MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS:
            self.failures.failed(self.name, result)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        try:
            return bool(self.inner.force_flush(timeout_millis))
        except Exception:
            return False

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        try:
            self.inner.shutdown(timeout_millis=timeout_millis)
        except Exception as exc:
            self.failures.failed(self.name, exc)


class SpanStats(SpanProcessor):
    """Counts finished spans by name and keeps the slowest call spans (for the demo's console summary)."""

    def __init__(self, keep: int = 5) -> None:
        self.finished = 0
        self.by_name: dict[str, int] = {}
        self.slowest: list[tuple[float, str, str]] = []
        self._keep = keep
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self.finished += 1
            self.by_name[span.name] = self.by_name.get(span.name, 0) + 1
            if span.parent is None and span.end_time and span.start_time:
                seconds = (span.end_time - span.start_time) / 1e9
                trace_id = format(span.context.trace_id, "032x") if span.context else ""
                self.slowest.append((seconds, span.name, trace_id))
                self.slowest.sort(reverse=True)
                del self.slowest[self._keep:]


@dataclass
class TelemetryHandle:
    """What setup installed: call ``shutdown()`` to flush and stop it."""

    tracer_provider: Any = None
    meter_provider: Any = None
    metrics_server: Any = None
    metrics_port: int | None = None
    installed_tracer: bool = False
    installed_meter: bool = False
    failures: ExportFailures = field(default_factory=ExportFailures)
    span_stats: SpanStats | None = None
    otlp_endpoint: str | None = None

    def shutdown(self) -> None:
        """Flush exporters and stop the metrics server; never raises."""
        for provider in (self.tracer_provider if self.installed_tracer else None,
                         self.meter_provider if self.installed_meter else None):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception as exc:
                    self.failures.failed("shutdown", exc)
        if self.metrics_server is not None:
            try:
                self.metrics_server.shutdown()
                self.metrics_server.server_close()
            except Exception:
                pass
            self.metrics_server = None


def _otlp_endpoint(signal: str) -> str | None:
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")


def _provider_is_default(provider: object) -> bool:
    return type(provider).__name__ in ("ProxyTracerProvider", "ProxyMeterProvider", "NoOpTracerProvider",
                                       "NoOpMeterProvider", "_ProxyMeterProvider")


def setup_telemetry(
    *,
    service_name: str = "llm-middleware",
    metrics_port: int | None = DEFAULT_METRICS_PORT,
    metrics_host: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
    span_exporters: Sequence[SpanExporter] = (),
    otlp: bool | None = None,
    span_stats: bool = False,
) -> TelemetryHandle:
    """Install tracer/meter providers (unless the application already has them) and serve ``/metrics``.

    ``metrics_port=None`` serves nothing; ``0`` picks a free port (see ``handle.metrics_port``).
    ``otlp=None`` enables OTLP export when an ``OTEL_EXPORTER_OTLP_*ENDPOINT`` variable is set.
    """
    handle = TelemetryHandle()
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    traces_endpoint = _otlp_endpoint("TRACES")
    metrics_endpoint = _otlp_endpoint("METRICS")
    use_otlp = bool(traces_endpoint or metrics_endpoint) if otlp is None else otlp
    handle.otlp_endpoint = traces_endpoint if use_otlp else None

    current_tracer = trace.get_tracer_provider()
    if _provider_is_default(current_tracer):
        provider = TracerProvider(resource=resource)
        for i, exporter in enumerate(span_exporters):
            provider.add_span_processor(BatchSpanProcessor(SafeSpanExporter(exporter, f"span_exporter_{i}",
                                                                            handle.failures)))
        if use_otlp:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(SafeSpanExporter(OTLPSpanExporter(), "otlp_traces",
                                                                            handle.failures)))
        if span_stats:
            handle.span_stats = SpanStats()
            provider.add_span_processor(handle.span_stats)
        trace.set_tracer_provider(provider)
        handle.tracer_provider = provider
        handle.installed_tracer = True
    else:
        handle.tracer_provider = current_tracer
        log.info("an OpenTelemetry tracer provider is already installed: the middleware uses it")

    current_meter = otel_metrics.get_meter_provider()
    if use_otlp and _provider_is_default(current_meter):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        reader = PeriodicExportingMetricReader(SafeMetricExporter(OTLPMetricExporter(), "otlp_metrics",
                                                                  handle.failures))
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        otel_metrics.set_meter_provider(meter_provider)
        handle.meter_provider = meter_provider
        handle.installed_meter = True
    else:
        handle.meter_provider = current_meter

    if metrics_port is not None:
        server, _thread = start_http_server(metrics_port, addr=metrics_host, registry=registry or REGISTRY)
        handle.metrics_server = server
        handle.metrics_port = int(server.server_address[1])
    return handle
