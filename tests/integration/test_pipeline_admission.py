"""Admission through the protected client: waits, refusals with clear errors, and their telemetry."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from middleware import Config, LimitConfig, RequestTooLarge, ThrottleTimeout, attempt_history
from middleware.telemetry import names as n

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "hello"}]


def test_refusal_when_the_wait_would_exceed_the_maximum(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    config = Config(limits=LimitConfig(requests_per_window=1, window_seconds=60, max_wait_seconds=0.2))
    client = protect_with(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url), config)
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    with pytest.raises(ThrottleTimeout) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert info.value.needed_seconds > 50  # one request per minute: about a minute to wait
    assert "max_wait_seconds" in str(info.value)
    assert telemetry.sample(n.THROTTLE_DECISIONS.prom_name, decision=n.DECISION_REFUSED, reason="requests") == 1
    assert telemetry.sample(n.REQUESTS.prom_name, outcome="error", error_type="ThrottleTimeout") == 1
    assert simulator.stats()["total"]["received"] == 1  # the refused call never went upstream
    [refused_span] = [s for s in telemetry.spans(f"chat {MODEL}") if s.status.status_code.name == "ERROR"]
    assert [e.attributes[n.A_DECISION] for e in refused_span.events if e.name == n.E_THROTTLE] == ["refused"]


def test_request_that_can_never_fit_fails_at_once(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    config = Config(limits=LimitConfig(tokens_per_window=100, window_seconds=60))
    client = protect_with(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url), config)
    with pytest.raises(RequestTooLarge) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=500)
    assert info.value.limit == 100 and info.value.tokens > 500
    assert telemetry.sample(n.THROTTLE_DECISIONS.prom_name, decision=n.DECISION_REFUSED, reason="too_large") == 1
    assert attempt_history(info.value) == []  # no attempt was made
    assert simulator.stats()["total"]["received"] == 0


def test_waiting_for_capacity_is_recorded(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    config = Config(limits=LimitConfig(requests_per_window=2, window_seconds=1.0, max_wait_seconds=5))
    client = protect_with(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url), config)
    for _ in range(4):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert telemetry.sample(n.THROTTLE_DECISIONS.prom_name, decision=n.DECISION_WAITED) >= 1
    assert telemetry.sample(n.THROTTLE_WAIT.name + "_sum") > 0.3


TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        }, "required": ["city"]},
    },
}]
CONVERSATIONS = {
    "text": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello there!"}],
    "names": [{"role": "system", "name": "policy", "content": "Be kind."},
              {"role": "user", "name": "alice", "content": "Hi, I am Alice."}],
    "tool_calls": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
    ],
}


def test_estimate_equals_the_reported_prompt_tokens(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    """The pre-call estimate (span event) equals the usage the upstream reports: text, names, tools, tool calls."""
    client = protect_with(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url))
    for name, messages in CONVERSATIONS.items():
        telemetry.exporter.clear()
        reply = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, max_tokens=5)
        [span] = telemetry.spans(f"chat {MODEL}")
        [event] = [e for e in span.events if e.name == n.E_ESTIMATE]
        assert event.attributes[n.A_EST_PROMPT_TOKENS] == reply.usage.prompt_tokens, name
        assert event.attributes[n.A_ESTIMATOR] == "tiktoken"
    assert telemetry.sample(n.ESTIMATE_ERROR.name + "_sum", token_type=n.TOKEN_INPUT) == 0
