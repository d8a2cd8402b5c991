"""Metric instruments: each :class:`MetricDef` recorded ONCE, into our own store, and exposed twice.

A call updates about twenty metrics; writing each update to a prometheus_client metric *and* an
OTel instrument cost more than the rest of the telemetry. Here an update touches one cell of our own
store (a few hundred nanoseconds: a dict lookup, a lock, an addition), and both pipelines read it:

- Prometheus: a collector registered in the chosen registry (the default one unless told otherwise)
  yields every family from the store at scrape time, in the names the standard OTel-to-Prometheus
  translation gives (``MetricDef.name`` / ``labels``), histograms with ``trace_id`` exemplars;
- OpenTelemetry: counters, up-down counters and gauges are *observable* instruments whose callbacks
  read the store when a reader collects; histogram observations (which OTel can only take one by one)
  are queued and recorded into the OTel histogram when a reader collects (or, should nobody collect,
  once the queue is long). Without a real meter provider (the API's no-op) nothing is queued.

So a chunk counted now is on ``/metrics`` at the next scrape and in an OTel reader at its next collection.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
import weakref
from array import array
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import metrics as otel_metrics
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Exemplar

from . import names

log = logging.getLogger("middleware.telemetry")

PENDING_LIMIT = 200_000
"""Histogram observations queued for OTel (8 bytes each) before they are recorded without waiting for a reader:
past it, each new observation records up to :data:`DRAIN_STEP` queued ones, so the cost is spread over the
calls instead of falling on one of them."""
DRAIN_STEP = 64


class OtelGate:
    """Whether OTel metric calls reach a real meter provider.

    Without a configured provider the OTel API hands out proxy instruments whose calls do nothing;
    skipping them saves work on every update. ``active`` is a plain attribute read on every update;
    ``refresh()`` (called once per protected call) rechecks the global provider at most once a second,
    so a provider installed later (by the application or ``setup_telemetry``) is picked up within a second.
    """

    __slots__ = ("_checked_at", "_explicit", "active")

    def __init__(self, explicit: bool, provider: object = None) -> None:
        self._explicit = explicit
        self.active = explicit and not _is_noop(provider)
        self._checked_at = -1.0
        self.refresh()

    @classmethod
    def off(cls) -> OtelGate:
        """A gate that stays closed (a meter that failed: metrics stay on the Prometheus side)."""
        gate = cls(True)
        gate.active = False
        return gate

    def refresh(self) -> None:
        """Recheck the global meter provider (at most once a second)."""
        if self._explicit:
            return
        now = time.monotonic()
        if now - self._checked_at > 1.0:
            self._checked_at = now
            self.active = not _is_noop(otel_metrics.get_meter_provider())


def _is_noop(provider: object) -> bool:
    """The API's own do-nothing providers (the global proxy before any is set, the explicit no-op)."""
    return provider is not None and type(provider).__name__ in ("_ProxyMeterProvider", "NoOpMeterProvider")


# ------------------------------------------------------------------------------------------------ the store
class _Cell:
    """The value of one series: a number (counter, gauge) or a histogram (counts, sum, exemplars)."""

    __slots__ = ("count", "counts", "exemplars", "lock", "sum", "value")

    def __init__(self, buckets: int) -> None:
        self.lock = threading.Lock()
        self.value = 0.0
        self.sum = 0.0
        self.count = 0
        self.counts: list[int] = [0] * (buckets + 1) if buckets else []  # the last one is +Inf
        self.exemplars: list[Exemplar | None] = [None] * (buckets + 1) if buckets else []


class Family:
    """One metric's series in the store, by label values (its Prometheus side is rendered from it)."""

    def __init__(self, definition: names.MetricDef) -> None:
        self.definition = definition
        self.bounds: tuple[float, ...] = tuple(float(b) for b in definition.buckets)
        self.cells: dict[tuple[str, ...], _Cell] = {}
        self._lock = threading.Lock()
        self._fixed = tuple(v for _, v in definition.fixed)
        self._bucket_names = [_le(b) for b in self.bounds]

    def cell(self, values: tuple[str, ...]) -> _Cell:
        """The cell of a label tuple (created on first use)."""
        cell = self.cells.get(values)
        if cell is None:
            if len(values) != len(self.definition.attributes):
                raise ValueError(f"{self.definition.instrument} takes {len(self.definition.attributes)} "
                                 f"attribute values, got {len(values)}")
            with self._lock:
                cell = self.cells.setdefault(values, _Cell(len(self.bounds)))
        return cell

    def prometheus(self) -> Metric:
        """The family as prometheus_client renders it (counters without ``_total``: it appends it)."""
        m = self.definition
        doc = m.help + (f" Unit: {m.unit}." if m.unit else "")
        unit = m.prom_unit if m.prom_unit and m.name.endswith("_" + m.prom_unit) else ""
        labels = list(m.labels)
        family: Any
        if m.type == "counter":
            family = CounterMetricFamily(m.name, doc, labels=labels, unit=unit)
        elif m.type == "histogram":
            family = HistogramMetricFamily(m.name, doc, labels=labels, unit=unit)
        else:
            family = GaugeMetricFamily(m.name, doc, labels=labels, unit=unit)
        for values, cell in list(self.cells.items()):
            label_values = [*values, *self._fixed]
            if m.type == "histogram":
                with cell.lock:
                    counts, exemplars, total = list(cell.counts), list(cell.exemplars), cell.sum
                buckets: list[Any] = []
                running = 0
                for name, n, ex in zip([*self._bucket_names, "+Inf"], counts, exemplars):
                    running += n
                    buckets.append((name, running, ex) if ex is not None else (name, running))
                family.add_metric(label_values, buckets, total)
            else:
                family.add_metric(label_values, cell.value)
        if not self.cells and not m.labels:  # an unlabelled metric is exposed from the start, at zero
            if m.type == "histogram":
                family.add_metric([], [(name, 0) for name in [*self._bucket_names, "+Inf"]], 0.0)
            else:
                family.add_metric([], 0.0)
        result: Metric = family
        return result


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes it (``0.01``, ``1.0``, ``4096.0``)."""
    return repr(float(bound)) if math.isfinite(bound) else "+Inf"


class Store:
    """Every metric's series for one Prometheus registry, shared by the recorders that use it.

    Its OTel sides are kept per meter provider: two recorders on one registry and one provider share one
    set of observable instruments (two would report every series twice).
    """

    def __init__(self) -> None:
        self.families: dict[str, Family] = {m.name: Family(m) for m in names.all_metrics()}
        self.failures: list[tuple[str, BaseException]] = []
        """Why the registry refused this store (counted by the first recorder that uses it)."""
        self._sides: weakref.WeakKeyDictionary[Any, _OtelSide] = weakref.WeakKeyDictionary()
        self._sides_lock = threading.Lock()

    def otel_side(self, provider: Any, meter: otel_metrics.Meter, gate: OtelGate) -> _OtelSide:
        """The OTel instruments of this store in ``provider`` (created once per provider)."""
        with self._sides_lock:
            side = self._sides.get(provider)
            if side is None:
                side = _OtelSide(self, meter, gate)
                self._sides[provider] = side
            return side

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's collector protocol."""
        for family in self.families.values():
            yield family.prometheus()

    def describe(self) -> Iterable[Metric]:
        """No up-front description (the registry then collects to learn the names)."""
        return self.collect()


_STORES: weakref.WeakKeyDictionary[CollectorRegistry, Store] = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def store_for(registry: CollectorRegistry) -> Store:
    """The store exposed by ``registry`` (created and registered once per registry)."""
    store = _STORES.get(registry)
    if store is None:
        with _STORES_LOCK:
            store = _STORES.get(registry)
            if store is None:
                store = Store()
                try:
                    registry.register(store)  # type: ignore[arg-type]
                except Exception as exc:  # a registry that refuses it: the store is kept, just not exposed there
                    store.failures.append(("registry", exc))
                _STORES[registry] = store
    return store


# ------------------------------------------------------------------------------------------------ OTel side
class _OtelSide:
    """One recorder's OTel instruments over the store: callbacks for values, a queue for histograms."""

    def __init__(self, store: Store, meter: otel_metrics.Meter | None, gate: OtelGate) -> None:
        self.store = store
        self.gate = gate
        self._buffers: dict[str, dict[tuple[str, ...], array[float]]] = {}
        """Histogram observations waiting for the next collection, per family and label tuple. ``array('d')``
        holds plain doubles: queuing one allocates no Python object, so a long wait between collections neither
        grows what the garbage collector has to walk nor sets it off (a tuple per observation did both)."""
        self.queued = 0
        self.drained = 0
        """Observations recorded into the OTel histograms so far, and the CPU seconds of the draining threads that
        took (``drain_seconds``): the OTel SDK's price of our histograms, paid by whichever thread collects
        (``benchmarks/bench_overhead`` prints it)."""
        self.drain_seconds = 0.0
        self._drain_lock = threading.Lock()
        self._attrs: dict[tuple[str, tuple[str, ...]], Mapping[str, str]] = {}
        self.histograms: dict[str, Any] = {}
        if meter is None:  # the OTel side is off (its gate stays closed): no instruments
            return
        for m in names.all_metrics():
            kwargs: dict[str, Any] = {"unit": m.unit, "description": m.help}
            if m.kind == "histogram":
                self.histograms[m.name] = meter.create_histogram(
                    m.instrument, **kwargs, explicit_bucket_boundaries_advisory=[float(b) for b in m.buckets])
                continue
            callback = self._reader(store.families[m.name])
            if m.kind == "counter":
                meter.create_observable_counter(m.instrument, callbacks=[callback], **kwargs)
            elif m.kind == "updowncounter":
                meter.create_observable_up_down_counter(m.instrument, callbacks=[callback], **kwargs)
            else:
                meter.create_observable_gauge(m.instrument, callbacks=[callback], **kwargs)

    def attributes(self, family: Family, values: tuple[str, ...]) -> Mapping[str, str]:
        """The OTel attributes of a label tuple (cached)."""
        key = (family.definition.name, values)
        attrs = self._attrs.get(key)
        if attrs is None:
            d = family.definition
            attrs = {**dict(zip(d.attributes, values)), **dict(d.fixed)}
            self._attrs[key] = attrs
        return attrs

    def _reader(self, family: Family) -> Any:
        from opentelemetry.metrics import Observation

        def observe(options: Any) -> Iterator[Any]:
            self.drain()  # every collection starts with the callbacks: the queued histograms go in first
            for values, cell in list(family.cells.items()):
                yield Observation(cell.value, self.attributes(family, values))

        return observe

    def queue(self, family: Family, values: tuple[str, ...], amounts: float | list[float]) -> None:
        """Histogram observations (one, or a list for one label set) for the OTel side, recorded at the next
        collection (or at once, should nobody collect for :data:`PENDING_LIMIT` observations)."""
        buffers = self._buffers.get(family.definition.name)
        buffer = buffers.get(values) if buffers is not None else None
        if buffer is None:
            buffer = self._buffer(family.definition.name, values)
        if isinstance(amounts, list):
            buffer.extend(amounts)
            self.queued += len(amounts)
        else:
            buffer.append(amounts)
            self.queued += 1
        if self.queued > PENDING_LIMIT:
            self.drain(DRAIN_STEP, wait=False)

    def _buffer(self, name: str, values: tuple[str, ...]) -> array[float]:
        with self._drain_lock:
            return self._buffers.setdefault(name, {}).setdefault(values, array("d"))

    def drain(self, limit: int | None = None, *, wait: bool = True) -> None:
        """Record the queued histogram observations (all, or about ``limit``) into the OTel histograms;
        ``wait=False`` returns at once when another thread is draining.

        Appends need no lock: a buffer only grows at its end, and the drain (serialised by its lock) takes
        the first ``n`` values it saw and deletes exactly those, so a value appended meanwhile waits for the
        next drain."""
        if not self._drain_lock.acquire(blocking=wait):
            return
        started = time.thread_time()
        try:
            budget = limit
            for name, buffers in self._buffers.items():
                instrument = self.histograms[name]
                family = self.store.families[name]
                for values, buffer in list(buffers.items()):
                    n = len(buffer) if budget is None else min(len(buffer), budget)
                    if not n:
                        continue
                    taken = buffer[:n]
                    del buffer[:n]
                    self.queued -= n
                    self.drained += n
                    attrs = self.attributes(family, values)
                    record = instrument.record
                    for amount in taken:
                        record(amount, attrs)
                    if budget is not None:
                        budget -= n
                        if budget <= 0:
                            return
            if limit is None:
                self.queued = 0
        finally:
            self.drain_seconds += time.thread_time() - started
            self._drain_lock.release()


# ------------------------------------------------------------------------------------------------ the API
class Instrument:
    """One metric as the recorder sees it; callers pass the values of ``definition.attributes`` positionally."""

    __slots__ = ("_family", "_otel", "definition", "otel_muted")

    def __init__(self, family: Family, otel: _OtelSide) -> None:
        self.definition = family.definition
        self._family = family
        self._otel = otel
        self.otel_muted = False
        """True: histogram observations stay on the Prometheus side (another instrumentation owns the OTel name)."""

    def add(self, values: tuple[str, ...], amount: float = 1.0, exemplar: dict[str, str] | None = None) -> None:
        """Counter increment."""
        cell = self._family.cell(values)
        with cell.lock:
            cell.value += amount

    def observe(self, values: tuple[str, ...], amount: float, exemplar: dict[str, str] | None = None) -> None:
        """Histogram observation (with a trace-id exemplar when given)."""
        family = self._family
        cell = family.cell(values)
        i = bisect.bisect_left(family.bounds, amount)
        with cell.lock:
            cell.counts[i] += 1
            cell.count += 1
            cell.sum += amount
            if exemplar:
                cell.exemplars[i] = Exemplar(exemplar, amount, time.time())
        otel = self._otel
        if otel.gate.active and not self.otel_muted:
            otel.queue(family, values, amount)

    def observe_many(self, values: tuple[str, ...], amounts: list[float]) -> None:
        """Several histogram observations for one label set (stream chunk gaps)."""
        family = self._family
        cell = family.cell(values)
        bounds = family.bounds
        with cell.lock:
            counts = cell.counts
            for amount in amounts:
                counts[bisect.bisect_left(bounds, amount)] += 1
            cell.count += len(amounts)
            cell.sum += sum(amounts)
        otel = self._otel
        if otel.gate.active and not self.otel_muted:
            otel.queue(family, values, amounts)

    def set(self, values: tuple[str, ...], value: float) -> None:
        """Gauge set."""
        cell = self._family.cell(values)
        cell.value = value

    def delta(self, values: tuple[str, ...], amount: float) -> None:
        """Up-down counter (or gauge) increment or decrement."""
        cell = self._family.cell(values)
        with cell.lock:
            cell.value += amount

    def value(self, values: tuple[str, ...]) -> float:
        """The current value of a counter or gauge series (0 when never set)."""
        cell = self._family.cells.get(values)
        return cell.value if cell is not None else 0.0


class Instruments:
    """All instruments of the names module, by MetricDef name."""

    def __init__(
        self, registry: CollectorRegistry, provider: otel_metrics.MeterProvider | None, meter: otel_metrics.Meter, *,
        explicit_provider: bool = False,
    ) -> None:
        self.store = store = store_for(registry)
        self.failures: list[tuple[str, BaseException]] = store.failures[:1]
        """Failures met while building (registry, meter): the recorder counts them; the instruments still work."""
        store.failures.clear()
        try:
            gate = OtelGate(explicit_provider, provider)
            otel = store.otel_side(provider, meter, gate) if provider is not None else None
        except Exception as exc:  # a meter whose instruments cannot be created (or a provider we cannot key on)
            self.failures.append(("meter", exc))
            otel = None
        if otel is None:  # the OTel side off: no instruments, behind a closed gate
            otel = _OtelSide(store, None, OtelGate.off())
        self.otel = otel
        self.gate = otel.gate
        self.by_name: dict[str, Instrument] = {
            name: Instrument(family, otel) for name, family in store.families.items()
        }

    def __getitem__(self, m: names.MetricDef) -> Instrument:
        return self.by_name[m.name]
