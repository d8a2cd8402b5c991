"""Histogram observations wait for the OTel reader without growing the garbage collector's work, and reach it
exactly once: at a collection, or a few at a time once the queue is past its limit."""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

from middleware.telemetry import instruments
from middleware.telemetry import names as n
from middleware.telemetry.instruments import Instruments

LABELS = ("gpt-4o-mini", "chat", "")


def _setup() -> tuple[Instruments, InMemoryMetricReader, MeterProvider]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    inst = Instruments(CollectorRegistry(), provider, provider.get_meter("test"), explicit_provider=True)
    return inst, reader, provider


def _otel_count(reader: InMemoryMetricReader, name: str) -> tuple[int, float]:
    data = reader.get_metrics_data()
    count, total = 0, 0.0
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for p in metric.data.data_points:
                        count += p.count
                        total += p.sum
    return count, total


def test_queued_observations_allocate_no_tracked_objects() -> None:
    inst, _, provider = _setup()
    hist = inst[n.OPERATION_DURATION]
    hist.observe(LABELS, 0.5)  # the buffer of this label set exists from here on
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for i in range(20_000):
            hist.observe(LABELS, i / 1000)
        grown = len(gc.get_objects()) - before
    finally:
        gc.enable()
    assert grown < 50, f"{grown} tracked objects for 20,000 queued observations"
    provider.shutdown()


def test_every_observation_reaches_otel_once_at_collection() -> None:
    inst, reader, provider = _setup()
    hist = inst[n.OPERATION_DURATION]
    values = [0.001 * i for i in range(1, 1001)]
    for v in values:
        hist.observe(LABELS, v)
    hist.observe_many(LABELS, [1.0, 2.0])
    assert _otel_count(reader, n.OPERATION_DURATION.instrument_name) == (1002, pytest.approx(sum(values) + 3.0))
    # a second collection records nothing twice (cumulative temporality: the same totals)
    assert _otel_count(reader, n.OPERATION_DURATION.instrument_name)[0] == 1002
    assert inst.otel.queued == 0
    # what the OTel side cost is accounted for (bench_overhead prints it): every observation drained, its time
    assert inst.otel.drained == 1002 and inst.otel.drain_seconds > 0
    provider.shutdown()


def test_past_the_limit_observations_are_recorded_a_few_at_a_time(monkeypatch: Any) -> None:
    monkeypatch.setattr(instruments, "PENDING_LIMIT", 500)
    inst, reader, provider = _setup()
    hist = inst[n.OPERATION_DURATION]
    recorded: list[float] = []
    histogram = inst.otel.histograms[n.OPERATION_DURATION.name]
    original = histogram.record
    monkeypatch.setattr(histogram, "record", lambda amount, attrs=None, *a, **k: (recorded.append(amount),
                                                                                     original(amount, attrs)))
    largest_batch = 0
    for i in range(5_000):
        before = len(recorded)
        hist.observe(LABELS, float(i))
        largest_batch = max(largest_batch, len(recorded) - before)
    assert inst.otel.queued <= 500 + instruments.DRAIN_STEP  # bounded...
    assert largest_batch <= instruments.DRAIN_STEP  # ...without one call paying for the whole queue
    assert recorded == [float(i) for i in range(len(recorded))]  # in order, none twice
    assert _otel_count(reader, n.OPERATION_DURATION.instrument_name)[0] == 5_000  # the rest at collection
    provider.shutdown()


def test_observations_from_many_threads_are_neither_lost_nor_doubled() -> None:
    inst, reader, provider = _setup()
    hist = inst[n.OPERATION_DURATION]
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            reader.get_metrics_data()

    collector = threading.Thread(target=collect)
    collector.start()

    def work() -> None:
        for _ in range(5_000):
            hist.observe(LABELS, 0.25)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    collector.join()
    assert _otel_count(reader, n.OPERATION_DURATION.instrument_name) == (20_000, pytest.approx(5_000.0))
    provider.shutdown()
