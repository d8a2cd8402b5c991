"""Token estimate cost per call, against plain ``tiktoken`` ``encode`` of the same text.

Run: ``TIKTOKEN_CACHE_DIR=../shared/tiktoken_cache .venv/bin/python -m benchmarks.bench_tokens``
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import tiktoken

from middleware.tokens import TokenEstimator

_SHORT = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Summarise the plot of Hamlet in two sentences."},
    {"role": "assistant", "content": "A prince avenges his father's murder; nearly everyone dies."},
]
_LONG_SYSTEM = " ".join(f"Rule {i}: answer carefully, cite sources, and keep a neutral tone." for i in range(125))


def _per_call_us(fn: Callable[[], Any], seconds: float = 0.5) -> float:
    for _ in range(200):  # warm-up
        fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(200):
            fn()
        n += 200
    return elapsed / n * 1e6


def _encode_all(enc: tiktoken.Encoding, texts: list[str]) -> list[list[int]]:
    return [enc.encode(t) for t in texts]


def main() -> None:
    """Print µs per estimate and the ratio against tiktoken encoding the same texts."""
    enc = tiktoken.get_encoding("o200k_base")
    est = TokenEstimator()
    long_msgs = [{"role": "system", "content": _LONG_SYSTEM}, *_SHORT[1:]]
    print(f"long system prompt: {len(enc.encode(_LONG_SYSTEM))} tokens")
    cases = {
        "short 3-message chat": _SHORT,
        "chat + 2k-token cached system prompt": long_msgs,
    }
    for label, messages in cases.items():
        body = {"model": "gpt-4o", "messages": messages, "max_tokens": 256}
        texts = [str(m["content"]) for m in messages]
        ours = _per_call_us(partial(est.estimate, "chat", "gpt-4o", body))
        plain = _per_call_us(partial(_encode_all, enc, texts))
        print(f"{label:40s} estimate {ours:8.2f} µs   tiktoken.encode {plain:8.2f} µs   ratio {ours / plain:5.2f}x")
    stats = est.cache_stats()
    print(f"cache: hits={stats.hits} misses={stats.misses} size={stats.size}/{stats.capacity}")


if __name__ == "__main__":
    main()
