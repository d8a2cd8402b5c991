"""The estimator never raises on a body, counts every good part by its rule and each bad part by its bytes."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from middleware.tokens import TokenEstimator, count_request_prompt_tokens, max_output_tokens
from middleware.tokens.tally import MAX_WALK_NODES, Tally, fallback_tokens
from middleware.tokens.text import fallback_count
from middleware.tokens.tools import MAX_SCHEMA_PROPERTIES

GOOD = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"}]


def chat(body: dict[str, Any]) -> tuple[int, tuple[str, ...]]:
    est = TokenEstimator().estimate("chat", "gpt-4o", body)
    return est.prompt_tokens, est.fallback


def deep(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        node = {"type": "object", "properties": {"p": node}}
    return node


def test_a_bad_message_falls_back_alone_the_others_keep_their_rule() -> None:
    good, reasons = chat({"messages": GOOD})
    assert reasons == ()
    for bad, reason in ((7, "message"), ({"role": 123, "content": "x"}, "role"),
                        ({"role": "user", "content": 5}, "content"), ({"role": "user", "name": 5}, "name")):
        total, got = chat({"messages": [*GOOD, bad]})
        assert got == (reason,)
        assert good < total <= good + 3 + fallback_tokens(bad), bad  # the rule's count plus the bad part's bytes


def test_wrong_top_level_types_fall_back_by_their_bytes() -> None:
    assert chat({"messages": 123}) == (3 + fallback_count("123"), ("messages",))
    assert chat({"messages": GOOD, "tools": 5})[1] == ("tools",)
    assert chat({"messages": GOOD, "response_format": 5})[1] == ("response_format",)
    assert TokenEstimator().estimate("responses", "gpt-4o", {"input": 5, "instructions": [1]}).fallback == (
        "instructions", "input")
    assert TokenEstimator().estimate("embeddings", "text-embedding-3-small", {"input": {"a": 1}}).fallback == (
        "input",)


def test_deep_schema_is_walked_without_recursion() -> None:
    """100,000 levels: json.dumps and any recursive walk hit the recursion limit; the rule still applies."""
    body = {"messages": GOOD, "tools": [{"type": "function", "function": {"name": "f", "parameters": deep(10)}}]}
    ten, _ = chat(body)
    body["tools"][0]["function"]["parameters"] = deep(100_000)
    total, reasons = chat(body)
    assert reasons == ("tools",)  # past MAX_SCHEMA_PROPERTIES, the rest by its (walked) bytes
    assert total > ten + MAX_SCHEMA_PROPERTIES * 6


def test_schema_larger_than_the_budget_is_finite_even_when_it_contains_itself() -> None:
    props: dict[str, Any] = {}
    props["loop"] = {"type": "object", "properties": props}
    function = {"name": "f", "parameters": {"properties": props}}
    total, reasons = chat({"messages": GOOD, "tools": [{"type": "function", "function": function}]})
    assert reasons == ("tools",) and total > MAX_SCHEMA_PROPERTIES


def test_cycles_and_unserialisable_values_are_sized_by_a_bounded_walk() -> None:
    loop: list[Any] = ["abcd"]
    loop.append(loop)
    assert fallback_tokens(loop) >= 2
    huge = 10**5000  # str() refuses it (digit limit)
    assert fallback_tokens(huge) >= 5000 // 4
    wide = [[i] for i in range(MAX_WALK_NODES * 2)]
    wide.append(wide)  # not JSON: walked, and the walk stops at its bound
    assert 0 < fallback_tokens(wide) < MAX_WALK_NODES * 2


def test_a_list_that_fell_back_is_noted_every_time_not_cached_as_clean() -> None:
    est = TokenEstimator()
    body = {"messages": GOOD, "tools": [5, {"type": "function", "function": {"name": "f"}}]}
    first = est.estimate("chat", "gpt-4o", body)
    second = est.estimate("chat", "gpt-4o", body)
    assert first.fallback == second.fallback == ("tools",)
    assert first.prompt_tokens == second.prompt_tokens
    assert second.estimator == "fallback"


def test_output_ceilings_the_api_would_refuse_are_not_read() -> None:
    for bad in (-5, 10**30, True, "5", 5.0, math.nan, [5]):
        assert max_output_tokens("chat", {"max_tokens": bad}) is None, bad
        assert max_output_tokens("responses", {"max_output_tokens": bad}) is None, bad
    assert max_output_tokens("chat", {"max_tokens": 10, "n": 10**20}) == 10
    assert max_output_tokens("chat", {"max_completion_tokens": -1, "max_tokens": 7}) == 7
    est = TokenEstimator().estimate("chat", "gpt-4o", {"messages": GOOD, "max_tokens": -5, "n": "2"})
    assert est.max_output_tokens is None and est.fallback == ("max_output_tokens",)


def test_a_tally_notes_each_reason_once_in_order() -> None:
    tally = Tally()
    for reason in ("role", "tools", "role"):
        tally.fell_back(reason)
    assert tally.reasons == ["role", "tools"]


JSON_ISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from(["role", "content", "name", "tool_calls", "function_call", "type", "text", "image_url",
                         "function", "arguments", "properties", "enum", "items", "input", "tools", "x"]),
        inner, max_size=6),
    max_leaves=40,
)
BODY = st.dictionaries(
    st.sampled_from(["messages", "tools", "functions", "response_format", "max_tokens", "max_completion_tokens",
                     "n", "input", "instructions", "text", "max_output_tokens"]),
    JSON_ISH, max_size=6,
)


@given(body=BODY, operation=st.sampled_from(["chat", "responses", "embeddings"]))
def test_any_body_gets_a_non_negative_count_and_never_an_exception(body: dict[str, Any], operation: str) -> None:
    est = TokenEstimator().estimate(operation, "gpt-4o", body)
    assert isinstance(est.prompt_tokens, int) and est.prompt_tokens >= 0
    assert est.max_output_tokens is None or est.max_output_tokens >= 0
    assert (est.estimator == "fallback") == bool(est.fallback)
    assert count_request_prompt_tokens(operation, {**body, "model": 5}) >= 0
    json.dumps(list(est.fallback))  # closed reason codes: plain strings
