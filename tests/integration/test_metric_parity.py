"""One set of names: /metrics equals the OTel metrics translated the standard way, series by series.

One workload runs through protected clients against the simulator (chat, streams, Responses,
embeddings, a retried 5xx, a 429, a terminal quota error, throttle waits, a stall with resumption,
checkpoints, forced and adaptive streaming, an open circuit breaker, a spent retry budget, an
unreachable Redis limiter, bad rate-limit headers, confined file reads, refusals and chunking, a
folded model label, a failing telemetry callback). The recorder writes every event to a
prometheus_client registry and to an OTel ``MeterProvider`` read by an ``InMemoryMetricReader``.

The OTel side is then translated with :mod:`middleware.telemetry.promnames` into the Prometheus
samples a Collector would produce (counters ``_total``; histograms ``_bucket`` with cumulative
counts and ``le``, ``_count``, ``_sum``; attribute keys to label names) and compared with the
registry's samples: same metric names, same label names and values, same values. Histogram sums
are compared to 1e-12 relative (both sides add the same floats, but threads may interleave them in
a different order); every other value exactly. ``le`` is compared as a number: prometheus_client
writes ``1.0`` where Go's translators write ``1`` (Prometheus 3 normalises both).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, Histogram, InMemoryMetricReader, Sum
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from dashboards.stack import free_port
from middleware import Config, protect
from middleware.config import StreamConfig
from middleware.cost import CostConfig, TagConfig, parse_rules, tags
from middleware.files import SafeReader, process_files
from middleware.limits import LimitConfig
from middleware.pipeline import Pipeline
from middleware.retry import RetryConfig
from middleware.telemetry import names as n
from middleware.telemetry.promnames import MetricKind, prometheus_label_name, prometheus_metric_name
from middleware.telemetry.recorder import Recorder

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Tell me about parity."}]
SampleKey = tuple[str, frozenset[tuple[str, str]]]

# Metrics this workload cannot reach through a real code path, reported through the recorder's
# component-events protocol instead (still the real recorder, writing both sides).
REPORTED_DIRECTLY = {n.TOKENIZER_FALLBACK.name: "needs tiktoken's data missing in a fresh process"}


def _kind(data: Any) -> MetricKind:
    if isinstance(data, Histogram):
        return "histogram"
    if isinstance(data, Sum):
        return "counter" if data.is_monotonic else "updowncounter"
    assert isinstance(data, Gauge), type(data)
    return "gauge"


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def translated_otel_samples(reader: InMemoryMetricReader) -> dict[SampleKey, float]:
    """The Prometheus samples the standard translation makes of the reader's metrics."""
    out: dict[SampleKey, float] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = _kind(metric.data)
                name = prometheus_metric_name(metric.name, metric.unit or "", kind)
                for point in metric.data.data_points:
                    labels = {prometheus_label_name(k): str(v) for k, v in (point.attributes or {}).items()}
                    if kind != "histogram":
                        out[(name, frozenset(labels.items()))] = float(point.value)
                        continue
                    cumulative = 0
                    for bound, bucket_count in zip([*point.explicit_bounds, math.inf], point.bucket_counts):
                        cumulative += bucket_count
                        out[(name + "_bucket", frozenset({**labels, "le": _le(bound)}.items()))] = cumulative
                    out[(name + "_count", frozenset(labels.items()))] = float(point.count)
                    out[(name + "_sum", frozenset(labels.items()))] = float(point.sum)
    return out


def exposed_samples(registry: CollectorRegistry) -> dict[SampleKey, float]:
    """The registry's samples as /metrics exposes them (without the `_created` timestamps)."""
    out: dict[SampleKey, float] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            labels = dict(s.labels)
            if "le" in labels:
                labels["le"] = _le(float(labels["le"]))
            out[(s.name, frozenset(labels.items()))] = float(s.value)
    return out


def assert_identical(prom: dict[SampleKey, float], otel: dict[SampleKey, float]) -> None:
    """Same metric names, same label names per metric, same series, same values.

    One difference is inherent and allowed: prometheus_client exposes a metric without labels from
    its creation, at zero, while the OTel SDK reports it from its first measurement. Such zero samples
    with no OTel counterpart are left out.
    """
    prom = {k: v for k, v in prom.items() if k in otel or v != 0 or {name for name, _ in k[1]} - {"le"}}

    def label_names(samples: dict[SampleKey, float]) -> dict[str, set[frozenset[str]]]:
        out: dict[str, set[frozenset[str]]] = {}
        for name, labels in samples:
            out.setdefault(name, set()).add(frozenset(k for k, _ in labels))
        return out

    assert label_names(prom) == label_names(otel)
    assert set(prom) == set(otel), (sorted(set(prom) - set(otel))[:5], sorted(set(otel) - set(prom))[:5])
    differing = []
    for key, value in prom.items():
        other = otel[key]
        # Sums of floats (histogram sums, USD counters) may differ in the last bits with the order of additions.
        fractional = key[0].endswith("_sum") or value != int(value) or other != int(other)
        equal = value == pytest.approx(other, rel=1e-12, abs=0) if fractional else value == other
        if not equal:
            differing.append((key, value, other))
    assert not differing, differing[:10]


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[tuple[Recorder, CollectorRegistry, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    registry = CollectorRegistry()
    recorder = Recorder(registry=registry, tracer_provider=TracerProvider(), meter_provider=provider,
                        model_label_cap=4)
    yield recorder, registry, reader
    provider.shutdown()


def _client(sim: Any, recorder: Recorder, config: Config) -> Any:
    return protect(openai.OpenAI(base_url=sim.base_url, api_key="sk-parity"), pipeline=Pipeline(config, recorder))


def _chat(client: Any, *, model: str = MODEL, stream: bool = False, headers: dict[str, str] | None = None,
          max_tokens: int = 40) -> None:
    kwargs: dict[str, Any] = dict(model=model, messages=MESSAGES, max_tokens=max_tokens, extra_headers=headers or {})
    if stream:
        with client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs) as s:
            for _ in s:
                pass
    else:
        client.chat.completions.create(**kwargs)


def _attempt(fn: Any) -> None:
    try:
        fn()
    except Exception:
        pass  # failures are part of the workload: they are counted on both sides


def run_workload(sim: Any, recorder: Recorder, tmp_path: Path, midway: Any) -> None:
    """Drive every metric the middleware can produce against the simulator; ``midway()`` runs mid-stream."""
    retry = RetryConfig(base_delay=0.01, max_delay=0.05, max_retry_after=0.2, breaker_min_calls=3,
                        breaker_window_seconds=30.0, breaker_open_seconds=30.0, breaker_max_wait_seconds=0.0)
    streaming = StreamConfig(idle_timeout_seconds=0.4, checkpoint_dir=tmp_path / "checkpoints",
                             checkpoint_every_chunks=5, force_stream_above_tokens=300)
    main = _client(sim, recorder, Config(retry=retry, streaming=streaming))

    # Calls, streams, Responses, embeddings; usage, estimates, learned limits, checkpoints.
    _chat(main)
    _chat(main, stream=True, max_tokens=80)
    # Mid-stream (a call and a stream in progress: the gauges are not back at zero yet).
    with main.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=40, stream=True) as s:
        chunks = iter(s)
        next(chunks)
        midway()
        for _ in chunks:
            pass
    main.responses.create(model=MODEL, input="Describe parity.", max_output_tokens=40)
    with main.responses.create(model=MODEL, input="Stream it.", max_output_tokens=40, stream=True) as s:
        for _ in s:
            pass
    main.embeddings.create(model="text-embedding-3-small", input=["parity", "twice"])
    # A forced stream (max_tokens above the threshold), a retried 5xx, a 429 then success, a terminal
    # quota error, unparseable rate-limit headers, a stall resumed from its checkpoint.
    _chat(main, max_tokens=400, headers={"x-sim-output-tokens": "30"})
    _chat(main, headers={"x-sim-fault": "status=500", "x-sim-fault-once": "parity-5xx"})
    _chat(main, headers={"x-sim-fault": "status=429;type=requests;retry_after=0.05",
                         "x-sim-fault-once": "parity-429"})
    _attempt(lambda: _chat(main, headers={"x-sim-fault": "insufficient_quota"}))
    _chat(main, headers={"x-sim-fault": "bad_ratelimit_headers"})
    _chat(main, stream=True, max_tokens=80,
          headers={"x-sim-fault": "stall_after=8;stall_s=1.5", "x-sim-fault-once": "parity-stall"})

    # Throttle waits: two requests per second allowed, four calls.
    tight = _client(sim, recorder, Config(limits=LimitConfig(requests_per_window=2, tokens_per_window=1_000_000,
                                                             window_seconds=1.0, max_wait_seconds=5.0,
                                                             learn_from_headers=False)))
    for _ in range(4):
        _chat(tight, model="gpt-4o")

    # An open circuit breaker and a spent retry budget: a model whose every attempt fails.
    broken = _client(sim, recorder, Config(retry=RetryConfig(
        base_delay=0.0, max_delay=0.0, budget_ratio=0.0, budget_min_retries_per_second=0.0, breaker_min_calls=3,
        breaker_open_seconds=30.0, breaker_max_wait_seconds=0.0)))
    for i in range(5):
        _attempt(lambda i=i: _chat(broken, model="gpt-4.1", headers={"x-sim-fault": "status=503"}))

    # A shared limiter whose Redis is unreachable: the local fallback decides.
    redis_down = f"redis://127.0.0.1:{free_port()}/0"
    _chat(_client(sim, recorder, Config(limits=LimitConfig(requests_per_window=1000, tokens_per_window=1_000_000,
                                                           window_seconds=60.0, redis_url=redis_down))))

    # A fifth model beyond the label cap of four folds into "other".
    _chat(main, model="o4-mini")

    # Cost: tagged calls under a budget (decisions, spend and limit gauges), a model without a price, a tag
    # value beyond its cap folded into "other", and a budget whose Redis is unreachable.
    budgeted = _client(sim, recorder, Config(cost=CostConfig(
        budgets=parse_rules("api_key/day=100,team=*/day=50"), tags=TagConfig(value_cap=1))))
    for team in ("search", "ads"):
        with tags(team=team, feature="parity"):
            _chat(budgeted)
    _chat(budgeted, model="my-own-unpriced-model")
    long_context = [{"role": "system", "content": "the river carries stone and light " * 300},
                    {"role": "user", "content": "Summarise the parity of cached prompts."}]
    for _ in range(2):  # the second reports cached input tokens: cached savings
        budgeted.chat.completions.create(model=MODEL, messages=long_context, max_tokens=10)
    budget_down = _client(sim, recorder, Config(cost=CostConfig(budgets=parse_rules("api_key/day=100"),
                                                                redis_url=f"redis://127.0.0.1:{free_port()}/0")))
    _chat(budget_down)

    # A progress callback that raises: counted as a telemetry error, the call goes on; its stream
    # also feeds the adaptive forced-streaming threshold.
    def broken_progress(_: Any) -> None:
        raise RuntimeError("progress callback broken (parity test)")

    cb = _client(sim, recorder, Config(streaming=StreamConfig(on_progress=broken_progress, adaptive_threshold=True,
                                                             progress_interval_seconds=0.0)))
    _chat(cb, stream=True)

    # Confined file reads, refusals and token-aware chunking.
    root = tmp_path / "files"
    (root / "docs").mkdir(parents=True)
    for k in range(2):
        (root / "docs" / f"doc{k}.txt").write_text(("A sentence about parity of names. " * 40 + "\n") * 4)
    (root / "docs" / "blob.bin").write_bytes(bytes(range(256)) * 4)
    reader = SafeReader(root, events=recorder)
    for bad in ("../outside.txt", "docs/blob.bin"):
        _attempt(lambda bad=bad: reader.read_text(bad))
    process_files("docs/*.txt", "Summarise: {chunk}", main, model=MODEL, root=root, out_dir=tmp_path / "out",
                  max_chunk_tokens=200, concurrency=2, max_output_tokens=30, events=recorder)

    for name, why in REPORTED_DIRECTLY.items():
        assert name == n.TOKENIZER_FALLBACK.name, why
        recorder.tokenizer_fallback(f"parity test: {why}")


def test_metrics_and_otel_translated_are_identical(
    make_simulator: Any, kit: tuple[Recorder, CollectorRegistry, InMemoryMetricReader], tmp_path: Path
) -> None:
    recorder, registry, reader = kit
    # Limits far above the workload, so that x-ratelimit-* headers are sent (and learned).
    sim = make_simulator(rpm=100_000, tpm=100_000_000, window_s=60, seed=3)
    snapshots: list[tuple[dict[SampleKey, float], dict[SampleKey, float]]] = []

    def midway() -> None:
        snapshots.append((exposed_samples(registry), translated_otel_samples(reader)))

    worker = threading.Thread(target=run_workload, args=(sim, recorder, tmp_path, midway))
    worker.start()
    worker.join(240)
    assert not worker.is_alive(), "workload did not finish"
    prom = exposed_samples(registry)
    otel = translated_otel_samples(reader)

    [(prom_mid, otel_mid)] = snapshots
    assert_identical(prom_mid, otel_mid)
    inflight = [v for (name, _), v in prom_mid.items() if name in (n.INFLIGHT.prom_name, n.STREAMS_ACTIVE.prom_name)]
    assert sorted(inflight) == [1.0, 1.0]
    assert_identical(prom, otel)

    # Every metric the middleware defines was exercised (on both sides).
    exercised = {name for name, _ in otel}
    missing = [m.prom_name for m in n.all_metrics()
               if not ({m.prom_name, n.count(m)} & exercised)]
    assert not missing, f"metrics the workload never produced: {missing}"

    # The derived names really are what the definitions say (no drift between the two paths).
    for m in n.all_metrics():
        assert m.prom_name == prometheus_metric_name(m.instrument, m.unit, m.kind)
        assert m.labels == tuple(prometheus_label_name(k) for k in (*m.attributes, *dict(m.fixed)))
    # A few values that must have moved at all.
    folded = [v for (name, _), v in prom.items() if name == n.MODELS_FOLDED.prom_name]
    assert folded and folded[0] >= 1
    assert any(dict(labels).get(n.L_MODEL) == n.OTHER_MODEL for _, labels in prom)
