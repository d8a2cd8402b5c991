"""Prompt tokens of request bodies, as OpenAI counts them (cookbook "How to count tokens with tiktoken").

Chat Completions: per message ``TOKENS_PER_MESSAGE`` (3) + tokens of its role + its content
(+ ``TOKENS_PER_NAME`` (1) + tokens of ``name`` when present); ``REPLY_PRIMING`` (3) once.
Content parts: text parts by their text, images by :func:`images.image_tokens`; audio and file
parts are not counted (their size cannot be known from the body). Assistant ``tool_calls`` and
legacy ``function_call``: ``TOOL_CALL_OVERHEAD`` (4, our approximation; OpenAI documents none)
+ tokens of the function name + tokens of the arguments string. ``tool`` / ``function`` role
messages count like any message (``tool_call_id`` is not counted). ``tools`` and legacy
``functions``: :func:`tools.count_tools`. A ``json_schema`` response format: tokens of its JSON.

Responses: ``instructions`` as one system message; ``input`` string as one user message; list
items: messages (``input_text`` / ``output_text`` / ``refusal`` parts by text, ``input_image`` by
detail and size), ``function_call`` like a tool call, ``function_call_output`` as a message of its
output; other item types (reasoning, item references) are not counted, nor is context carried by
``previous_response_id``. ``REPLY_PRIMING`` once; tools and ``text.format`` schema as above.

Embeddings: a string or list of strings by their tokens; a token array by its length; no overhead.

SDK objects passed back as input (``response.choices[0].message``, Responses output items) are
read through their ``model_dump()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .images import image_size_from_url, image_tokens
from .text import TextCounter
from .tools import count_json, count_tools

__all__ = ["count_body", "count_chat", "count_embeddings", "count_responses"]

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
TOOL_CALL_OVERHEAD = 4


def _mapping(value: Any) -> Mapping[str, Any] | None:
    """``value`` as a mapping: dicts as they are, SDK (pydantic) objects through ``model_dump``."""
    if isinstance(value, Mapping):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        dumped = dump(exclude_none=True)
        return dumped if isinstance(dumped, Mapping) else None
    return None


def _image(spec: Any, detail: Any, counter: TextCounter, model: str) -> int:
    url = spec if isinstance(spec, str) else ""
    size = image_size_from_url(url) if url.startswith("data:") else None
    return image_tokens(detail if isinstance(detail, str) else None, size, model)


def _parts(content: Any, counter: TextCounter, model: str) -> int:
    if isinstance(content, str):
        return counter.count(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, str):
            total += counter.count(part)
            continue
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "image_url":  # Chat Completions: {"image_url": {"url": ..., "detail": ...}}
            spec = part.get("image_url")
            spec = spec if isinstance(spec, Mapping) else {"url": spec}
            total += _image(spec.get("url"), spec.get("detail"), counter, model)
        elif kind == "input_image":  # Responses: {"image_url": ..., "detail": ...}
            total += _image(part.get("image_url"), part.get("detail"), counter, model)
        else:
            text = part.get("text", part.get("refusal"))
            if isinstance(text, str):
                total += counter.count(text)
    return total


def _call(raw: Any, counter: TextCounter) -> int:
    fn = _mapping(raw)
    if fn is None:
        return 0
    name, args = fn.get("name"), fn.get("arguments")
    return (
        TOOL_CALL_OVERHEAD
        + (counter.count(name) if isinstance(name, str) else 0)
        + (counter.count(args) if isinstance(args, str) else 0)
    )


def _chat_message(message: Mapping[str, Any], counter: TextCounter, model: str) -> int:
    total = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if value is None:
            continue
        if key == "content":
            total += _parts(value, counter, model)
        elif key == "role":
            total += counter.count_word(value)
        elif key == "name":
            total += counter.count(value) + TOKENS_PER_NAME
        elif key == "tool_calls":
            for raw in value:
                call = _mapping(raw)
                total += _call(call.get("function") if call is not None else None, counter)
        elif key == "function_call":
            total += _call(value, counter)
        elif key == "refusal" and isinstance(value, str):
            total += counter.count(value)
    return total


def _response_format(fmt: Any, counter: TextCounter) -> int:
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        return count_json(fmt.get("json_schema", fmt.get("schema")), counter)
    return 0


def count_chat(body: Mapping[str, Any], counter: TextCounter, model: str) -> int:
    """Prompt tokens of a Chat Completions body."""
    total = REPLY_PRIMING
    for raw in body.get("messages") or ():
        message = _mapping(raw)
        if message is not None:
            total += _chat_message(message, counter, model)
    tools = body.get("tools") or body.get("functions")
    if tools:
        total += count_tools(tools, counter)
    if "response_format" in body:
        total += _response_format(body["response_format"], counter)
    return total


def _response_item(raw: Any, counter: TextCounter, model: str) -> int:
    if isinstance(raw, str):
        return TOKENS_PER_MESSAGE + counter.count_word("user") + counter.count(raw)
    item = _mapping(raw)
    if item is None:
        return 0
    kind = item.get("type", "message")
    if kind == "message" or ("role" in item and kind not in ("function_call", "function_call_output")):
        role = item.get("role")
        role_tokens = counter.count_word(role) if isinstance(role, str) else 0
        return TOKENS_PER_MESSAGE + role_tokens + _parts(item.get("content"), counter, model)
    if kind == "function_call":
        return _call(item, counter)
    if kind == "function_call_output":
        return TOKENS_PER_MESSAGE + _parts(item.get("output"), counter, model)
    return 0


def count_responses(body: Mapping[str, Any], counter: TextCounter, model: str) -> int:
    """Prompt tokens of a Responses API body."""
    total = REPLY_PRIMING
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        total += TOKENS_PER_MESSAGE + counter.count_word("system") + counter.count(instructions)
    items = body.get("input")
    if isinstance(items, str):
        total += _response_item(items, counter, model)
    elif isinstance(items, list):
        for item in items:
            total += _response_item(item, counter, model)
    tools = body.get("tools")
    if tools:
        total += count_tools(tools, counter)
    text = body.get("text")
    if isinstance(text, Mapping):
        total += _response_format(text.get("format"), counter)
    return total


def count_embeddings(body: Mapping[str, Any], counter: TextCounter) -> int:
    """Prompt tokens of an Embeddings body: strings by tokens, token arrays by length."""
    data = body.get("input")
    if isinstance(data, str):
        return counter.count(data)
    if not isinstance(data, list) or not data:
        return 0
    total = 0
    for item in data:
        if isinstance(item, str):
            total += counter.count(item)
        elif isinstance(item, int):
            total += 1
        elif isinstance(item, list):
            total += len(item)
    return total


def count_body(operation: str, body: Mapping[str, Any], counter: TextCounter, model: str) -> int:
    """Dispatch on ``operation``: "chat", "responses" or "embeddings"."""
    if operation == "chat":
        return count_chat(body, counter, model)
    if operation == "responses":
        return count_responses(body, counter, model)
    if operation == "embeddings":
        return count_embeddings(body, counter)
    raise ValueError(f"unknown operation {operation!r}: expected 'chat', 'responses' or 'embeddings'")
