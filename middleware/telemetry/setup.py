"""Optional setup of OpenTelemetry providers, exporters and the Prometheus ``/metrics`` endpoint.

Library etiquette: the middleware records through the *global* OpenTelemetry API and never
replaces providers the application installed; importing it loads no OpenTelemetry SDK. ``setup_telemetry()``
is for applications (and the demo) that want the middleware to install providers; it needs the ``otel``
extra (``pip install 'llm-middleware[otel]'``). It reads the standard ``OTEL_*`` variables (an OTLP
exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or the signal-specific endpoint is set), and serves
``/metrics`` on 127.0.0.1 in OpenMetrics format so histograms carry ``trace_id`` exemplars. Exporter
failures are counted and logged once; they never reach a call.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from .._extras import OTEL, MissingExtraError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from .exporters import SpanStats

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


# The SDK-based classes live in modules that import the SDK; they load on first use.
_LAZY = {"SafeSpanExporter": "exporters", "SafeMetricExporter": "exporters", "SpanStats": "exporters"}


def __getattr__(name: str) -> Any:
    """``SafeSpanExporter``, ``SafeMetricExporter``, ``SpanStats``: imported on use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


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
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from .exporters import SafeMetricExporter, SafeSpanExporter, SpanStats
    except ImportError as exc:
        if not (exc.name or "").startswith("opentelemetry"):
            raise
        raise MissingExtraError("setup_telemetry()", (OTEL,), "opentelemetry-sdk") from exc
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
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError as exc:
                raise MissingExtraError("setup_telemetry() with OTLP", (OTEL,),
                                        "opentelemetry-exporter-otlp-proto-http") from exc

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
