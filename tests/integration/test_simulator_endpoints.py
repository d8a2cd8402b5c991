"""Endpoints of the simulator over real HTTP with the real openai SDK (and raw httpx2 for wire details)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import openai
import pytest
import tiktoken
from pydantic import BaseModel

from middleware.simulator import Simulator
from tests.http import http as httpx2

USER = [{"role": "user", "content": "Tell me about rivers."}]


def client(sim: Simulator, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0, default_headers=headers or None)


def sse_payloads(sim: Simulator, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[str]:
    with httpx2.Client(timeout=10) as http:
        resp = http.post(sim.base_url + "/chat/completions", json=body, headers=headers or {})
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        return [line[6:] for line in resp.text.split("\n\n") if line.startswith("data: ")]


def test_chat_non_stream_shape_and_usage(simulator: Simulator) -> None:
    raw = client(simulator).chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    completion = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert int(raw.headers["openai-processing-ms"]) >= 0
    text = completion.choices[0].message.content or ""
    assert completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "stop"
    enc = tiktoken.get_encoding("o200k_base")
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(enc.encode(text))
    assert 20 <= completion.usage.completion_tokens <= 200
    from middleware.tokens import count_request_prompt_tokens

    assert completion.usage.prompt_tokens == count_request_prompt_tokens("chat", {"model": "gpt-4o", "messages": USER})


def test_chat_stream_chunks_are_openai_shaped_with_usage(simulator: Simulator) -> None:
    body = {"model": "gpt-4o", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    payloads = sse_payloads(simulator, body, {"x-sim-output-tokens": "30"})
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    content = [c for c in chunks[1:-2]]
    assert len(content) == 30 and all(set(c["choices"][0]["delta"]) == {"content"} for c in content)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 30


def test_chat_stream_without_include_usage_has_no_usage_key(simulator: Simulator) -> None:
    payloads = sse_payloads(simulator, {"model": "gpt-4o", "messages": USER, "stream": True})
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_sdk_stream_equals_non_stream_and_is_deterministic(simulator: Simulator) -> None:
    sdk = client(simulator)
    first = sdk.chat.completions.create(model="gpt-4o", messages=USER, seed=7).choices[0].message.content
    again = sdk.chat.completions.create(model="gpt-4o", messages=USER, seed=7).choices[0].message.content
    other = sdk.chat.completions.create(model="gpt-4o", messages=USER, seed=8).choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in sdk.chat.completions.create(model="gpt-4o", messages=USER, seed=7, stream=True)
        if c.choices
    )
    assert first == again == streamed
    assert first != other


def test_max_tokens_truncates_to_a_prefix_with_length(simulator: Simulator) -> None:
    sdk = client(simulator, **{"x-sim-output-tokens": "100"})
    full = sdk.chat.completions.create(model="gpt-4o", messages=USER).choices[0].message.content or ""
    short = sdk.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=10)
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 10
    assert full.startswith(short.choices[0].message.content or "")


def test_continuation_emits_exactly_the_rest(simulator: Simulator) -> None:
    sdk = client(simulator, **{"x-sim-output-tokens": "80"})
    full = sdk.chat.completions.create(model="gpt-4o", messages=USER).choices[0].message.content or ""
    chunks = [
        c.choices[0].delta.content or ""
        for c in sdk.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
        if c.choices
    ]
    for cut in (1, 17, len(chunks) - 2):
        prefix = "".join(chunks[:cut])
        messages = [*USER, {"role": "assistant", "content": prefix}]
        rest = sdk.chat.completions.create(model="gpt-4o", messages=messages)
        assert prefix + (rest.choices[0].message.content or "") == full
        enc = tiktoken.get_encoding("o200k_base")
        assert rest.usage is not None and rest.usage.completion_tokens == len(enc.encode(full[len(prefix):]))
    mid_word = full[: len(full) // 2 + 1]
    rest_text = sdk.chat.completions.create(
        model="gpt-4o", messages=[*USER, {"role": "assistant", "content": mid_word}]
    ).choices[0].message.content
    assert mid_word + (rest_text or "") == full


def test_five_thousand_chunk_stream(simulator: Simulator) -> None:
    sdk = client(simulator, **{"x-sim-output-tokens": "5000"})
    stream = sdk.chat.completions.create(model="gpt-4o", messages=USER, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 5000
    assert len(tiktoken.get_encoding("o200k_base").encode("".join(pieces))) == 5000


def test_n_greater_than_one_is_refused(simulator: Simulator) -> None:
    with pytest.raises(openai.BadRequestError):
        client(simulator).chat.completions.create(model="gpt-4o", messages=USER, n=2)


TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
        },
    }
]


def test_forced_tool_call_non_stream_and_stream(simulator: Simulator) -> None:
    sdk = client(simulator)
    choice: Any = {"type": "function", "function": {"name": "get_weather"}}
    result = sdk.chat.completions.create(model="gpt-4o", messages=USER, tools=TOOLS, tool_choice=choice)
    assert result.choices[0].finish_reason == "tool_calls"
    call: Any = (result.choices[0].message.tool_calls or [])[0]
    args = json.loads(call.function.arguments)
    assert call.function.name == "get_weather" and isinstance(args["city"], str) and isinstance(args["days"], int)
    streamed = ""
    finish = None
    for chunk in sdk.chat.completions.create(model="gpt-4o", messages=USER, tools=TOOLS, tool_choice=choice,
                                             stream=True):
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            streamed += tc.function.arguments or "" if tc.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and json.loads(streamed) == args
    header_forced = client(simulator, **{"x-sim-tool-call": "get_weather"}).chat.completions.create(
        model="gpt-4o", messages=USER, tools=TOOLS
    )
    assert header_forced.choices[0].finish_reason == "tool_calls"


class Forecast(BaseModel):
    city: str
    temperature: float
    rainy: bool


def test_json_schema_response_format_parses(simulator: Simulator) -> None:
    parsed = client(simulator).chat.completions.parse(model="gpt-4o", messages=USER, response_format=Forecast)
    value = parsed.choices[0].message.parsed
    assert isinstance(value, Forecast)
    result = client(simulator).responses.parse(model="gpt-4o", input="weather?", text_format=Forecast)
    assert isinstance(result.output_parsed, Forecast)


def test_responses_non_stream_and_stream(simulator: Simulator) -> None:
    sdk = client(simulator, **{"x-sim-output-tokens": "25"})
    resp = sdk.responses.create(model="gpt-4.1", input="hello", instructions="be brief")
    assert resp.status == "completed" and resp.usage is not None
    assert resp.usage.output_tokens == 25 and resp.usage.total_tokens == resp.usage.input_tokens + 25
    events = list(sdk.responses.create(model="gpt-4.1", input="hello", instructions="be brief", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"
    ]
    assert kinds[-4:] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 25 and "".join(deltas) == resp.output_text
    retrieved = sdk.responses.retrieve(resp.id)
    assert retrieved.output_text == resp.output_text


def test_responses_max_output_tokens_is_incomplete_and_continues(simulator: Simulator) -> None:
    sdk = client(simulator, **{"x-sim-output-tokens": "40"})
    full = sdk.responses.create(model="gpt-4o", input="hello").output_text
    cut = sdk.responses.create(model="gpt-4o", input="hello", max_output_tokens=16)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    items: Any = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": cut.output_text}]
    rest = sdk.responses.create(model="gpt-4o", input=items)
    assert cut.output_text + rest.output_text == full


def test_embeddings_float_and_base64_are_deterministic(simulator: Simulator) -> None:
    sdk = client(simulator)
    default = sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    floats = sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b"], encoding_format="float")
    assert len(default.data) == 2 and len(default.data[0].embedding) == 1536
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-5)
    assert default.data[0].embedding != default.data[1].embedding
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0
    small = sdk.embeddings.create(model="text-embedding-3-small", input="a", dimensions=8, encoding_format="float")
    assert len(small.data[0].embedding) == 8
    with httpx2.Client() as http:
        body = {"model": "text-embedding-3-small", "input": "a", "dimensions": 4, "encoding_format": "base64"}
        data = http.post(simulator.base_url + "/embeddings", json=body).json()
    assert len(struct.unpack("<4f", base64.b64decode(data["data"][0]["embedding"]))) == 4


def test_models_and_unknown_route(simulator: Simulator) -> None:
    ids = [m.id for m in client(simulator).models.list()]
    assert "gpt-4o" in ids and "text-embedding-3-small" in ids
    with httpx2.Client() as http:
        resp = http.get(simulator.base_url + "/nope")
    assert resp.status_code == 404 and "x-request-id" in resp.headers


def test_keep_alive_reuses_one_connection(simulator: Simulator) -> None:
    with httpx2.Client() as http:
        body = {"model": "gpt-4o", "messages": USER}
        ids = {http.post(simulator.base_url + "/chat/completions", json=body).headers["x-request-id"]
               for _ in range(5)}
        assert len(ids) == 5
    assert simulator.stats()["total"]["served"] == 5
