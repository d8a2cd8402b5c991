"""Issue 12.7: upstreams that are not OpenAI (gateways, proxies) -- a clear typed error, and the caller sees
exactly what the raw SDK shows.

- A body cut short behind valid headers (``truncate_body``: a complete HTTP response whose JSON stops
  half-way, as from a gateway that truncates) reaches the caller as ``MalformedResponse``: an
  ``openai.APIError`` with the status, the upstream request id and an excerpt, retried like a server
  error (so a one-off cut is invisible to the caller, and a persistent one fails after every attempt).
- A gateway that sends the usage chunk with one empty choice (LiteLLM's proxy), or usage on the last
  content chunk: when the middleware added ``include_usage``, the caller still sees the raw SDK's chunks,
  and the call's usage is recorded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import openai
import pytest

from middleware import Config, RetryConfig, StreamConfig, attempt_history
from middleware.errors import MalformedResponse
from middleware.simulator import Simulator
from middleware.telemetry import names as n
from tests.fixtures.telemetry import TelemetryKit

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Tell me about gateways."}]


def _headers(fault: str, *, once: bool = False) -> dict[str, str]:
    headers = {"x-sim-fault": fault, "x-sim-output-tokens": "30"}
    if once:
        headers["x-sim-fault-once"] = uuid.uuid4().hex
    return headers


def _config(attempts: int = 3) -> Config:
    return Config(retry=RetryConfig(max_attempts=attempts, base_delay=0.01, max_delay=0.02))


CREATE: dict[str, Callable[[Any, dict[str, str]], Any]] = {
    "chat": lambda c, h: c.chat.completions.create(model=MODEL, messages=MESSAGES, seed=3, extra_headers=h),
    "responses": lambda c, h: c.responses.create(model=MODEL, input="Tell me about gateways.", extra_headers=h),
    "embeddings": lambda c, h: c.embeddings.create(model="text-embedding-3-small", input=["a", "b"],
                                                   extra_headers=h),
}


def _comparable(result: Any) -> Any:
    """What must match between two answers to the same request (ids and timestamps differ per response)."""
    if hasattr(result, "choices"):
        return [c.message.content for c in result.choices], result.usage.completion_tokens
    if hasattr(result, "output_text"):
        return result.output_text
    return [d.embedding for d in result.data]


# ------------------------------------------------------------------------------------------------ cut-short bodies
@pytest.mark.parametrize("operation", list(CREATE))
def test_a_body_cut_short_is_a_typed_error_with_status_request_id_and_excerpt(
    operation: str, simulator: Simulator, protect_with: Callable[..., Any], telemetry: TelemetryKit,
) -> None:
    raw = openai.OpenAI(base_url=simulator.base_url, api_key="sk-up", max_retries=0)
    with pytest.raises(ValueError):  # the raw SDK: a bare JSONDecodeError, no status, no request id
        CREATE[operation](raw, _headers("truncate_body"))
    simulator.reset_stats()
    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-up"), _config(attempts=3))
    with pytest.raises(MalformedResponse) as caught:
        CREATE[operation](client, _headers("truncate_body"))
    error = caught.value
    assert isinstance(error, openai.APIError)
    assert error.status_code == 200
    assert error.request_id is not None and error.request_id.startswith("req_")
    assert error.excerpt.startswith('{"') and 0 < len(error.excerpt) <= 200
    assert error.request_id in [s.attributes.get(n.A_UPSTREAM_REQUEST_ID) for s in telemetry.spans()]
    assert simulator.stats()["requests"] == 3  # retried: every attempt got a cut body
    assert [a.reason for a in attempt_history(error)] == ["malformed_response"] * 3


@pytest.mark.parametrize("operation", list(CREATE))
def test_a_body_cut_once_is_retried_and_the_caller_gets_the_whole_answer(
    operation: str, simulator: Simulator, protect_with: Callable[..., Any],
) -> None:
    raw = openai.OpenAI(base_url=simulator.base_url, api_key="sk-up")
    expected = _comparable(CREATE[operation](raw, {"x-sim-output-tokens": "30"}))
    simulator.reset_stats()
    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-up"), _config())
    assert _comparable(CREATE[operation](client, _headers("truncate_body", once=True))) == expected
    assert simulator.stats()["requests"] == 2


def test_async_and_forced_stream_calls_see_the_same_typed_error(
    simulator: Simulator, protect_with: Callable[..., Any],
) -> None:
    cfg = Config(retry=RetryConfig(max_attempts=2, base_delay=0.01, max_delay=0.02),
                 streaming=StreamConfig(force_stream_above_tokens=None))
    aclient = protect_with(openai.AsyncOpenAI(base_url=simulator.base_url, api_key="sk-up"), cfg)

    async def call() -> None:
        await aclient.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=_headers("truncate_body"))

    with pytest.raises(MalformedResponse) as caught:
        asyncio.run(call())
    assert caught.value.status_code == 200 and caught.value.request_id
    assert simulator.stats()["requests"] == 2


# ------------------------------------------------------------------------------------------------ usage chunks
def _chunks(stream: Any) -> list[dict[str, Any]]:
    return [c.model_dump(exclude={"id", "created"}) for c in stream]


async def _achunks(stream: Any) -> list[dict[str, Any]]:
    return [c.model_dump(exclude={"id", "created"}) async for c in stream]


GATEWAYS = ("usage_chunk_with_empty_choice", "usage_on_last_chunk")


@pytest.mark.parametrize("fault", GATEWAYS)
@pytest.mark.parametrize("caller_asks_usage", [False, True])
def test_gateway_usage_shapes_show_the_caller_exactly_the_raw_chunks(
    fault: str, caller_asks_usage: bool, simulator: Simulator, protect_with: Callable[..., Any],
    telemetry: TelemetryKit,
) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "seed": 5, "stream": True,
                              "extra_headers": _headers(fault)}
    if caller_asks_usage:
        kwargs["stream_options"] = {"include_usage": True}
    raw = openai.OpenAI(base_url=simulator.base_url, api_key="sk-up")
    expected = _chunks(raw.chat.completions.create(**kwargs))
    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-up"), Config())
    got = _chunks(client.chat.completions.create(**kwargs))
    assert got == expected
    assert any(c["usage"] for c in got) is caller_asks_usage  # the shape under test did reach the caller, or not
    [span] = [s for s in telemetry.spans() if s.parent is None]
    assert span.attributes[n.A_USAGE_OUTPUT] == 30 and span.attributes[n.A_USAGE_INPUT] > 0  # usage recorded


@pytest.mark.parametrize("fault", GATEWAYS)
def test_gateway_usage_shapes_async_and_forced(fault: str, simulator: Simulator,
                                               protect_with: Callable[..., Any]) -> None:
    """The async stream shows the raw chunks; a forced stream reassembles the raw non-streamed completion."""
    kwargs: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "seed": 6, "stream": True,
                              "extra_headers": _headers(fault)}

    async def both() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        raw = openai.AsyncOpenAI(base_url=simulator.base_url, api_key="sk-up")
        client = protect_with(openai.AsyncOpenAI(base_url=simulator.base_url, api_key="sk-up"), Config())
        return (await _achunks(await raw.chat.completions.create(**kwargs)),
                await _achunks(await client.chat.completions.create(**kwargs)))

    expected, got = asyncio.run(both())
    assert got == expected
    plain = {**kwargs, "stream": False, "max_tokens": 500}
    raw_completion = openai.OpenAI(base_url=simulator.base_url, api_key="sk-up").chat.completions.create(**plain)
    forced = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-up"),
                          Config(streaming=StreamConfig(force_stream_above_tokens=100)))
    completion = forced.chat.completions.create(**plain)
    assert completion.choices[0].model_dump() == raw_completion.choices[0].model_dump()
    assert completion.usage == raw_completion.usage
