"""The protected client is a drop-in: same objects on every path, and every path goes through the pipeline."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from middleware import pipeline_of, protect
from middleware.telemetry import names as n

pytestmark = pytest.mark.sdk  # SDK-facing: run against every supported openai release

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Tell me about token buckets."}]
VOLATILE = {
    "id", "item_id", "response_id", "created", "created_at", "system_fingerprint", "_request_id", "completed_at",
}


def normalise(value: Any) -> Any:
    """A comparable form of an SDK object: the fields it was given (``exclude_unset``: a field the server sent as
    ``null`` differs from one it left out, as ``to_dict()`` shows a caller), without ids and timestamps."""
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_unset=True)
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def chat_helpers(client: Any) -> Any:
    """Where the SDK keeps ``stream()``/``parse()``: ``chat.completions`` (newer), else ``beta.chat.completions``."""
    completions = client.chat.completions
    return completions if hasattr(completions, "stream") else client.beta.chat.completions


class Answer(BaseModel):
    title: str
    score: float


def sync_paths(client: openai.OpenAI) -> dict[str, Any]:
    """Call every routed path once and return comparable results."""
    kw: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": 40, "seed": 7}
    out: dict[str, Any] = {}
    out["create"] = normalise(client.chat.completions.create(**kw))
    with client.chat.completions.create(**kw, stream=True) as stream:
        out["create_stream"] = [normalise(c) for c in stream]
    out["raw"] = normalise(client.chat.completions.with_raw_response.create(**kw).parse())
    raw_stream = client.chat.completions.with_raw_response.create(**kw, stream=True).parse()
    out["raw_stream"] = [normalise(c) for c in raw_stream]
    with client.chat.completions.with_streaming_response.create(**kw) as resp:
        out["streaming_response"] = normalise(resp.parse())
    with chat_helpers(client).stream(**kw) as helper:
        out["stream_helper"] = normalise(helper.get_final_completion())
    parsed = chat_helpers(client).parse(**kw, response_format=Answer)
    out["parse"] = normalise(parsed)
    out["with_options"] = normalise(client.with_options(timeout=30).chat.completions.create(**kw))
    out["copy"] = normalise(client.copy().chat.completions.create(**kw))
    out["responses"] = normalise(client.responses.create(model=MODEL, input="hello", max_output_tokens=30))
    with client.responses.create(model=MODEL, input="hello", max_output_tokens=30, stream=True) as rs:
        out["responses_stream"] = [normalise(e) for e in rs]
    out["embeddings"] = normalise(client.embeddings.create(model="text-embedding-3-small", input=["a", "b"]))
    out["models"] = sorted(m.id for m in client.models.list())
    return out


async def async_paths(client: openai.AsyncOpenAI) -> dict[str, Any]:
    """The async twin of sync_paths."""
    kw: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": 40, "seed": 7}
    out: dict[str, Any] = {}
    out["create"] = normalise(await client.chat.completions.create(**kw))
    async with await client.chat.completions.create(**kw, stream=True) as stream:
        out["create_stream"] = [normalise(c) async for c in stream]
    out["raw"] = normalise((await client.chat.completions.with_raw_response.create(**kw)).parse())
    async with client.chat.completions.with_streaming_response.create(**kw) as resp:
        out["streaming_response"] = normalise(await resp.parse())
    async with chat_helpers(client).stream(**kw) as helper:
        out["stream_helper"] = normalise(await helper.get_final_completion())
    out["parse"] = normalise(await chat_helpers(client).parse(**kw, response_format=Answer))
    out["with_options"] = normalise(await client.with_options(timeout=30).chat.completions.create(**kw))
    out["responses"] = normalise(await client.responses.create(model=MODEL, input="hello", max_output_tokens=30))
    stream2 = await client.responses.create(model=MODEL, input="hello", max_output_tokens=30, stream=True)
    out["responses_stream"] = [normalise(e) async for e in stream2]
    out["embeddings"] = normalise(await client.embeddings.create(model="text-embedding-3-small", input=["a"]))
    return out


def test_isinstance_and_passthrough(simulator: Any) -> None:
    raw = openai.OpenAI(api_key="sk-test", base_url=simulator.base_url)
    protected = protect(raw)
    assert isinstance(protected, openai.OpenAI)
    assert isinstance(protect(openai.AsyncOpenAI(api_key="sk-test", base_url=simulator.base_url)), openai.AsyncOpenAI)
    assert protected.base_url == raw.base_url
    assert protected.api_key == raw.api_key
    assert isinstance(protected.with_options(timeout=5), openai.OpenAI)
    assert pipeline_of(protected.with_options(timeout=5)) is pipeline_of(protected)
    assert pipeline_of(protected.copy()) is pipeline_of(protected)
    with pytest.raises(TypeError):
        pipeline_of(raw)
    with pytest.raises(TypeError):
        protect("not a client")  # type: ignore[type-var]


def test_sync_paths_equal_with_and_without_protect(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    raw = openai.OpenAI(api_key="sk-test", base_url=simulator.base_url, max_retries=0,
                        default_headers={"x-sim-output-tokens": "20"})
    expected = sync_paths(raw)
    got = sync_paths(protect_with(raw))
    assert got.keys() == expected.keys()
    for path in expected:
        assert got[path] == expected[path], path
    # every routed path went through the pipeline: one call span each, and request samples
    call_spans = telemetry.spans()
    chat_spans = [s for s in call_spans if s.name == f"chat {MODEL}"]
    assert len(chat_spans) == 9  # create, stream, raw, raw stream, streaming response, helper, parse, options, copy
    assert len([s for s in call_spans if s.name == f"responses {MODEL}"]) == 2
    assert len([s for s in call_spans if s.name == "embeddings text-embedding-3-small"]) == 1
    assert telemetry.sample(n.REQUESTS.prom_name, operation="chat", outcome="success") == 9
    assert telemetry.sample(n.REQUESTS.prom_name, operation="responses") == 2
    assert telemetry.sample(n.REQUESTS.prom_name, operation="embeddings") == 1
    # models.list is not routed: no span for it
    assert not [s for s in call_spans if "models" in s.name]


def test_async_paths_equal_with_and_without_protect(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        raw = openai.AsyncOpenAI(api_key="sk-test", base_url=simulator.base_url, max_retries=0,
                                 default_headers={"x-sim-output-tokens": "20"})
        expected = await async_paths(raw)
        got = await async_paths(protect_with(raw))
        return expected, got

    expected, got = asyncio.run(run())
    for path in expected:
        assert got[path] == expected[path], path
    assert telemetry.sample(n.REQUESTS.prom_name, operation="chat") == 7
    assert telemetry.sample(n.REQUESTS.prom_name, operation="responses") == 2
    assert telemetry.sample(n.REQUESTS.prom_name, operation="embeddings") == 1


def test_include_usage_added_but_hidden(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    client = protect_with(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url))
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20, stream=True))
    assert all(c.choices for c in chunks)  # the usage-only chunk is hidden from a caller who did not ask
    asked = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20, stream=True,
                                                stream_options={"include_usage": True}))
    assert asked[-1].usage is not None and not asked[-1].choices
    spans = telemetry.spans(f"chat {MODEL}")
    assert all(s.attributes[n.A_USAGE_OUTPUT] > 0 for s in spans)  # usage known on both streams
    # The "usage": null the API adds to every chunk once usage is asked for reaches only the caller who asked.
    assert all("usage" not in c.model_fields_set and "usage" not in c.to_dict() for c in chunks)
    assert all("usage" in c.model_fields_set for c in asked)


def test_sdk_retries_disabled_on_routed_calls(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    from middleware import Config, RetryConfig

    raw = openai.OpenAI(api_key="sk-test", base_url=simulator.base_url, max_retries=5)
    client = protect_with(raw, Config(retry=RetryConfig(max_attempts=1)))
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5,
                                       extra_headers={"x-sim-fault": "status=500"})
    # one attempt only: the SDK's own 5 retries were switched off, ours allowed 1 attempt
    assert telemetry.sample(n.ATTEMPTS.prom_name) == 1
