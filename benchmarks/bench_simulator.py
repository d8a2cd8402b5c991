"""Throughput of the simulator itself: non-streamed requests/s and streamed chunks/s.

The simulator runs in its own process (``start_subprocess``); load comes from separate client
processes with raw httpx2 (keep-alive, asyncio concurrency), plus one run with the openai SDK.
Usage: ``python benchmarks/bench_simulator.py [--duration 5] [--workers 2] [--concurrency 8]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from typing import Any

import httpx2
import openai

from middleware.simulator import SimulatorConfig, start_subprocess

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Benchmark me, please."}]}


async def _requests_worker(base_url: str, duration: float, concurrency: int, stream_tokens: int) -> tuple[int, int]:
    done = 0
    chunks = 0
    deadline = time.monotonic() + duration
    headers = {"x-sim-output-tokens": str(stream_tokens or 50)}
    body: dict[str, Any] = {**BODY, "stream": bool(stream_tokens)}
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=base_url, limits=limits, timeout=30) as http:

        async def loop() -> None:
            nonlocal done, chunks
            while time.monotonic() < deadline:
                if stream_tokens:
                    async with http.stream("POST", "/chat/completions", json=body, headers=headers) as resp:
                        async for line in resp.aiter_lines():
                            chunks += line.startswith("data: {")
                else:
                    resp = await http.post("/chat/completions", json=body, headers=headers)
                    resp.raise_for_status()
                done += 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done, chunks


async def _socket_worker(base_url: str, duration: float, concurrency: int, stream_tokens: int) -> tuple[int, int]:
    """A minimal keep-alive HTTP/1.1 client on raw asyncio streams: cheap enough to saturate the server."""
    host, port = base_url.split("//", 1)[1].split("/", 1)[0].split(":")
    payload = json.dumps({**BODY, "stream": bool(stream_tokens)}).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"x-sim-output-tokens: {stream_tokens or 50}\r\ncontent-length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    deadline = time.monotonic() + duration
    done = 0
    chunks = 0

    async def loop() -> None:
        nonlocal done, chunks
        reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 24)
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            if stream_tokens:
                body = await reader.readuntil(b"\r\n0\r\n\r\n")  # end of the chunked body
                chunks += body.count(b"data: {")
            else:
                length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
            done += 1
        writer.close()

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done, chunks


def _worker(args: tuple[str, float, int, int]) -> tuple[int, int]:
    return asyncio.run(_requests_worker(*args))


def _socket_worker_sync(args: tuple[str, float, int, int]) -> tuple[int, int]:
    return asyncio.run(_socket_worker(*args))


def _load(
    base_url: str, workers: int, duration: float, concurrency: int, stream_tokens: int, raw_socket: bool = False
) -> tuple[float, float]:
    ctx = multiprocessing.get_context("spawn")
    target = _socket_worker_sync if raw_socket else _worker
    with ctx.Pool(workers) as pool:
        start = time.monotonic()
        results = pool.map(target, [(base_url, duration, concurrency, stream_tokens)] * workers)
        elapsed = time.monotonic() - start
    requests = sum(r[0] for r in results)
    chunks = sum(r[1] for r in results)
    return requests / elapsed, chunks / elapsed


def _sdk_rate(base_url: str, duration: float) -> float:
    sdk = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0)
    count = 0
    deadline = time.monotonic() + duration
    start = time.monotonic()
    while time.monotonic() < deadline:
        sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        count += 1
    return count / (time.monotonic() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--stream-tokens", type=int, default=5000)
    ns = parser.parse_args(argv)
    with start_subprocess(SimulatorConfig(rpm=10**9, tpm=10**12)) as sim:
        _load(sim.base_url, 1, 0.5, 2, 0)  # warm up caches and tiktoken in the server
        rps, _ = _load(sim.base_url, ns.workers, ns.duration, ns.concurrency, 0)
        raw_rps, _ = _load(sim.base_url, 1, ns.duration, ns.concurrency, 0, raw_socket=True)
        streams, cps = _load(sim.base_url, ns.workers, ns.duration, max(1, ns.concurrency // 4), ns.stream_tokens)
        raw_streams, raw_cps = _load(sim.base_url, 1, ns.duration, 2, ns.stream_tokens, raw_socket=True)
        sdk_rps = _sdk_rate(sim.base_url, min(ns.duration, 3.0))
        stats = sim.stats()["total"]
    print(f"non-stream chat, raw httpx2 ({ns.workers}x{ns.concurrency} keep-alive): {rps:,.0f} requests/s")
    print(f"non-stream chat, 1 raw-socket client process x{ns.concurrency} keep-alive: {raw_rps:,.0f} requests/s")
    per_stream = f"{ns.stream_tokens} tokens/stream"
    print(f"streamed chat, raw httpx2 ({per_stream}): {cps:,.0f} chunks/s ({streams:.1f} streams/s)")
    print(f"streamed chat, 1 raw-socket client process x2: {raw_cps:,.0f} chunks/s ({raw_streams:.1f} streams/s)")
    print(f"non-stream chat, one openai SDK client, sequential: {sdk_rps:,.0f} requests/s")
    print(f"server counted: {stats['served']} served, {stats['refused_total']} refused")


if __name__ == "__main__":
    main()
