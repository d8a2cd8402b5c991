"""Stream guard against the simulator: breaks are resumed (sync and async) into one seamless stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai
import pytest

from middleware import Config, StreamConfig
from middleware.errors import StreamInterrupted
from middleware.simulator import Simulator
from middleware.telemetry import names as n
from tests.http import http as httpx2

pytestmark = pytest.mark.sdk  # SDK-facing: run against every supported openai release

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Explain stream resumption in detail."}]
TOKENS = "400"


def _kw(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, "seed": 11, "stream": True, **extra}


def _faults(*specs: str) -> Callable[[httpx2.Request], None]:
    """A request hook: the i-th POST gets the i-th fault spec (then none)."""
    seen = [0]

    def hook(request: httpx2.Request) -> None:
        request.headers["x-sim-output-tokens"] = TOKENS
        if request.method == "POST":
            i = seen[0]
            seen[0] += 1
            if i < len(specs) and specs[i]:
                request.headers["x-sim-fault"] = specs[i]

    return hook


async def _ahook(hook: Callable[[httpx2.Request], None], request: httpx2.Request) -> None:
    hook(request)


def _sync_client(sim: Simulator, *specs: str, timeout: float | None = None) -> openai.OpenAI:
    http = httpx2.Client(event_hooks={"request": [_faults(*specs)]})
    kw: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    return openai.OpenAI(base_url=sim.base_url, api_key="k", max_retries=0, http_client=http, **kw)


def _async_client(sim: Simulator, *specs: str) -> openai.AsyncOpenAI:
    hook = _faults(*specs)
    http = httpx2.AsyncClient(event_hooks={"request": [lambda r: _ahook(hook, r)]})
    return openai.AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0, http_client=http)


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.fixture
def full_text(simulator: Simulator) -> str:
    """The uninterrupted output for the test conversation."""
    raw = _sync_client(simulator)
    return _text(list(raw.chat.completions.create(**_kw())))


def _cfg(**stream: Any) -> Config:
    return Config(streaming=StreamConfig(**stream))


CASES = {
    "cut": ("cut_after=120",),
    "malformed": ("malformed_sse=150",),
    "cut_then_reset": ("cut_after=90", "reset"),  # the continuation's first attempt is reset: retried
}


@pytest.mark.parametrize("case", list(CASES))
def test_sync_break_is_resumed_seamlessly(
    simulator: Simulator, protect_with: Callable[..., Any], telemetry: Any, full_text: str, case: str
) -> None:
    client = protect_with(_sync_client(simulator, *CASES[case]), _cfg())
    chunks = list(client.chat.completions.create(**_kw()))
    assert _text(chunks) == full_text
    assert len({c.id for c in chunks}) == 1  # the seam keeps the stream's id
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.role) == 1  # one opening chunk
    cause = "malformed" if case == "malformed" else "connection"
    assert telemetry.sample(n.STREAM_INTERRUPTIONS.prom_name, cause=cause) == 1
    assert telemetry.sample(n.STREAM_RESUMPTIONS.prom_name, outcome=n.OUTCOME_SUCCESS) == 1
    # one call: one request counted, one call span; the resumed attempts are its children
    assert telemetry.sample(n.REQUESTS.prom_name) == 1
    calls = telemetry.spans(f"chat {MODEL}")
    assert len(calls) == 1
    attempts = telemetry.spans("POST /chat/completions")
    assert len(attempts) == (3 if case == "cut_then_reset" else 2)
    assert all(a.parent.span_id == calls[0].context.span_id for a in attempts)


@pytest.mark.parametrize("case", list(CASES))
def test_async_break_is_resumed_seamlessly(
    simulator: Simulator, protect_with: Callable[..., Any], telemetry: Any, full_text: str, case: str
) -> None:
    client = protect_with(_async_client(simulator, *CASES[case]), _cfg())

    async def run() -> list[Any]:
        stream = await client.chat.completions.create(**_kw())
        return [c async for c in stream]

    chunks = asyncio.run(run())
    assert _text(chunks) == full_text
    assert len({c.id for c in chunks}) == 1
    assert telemetry.sample(n.STREAM_RESUMPTIONS.prom_name, outcome=n.OUTCOME_SUCCESS) == 1
    assert telemetry.sample(n.REQUESTS.prom_name) == 1


def test_sync_stall_past_idle_timeout_is_resumed(
    simulator: Simulator, protect_with: Callable[..., Any], telemetry: Any, full_text: str
) -> None:
    client = protect_with(_sync_client(simulator, "stall_after=60;stall_s=5"), _cfg(idle_timeout_seconds=0.3))
    chunks = list(client.chat.completions.create(**_kw()))
    assert _text(chunks) == full_text
    assert telemetry.sample(n.STREAM_STALLS.prom_name) == 1
    assert telemetry.sample(n.STREAM_INTERRUPTIONS.prom_name, cause="stall") == 1
    assert telemetry.sample(n.STREAM_RESUME_LOST.prom_name + "_sum") >= 0.3


def test_async_stall_past_idle_timeout_is_resumed(
    simulator: Simulator, protect_with: Callable[..., Any], telemetry: Any, full_text: str
) -> None:
    client = protect_with(_async_client(simulator, "stall_after=60;stall_s=5"), _cfg(idle_timeout_seconds=0.3))

    async def run() -> str:
        stream = await client.chat.completions.create(**_kw())
        return _text([c async for c in stream])

    assert asyncio.run(run()) == full_text
    assert telemetry.sample(n.STREAM_STALLS.prom_name) == 1


def test_caller_timeout_is_respected(simulator: Simulator, protect_with: Callable[..., Any]) -> None:
    """A caller's own timeout wins over the idle timeout: a 1 s stall under a 5 s timeout is no stall."""
    client = protect_with(_sync_client(simulator, "stall_after=30;stall_s=0.6", timeout=5.0),
                          _cfg(idle_timeout_seconds=0.2))
    stream = client.chat.completions.create(**_kw())
    list(stream)
    assert stream._mw is not None and stream._mw._resumptions == 0


def test_unrecoverable_interruption_raises_with_partial(
    simulator: Simulator, protect_with: Callable[..., Any], telemetry: Any, full_text: str
) -> None:
    client = protect_with(_sync_client(simulator, "cut_after=70"), _cfg(resume=False))
    seen: list[Any] = []
    with pytest.raises(StreamInterrupted) as info:
        for chunk in client.chat.completions.create(**_kw()):
            seen.append(chunk)
    partial = info.value.partial
    assert partial.text == _text(seen) and len(partial.text) > 0
    assert full_text.startswith(partial.text) and partial.text != full_text
    assert info.value.cause == "connection"
    assert telemetry.sample(n.REQUESTS.prom_name, outcome=n.OUTCOME_ERROR) == 1


def test_max_resumptions_exhausted_returns_partial(
    simulator: Simulator, protect_with: Callable[..., Any], full_text: str
) -> None:
    """Every request is cut: after max_resumptions the stream ends with everything received so far."""
    client = protect_with(_sync_client(simulator, "cut_after=50", "cut_after=50", "cut_after=50"),
                          _cfg(max_resumptions=2, return_partial=True))
    stream = client.chat.completions.create(**_kw())
    text = _text(list(stream))
    assert text == stream.partial.text
    assert full_text.startswith(text) and len(text) > len(full_text) // 4 and text != full_text


def test_async_max_resumptions_exhausted_raises(
    simulator: Simulator, protect_with: Callable[..., Any], full_text: str
) -> None:
    client = protect_with(_async_client(simulator, "cut_after=40", "cut_after=40"), _cfg(max_resumptions=1))

    async def run() -> StreamInterrupted:
        stream = await client.chat.completions.create(**_kw())
        with pytest.raises(StreamInterrupted) as info:
            async for _ in stream:
                pass
        return info.value

    error = asyncio.run(run())
    assert full_text.startswith(error.partial.text) and len(error.partial.text) > 0


def test_responses_background_stream_is_resumed(
    simulator: Simulator, protect_with: Callable[..., Any], telemetry: Any
) -> None:
    kw: dict[str, Any] = {"model": MODEL, "input": "Tell me a long story.", "stream": True,
                          "extra_headers": {"x-sim-output-tokens": TOKENS}}
    raw = openai.OpenAI(base_url=simulator.base_url, api_key="k", max_retries=0)
    expected = [e for e in raw.responses.create(**kw, extra_body={"background": True})]  # every SDK major
    expected_text = "".join(e.delta for e in expected if e.type == "response.output_text.delta")
    client = protect_with(_sync_client(simulator, "cut_after=100"), _cfg(force_background=True))
    events = list(client.responses.create(**kw))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == expected_text
    seqs = [e.sequence_number for e in events]
    assert seqs == list(range(len(expected)))  # nothing skipped, nothing duplicated
    assert events[-1].type == "response.completed"
    assert telemetry.sample(n.STREAM_RESUMPTIONS.prom_name, outcome=n.OUTCOME_SUCCESS) == 1
    assert telemetry.sample(n.REQUESTS.prom_name) == 1


def test_responses_without_background_cannot_resume(simulator: Simulator, protect_with: Callable[..., Any]) -> None:
    client = protect_with(_sync_client(simulator, "cut_after=30"), _cfg())
    with pytest.raises(StreamInterrupted) as info:
        list(client.responses.create(model=MODEL, input="hi", stream=True))
    assert len(info.value.partial.text) > 0


def test_failed_resumption_is_recorded_as_failure(
    simulator: Simulator, protect_with: Callable[..., Any], telemetry: Any, full_text: str
) -> None:
    """The continuation request itself fails (a terminal 400): the resumption counts as a failure.

    Regression: the outcome label was "error" while dashboards and alerts select names.RESUME_FAILURE.
    """
    client = protect_with(_sync_client(simulator, "cut_after=30", "status=400"), _cfg(max_resumptions=1))
    with pytest.raises(StreamInterrupted) as info:
        list(client.chat.completions.create(**_kw()))
    assert full_text.startswith(info.value.partial.text) and info.value.partial.text
    assert telemetry.sample(n.STREAM_RESUMPTIONS.prom_name, outcome=n.RESUME_FAILURE) == 1
    assert telemetry.sample(n.STREAM_RESUMPTIONS.prom_name, outcome=n.RESUME_SUCCESS) == 0


def test_successful_resumption_is_recorded_as_success(
    simulator: Simulator, protect_with: Callable[..., Any], telemetry: Any, full_text: str
) -> None:
    client = protect_with(_sync_client(simulator, "cut_after=30"), _cfg())
    assert _text(list(client.chat.completions.create(**_kw()))) == full_text
    assert telemetry.sample(n.STREAM_RESUMPTIONS.prom_name, outcome=n.RESUME_SUCCESS) == 1
