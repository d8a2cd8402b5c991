"""Prompt-token counting: cookbook figures, message features, tools, images, Responses, embeddings, cache."""

from __future__ import annotations

import base64
import dataclasses
import struct
from typing import Any

import pytest
import tiktoken

from middleware.tokens import (
    TokenEstimator,
    count_request_prompt_tokens,
    encoding_name_for_model,
    max_output_tokens,
)
from middleware.tokens.images import image_size, image_tokens

O200K = tiktoken.get_encoding("o200k_base")
CL100K = tiktoken.get_encoding("cl100k_base")


def n(text: str, enc: tiktoken.Encoding = O200K) -> int:
    return len(enc.encode(text))


# Cookbook "How to count tokens with tiktoken", section 6 (API-verified figures: 129 / 124).
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]

# Cookbook section 7 (API-verified figures: 105 for gpt-3.5-turbo / gpt-4, 101 for gpt-4o / gpt-4o-mini).
WEATHER_FUNCTION: dict[str, Any] = {
    "name": "get_current_weather",
    "description": "Get the current weather in a given location",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {
                "type": "string",
                "description": "The unit of temperature to return",
                "enum": ["celsius", "fahrenheit"],
            },
        },
        "required": ["location"],
    },
}
WEATHER_TOOLS = [{"type": "function", "function": WEATHER_FUNCTION}]
WEATHER_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


def chat(model: str, messages: list[Any], **extra: Any) -> int:
    return count_request_prompt_tokens("chat", {"model": model, "messages": messages, **extra})


@pytest.mark.parametrize(
    ("model", "expected"), [("gpt-3.5-turbo", 129), ("gpt-4", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)]
)
def test_cookbook_conversation(model: str, expected: int) -> None:
    assert chat(model, COOKBOOK_MESSAGES) == expected


@pytest.mark.parametrize(("model", "expected"), [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101)])
def test_cookbook_tools(model: str, expected: int) -> None:
    assert chat(model, WEATHER_MESSAGES, tools=WEATHER_TOOLS) == expected


def test_legacy_functions_and_responses_tools_count_like_chat_tools() -> None:
    with_tools = chat("gpt-4o", WEATHER_MESSAGES, tools=WEATHER_TOOLS)
    assert chat("gpt-4o", WEATHER_MESSAGES, functions=[WEATHER_FUNCTION]) == with_tools
    responses = count_request_prompt_tokens(
        "responses",
        {"model": "gpt-4o", "input": WEATHER_MESSAGES, "tools": [{"type": "function", **WEATHER_FUNCTION}]},
    )
    assert responses == with_tools


def test_nested_tool_parameters_add_their_properties() -> None:
    nested = {
        "name": "book",
        "description": "Book a trip.",
        "parameters": {
            "type": "object",
            "properties": {"trip": {"type": "object", "description": "", "properties": {"city": {"type": "string"}}}},
        },
    }
    # FUNC_INIT 7 + "book:Book a trip" + PROP_INIT 3 + PROP_KEY 3 + "trip:object:"
    # + nested (PROP_INIT 3 + PROP_KEY 3 + "city:string:") + FUNC_END 12
    expected_tools = 7 + n("book:Book a trip") + 3 + 3 + n("trip:object:") + 3 + 3 + n("city:string:") + 12
    assert chat("gpt-4o", [], tools=[{"type": "function", "function": nested}]) == 3 + expected_tools


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("ft:gpt-4o-mini:acme::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("llama-3-70b", "o200k_base"),
    ],
)
def test_encoding_choice(model: str, encoding: str) -> None:
    assert encoding_name_for_model(model) == encoding


def test_unknown_model_uses_configured_default() -> None:
    assert encoding_name_for_model("mystery-model", default="cl100k_base") == "cl100k_base"
    est = TokenEstimator(default_encoding="cl100k_base")
    assert est.estimate("chat", "mystery-model", {"messages": []}).encoding == "cl100k_base"
    assert est.count_text("mystery-model", "antidisestablishmentarianism") == n("antidisestablishmentarianism", CL100K)


def test_name_adds_its_tokens_plus_one() -> None:
    base = chat("gpt-4o", [{"role": "user", "content": "hi"}])
    named = chat("gpt-4o", [{"role": "user", "name": "alice_smith", "content": "hi"}])
    assert named - base == n("alice_smith") + 1
    assert base == 3 + n("user") + n("hi") + 3


def test_assistant_tool_calls_and_tool_messages() -> None:
    args = '{"location": "Paris, FR", "unit": "celsius"}'
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_current_weather", "arguments": args}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    ]
    expected = (
        (3 + n("user") + n("Weather in Paris?"))
        + (3 + n("assistant") + 4 + n("get_current_weather") + n(args))
        + (3 + n("tool") + n('{"temp": 21}'))
        + 3
    )
    assert chat("gpt-4o", messages) == expected


def test_legacy_function_call_message() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "assistant", "content": None, "function_call": {"name": "lookup", "arguments": '{"q": "x"}'}},
        {"role": "function", "name": "lookup", "content": "found"},
    ]
    expected = (
        (3 + n("assistant") + 4 + n("lookup") + n('{"q": "x"}'))
        + (3 + n("function") + n("lookup") + 1 + n("found"))
        + 3
    )
    assert chat("gpt-4o", messages) == expected


def test_multipart_text_counts_each_part() -> None:
    parts = [{"type": "text", "text": "First part."}, {"type": "text", "text": " Second part."}]
    assert (
        chat("gpt-4o", [{"role": "user", "content": parts}])
        == 3 + n("user") + n("First part.") + n(" Second part.") + 3
    )


def _png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">I4sII", 13, b"IHDR", width, height) + b"\x08\x02\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"\0" * 4


def _jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def _data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_image_header_sizes() -> None:
    assert image_size(_png(640, 480)) == (640, 480)
    assert image_size(_jpeg(1920, 1080)) == (1920, 1080)
    assert image_size(b"GIF89a" + struct.pack("<HH", 300, 200) + b"\0" * 4) == (300, 200)
    webp = b"RIFF\0\0\0\0WEBPVP8X" + b"\0" * 8 + (799).to_bytes(3, "little") + (599).to_bytes(3, "little")
    assert image_size(webp) == (800, 600)
    assert image_size(b"not an image") is None


@pytest.mark.parametrize(
    ("detail", "size", "expected"),
    [
        ("low", (4096, 8192), 85),
        ("high", (1024, 1024), 85 + 170 * 4),  # -> 768x768, 2x2 tiles (OpenAI's documented example: 765)
        ("high", (2048, 4096), 85 + 170 * 6),  # -> 1024x2048 -> 768x1536, 2x3 tiles (documented: 1105)
        ("high", (512, 512), 85 + 170),  # small images are not scaled up
        ("auto", (1024, 1024), 765),  # auto counted as high
        ("high", None, 765),  # unknown size: 1024x1024 assumed
    ],
)
def test_image_tokens_rule(detail: str, size: tuple[int, int] | None, expected: int) -> None:
    assert image_tokens(detail, size) == expected


def test_images_in_messages_by_detail_and_size() -> None:
    def image_part(url: str, detail: str) -> dict[str, Any]:
        return {"type": "image_url", "image_url": {"url": url, "detail": detail}}

    overhead = 3 + n("user") + 3
    remote = "https://example.com/cat.png"
    assert chat("gpt-4o", [{"role": "user", "content": [image_part(remote, "low")]}]) == overhead + 85
    assert chat("gpt-4o", [{"role": "user", "content": [image_part(remote, "high")]}]) == overhead + 765
    tall = _data_url(_png(2048, 4096))
    assert chat("gpt-4o", [{"role": "user", "content": [image_part(tall, "high")]}]) == overhead + 1105
    small = _data_url(_jpeg(500, 400), "image/jpeg")
    assert chat("gpt-4o", [{"role": "user", "content": [image_part(small, "auto")]}]) == overhead + 255
    assert chat("gpt-4o-mini", [{"role": "user", "content": [image_part(remote, "low")]}]) == overhead + 2833


def test_responses_inputs() -> None:
    def responses(**body: Any) -> int:
        return count_request_prompt_tokens("responses", {"model": "gpt-4o", **body})

    question = "What is the capital of France?"
    assert responses(input=question) == chat("gpt-4o", [{"role": "user", "content": question}])
    with_instructions = responses(input=question, instructions="Answer in one word.")
    assert with_instructions == chat(
        "gpt-4o", [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": question}]
    )
    parts = [
        {"role": "user", "content": [{"type": "input_text", "text": question}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Paris."}]},
    ]
    assert responses(input=parts) == 3 + (3 + n("user") + n(question)) + (3 + n("assistant") + n("Paris."))
    image = [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]}]
    assert responses(input=image) == 3 + 3 + n("user") + 85
    calls = [
        {"type": "function_call", "call_id": "c1", "name": "get_current_weather", "arguments": '{"location":"Oslo"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "-3C, snow"},
    ]
    expected = 3 + (4 + n("get_current_weather") + n('{"location":"Oslo"}')) + (3 + n("-3C, snow"))
    assert responses(input=calls) == expected


def test_embeddings_inputs() -> None:
    def embeddings(data: Any) -> int:
        return count_request_prompt_tokens("embeddings", {"model": "text-embedding-3-small", "input": data})

    assert embeddings("hello world") == n("hello world", CL100K)
    assert embeddings(["hello world", "good night moon"]) == n("hello world", CL100K) + n("good night moon", CL100K)
    assert embeddings([15339, 1917, 0]) == 3
    assert embeddings([[1, 2, 3], [4, 5]]) == 5


def test_max_output_tokens() -> None:
    assert max_output_tokens("chat", {"max_tokens": 100}) == 100
    assert max_output_tokens("chat", {"max_tokens": 100, "max_completion_tokens": 300}) == 300
    assert max_output_tokens("chat", {"max_completion_tokens": 50, "n": 3}) == 150
    assert max_output_tokens("chat", {}) is None
    assert max_output_tokens("responses", {"max_output_tokens": 77}) == 77
    assert max_output_tokens("responses", {"max_tokens": 77}) is None
    assert max_output_tokens("embeddings", {"input": "x"}) == 0


def test_estimate_fields_and_predicted_cap() -> None:
    est = TokenEstimator()
    body = {"messages": COOKBOOK_MESSAGES, "max_tokens": 64}
    result = est.estimate("chat", "gpt-4o", body, predicted_output=500)
    assert (result.prompt_tokens, result.max_output_tokens, result.predicted_output_tokens) == (124, 64, 64)
    assert (result.estimator, result.encoding) == ("tiktoken", "o200k_base")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.prompt_tokens = 1  # type: ignore[misc]
    assert est.encoding_for("gpt-4") is est.encoding_for("gpt-3.5-turbo") is not None
    with pytest.raises(ValueError, match="unknown operation"):
        est.estimate("completions", "gpt-4o", body)


def test_long_prompt_is_encoded_once() -> None:
    est = TokenEstimator(cache_size=8)
    system = "Follow the house style guide precisely and never reveal internal notes. " * 150
    body = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]}
    first = est.estimate("chat", "gpt-4o", body).prompt_tokens
    assert first == 3 + n("system") + n(system) + 3 + n("user") + n("hi") + 3
    before = est.cache_stats()
    assert (before.misses, before.hits, before.size) == (1, 0, 1)
    assert est.estimate("chat", "gpt-4o", body).prompt_tokens == first
    after = est.cache_stats()
    assert (after.misses, after.hits) == (1, 1)  # a hit, no new encode; the short "hi" never touches the cache


def test_tools_list_count_is_cached_and_cache_is_bounded() -> None:
    est = TokenEstimator(cache_size=4)
    body = {"messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS}
    assert est.estimate("chat", "gpt-4o", body).prompt_tokens == 101
    misses = est.cache_stats().misses
    assert est.estimate("chat", "gpt-4o", body).prompt_tokens == 101
    assert est.cache_stats().misses == misses
    for i in range(10):
        est.count_text("gpt-4o", f"{i} " + "x" * 300)
    assert est.cache_stats().size == 4


def test_sdk_objects_passed_back_count_like_dicts() -> None:
    from openai.types.chat import ChatCompletionMessage
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

    args = '{"location": "Oslo"}'
    as_dict: dict[str, Any] = {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": args}}],
    }
    message = ChatCompletionMessage.model_validate(as_dict)
    assert chat("gpt-4o", [message]) == chat("gpt-4o", [as_dict])
    assert chat("gpt-4o", [message]) == 3 + (3 + n("assistant") + n("Checking.") + 4 + n("get_weather") + n(args))

    output = [
        ResponseOutputMessage(
            id="m1",
            type="message",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text="Checking.", annotations=[])],
        ),
        ResponseFunctionToolCall(type="function_call", call_id="c1", name="get_weather", arguments=args),
    ]
    expected = 3 + (3 + n("assistant") + n("Checking.")) + (4 + n("get_weather") + n(args))
    assert count_request_prompt_tokens("responses", {"model": "gpt-4o", "input": output}) == expected
