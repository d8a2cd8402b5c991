"""Issue 12.3: a malformed request body gets the API's answer, with and without protect().

The estimator reads what it can and counts the rest by its bytes (``Estimate.fallback`` names the parts;
the call's estimate is ``estimator="fallback"``), the request is sent once, and the upstream (the
simulator, which refuses wrong types with a 400 as OpenAI does) answers. A body the SDK itself cannot
serialise (a cycle, NaN, an integer past Python's digit limit) fails in the SDK, the same way, with
nothing sent. Neither the estimator nor any other stage may raise first, and the pipeline's last-resort
catch (counted as a telemetry error) must not be what saved the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from middleware import Config
from middleware.simulator import Simulator
from middleware.telemetry import names as n
from tests.fixtures.telemetry import TelemetryKit

MODEL = "gpt-4o-mini"
OK = [{"role": "user", "content": "Say hello"}]


def nested_schema(depth: int, fan_out: int = 1) -> dict[str, Any]:
    """A tool's parameters with object properties nested ``depth`` levels (``fan_out`` refs to one child)."""
    node: dict[str, Any] = {"type": "string", "description": "leaf"}
    for i in range(depth):
        node = {"type": "object", "properties": {f"p{i}_{k}": node for k in range(fan_out)}}
    return node


def tool(parameters: Any) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": "f", "description": "d", "parameters": parameters}}]


def cycle_message() -> dict[str, Any]:
    """An assistant message whose tool calls contain the message itself."""
    message: dict[str, Any] = {"role": "assistant", "content": None}
    message["tool_calls"] = [message]
    return message


def cycle_content() -> dict[str, Any]:
    """A user message whose content list contains itself."""
    content: list[Any] = [{"type": "text", "text": "hi"}]
    content.append(content)
    return {"role": "user", "content": content}


class NoStr:
    def __str__(self) -> str:
        raise RuntimeError("str() refused")


@dataclass(frozen=True)
class Case:
    """One hostile body: the operation, the create() arguments, and the reason codes it must fall back on."""

    operation: str
    kwargs: Callable[[], dict[str, Any]]
    reasons: tuple[str, ...] = ()
    stream: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


SHARED_PART = {"type": "text", "text": "the same part object, many times"}

CASES: dict[str, Case] = {
    # Chat Completions: wrong types at every level the estimator reads.
    "messages=123": Case("chat", lambda: {"messages": 123}, ("messages",)),
    "messages=str": Case("chat", lambda: {"messages": "hello"}, ("messages",)),
    "messages=dict": Case("chat", lambda: {"messages": {"role": "user", "content": "hi"}}, ("messages",)),
    "message=int": Case("chat", lambda: {"messages": [*OK, 7]}, ("message",)),
    "message=str": Case("chat", lambda: {"messages": ["hello"]}, ("message",)),
    "role=123": Case("chat", lambda: {"messages": [{"role": 123, "content": "hi"}]}, ("role",)),
    "role=list": Case("chat", lambda: {"messages": [{"role": ["user"], "content": "hi"}]}, ("role",)),
    "name=5": Case("chat", lambda: {"messages": [{"role": "user", "content": "hi", "name": 5}]}, ("name",)),
    "content=5": Case("chat", lambda: {"messages": [{"role": "user", "content": 5}]}, ("content",)),
    "content=dict": Case("chat", lambda: {"messages": [{"role": "user", "content": {"text": "hi"}}]}, ("content",)),
    "content parts of wrong types": Case("chat", lambda: {"messages": [{"role": "user", "content": [
        3, None, ["x"], {"type": "text", "text": 7}, {"type": "text", "text": "fine"}]}]}, ("content",)),
    "content=bytes part": Case("chat", lambda: {"messages": [{"role": "user", "content": [b"hi"]}]}, ("content",)),
    "tools=5": Case("chat", lambda: {"messages": OK, "tools": 5}, ("tools",)),
    "tools=str": Case("chat", lambda: {"messages": OK, "tools": "get_weather"}, ("tools",)),
    "tools=[5, None]": Case("chat", lambda: {"messages": OK, "tools": [5, None]}, ("tools",)),
    "tool.function=5": Case("chat", lambda: {"messages": OK, "tools": [{"type": "function", "function": 5}]},
                            ("tools",)),
    "functions=5": Case("chat", lambda: {"messages": OK, "functions": 5}, ("tools",)),
    "tool_calls=5": Case("chat", lambda: {"messages": [{"role": "assistant", "content": None, "tool_calls": 5},
                                                       *OK]}, ("tool_calls",)),
    "tool_calls=[5]": Case("chat", lambda: {"messages": [{"role": "assistant", "tool_calls": [5]}, *OK]},
                           ("tool_calls",)),
    "tool_call.function=5": Case("chat", lambda: {"messages": [
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": 5}]}, *OK]},
        ("tool_calls",)),
    "tool_call arguments=dict": Case("chat", lambda: {"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}, *OK]},
        ("tool_calls",)),
    "function_call=5": Case("chat", lambda: {"messages": [{"role": "assistant", "function_call": 5}, *OK]},
                            ("function_call",)),
    "response_format=5": Case("chat", lambda: {"messages": OK, "response_format": 5}, ("response_format",)),
    "max_tokens=10**30": Case("chat", lambda: {"messages": OK, "max_tokens": 10**30}, ("max_output_tokens",)),
    "max_tokens=-5": Case("chat", lambda: {"messages": OK, "max_tokens": -5}, ("max_output_tokens",)),
    "max_tokens=True": Case("chat", lambda: {"messages": OK, "max_tokens": True}, ("max_output_tokens",)),
    "max_tokens='5'": Case("chat", lambda: {"messages": OK, "max_tokens": "5"}, ("max_output_tokens",)),
    "n=10**20": Case("chat", lambda: {"messages": OK, "max_tokens": 5, "n": 10**20}, ("n",)),
    "stream_options=5 (stream)": Case("chat", lambda: {"messages": OK, "stream": True, "stream_options": 5},
                                      stream=True),
    "stream_options=str (forced stream)": Case("chat", lambda: {"messages": OK, "max_tokens": 5000,
                                                                "stream_options": "x"}),
    "role=123 (stream)": Case("chat", lambda: {"messages": [{"role": 123, "content": "hi"}], "stream": True},
                              ("role",), stream=True),
    # Structures: deep, shared, cyclic, unserialisable.
    "tool schema nested 500 levels": Case("chat", lambda: {"messages": OK, "tools": tool(nested_schema(500))}),
    "tool schema nested 12 levels, 2 refs to one child each": Case(
        "chat", lambda: {"messages": OK, "tools": tool({**nested_schema(12, 2), "x": 5}), "max_tokens": -1},
        ("max_output_tokens",)),
    "one part object shared 2000 times, content=5 next": Case(
        "chat", lambda: {"messages": [{"role": "user", "content": [SHARED_PART] * 2000}, {"role": "user",
                                                                                         "content": 5}]},
        ("content",)),
    "message containing itself": Case("chat", lambda: {"messages": [cycle_message(), *OK]}, ("tool_calls",)),
    "content list containing itself": Case("chat", lambda: {"messages": [cycle_content()]}, ("content",)),
    "tools list containing itself": Case("chat", lambda: (lambda t: (t.append(t), {"messages": OK, "tools": t})[1])(
        []), ("tools",)),
    "NaN in a tool enum": Case("chat", lambda: {"messages": OK, "tools": tool({"properties": {"a": {
        "enum": [float("nan")]}}}), "max_tokens": "x"}, ("max_output_tokens",)),
    "integer past the digit limit": Case("chat", lambda: {"messages": [{"role": "user", "content": 10**5000}]},
                                         ("content",)),
    "a value whose str() raises": Case("chat", lambda: {"messages": OK, "tools": tool({"properties": {
        "a": {"description": NoStr()}}})}, ("tools",)),
    # Responses.
    "responses input=123": Case("responses", lambda: {"input": 123}, ("input",)),
    "responses input=[123]": Case("responses", lambda: {"input": ["hi", 123]}, ("input",)),
    "responses role=5": Case("responses", lambda: {"input": [{"role": 5, "content": "hi"}]}, ("role",)),
    "responses instructions=5": Case("responses", lambda: {"input": "hi", "instructions": 5}, ("instructions",)),
    "responses tools=5": Case("responses", lambda: {"input": "hi", "tools": 5}, ("tools",)),
    "responses text=5": Case("responses", lambda: {"input": "hi", "text": 5}, ("text",)),
    "responses content part=5": Case("responses", lambda: {"input": [{"role": "user", "content": [5]}]},
                                     ("content",)),
    "responses max_output_tokens=-1": Case("responses", lambda: {"input": "hi", "max_output_tokens": -1},
                                           ("max_output_tokens",)),
    # Embeddings.
    "embeddings input=5": Case("embeddings", lambda: {"input": 5}, ("input",)),
    "embeddings input=dict": Case("embeddings", lambda: {"input": {"text": "hi"}}, ("input",)),
    "embeddings input=[None, 1.5]": Case("embeddings", lambda: {"input": ["hi", None, 1.5]}, ("input",)),
}


def _create(client: Any, case: Case) -> Callable[[], Any]:
    kwargs = {"model": "text-embedding-3-small" if case.operation == "embeddings" else MODEL, **case.kwargs()}
    resource = {"chat": lambda c: c.chat.completions, "responses": lambda c: c.responses,
                "embeddings": lambda c: c.embeddings}[case.operation](client)
    return lambda: resource.create(**kwargs)


def outcome(run: Callable[[], Any]) -> tuple[str, int | None]:
    """("ok", None), or the exception's type name and HTTP status."""
    try:
        result = run()
        if isinstance(result, openai.Stream):
            list(result)
    except Exception as exc:  # RecursionError included
        return type(exc).__name__, getattr(exc, "status_code", None)
    return "ok", None


async def aoutcome(run: Callable[[], Any]) -> tuple[str, int | None]:
    try:
        result = await run()
        if isinstance(result, openai.AsyncStream):
            [chunk async for chunk in result]
    except Exception as exc:
        return type(exc).__name__, getattr(exc, "status_code", None)
    return "ok", None


def sent(simulator: Simulator) -> int:
    """Requests that reached a generation endpoint since the last reset (readable bodies or not)."""
    return int(simulator.stats()["requests"])


def check_fallback_counted(telemetry: TelemetryKit, case: Case) -> None:
    """The estimate fell back for exactly the expected parts, counted, on the span; the safety net never fired."""
    assert telemetry.sample("llm_middleware_telemetry_errors_total") == 0, "a stage raised (safety net used)"
    fallback = telemetry.sample("llm_middleware_token_estimates_total", estimator="fallback")
    tiktoken = telemetry.sample("llm_middleware_token_estimates_total", estimator="tiktoken")
    if not case.reasons:
        assert (fallback, tiktoken) == (0, 1)
        return
    assert (fallback, tiktoken) == (1, 0)
    [span] = [s for s in telemetry.spans() if s.attributes.get(n.A_OPERATION) == case.operation
              and s.kind.name != "INTERNAL" and s.parent is None]
    degraded = [e for e in span.events if e.name == n.E_TELEMETRY_DEGRADED]
    assert len(degraded) == 1 and tuple(degraded[0].attributes[n.A_REASON]) == case.reasons, degraded


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_body_gets_the_same_answer_with_and_without_protect(
    name: str, simulator: Simulator, telemetry: TelemetryKit, protect_with: Callable[..., Any],
) -> None:
    case = CASES[name]
    raw = openai.OpenAI(base_url=simulator.base_url, api_key="sk-bodies", max_retries=0)
    expected = outcome(_create(raw, case))
    raw_sent = sent(simulator)
    simulator.reset_stats()
    protected = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-bodies"), Config())
    assert outcome(_create(protected, case)) == expected
    assert sent(simulator) == min(raw_sent, 1), "sent once when the SDK can send it, else not at all"
    assert expected[0] != "InternalServerError", "the upstream judged the body, it did not crash on it"
    check_fallback_counted(telemetry, case)


@pytest.mark.parametrize("name", ["role=123", "tools=5", "content parts of wrong types", "role=123 (stream)",
                                  "stream_options=5 (stream)", "responses input=[123]", "embeddings input=5",
                                  "tool schema nested 500 levels", "message containing itself"])
def test_hostile_body_async_gets_the_same_answer(
    name: str, simulator: Simulator, telemetry: TelemetryKit, protect_with: Callable[..., Any],
) -> None:
    case = CASES[name]

    async def both() -> tuple[tuple[str, int | None], int, tuple[str, int | None], int]:
        raw = openai.AsyncOpenAI(base_url=simulator.base_url, api_key="sk-bodies", max_retries=0)
        expected = await aoutcome(_create(raw, case))
        raw_sent = sent(simulator)
        simulator.reset_stats()
        protected = protect_with(openai.AsyncOpenAI(base_url=simulator.base_url, api_key="sk-bodies"), Config())
        got = await aoutcome(_create(protected, case))
        return expected, raw_sent, got, sent(simulator)

    expected, raw_sent, got, protected_sent = asyncio.run(both())
    assert got == expected
    assert protected_sent == min(raw_sent, 1)
    check_fallback_counted(telemetry, case)


def test_a_good_body_is_not_a_fallback(simulator: Simulator, telemetry: TelemetryKit,
                                       protect_with: Callable[..., Any]) -> None:
    """The control: a well-formed body is counted by the rules alone (the counters above can tell)."""
    protected = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="sk-bodies"), Config())
    protected.chat.completions.create(model=MODEL, messages=OK, tools=tool(nested_schema(3)), max_tokens=5)
    check_fallback_counted(telemetry, Case("chat", lambda: {}))
