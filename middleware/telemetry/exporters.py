"""Exporter wrappers and span processors built on the OpenTelemetry SDK (the ``otel`` extra).

Imported only by ``setup_telemetry()`` (and by applications that use these classes directly):
``import middleware`` never loads the SDK.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .setup import ExportFailures


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
            self.failures.failed(self.name, getattr(self.inner, "last_error", None) or result)
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


class SafeLogExporter:
    """Wraps a log record exporter: exceptions and failures are counted, never raised.

    Duck-typed (the SDK's log exporter base class moved between releases): ``export``, ``force_flush`` and
    ``shutdown`` as a ``BatchLogRecordProcessor`` calls them.
    """

    def __init__(self, inner: Any, name: str, failures: ExportFailures) -> None:
        self.inner, self.name, self.failures = inner, name, failures

    def export(self, batch: Sequence[Any]) -> Any:
        try:
            result = self.inner.export(batch)
        except Exception as exc:
            self.failures.failed(self.name, exc)
            return _log_failure()
        if getattr(result, "name", "SUCCESS") != "SUCCESS":
            self.failures.failed(self.name, result)
        return result

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return bool(self.inner.force_flush(timeout_millis))
        except Exception:
            return False

    def shutdown(self) -> None:
        try:
            self.inner.shutdown()
        except Exception as exc:
            self.failures.failed(self.name, exc)


def _log_failure() -> Any:
    from opentelemetry.sdk._logs import export as log_export

    result = getattr(log_export, "LogRecordExportResult", None) or log_export.LogExportResult
    return result.FAILURE
