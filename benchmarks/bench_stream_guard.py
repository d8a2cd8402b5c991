"""Stream guard cost: per-chunk overhead against the raw SDK stream, and memory per in-flight stream.

Run: ``TIKTOKEN_CACHE_DIR=../shared/tiktoken_cache .venv/bin/python -m benchmarks.bench_stream_guard``

1. Wall time to iterate one 5,000-chunk stream from the same simulator (a separate process),
   raw ``openai.OpenAI`` against the protected client, interleaved, median of several runs.
2. ``tracemalloc`` growth with 1,000 concurrent async streams held open after their first chunk,
   raw against protected; the difference per stream is the guard's own memory.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
import tracemalloc
from typing import Any

import openai
from prometheus_client import CollectorRegistry

from middleware import Config, protect
from middleware.pipeline import Pipeline
from middleware.simulator import start_subprocess
from middleware.telemetry.recorder import Recorder

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "benchmark"}]


def _protected(client: Any) -> Any:
    return protect(client, pipeline=Pipeline(Config(), Recorder(registry=CollectorRegistry())))


def _iterate(client: Any, chunks: int) -> float:
    start = time.perf_counter()
    count = 0
    for _ in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                            extra_headers={"x-sim-output-tokens": str(chunks)}):
        count += 1
    elapsed = time.perf_counter() - start
    assert count >= chunks, count
    return elapsed


def per_chunk(base_url: str, chunks: int = 5000, repetitions: int = 11) -> tuple[float, float]:
    """Median wall seconds for (raw, protected) iterations of one stream, interleaved (the simulator's
    own per-chunk time dominates and varies; the median of interleaved runs cancels most of it)."""
    raw = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
    guarded = _protected(raw)
    _iterate(raw, chunks)
    _iterate(guarded, chunks)
    raw_t: list[float] = []
    prot_t: list[float] = []
    for _ in range(repetitions):
        raw_t.append(_iterate(raw, chunks))
        prot_t.append(_iterate(guarded, chunks))
    return statistics.median(raw_t), statistics.median(prot_t)


async def _hold(client: Any, count: int) -> int:
    """Open ``count`` streams, read each one's first chunk, measure the traced memory growth."""
    async def one() -> Any:
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True,
                                                      extra_headers={"x-sim-output-tokens": "100000"})
        it = stream.__aiter__()
        await it.__anext__()
        return stream, it

    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    held: list[Any] = []
    for start in range(0, count, 100):  # open in batches (listen backlog), all held open together
        held.extend(await asyncio.gather(*(one() for _ in range(min(100, count - start)))))
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    for stream, it in held:
        await it.aclose()
        await stream.close()
    return grown


def memory(base_url: str, count: int = 1000) -> tuple[float, float]:
    """Bytes per in-flight stream: (raw, protected)."""
    results = []
    for protect_it in (False, True):
        client: Any = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=60.0)
        if protect_it:
            client = _protected(client)
        asyncio.run(_hold(client, 20))  # warm caches and imports outside the measurement
        tracemalloc.start()
        grown = asyncio.run(_hold(client, count))
        tracemalloc.stop()
        results.append(grown / count)
    return results[0], results[1]


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks and print their ratios."""
    args = sys.argv[1:] if argv is None else argv
    chunks = int(args[0]) if args else 5000
    sim = start_subprocess()
    slow = start_subprocess(tokens_per_s=1.0)
    try:
        raw_s, prot_s = per_chunk(sim.base_url, chunks)
        print(f"per-chunk: {chunks} chunks  raw {raw_s * 1e3:.1f} ms ({raw_s / chunks * 1e6:.1f} us/chunk)  "
              f"protected {prot_s * 1e3:.1f} ms ({prot_s / chunks * 1e6:.1f} us/chunk)  "
              f"ratio {prot_s / raw_s:.3f}x (target <= 1.10x)")
        raw_b, prot_b = memory(slow.base_url)
        print(f"memory: 1000 concurrent async streams  raw {raw_b / 1024:.1f} KB/stream  "
              f"protected {prot_b / 1024:.1f} KB/stream  guard delta {(prot_b - raw_b) / 1024:.1f} KB/stream "
              f"(target <= 20 KB)")
    finally:
        sim.stop()
        slow.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
