"""Optional setup of OpenTelemetry providers, exporters, the local trace store and ``/metrics``.

Library etiquette: the middleware records through the *global* OpenTelemetry API and never
replaces providers the application installed; importing it loads no OpenTelemetry SDK. ``setup_telemetry()``
is for applications (and the demo) that want the middleware to install providers; it needs the ``otel``
extra (``pip install 'llm-middleware[otel]'``). It reads the standard ``OTEL_*`` variables (an OTLP
exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or the signal-specific endpoint is set), keeps finished
spans in a local store when no OTLP endpoint is set (``middleware traces`` reads it), and serves
``/metrics`` on 127.0.0.1 in OpenMetrics format so histograms carry ``trace_id`` exemplars. It fails
before it installs anything, or not at all. Exporter failures are counted and logged once; they never
reach a call.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from .._extras import OTEL, MissingExtraError
from ..errors import ConfigError
from .tracefiles import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, TRACES_LOCAL_ENV, resolve_traces_dir

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from .exporters import SpanStats

log = logging.getLogger("middleware.telemetry")
LOGGER_NAME = "middleware"  # the logger whose records (and its children's) are exported as OTLP logs

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
_LAZY = {"SafeSpanExporter": "exporters", "SafeMetricExporter": "exporters", "SpanStats": "exporters",
         "LocalSpanExporter": "spanstore"}


def __getattr__(name: str) -> Any:
    """``SafeSpanExporter``, ``SafeMetricExporter``, ``SpanStats``, ``LocalSpanExporter``: imported on use."""
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
    logger_provider: Any = None
    """The OTLP log pipeline setup installed (None when it installed none)."""
    log_handler: logging.Handler | None = None
    """The bridge from the ``middleware`` logger to ``logger_provider`` (removed by ``shutdown()``)."""
    failures: ExportFailures = field(default_factory=ExportFailures)
    span_stats: SpanStats | None = None
    otlp_endpoint: str | None = None
    traces_dir: Path | None = None
    """Where finished spans are kept locally (``middleware traces``); None when they are not."""

    def shutdown(self) -> None:
        """Flush exporters, detach the log bridge and stop the metrics server; never raises."""
        if self.log_handler is not None:
            logging.getLogger(LOGGER_NAME).removeHandler(self.log_handler)
            self.log_handler = None
        for provider in (self.tracer_provider if self.installed_tracer else None,
                         self.meter_provider if self.installed_meter else None, self.logger_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception as exc:
                    self.failures.failed("shutdown", exc)
        self._stop_server()

    def _stop_server(self) -> None:
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
                                       "NoOpMeterProvider", "_ProxyMeterProvider", "ProxyLoggerProvider",
                                       "NoOpLoggerProvider")


def _logs_wanted(use_otlp: bool) -> bool:
    """OTLP log export: with OTLP, unless ``OTEL_LOGS_EXPORTER`` says ``none`` (or names no OTLP exporter)."""
    if not use_otlp:
        return False
    exporters = {e.strip().lower() for e in os.environ.get("OTEL_LOGS_EXPORTER", "otlp").split(",")}
    return any(e.startswith("otlp") for e in exporters)


def _logger_provider_is_default() -> bool:
    from opentelemetry import _logs

    return _provider_is_default(_logs.get_logger_provider())


def _bridge(provider: Any) -> logging.Handler:
    """The SDK's logging bridge for ``provider`` (its deprecation points at a package we do not require)."""
    import warnings

    from opentelemetry.sdk._logs import LoggingHandler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return LoggingHandler(level=logging.NOTSET, logger_provider=provider)


_ON = ("1", "true", "yes", "on", "always")
_OFF = ("0", "false", "no", "off", "never")


def _local_traces_mode(explicit: bool | None) -> bool | None:
    """True (always), False (never) or None (auto: only where spans would otherwise go nowhere)."""
    if explicit is not None:
        return explicit
    raw = os.environ.get(TRACES_LOCAL_ENV, "").strip().lower()
    if raw in ("", "auto"):
        return None
    if raw in _ON:
        return True
    if raw in _OFF:
        return False
    raise ConfigError(f"{TRACES_LOCAL_ENV} must be auto, always (1, true) or never (0, false), not {raw!r}")


def _missing(exc: ImportError, what: str, dist: str) -> MissingExtraError:
    if not (exc.name or "").startswith("opentelemetry"):
        raise exc  # a genuine bug in an installed module, not a missing extra
    return MissingExtraError(what, (OTEL,), dist)


def setup_telemetry(
    *,
    service_name: str = "llm-middleware",
    metrics_port: int | None = DEFAULT_METRICS_PORT,
    metrics_host: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
    span_exporters: Sequence[SpanExporter] = (),
    otlp: bool | None = None,
    span_stats: bool = False,
    local_traces: bool | None = None,
    traces_dir: str | os.PathLike[str] | None = None,
    traces_max_bytes: int = DEFAULT_MAX_BYTES,
    traces_backups: int = DEFAULT_BACKUPS,
    log_level: int | str | None = None,
) -> TelemetryHandle:
    """Install tracer/meter providers (unless the application already has them) and serve ``/metrics``.

    ``metrics_port=None`` serves nothing; ``0`` picks a free port (see ``handle.metrics_port``).
    ``otlp=None`` enables OTLP export when an ``OTEL_EXPORTER_OTLP_*ENDPOINT`` variable is set.
    ``local_traces=None`` (or ``MIDDLEWARE_TRACES_LOCAL=auto``) keeps finished spans in the local store
    when they would otherwise go nowhere (no OTLP, no ``span_exporters``); ``True`` keeps them as well,
    ``False`` never. The store is ``traces_dir``, else ``$MIDDLEWARE_TRACES_DIR``, else the user's state
    folder, rotated past ``traces_max_bytes`` with ``traces_backups`` older files.

    With OTLP, the ``middleware`` logger's records are exported as OTLP logs too (with the trace and span
    of the call that emitted them), unless ``OTEL_LOGS_EXPORTER=none`` or the application installed its own
    logger provider (then its logging bridge decides). Which records go is the ``middleware`` logger's
    effective level (the application's logging configuration); ``log_level`` sets it.

    Fails before it installs anything (missing ``otel`` extra: :class:`MissingExtraError`; bad setting:
    :class:`ConfigError`; busy port: ``OSError``), or not at all: a failure after the port is bound
    stops the server and the providers built so far, and installs nothing.
    """
    # 1. What can fail without side effects: the settings, the SDK, the exporters' imports.
    traces_endpoint = _otlp_endpoint("TRACES")
    metrics_endpoint = _otlp_endpoint("METRICS")
    use_otlp = bool(traces_endpoint or metrics_endpoint) if otlp is None else otlp
    mode = _local_traces_mode(local_traces)
    want_local = (not use_otlp and not span_exporters) if mode is None else mode
    if traces_max_bytes <= 0 or traces_backups < 0:
        raise ConfigError(f"traces_max_bytes must be > 0 and traces_backups >= 0, not {traces_max_bytes}, "
                          f"{traces_backups}")
    install_tracer = _provider_is_default(trace.get_tracer_provider())
    directory: Path | None = None
    if want_local and install_tracer:
        try:
            directory = resolve_traces_dir(traces_dir)
        except RuntimeError as exc:  # no home folder to hold the default store: spans are not kept
            log.warning("no folder for the local trace store (%s): set MIDDLEWARE_TRACES_DIR to keep spans", exc)
    install_meter = use_otlp and _provider_is_default(otel_metrics.get_meter_provider())
    level: int | None = None
    if log_level is not None:
        named = logging.getLevelName(log_level.upper()) if isinstance(log_level, str) else log_level
        if isinstance(named, bool) or not isinstance(named, int):
            raise ConfigError(f"log_level must be a logging level (DEBUG, INFO, WARNING, ERROR), not "
                              f"{log_level!r}")
        level = named
    install_logs = _logs_wanted(use_otlp) and _logger_provider_is_default()
    if install_tracer or install_meter:
        try:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            from .exporters import SafeMetricExporter, SafeSpanExporter, SpanStats
            from .spanstore import LocalSpanExporter
        except ImportError as exc:
            raise _missing(exc, "setup_telemetry()", "opentelemetry-sdk") from exc
        if use_otlp:
            try:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError as exc:
                raise _missing(exc, "setup_telemetry() with OTLP", "opentelemetry-exporter-otlp-proto-http") from exc
    if install_logs:
        try:
            from opentelemetry._logs import get_logger_provider, set_logger_provider
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
            from opentelemetry.sdk._logs import LoggerProvider
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
            from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource

            from .exporters import SafeLogExporter
        except ImportError as exc:
            raise _missing(exc, "setup_telemetry() with OTLP", "opentelemetry-exporter-otlp-proto-http") from exc

    handle = TelemetryHandle()
    handle.otlp_endpoint = traces_endpoint if use_otlp else None

    # 2. Bind /metrics before installing anything: a busy port fails here, with nothing to undo.
    if metrics_port is not None:
        try:
            server, _thread = start_http_server(metrics_port, addr=metrics_host, registry=registry or REGISTRY)
        except OSError as exc:
            raise OSError(exc.errno, f"setup_telemetry: cannot serve /metrics on {metrics_host}:{metrics_port}: "
                                     f"{exc.strerror or exc}") from exc
        handle.metrics_server = server
        handle.metrics_port = int(server.server_address[1])

    # 3. Build the providers (not yet global), 4. install them. Any failure undoes steps 2 and 3.
    undo: list[Callable[[], Any]] = [handle._stop_server]
    try:
        tracer_provider: Any = None
        meter_provider: Any = None
        if install_tracer or install_meter or install_logs:
            resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service_name)})
            if SERVICE_INSTANCE_ID not in resource.attributes:  # one value per run: ``middleware traces`` groups by it
                resource = resource.merge(Resource({SERVICE_INSTANCE_ID: uuid.uuid4().hex}))
        if install_tracer:
            tracer_provider = TracerProvider(resource=resource)
            undo.append(tracer_provider.shutdown)
            for i, exporter in enumerate(span_exporters):
                tracer_provider.add_span_processor(
                    BatchSpanProcessor(SafeSpanExporter(exporter, f"span_exporter_{i}", handle.failures)))
            if use_otlp:
                tracer_provider.add_span_processor(
                    BatchSpanProcessor(SafeSpanExporter(OTLPSpanExporter(), "otlp_traces", handle.failures)))
            if directory is not None:
                local = LocalSpanExporter(directory, max_bytes=traces_max_bytes, backups=traces_backups)
                tracer_provider.add_span_processor(
                    BatchSpanProcessor(SafeSpanExporter(local, "local_traces", handle.failures)))
                handle.traces_dir = directory
            if span_stats:
                handle.span_stats = SpanStats()
                tracer_provider.add_span_processor(handle.span_stats)
        if install_meter:
            reader = PeriodicExportingMetricReader(
                SafeMetricExporter(OTLPMetricExporter(), "otlp_metrics", handle.failures))
            undo.append(reader.shutdown)
            meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
            undo[-1] = meter_provider.shutdown

        logger_provider: Any = None
        if install_logs:
            logger_provider = LoggerProvider(resource=resource)
            undo.append(logger_provider.shutdown)
            logger_provider.add_log_record_processor(
                BatchLogRecordProcessor(cast(Any, SafeLogExporter(OTLPLogExporter(), "otlp_logs", handle.failures))))
            handler = _bridge(logger_provider)

        if tracer_provider is not None:
            trace.set_tracer_provider(tracer_provider)
            if trace.get_tracer_provider() is tracer_provider:
                handle.tracer_provider, handle.installed_tracer = tracer_provider, True
            else:  # another thread installed one first: use it, drop ours
                tracer_provider.shutdown()
                handle.traces_dir = None
        if meter_provider is not None:
            otel_metrics.set_meter_provider(meter_provider)
            if otel_metrics.get_meter_provider() is meter_provider:
                handle.meter_provider, handle.installed_meter = meter_provider, True
            else:
                meter_provider.shutdown()
        if logger_provider is not None:
            set_logger_provider(logger_provider)
            if get_logger_provider() is logger_provider:
                handle.logger_provider, handle.log_handler = logger_provider, handler
                logging.getLogger(LOGGER_NAME).addHandler(handler)
            else:
                logger_provider.shutdown()
        if level is not None:
            logging.getLogger(LOGGER_NAME).setLevel(level)
    except BaseException:
        for step in reversed(undo):
            try:
                step()
            except Exception:
                pass
        raise
    if not handle.installed_tracer:
        handle.tracer_provider = trace.get_tracer_provider()
        if not install_tracer:
            log.info("an OpenTelemetry tracer provider is already installed: the middleware uses it")
    if not handle.installed_meter:
        handle.meter_provider = otel_metrics.get_meter_provider()
    return handle
