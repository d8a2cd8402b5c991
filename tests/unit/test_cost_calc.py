"""Cost per call from reported usage, worst cases, and usage read from SDK objects and raw JSON.

Every expected figure is computed here by hand from OpenAI's published prices (USD per 1M tokens),
written out literally; none is read back from the price table.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response

from middleware.cost import Cost, Unpriced, Usage, cost_of, load_prices, read_usage, shipped_prices, usage_from
from middleware.cost import worst_case as worst
from middleware.telemetry import names as n

M = 1_000_000


def priced(model: str, usage: Usage | None, **kw: Any) -> Cost:
    result = cost_of(shipped_prices(), model, usage, **kw)
    assert isinstance(result, Cost), result
    return result


def test_chat_with_cached_input() -> None:
    # gpt-4o: $2.50 input, $1.25 cached input, $10.00 output
    cost = priced("gpt-4o-2024-08-06", Usage(input_tokens=2_000, output_tokens=500, cached_input_tokens=1_024))
    assert cost.input_usd == pytest.approx(976 * 2.50 / M, rel=1e-12)
    assert cost.cached_input_usd == pytest.approx(1_024 * 1.25 / M, rel=1e-12)
    assert cost.output_usd == pytest.approx(500 * 10.00 / M, rel=1e-12)
    assert cost.reasoning_usd == 0
    assert cost.total_usd == pytest.approx(0.00872, rel=1e-12)
    assert cost.cached_savings_usd == pytest.approx(1_024 * (2.50 - 1.25) / M, rel=1e-12)
    assert cost.priced_as == "gpt-4o" and cost.model == "gpt-4o-2024-08-06"


def test_reasoning_tokens_are_billed_at_the_output_rate() -> None:
    # o3-mini: $1.10 input, $4.40 output; 600 of the 800 output tokens were reasoning
    cost = priced("o3-mini", Usage(input_tokens=1_500, output_tokens=800, reasoning_tokens=600))
    assert cost.output_usd == pytest.approx(200 * 4.40 / M, rel=1e-12)
    assert cost.reasoning_usd == pytest.approx(600 * 4.40 / M, rel=1e-12)
    assert cost.total_usd == pytest.approx(0.00165 + 0.00088 + 0.00264, rel=1e-12)


def test_gpt5_nano_cached_and_reasoning() -> None:
    # gpt-5-nano: $0.05 input, $0.005 cached input, $0.40 output
    cost = priced("gpt-5-nano", Usage(input_tokens=5_000, output_tokens=3_000, cached_input_tokens=4_992,
                                      reasoning_tokens=2_500))
    assert cost.total_usd == pytest.approx((8 * 0.05 + 4_992 * 0.005 + 500 * 0.40 + 2_500 * 0.40) / M, rel=1e-12)


def test_embeddings_price_input_only() -> None:
    # text-embedding-3-small: $0.02 per 1M tokens
    cost = priced("text-embedding-3-small", Usage(input_tokens=12_345))
    assert cost.total_usd == pytest.approx(12_345 * 0.02 / M, rel=1e-12)
    assert cost_of(shipped_prices(), "text-embedding-3-small", Usage(10, 5)) == Unpriced(
        "text-embedding-3-small", n.UNPRICED_NO_OUTPUT_PRICE)


def test_batch_discount_halves_every_part() -> None:
    # gpt-4o-mini at the Batch API's 50% off: $0.075 input, $0.0375 cached, $0.30 output
    cost = priced("gpt-4o-mini", Usage(4_000, 1_000, 2_048), batch=True)
    assert cost.total_usd == pytest.approx((1_952 * 0.075 + 2_048 * 0.0375 + 1_000 * 0.30) / M, rel=1e-12)
    assert cost.batch


def test_reasoning_priced_separately_when_the_table_says_so() -> None:
    table = load_prices(overrides={"models": {"o4-mini": {"input": 1.10, "output": 4.40, "reasoning": 8.80}}})
    cost = cost_of(table, "o4-mini", Usage(1_000, 1_000, reasoning_tokens=400))
    assert isinstance(cost, Cost)
    assert cost.total_usd == pytest.approx((1_000 * 1.10 + 600 * 4.40 + 400 * 8.80) / M, rel=1e-12)


def test_unpriced_calls_say_why() -> None:
    prices = shipped_prices()
    assert cost_of(prices, "my-local-llama", Usage(10, 10)) == Unpriced("my-local-llama", n.UNPRICED_UNKNOWN_MODEL)
    assert cost_of(prices, "gpt-4o", None) == Unpriced("gpt-4o", n.UNPRICED_NO_USAGE)


def test_parts_of_one_call_add_up() -> None:
    # an interrupted stream (its prompt and the 40 tokens received) plus the request that resumed it
    first = priced("gpt-4.1", Usage(1_200, 40))
    rest = priced("gpt-4.1", Usage(1_240, 160, cached_input_tokens=1_152))
    total = first + rest
    assert isinstance(total, Cost)
    # gpt-4.1: $2.00 input, $0.50 cached, $8.00 output
    assert total.total_usd == pytest.approx((1_200 * 2 + 40 * 8 + 88 * 2 + 1_152 * 0.5 + 160 * 8) / M, rel=1e-12)
    assert (first + Unpriced("gpt-4.1", "no_usage")) == Unpriced("gpt-4.1", "no_usage")
    assert Usage(1_200, 40) + Usage(1_240, 160, 1_152) == Usage(2_440, 200, 1_152)


def test_worst_case_uses_the_request_ceiling_then_the_table_then_the_default() -> None:
    prices = shipped_prices()
    # gpt-4.1: 1,000 prompt tokens uncached at $2.00 + 2,000 output tokens at $8.00
    assert worst(prices, "gpt-4.1", 1_000, 2_000).total_usd == pytest.approx(0.018, rel=1e-12)
    # no ceiling in the request: gpt-4.1's published maximum output of 32,768 tokens
    assert worst(prices, "gpt-4.1", 1_000, None).total_usd == pytest.approx((2_000 + 32_768 * 8) / M, rel=1e-12)
    # gpt-5.4 has no ceiling in the table: the configured default applies, or none is known
    assert worst(prices, "gpt-5.4", 100, None, default_max_output_tokens=1_000).total_usd == pytest.approx(
        (100 * 2.50 + 1_000 * 15.00) / M, rel=1e-12)
    assert worst(prices, "gpt-5.4", 100, None) == Unpriced("gpt-5.4", n.UNPRICED_NO_CEILING)
    # embeddings have no output; unknown models are unpriced
    assert worst(prices, "text-embedding-3-large", 5_000, None).total_usd == pytest.approx(5_000 * 0.13 / M)
    assert isinstance(worst(prices, "mystery", 1, 1), Unpriced)


def test_worst_case_bounds_the_real_cost() -> None:
    prices = shipped_prices()
    for model in ("gpt-4o", "o3", "gpt-5-mini", "gpt-4.1-nano"):
        bound = worst(prices, model, 3_000, 1_000)
        for usage in (Usage(3_000, 1_000), Usage(3_000, 1_000, 2_944, 900), Usage(3_000, 0, 3_000)):
            assert priced(model, usage).total_usd <= bound.total_usd + 1e-15


def test_usage_from_sdk_objects() -> None:
    chat = ChatCompletion.construct(**{  # the SDK builds responses without validation
        "id": "c", "object": "chat.completion", "created": 1, "model": "o3-mini", "choices": [],
        "usage": {"prompt_tokens": 1_300, "completion_tokens": 90, "total_tokens": 1_390,
                  "prompt_tokens_details": {"cached_tokens": 1_152},
                  "completion_tokens_details": {"reasoning_tokens": 64}},
    })
    assert usage_from(chat) == Usage(1_300, 90, 1_152, 64)
    bare = ChatCompletion.model_validate({
        "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o", "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                  "prompt_tokens_details": None, "completion_tokens_details": None},
    })
    assert usage_from(bare) == Usage(10, 2)
    response = Response.model_validate({
        "id": "r", "object": "response", "created_at": 1, "model": "gpt-5", "output": [], "tool_choice": "auto",
        "tools": [], "parallel_tool_calls": True,
        "usage": {"input_tokens": 2_000, "input_tokens_details": {"cached_tokens": 1_920, "cache_write_tokens": 0},
                  "output_tokens": 300, "output_tokens_details": {"reasoning_tokens": 256}, "total_tokens": 2_300},
    })
    assert usage_from(response) == Usage(2_000, 300, 1_920, 256)
    emb = CreateEmbeddingResponse.model_validate({
        "object": "list", "data": [], "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 7, "total_tokens": 7}})
    assert usage_from(emb) == Usage(7, 0)
    chunk = ChatCompletionChunk.model_validate({
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [], "usage": None})
    assert usage_from(chunk) is None


def test_usage_from_raw_json_and_older_sdk_shapes() -> None:
    usage_chunk = json.loads(
        '{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":2100,'
        '"completion_tokens":50,"total_tokens":2150,"prompt_tokens_details":{"cached_tokens":2048},'
        '"completion_tokens_details":{"reasoning_tokens":0}}}')
    assert usage_from(usage_chunk) == Usage(2_100, 50, 2_048, 0)
    completed = {"type": "response.completed", "sequence_number": 9, "response": {"usage": {
        "input_tokens": 40, "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 12}}}}
    assert usage_from(completed) == Usage(40, 30, 0, 12)
    # openai 1.x objects: details missing or None; attribute access only
    old = SimpleNamespace(usage=SimpleNamespace(prompt_tokens=5, completion_tokens=6, total_tokens=11))
    assert usage_from(old) == Usage(5, 6)
    assert read_usage({"total_tokens": 3}) is None
    assert read_usage(None) is None
    # details beyond the totals never make a call cheaper than its tokens allow
    assert read_usage({"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 500}}) == Usage(100, 0, 100)
    with pytest.raises(ValueError, match="input_tokens"):
        Usage(-1, 0)
    with pytest.raises(ValueError, match="reasoning_tokens"):
        Usage(1, 1, 0, -2)


def test_usage_fields_a_gateway_adds_are_read_from_the_sdk_model() -> None:
    """A gateway answering chat with Responses-style usage names: the SDK keeps them as extra fields."""
    chat = ChatCompletion.construct(**{  # the SDK builds responses without validation
        "id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [],
        "usage": {"input_tokens": 12, "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 3}}})
    assert type(chat.usage).__name__ == "CompletionUsage"
    assert usage_from(chat) == Usage(12, 7, 0, 3)
    # a Mapping that is not a dict, and an object with properties only
    from types import MappingProxyType

    assert read_usage(MappingProxyType({"prompt_tokens": 4, "completion_tokens": 1})) == Usage(4, 1)

    class Props:
        @property
        def prompt_tokens(self) -> int:
            return 9

        completion_tokens = 2

    assert read_usage(Props()) == Usage(9, 2)
