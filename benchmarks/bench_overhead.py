"""Per-call and per-stream overhead of the protected client against the raw SDK, telemetry on.

One run prints: the simulator's own capacity (requests/s, streamed chunks/s, from
``bench_simulator``), then the wall time per call of the raw ``openai`` SDK and of the protected
client against the same simulator (its own process): 2,000 non-streaming calls each, and 200
streams of 500 chunks each, interleaved in blocks so that drift hits both sides alike.
Telemetry on means: an SDK tracer provider with a batch span processor, the Prometheus registry
with exemplars, the limiter, the estimator and the retry loop all active.

Usage: ``python -m benchmarks.bench_overhead [--calls 2000] [--streams 200] [--chunks 500]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import openai
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from prometheus_client import CollectorRegistry

from middleware import Config, protect
from middleware.pipeline import Pipeline
from middleware.simulator import SimulatorConfig, start_subprocess
from middleware.telemetry.recorder import Recorder

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say something short."}]


class CountingExporter(SpanExporter):
    """Receives every span (so the export path runs) and drops it."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def _time_block(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - start


def compare(raw_fn: Callable[[], Any], prot_fn: Callable[[], Any], total: int, block: int) -> tuple[float, float]:
    """Seconds per call (raw, protected), interleaving blocks; the medians of the block means."""
    raw_fn()
    prot_fn()  # warm-up: connections, encoders, caches
    raw_t: list[float] = []
    prot_t: list[float] = []
    for i in range(max(1, total // block)):
        first, second = (raw_fn, prot_fn) if i % 2 == 0 else (prot_fn, raw_fn)
        a = _time_block(first, block) / block
        b = _time_block(second, block) / block
        (raw_t if first is raw_fn else prot_t).append(a)
        (prot_t if first is raw_fn else raw_t).append(b)
    return statistics.median(raw_t), statistics.median(prot_t)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--chunks", type=int, default=500)
    p.add_argument("--skip-simulator-capacity", action="store_true")
    args = p.parse_args(argv)

    if not args.skip_simulator_capacity:
        from benchmarks import bench_simulator

        bench_simulator.main([])

    exporter = CountingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    recorder = Recorder(registry=CollectorRegistry(), tracer_provider=provider)
    with start_subprocess(SimulatorConfig()) as sim:
        raw = openai.OpenAI(api_key="sk-bench", base_url=sim.base_url, max_retries=0)
        protected = protect(openai.OpenAI(api_key="sk-bench", base_url=sim.base_url, max_retries=0),
                            pipeline=Pipeline(Config(), recorder))
        short = {"x-sim-output-tokens": "20"}

        def call(client: openai.OpenAI) -> Callable[[], Any]:
            return lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50,
                                                          extra_headers=short)

        def stream(client: openai.OpenAI) -> Callable[[], Any]:
            headers = {"x-sim-output-tokens": str(args.chunks)}

            def run() -> int:
                count = 0
                for _ in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                        max_tokens=args.chunks + 10, stream=True,
                                                        extra_headers=headers):
                    count += 1
                return count

            return run

        raw_call, prot_call = compare(call(raw), call(protected), args.calls, 100)
        raw_stream, prot_stream = compare(stream(raw), stream(protected), args.streams, 10)
        # The same with 10% trace sampling (metrics are unaffected; exemplars come from sampled calls).
        sampled_provider = TracerProvider(sampler=ParentBasedTraceIdRatio(0.1))
        sampled_provider.add_span_processor(BatchSpanProcessor(CountingExporter()))
        sampled = protect(openai.OpenAI(api_key="sk-bench", base_url=sim.base_url, max_retries=0),
                          pipeline=Pipeline(Config(), Recorder(registry=CollectorRegistry(),
                                                               tracer_provider=sampled_provider)))
        raw_call_s, sampled_call = compare(call(raw), call(sampled), args.calls, 100)
        sampled_provider.shutdown()
    provider.shutdown()

    print("\nProtected client vs raw SDK (same simulator process, same run, telemetry on)")
    print(f"{'workload':<34}{'raw SDK':>12}{'protected':>12}{'ratio':>8}{'target':>8}")
    print(f"{'non-streaming call (' + str(args.calls) + ')':<34}{raw_call * 1e3:>10.3f}ms{prot_call * 1e3:>10.3f}ms"
          f"{prot_call / raw_call:>8.3f}{'1.05':>8}")
    print(f"{'stream of ' + str(args.chunks) + ' chunks (' + str(args.streams) + ')':<34}"
          f"{raw_stream * 1e3:>10.2f}ms{prot_stream * 1e3:>10.2f}ms{prot_stream / raw_stream:>8.3f}{'1.10':>8}")
    print(f"{'non-streaming, 10% trace sampling':<34}{raw_call_s * 1e3:>10.3f}ms{sampled_call * 1e3:>10.3f}ms"
          f"{sampled_call / raw_call_s:>8.3f}{'':>8}")
    print(f"per-call overhead: {(prot_call - raw_call) * 1e6:.0f} us; per chunk: "
          f"{(prot_stream - raw_stream) / args.chunks * 1e6:.2f} us; spans exported: {exporter.spans}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
