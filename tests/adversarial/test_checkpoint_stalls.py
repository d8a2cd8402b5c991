"""Issue 12.6 (checkpoint part): a checkpoint Redis that stalls never stalls the stream's consumer.

The hostile Redis is a real listening socket that accepts every connection and never answers a byte. Before,
each checkpoint waited for the client's 2 s read timeout (a 302-chunk stream took 8.5 s instead of 1 s). Now
the store times out fast once, then skips Redis for the shared policy's back-off (fallback first: the stream goes
on without new checkpoints, each skipped one counted, one warning), and goes back to Redis when it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
import redis

from middleware import Config, StreamConfig
from middleware.redisconn import RedisConfig
from middleware.simulator import Simulator
from middleware.streaming.checkpoint import Checkpoint, CheckpointUnavailable, RedisStore
from tests.eventloop import with_ticker
from tests.fixtures.redis_server import BlackHole, RedisServer
from tests.fixtures.telemetry import TelemetryKit

REDIS_TIMEOUT_SECONDS = RedisConfig().timeout_seconds
CHUNKS = 302  # the role chunk, 300 content chunks, the finish chunk
EVERY = 50  # six checkpoints per stream


def _kwargs() -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "A long answer, please."}],
            "stream": True, "extra_headers": {"x-sim-output-tokens": str(CHUNKS - 2)}}


def _timed(run: Callable[[], int]) -> tuple[float, int]:
    started = time.monotonic()
    chunks = run()
    return time.monotonic() - started, chunks


def test_a_redis_that_never_answers_costs_one_short_timeout_not_one_per_checkpoint(
    simulator: Simulator, black_hole: BlackHole, telemetry: TelemetryKit, protect_with: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    plain = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-ck"), Config())
    baseline, _ = _timed(lambda: sum(1 for _ in plain.chat.completions.create(**_kwargs())))
    cfg = Config(streaming=StreamConfig(checkpoint_redis_url=black_hole.url, checkpoint_every_chunks=EVERY))
    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-ck"), cfg)
    with caplog.at_level(logging.WARNING, logger="middleware"):
        took, chunks = _timed(lambda: sum(1 for _ in client.chat.completions.create(**_kwargs())))
    assert chunks == CHUNKS
    assert took < baseline + REDIS_TIMEOUT_SECONDS * 2 + 0.5, (took, baseline)  # before: 6 x 2 s
    assert black_hole.accepted == 1  # one try, then Redis is skipped: no connection per checkpoint
    skipped = CHUNKS // EVERY + 1  # every checkpoint (the first timed out, the rest skipped) and the final delete
    assert telemetry.sample("llm_middleware_telemetry_errors_total", component="checkpoint") == skipped
    assert telemetry.sample("llm_middleware_redis_fallbacks_total", llm_middleware_redis_feature="checkpoint") \
        == skipped
    assert telemetry.sample("llm_middleware_checkpoints_written_total") == 0
    assert [r.name for r in caplog.records if r.levelno >= logging.WARNING] == ["middleware.redisconn"]  # once


def test_the_async_consumer_and_its_event_loop_are_not_held_either(
    simulator: Simulator, black_hole: BlackHole, protect_with: Callable[..., Any],
) -> None:
    cfg = Config(streaming=StreamConfig(checkpoint_redis_url=black_hole.url, checkpoint_every_chunks=EVERY))
    client = protect_with(openai.AsyncOpenAI(base_url=simulator.base_url, api_key="sk-ck"), cfg)

    async def run() -> tuple[float, int]:
        started = time.monotonic()
        stream = await client.chat.completions.create(**_kwargs())
        chunks = sum([1 async for _ in stream])
        return time.monotonic() - started, chunks

    (took, chunks), longest_pause = asyncio.run(with_ticker(run()))
    assert chunks == CHUNKS
    assert took < REDIS_TIMEOUT_SECONDS * 2 + 1.0, took
    assert longest_pause < REDIS_TIMEOUT_SECONDS * 2 + 0.2, longest_pause  # the loop was held once, briefly
    assert black_hole.accepted == 1


def test_the_store_skips_redis_after_a_failure_and_returns_to_it(redis_server: RedisServer) -> None:
    """A real Redis that dies and comes back: fail fast, skip at once without connecting, then resume."""
    if not redis_server.running:
        redis_server.start()
    store = RedisStore(redis_server.url, policy=RedisConfig(backoff_initial_seconds=0.5, backoff_max_seconds=0.5))
    checkpoint = Checkpoint(id="ck1", operation="chat", model="m", body={"messages": []}, text="partial")
    store.save(checkpoint, 60)
    redis_server.kill()
    try:
        started = time.monotonic()
        with pytest.raises(CheckpointUnavailable) as first:
            store.save(checkpoint, 60)
        assert isinstance(first.value.__cause__, redis.ConnectionError)  # the real failure, fast
        operations = store.handle.link.stats.operations
        with pytest.raises(CheckpointUnavailable):
            store.save(checkpoint, 60)  # skipped without trying
        with pytest.raises(CheckpointUnavailable):
            store.delete("ck1")
        assert store.handle.link.stats.operations == operations
        assert time.monotonic() - started < 1.0
    finally:
        redis_server.start()
    time.sleep(0.55)
    checkpoint.text = "partial, and more"
    store.save(checkpoint, 60)
    assert store.load("ck1").text == "partial, and more"
    assert RedisConfig().backoff_initial_seconds / 2 >= REDIS_TIMEOUT_SECONDS  # skipping outlasts a timeout
