"""Forced streaming: a long non-streaming chat call is streamed and reassembled into the same object."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai
import pytest

from middleware import Config, StreamConfig
from middleware.simulator import Simulator
from middleware.telemetry import names as n

pytestmark = pytest.mark.sdk  # SDK-facing: run against every supported openai release

MODEL = "gpt-4o-mini"
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]


def _same(a: Any, b: Any) -> None:
    da, db = a.model_dump(), b.model_dump()
    for d in (da, db):
        d.pop("id")
        d.pop("created")
        for choice in d["choices"]:
            for call in choice["message"].get("tool_calls") or ():
                call.pop("id")
    assert da == db


@pytest.mark.parametrize("extra", [{}, {"tools": TOOLS, "tool_choice": "required"}], ids=["text", "tool_call"])
def test_forced_stream_equals_non_streamed(
    simulator: Simulator, protect_with: Callable[..., Any], telemetry: Any, extra: dict[str, Any]
) -> None:
    kw: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Write a report."}],
                          "max_completion_tokens": 6000, "seed": 3, **extra}
    raw = openai.OpenAI(base_url=simulator.base_url, api_key="k", max_retries=0)
    client = protect_with(raw)
    expected = raw.chat.completions.create(**kw)
    got = client.chat.completions.create(**kw)
    assert type(got) is type(expected)
    _same(got, expected)
    assert got.usage is not None and got.usage.completion_tokens == expected.usage.completion_tokens  # type: ignore[union-attr]
    assert telemetry.sample(n.FORCED_STREAMS.prom_name, reason="threshold") == 1
    assert telemetry.sample(n.STREAM_CHUNKS.prom_name) > 1  # it really was a stream
    assert telemetry.sample(n.REQUESTS.prom_name) == 1


def test_async_forced_stream_equals_non_streamed(simulator: Simulator, protect_with: Callable[..., Any]) -> None:
    kw: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Long."}], "max_tokens": 5000}
    raw = openai.AsyncOpenAI(base_url=simulator.base_url, api_key="k", max_retries=0)
    client = protect_with(raw)

    async def run() -> tuple[Any, Any]:
        return await raw.chat.completions.create(**kw), await client.chat.completions.create(**kw)

    expected, got = asyncio.run(run())
    _same(got, expected)


def test_below_threshold_and_raw_paths_are_not_forced(
    simulator: Simulator, protect_with: Callable[..., Any], telemetry: Any
) -> None:
    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="k"),
                          Config(streaming=StreamConfig(force_stream_above_tokens=1000)))
    msgs = [{"role": "user", "content": "x"}]
    client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=900)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=msgs, max_tokens=5000)
    assert raw.parse().choices[0].message.content
    assert telemetry.sample(n.FORCED_STREAMS.prom_name) == 0
    client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=1001)
    assert telemetry.sample(n.FORCED_STREAMS.prom_name) == 1


def test_forced_stream_survives_a_cut(simulator: Simulator, protect_with: Callable[..., Any]) -> None:
    kw: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Long."}], "max_tokens": 5000,
                          "extra_headers": {"x-sim-output-tokens": "300"}}
    raw = openai.OpenAI(base_url=simulator.base_url, api_key="k", max_retries=0)
    expected = raw.chat.completions.create(**kw)
    cut = {**kw, "extra_headers": {**kw["extra_headers"], "x-sim-fault": "cut_after=100",
                                   "x-sim-fault-once": "forced-cut"}}
    got = protect_with(raw).chat.completions.create(**cut)
    assert got.choices[0].message.content == expected.choices[0].message.content
    assert got.choices[0].finish_reason == expected.choices[0].finish_reason


def test_adaptive_threshold_learns_and_exports(simulator: Simulator, protect_with: Callable[..., Any],
                                               telemetry: Any) -> None:
    cfg = Config(streaming=StreamConfig(adaptive_threshold=True, adaptive_target_seconds=30.0))
    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="k"), cfg)
    msgs = [{"role": "user", "content": "x"}]
    for _ in client.chat.completions.create(model=MODEL, messages=msgs, stream=True):
        pass
    learned = client._middleware_pipeline.streaming.adaptive.threshold(MODEL)
    assert learned is not None and learned > 0
    assert telemetry.sample(n.ADAPTIVE_THRESHOLD.name) == pytest.approx(learned, rel=0.01)
