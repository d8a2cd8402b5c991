"""Issue 12.6 (checkpoint part): a checkpoint Redis that stalls never stalls the stream's consumer.

The hostile Redis is a real listening socket that accepts every connection and never answers a byte. Before,
each checkpoint waited for the client's 2 s read timeout (a 302-chunk stream took 8.5 s instead of 1 s). Now
the store times out fast once, then skips Redis for a while (fallback first: the stream goes on without new
checkpoints, each skipped one counted), and goes back to Redis when it answers again.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from middleware import Config, StreamConfig
from middleware.simulator import Simulator
from middleware.streaming.checkpoint import (
    REDIS_RETRY_AFTER_SECONDS,
    REDIS_TIMEOUT_SECONDS,
    Checkpoint,
    CheckpointUnavailable,
    RedisStore,
)
from tests.fixtures.redis_server import RedisServer
from tests.fixtures.telemetry import TelemetryKit

CHUNKS = 302  # the role chunk, 300 content chunks, the finish chunk
EVERY = 50  # six checkpoints per stream


class BlackHole:
    """A TCP server that accepts connections, reads what it is sent and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)  # held open, never written to

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.sock.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def _kwargs() -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "A long answer, please."}],
            "stream": True, "extra_headers": {"x-sim-output-tokens": str(CHUNKS - 2)}}


def _timed(run: Callable[[], int]) -> tuple[float, int]:
    started = time.monotonic()
    chunks = run()
    return time.monotonic() - started, chunks


def test_a_redis_that_never_answers_costs_one_short_timeout_not_one_per_checkpoint(
    simulator: Simulator, black_hole: BlackHole, telemetry: TelemetryKit, protect_with: Callable[..., Any],
) -> None:
    plain = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-ck"), Config())
    baseline, _ = _timed(lambda: sum(1 for _ in plain.chat.completions.create(**_kwargs())))
    cfg = Config(streaming=StreamConfig(checkpoint_redis_url=black_hole.url, checkpoint_every_chunks=EVERY))
    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-ck"), cfg)
    took, chunks = _timed(lambda: sum(1 for _ in client.chat.completions.create(**_kwargs())))
    assert chunks == CHUNKS
    assert took < baseline + REDIS_TIMEOUT_SECONDS * 2 + 0.5, (took, baseline)  # before: 6 x 2 s
    assert black_hole.accepted == 1  # one try, then Redis is skipped: no connection per checkpoint
    skipped = CHUNKS // EVERY + 1  # every checkpoint (the first timed out, the rest skipped) and the final delete
    assert telemetry.sample("llm_middleware_telemetry_errors_total", component="checkpoint") == skipped
    assert telemetry.sample("llm_middleware_checkpoints_written_total") == 0


def test_the_async_consumer_and_its_event_loop_are_not_held_either(
    simulator: Simulator, black_hole: BlackHole, protect_with: Callable[..., Any],
) -> None:
    cfg = Config(streaming=StreamConfig(checkpoint_redis_url=black_hole.url, checkpoint_every_chunks=EVERY))
    client = protect_with(openai.AsyncOpenAI(base_url=simulator.base_url, api_key="sk-ck"), cfg)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def run() -> tuple[float, int, float]:
        task = asyncio.create_task(ticker())
        started = time.monotonic()
        stream = await client.chat.completions.create(**_kwargs())
        chunks = sum([1 async for _ in stream])
        took = time.monotonic() - started
        task.cancel()
        longest = max(b - a for a, b in itertools.pairwise(ticks)) if len(ticks) > 1 else 0.0
        return took, chunks, longest

    took, chunks, longest_pause = asyncio.run(run())
    assert chunks == CHUNKS
    assert took < REDIS_TIMEOUT_SECONDS * 2 + 1.0, took
    assert longest_pause < REDIS_TIMEOUT_SECONDS * 2 + 0.2, longest_pause  # the loop was held once, briefly
    assert black_hole.accepted == 1


def test_the_store_skips_redis_after_a_failure_and_returns_to_it(redis_server: RedisServer) -> None:
    """A real Redis that dies and comes back: fail fast, skip at once without connecting, then resume."""
    if not redis_server.running:
        redis_server.start()
    store = RedisStore(redis_server.url, retry_after=0.5)
    checkpoint = Checkpoint(id="ck1", operation="chat", model="m", body={"messages": []}, text="partial")
    store.save(checkpoint, 60)
    redis_server.kill()
    try:
        started = time.monotonic()
        with pytest.raises(Exception) as first:
            store.save(checkpoint, 60)
        assert not isinstance(first.value, CheckpointUnavailable)  # the real failure, fast
        with pytest.raises(CheckpointUnavailable):
            store.save(checkpoint, 60)  # skipped without trying
        with pytest.raises(CheckpointUnavailable):
            store.delete("ck1")
        assert time.monotonic() - started < 1.0
    finally:
        redis_server.start()
    time.sleep(0.55)
    checkpoint.text = "partial, and more"
    store.save(checkpoint, 60)
    assert store.load("ck1").text == "partial, and more"
    assert REDIS_RETRY_AFTER_SECONDS >= 1.0  # the default window is longer than a stream's checkpoint interval
