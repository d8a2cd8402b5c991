"""The cost path rehearsed offline: the simulator's usage details over real HTTP, priced by hand.

Expected costs are computed in each test from OpenAI's published prices (USD per 1M tokens, written out
literally) and the token counts the server reported; expected cached counts follow OpenAI's documented
rule (cache hits for a repeated prefix of at least 1024 tokens, in 128-token increments).
"""

from __future__ import annotations

import uuid
from typing import Any

import openai
import pytest

from middleware.cost import CostServices, Usage, usage_from
from middleware.simulator import Simulator, SimulatorConfig, start_subprocess
from middleware.tokens import count_request_prompt_tokens

M = 1_000_000


def client(sim: Simulator, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0, default_headers=headers or None)


def long_prompt(words: int = 2_500) -> str:
    """A unique long text (unique per test so that the shared simulator's prompt cache starts cold)."""
    return f"Context {uuid.uuid4().hex}: " + "the river carries stone and light " * (words // 6)


def cached_by_rule(prompt_tokens: int) -> int:
    return 0 if prompt_tokens < 1024 else 1024 + 128 * ((prompt_tokens - 1024) // 128)


def test_chat_repeated_prefix_is_cached_and_priced(simulator: Simulator) -> None:
    c = client(simulator)
    system = {"role": "system", "content": long_prompt()}
    messages: list[Any] = [system, {"role": "user", "content": "Summarise."}]
    first = c.chat.completions.create(model="gpt-4o", messages=messages)
    second = c.chat.completions.create(model="gpt-4o", messages=messages)
    assert first.usage is not None and second.usage is not None
    assert first.usage.prompt_tokens_details is not None and second.usage.prompt_tokens_details is not None
    prompt = second.usage.prompt_tokens
    assert prompt > 2_000
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == cached_by_rule(prompt)
    # same long system prompt, another question: the shared prefix is cached, the rest is not
    third = c.chat.completions.create(model="gpt-4o", messages=[system, {"role": "user", "content": "List."}])
    assert third.usage is not None and third.usage.prompt_tokens_details is not None
    assert 1024 <= (third.usage.prompt_tokens_details.cached_tokens or 0) < third.usage.prompt_tokens
    # another model does not share the cache
    other = c.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert other.usage is not None and other.usage.prompt_tokens_details is not None
    assert other.usage.prompt_tokens_details.cached_tokens == 0

    cost = CostServices().settle(None, second.model, usage_from(second), tags={})
    cached, out = cached_by_rule(prompt), second.usage.completion_tokens
    # gpt-4o: $2.50 input, $1.25 cached input, $10.00 output
    assert cost.total_usd == pytest.approx(((prompt - cached) * 2.50 + cached * 1.25 + out * 10.00) / M, rel=1e-12)


def test_reasoning_tokens_for_reasoning_models_only(simulator: Simulator) -> None:
    user = [{"role": "user", "content": f"Prove it {uuid.uuid4().hex}."}]
    plain = client(simulator).chat.completions.create(model="gpt-4o", messages=user)  # type: ignore[arg-type]
    assert plain.usage is not None and plain.usage.completion_tokens_details is not None
    assert plain.usage.completion_tokens_details.reasoning_tokens == 0
    o3 = client(simulator, **{"x-sim-reasoning-tokens": "300"}).chat.completions.create(
        model="o3-mini", messages=user)  # type: ignore[arg-type]
    assert o3.usage is not None and o3.usage.completion_tokens_details is not None
    visible = o3.usage.completion_tokens - 300
    assert o3.usage.completion_tokens_details.reasoning_tokens == 300 and visible > 0
    cost = CostServices().settle(None, o3.model, usage_from(o3), tags={})
    # o3-mini: $1.10 input, $4.40 output (reasoning billed as output)
    assert cost.reasoning_usd == pytest.approx(300 * 4.40 / M, rel=1e-12)
    assert cost.total_usd == pytest.approx((o3.usage.prompt_tokens * 1.10 + (visible + 300) * 4.40) / M, rel=1e-12)
    # reasoning comes first: a small max_completion_tokens can leave no visible output
    capped = client(simulator, **{"x-sim-reasoning-tokens": "300"}).chat.completions.create(
        model="o4-mini", messages=user, max_completion_tokens=120)  # type: ignore[arg-type]
    assert capped.usage is not None and capped.usage.completion_tokens_details is not None
    assert (capped.usage.completion_tokens, capped.usage.completion_tokens_details.reasoning_tokens) == (120, 120)
    assert capped.choices[0].message.content == "" and capped.choices[0].finish_reason == "length"
    # without the header the count is deterministic per conversation, and lower at low effort
    a = client(simulator).chat.completions.create(model="gpt-5", messages=user)  # type: ignore[arg-type]
    b = client(simulator).chat.completions.create(model="gpt-5", messages=user)  # type: ignore[arg-type]
    low = client(simulator).chat.completions.create(
        model="gpt-5", messages=user, reasoning_effort="low")  # type: ignore[arg-type]
    details = [x.usage.completion_tokens_details.reasoning_tokens for x in (a, b, low)  # type: ignore[union-attr]
               if x.usage and x.usage.completion_tokens_details]
    assert details[0] == details[1] > details[2] > 0


def test_streamed_usage_chunk_carries_the_details(simulator: Simulator) -> None:
    c = client(simulator, **{"x-sim-reasoning-tokens": "64"})
    messages: Any = [{"role": "system", "content": long_prompt()}, {"role": "user", "content": "Go."}]
    c.chat.completions.create(model="o4-mini", messages=messages)  # warms the prompt cache
    chunks = list(c.chat.completions.create(model="o4-mini", messages=messages, stream=True,
                                            stream_options={"include_usage": True}))
    content_chunks = [ch for ch in chunks if ch.choices and ch.choices[0].delta.content]
    usage = usage_from(chunks[-1])
    assert usage is not None and usage.reasoning_tokens == 64
    assert usage.output_tokens - usage.reasoning_tokens == len(content_chunks)  # one chunk per visible token
    assert usage.cached_input_tokens == cached_by_rule(usage.input_tokens)
    cost = CostServices().settle(None, "o4-mini", usage, tags={})
    # o4-mini: $1.10 input, $0.275 cached input, $4.40 output
    cached = usage.cached_input_tokens
    assert cost.total_usd == pytest.approx(
        ((usage.input_tokens - cached) * 1.10 + cached * 0.275 + usage.output_tokens * 4.40) / M, rel=1e-12)


def test_responses_and_embeddings_usage_details(simulator: Simulator) -> None:
    c = client(simulator, **{"x-sim-reasoning-tokens": "40"})
    text = long_prompt()
    c.responses.create(model="gpt-5-mini", input=text)
    done = [e for e in c.responses.create(model="gpt-5-mini", input=text, stream=True)
            if e.type == "response.completed"]
    usage = usage_from(done[0])
    assert usage is not None
    assert usage.cached_input_tokens == cached_by_rule(usage.input_tokens) > 0 and usage.reasoning_tokens == 40
    cost = CostServices().settle(None, "gpt-5-mini", usage, tags={})
    # gpt-5-mini: $0.25 input, $0.025 cached input, $2.00 output
    cached = usage.cached_input_tokens
    assert cost.total_usd == pytest.approx(
        ((usage.input_tokens - cached) * 0.25 + cached * 0.025 + usage.output_tokens * 2.00) / M, rel=1e-12)

    emb = client(simulator).embeddings.create(model="text-embedding-3-large", input=["one two three", "four"])
    emb_usage = usage_from(emb)
    assert emb_usage == Usage(emb.usage.prompt_tokens, 0)
    emb_cost = CostServices().settle(None, emb.model, emb_usage, tags={})
    assert emb_cost.total_usd == pytest.approx(emb.usage.prompt_tokens * 0.13 / M, rel=1e-12)  # $0.13 per 1M


def test_an_interrupted_stream_costs_what_it_and_its_resumption_consumed(simulator: Simulator) -> None:
    """The pattern the pipeline follows: the broken request is charged its prompt and the tokens received,
    the resumed request its reported usage; the stream's cost is the sum."""
    services = CostServices()
    body: dict[str, Any] = {"model": "gpt-4.1-mini", "messages": [
        {"role": "user", "content": f"Describe a bridge {uuid.uuid4().hex}."}]}
    c = client(simulator, **{"x-sim-output-tokens": "60"})
    received: list[str] = []
    with pytest.raises(openai.APIError):  # raised while iterating, after the 25th chunk
        for chunk in c.chat.completions.create(**body, stream=True, extra_headers={"x-sim-fault": "cut_after=25"}):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert len(received) == 25
    broken = Usage(count_request_prompt_tokens("chat", body), len(received))
    resumed_body = {**body, "messages": [*body["messages"], {"role": "assistant", "content": "".join(received)}]}
    rest = list(c.chat.completions.create(**resumed_body, stream=True, stream_options={"include_usage": True}))
    reported = usage_from(rest[-1])
    assert reported is not None and reported.output_tokens == 60 - 25
    total = services.settle(None, "gpt-4.1-mini", broken, tags={}) + services.settle(
        None, "gpt-4.1-mini", reported, tags={})
    # gpt-4.1-mini: $0.40 input, $1.60 output
    expected = (broken.input_tokens * 0.40 + 25 * 1.60 + reported.input_tokens * 0.40 + 35 * 1.60) / M
    assert total.total_usd == pytest.approx(expected, rel=1e-12)
    assert reported.input_tokens > broken.input_tokens  # the resumption re-sends the prompt and the partial text


def test_without_tokenizer_data_a_long_prompt_is_answered_and_cached(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Any) -> None:
    """Without tiktoken's data the simulator counts in groups of up to 4 bytes, whose ids pass 2**32: a prompt of
    more than 1,024 of them is answered (its prompt-cache digest overflowed into a 500 before) and its repeat is
    cached by OpenAI's rule."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty: no encoding loads, in the simulator either
    with start_subprocess(SimulatorConfig()) as sim:
        client = openai.OpenAI(api_key="sk-test", base_url=sim.base_url, max_retries=0)
        messages = [{"role": "system", "content": "A line of the team handbook. " * 300},
                    {"role": "user", "content": "Summarise it."}]
        first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=5)
        second = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=5)
    assert first.usage is not None and second.usage is not None
    assert first.usage.prompt_tokens > 1024
    assert (first.usage.prompt_tokens_details.cached_tokens or 0) == 0
    assert second.usage.prompt_tokens_details.cached_tokens == cached_by_rule(second.usage.prompt_tokens)
