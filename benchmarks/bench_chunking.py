"""Chunking throughput vs plain tiktoken encoding, and peak memory of streamed chunking vs file size.

Run: ``TIKTOKEN_CACHE_DIR=... python benchmarks/bench_chunking.py [--mb 50]``. Writes a generated
corpus (prose, markdown, code, CJK and emoji) to a temporary directory; the baseline is one
``encode_ordinary`` call over the same text (single thread, like the chunker).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path

import tiktoken
from rich.console import Console
from rich.table import Table

from middleware.files import Chunk, SafeReader, chunk_text, iter_file_chunks

WORDS = [
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "was", "on", "be", "by", "this",
    "are", "or", "from", "at", "an", "which", "have", "not", "but", "data", "model", "token", "limit", "stream",
    "retry", "window", "budget", "request", "response", "latency", "error", "metric", "trace", "span",
    "configuration", "processing", "middleware", "observability", "throughput", "memory", "boundary",
]
EXTRA = ["Grüße aus Köln, naïve café.", "東京都の天気は晴れです。", "数据处理很快。", "😀 🎉 👍🏽", "Ελληνικά κείμενα."]
CODE = ("def handler(request):\n    if request.tokens > LIMIT:\n"
        "        return retry(request, delay=0.5)\n    return ok\n")


def paragraph(rnd: random.Random) -> str:
    kind = rnd.random()
    if kind < 0.1:
        return CODE
    if kind < 0.2:
        return "\n".join(f"- item {rnd.randint(1, 999)}: " + " ".join(rnd.choices(WORDS, k=8)) for _ in range(5)) + "\n"
    sentences = []
    for _ in range(rnd.randint(2, 8)):
        words = rnd.choices(WORDS, k=rnd.randint(6, 20))
        sentences.append(" ".join(words).capitalize() + rnd.choice([".", ".", "!", "?"]))
        if rnd.random() < 0.1:
            sentences.append(rnd.choice(EXTRA))
    return " ".join(sentences) + "\n"


def corpus(n_bytes: int, seed: int = 7) -> str:
    rnd = random.Random(seed)
    pool = [paragraph(rnd) for _ in range(3000)]
    parts, size = [], 0
    while size < n_bytes:
        p = rnd.choice(pool) + "\n"
        parts.append(p)
        size += len(p.encode())
    return "".join(parts)


def body_tokens(chunks: Iterable[Chunk]) -> int:
    """Tokens of the chunks without their overlap (the text's own tokens)."""
    return sum(c.tokens - c.overlap_tokens for c in chunks)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def measure_stream(path: str, max_tokens: int) -> dict[str, float]:
    """Child-process mode: stream-chunk a file; peak traced Python memory and RSS growth while chunking.

    The tokenizer is loaded first, so its tables (the same for any file size) are not counted.
    """
    chunk_text("warm up", "gpt-4o", 100)
    gc.collect()
    base_rss, peak_rss, done = _rss_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak_rss[0] = max(peak_rss[0], _rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    p = Path(path)
    n = 0
    for _ in iter_file_chunks(SafeReader(p.parent, max_bytes=1 << 40), p.name, "gpt-4o", max_tokens):
        n += 1
    peak = tracemalloc.get_traced_memory()[1]
    done.set()
    sampler.join()
    return {"chunks": n, "peak_traced_mb": peak / 2**20, "rss_growth_mb": max(peak_rss[0], _rss_mb()) - base_rss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure_stream(args.measure, args.max_tokens)))
        return
    enc = tiktoken.get_encoding("o200k_base")
    console = Console(width=150)
    with tempfile.TemporaryDirectory() as tmp:
        text = corpus(args.mb * 2**20)
        size_mb = len(text.encode()) / 2**20
        big = Path(tmp) / "big.txt"
        big.write_text(text)
        small = Path(tmp) / "small.txt"
        small.write_text(text[: len(text) // 10])

        reader = SafeReader(tmp, max_bytes=1 << 40)
        mt = args.max_tokens
        runs: dict[str, Callable[[], int]] = {
            "tiktoken encode_ordinary (baseline)": lambda: len(enc.encode_ordinary(text)),
            f"chunk_text max={mt} overlap=0": lambda: body_tokens(chunk_text(text, "gpt-4o", mt)),
            f"chunk_text max={mt} overlap=100": lambda: body_tokens(chunk_text(text, "gpt-4o", mt, 100)),
            f"iter_file_chunks (streamed file) max={mt}":
                lambda: body_tokens(iter_file_chunks(reader, "big.txt", "gpt-4o", mt)),
        }
        best: dict[str, float] = dict.fromkeys(runs, float("inf"))
        tokens: dict[str, int] = {}
        for _ in range(args.repeat):  # interleaved, best of N: the machine is shared
            for name, fn in runs.items():
                start = time.perf_counter()
                tokens[name] = fn()
                best[name] = min(best[name], time.perf_counter() - start)
        base_s = best["tiktoken encode_ordinary (baseline)"]
        rows = [(name, best[name], tokens[name]) for name in runs]
        table = Table(title=f"chunking {size_mb:.1f} MB corpus, o200k_base, single thread")
        for col in ("run", "seconds", "MB/s", "tokens/s", "tokens", "ratio vs tiktoken"):
            table.add_column(col, justify="left" if col == "run" else "right")
        for name, secs, tok in rows:
            table.add_row(name, f"{secs:.2f}", f"{size_mb / secs:.1f}", f"{int(tok) / secs:,.0f}", f"{int(tok):,}",
                          f"{base_s / secs:.2f}x")
        console.print(table)

        mem = Table(title="streamed chunking memory (separate processes)")
        for col in ("file", "MB", "chunks", "peak traced Python MB", "RSS growth MB"):
            mem.add_column(col, justify="right")
        for f in (small, big):
            out = subprocess.run([sys.executable, __file__, "--measure", str(f), "--max-tokens", str(args.max_tokens)],
                                 capture_output=True, text=True, check=True)
            m = json.loads(out.stdout)
            mem.add_row(f.name, f"{f.stat().st_size / 2**20:.1f}", str(m["chunks"]), f"{m['peak_traced_mb']:.1f}",
                        f"{m['rss_growth_mb']:.1f}")
        console.print(mem)


if __name__ == "__main__":
    main()
