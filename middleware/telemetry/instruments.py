"""Metric instruments: each :class:`MetricDef` as a prometheus_client metric and an OTel instrument.

The OTel instrument gets the definition's instrument name, unit, kind and attribute keys; the
prometheus_client metric gets the names the standard OTel-to-Prometheus translation derives from
them (``MetricDef.name``, ``MetricDef.labels``), so both sides describe the same series.

The Prometheus side lives in a registry of our own choosing (the default registry unless told
otherwise) so that ``/metrics`` can expose it in OpenMetrics format with exemplars. The OTel side
goes through the *global* meter provider: an application that configured its own provider sees
our metrics in its pipeline; without one the OTel calls are cheap no-ops.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from opentelemetry import metrics as otel_metrics
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import names

log = logging.getLogger("middleware.telemetry")

_PROM_CACHE: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, Any]] = weakref.WeakKeyDictionary()
_PROM_LOCK = threading.Lock()


def _prometheus_metric(registry: CollectorRegistry, m: names.MetricDef) -> Any:
    """One prometheus_client metric per (registry, name): created once, shared by every recorder."""
    with _PROM_LOCK:
        per_registry = _PROM_CACHE.setdefault(registry, {})
        existing = per_registry.get(m.name)
        if existing is not None:
            return existing
        unit_doc = f" Unit: {m.unit}." if m.unit else ""
        doc = m.help + unit_doc
        # OpenMetrics UNIT metadata, only where the name ends in it (prometheus_client would append it).
        unit = m.prom_unit if m.prom_unit and m.name.endswith("_" + m.prom_unit) else ""
        metric: Any
        if m.type == "counter":
            metric = Counter(m.name, doc, m.labels, registry=registry, unit=unit)
        elif m.type == "histogram":
            metric = Histogram(m.name, doc, m.labels, registry=registry, buckets=m.buckets, unit=unit)
        else:
            metric = Gauge(m.name, doc, m.labels, registry=registry, multiprocess_mode="livesum", unit=unit)
        per_registry[m.name] = metric
        return metric


class OtelGate:
    """Whether OTel metric calls reach a real meter provider.

    Without a configured provider the OTel API hands out proxy instruments whose calls do nothing;
    skipping them saves a few microseconds per metric update. ``active`` is a plain attribute read on
    every update; ``refresh()`` (called once per protected call) rechecks the global provider at most
    once a second, so a provider installed later (by the application or ``setup_telemetry``) is
    picked up within a second.
    """

    __slots__ = ("_checked_at", "_explicit", "active")

    def __init__(self, explicit: bool) -> None:
        self._explicit = explicit
        self.active = explicit
        self._checked_at = -1.0
        self.refresh()

    def refresh(self) -> None:
        """Recheck the global meter provider (at most once a second)."""
        if self._explicit:
            return
        now = time.monotonic()
        if now - self._checked_at > 1.0:
            self._checked_at = now
            provider = otel_metrics.get_meter_provider()
            self.active = type(provider).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")


def _otel_attributes(m: names.MetricDef, values: tuple[str, ...]) -> dict[str, str]:
    if len(values) != len(m.attributes):
        raise ValueError(f"{m.instrument} takes {len(m.attributes)} attribute values, got {len(values)}")
    return {**dict(zip(m.attributes, values)), **dict(m.fixed)}


class Instrument:
    """One metric on both sides. Label children and OTel attribute dicts are cached per label tuple.

    Callers pass the values of ``definition.attributes`` positionally; fixed attributes are added here.
    """

    __slots__ = ("_attrs", "_children", "_fixed", "_gate", "_otel", "_prom", "definition")

    def __init__(
        self, definition: names.MetricDef, registry: CollectorRegistry, meter: otel_metrics.Meter, gate: OtelGate
    ) -> None:
        self.definition = definition
        self._gate = gate
        self._prom = _prometheus_metric(registry, definition)
        self._children: dict[tuple[str, ...], Any] = {}
        self._attrs: dict[tuple[str, ...], Mapping[str, str]] = {}
        self._fixed = tuple(v for _, v in definition.fixed)
        name = definition.instrument
        unit = definition.unit
        if definition.kind == "counter":
            self._otel: Any = meter.create_counter(name, unit=unit, description=definition.help)
        elif definition.kind == "updowncounter":
            self._otel = meter.create_up_down_counter(name, unit=unit, description=definition.help)
        elif definition.kind == "histogram":
            self._otel = meter.create_histogram(
                name, unit=unit, description=definition.help,
                explicit_bucket_boundaries_advisory=[float(b) for b in definition.buckets],
            )
        else:
            self._otel = meter.create_gauge(name, unit=unit, description=definition.help)

    def _child(self, values: tuple[str, ...]) -> Any:
        child = self._children.get(values)
        if child is None:
            attrs = _otel_attributes(self.definition, values)
            labels = (*values, *self._fixed)
            child = self._prom.labels(*labels) if labels else self._prom
            self._children[values] = child
            self._attrs[values] = attrs
        return child

    def add(self, values: tuple[str, ...], amount: float = 1.0, exemplar: dict[str, str] | None = None) -> None:
        """Counter increment."""
        child = self._child(values)
        if exemplar:
            child.inc(amount, exemplar)
        else:
            child.inc(amount)
        if self._gate.active:
            self._otel.add(amount, self._attrs[values])

    def observe(self, values: tuple[str, ...], amount: float, exemplar: dict[str, str] | None = None) -> None:
        """Histogram observation (with a trace-id exemplar when given)."""
        child = self._child(values)
        if exemplar:
            child.observe(amount, exemplar)
        else:
            child.observe(amount)
        if self._gate.active:
            self._otel.record(amount, self._attrs[values])

    def observe_many(self, values: tuple[str, ...], amounts: list[float]) -> None:
        """Several histogram observations for one label set (stream chunk gaps)."""
        child = self._child(values)
        observe = child.observe
        for a in amounts:
            observe(a)
        if self._gate.active:
            attrs = self._attrs[values]
            record = self._otel.record
            for a in amounts:
                record(a, attrs)

    def set(self, values: tuple[str, ...], value: float) -> None:
        """Gauge set."""
        self._child(values).set(value)
        if self._gate.active:
            self._otel.set(value, self._attrs[values])

    def delta(self, values: tuple[str, ...], amount: float) -> None:
        """Up-down counter (or gauge) increment or decrement; an OTel gauge is set to the resulting value."""
        child = self._child(values)
        child.inc(amount)
        if self._gate.active:
            if self.definition.kind == "updowncounter":
                self._otel.add(amount, self._attrs[values])
            else:
                self._otel.set(child._value.get(), self._attrs[values])


class Instruments:
    """All instruments of the names module, by MetricDef name."""

    def __init__(
        self, registry: CollectorRegistry, meter: otel_metrics.Meter, *, explicit_provider: bool = False
    ) -> None:
        self.gate = gate = OtelGate(explicit_provider)
        self.by_name: dict[str, Instrument] = {
            m.name: Instrument(m, registry, meter, gate) for m in names.all_metrics()
        }

    def __getitem__(self, m: names.MetricDef) -> Instrument:
        return self.by_name[m.name]
