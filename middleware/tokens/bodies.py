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

Bodies the API would refuse (``messages=123``, ``role=5``, ``tools="x"``, a content part that is a
number...) are still counted, never raised on: each part of a shape the rules do not read is counted
by the byte estimate (:func:`~middleware.tokens.tally.fallback_tokens`) and its reason code noted in
the call's :class:`~middleware.tokens.tally.Tally`; every other part keeps its rule. Each message,
item and tool is counted on its own, so one that breaks a rule unexpectedly falls back alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .images import image_size_from_url, image_tokens
from .tally import Tally
from .text import TextCounter
from .tools import count_json, count_tools

__all__ = ["count_body", "count_chat", "count_embeddings", "count_responses"]

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
TOOL_CALL_OVERHEAD = 4
_SEQUENCES = (list, tuple)


def _mapping(value: Any) -> Mapping[str, Any] | None:
    """``value`` as a mapping: dicts as they are, SDK (pydantic) objects through ``model_dump``."""
    if isinstance(value, Mapping):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        dumped = dump(exclude_none=True)
        return dumped if isinstance(dumped, Mapping) else None
    return None


def _image(spec: Any, detail: Any, model: str) -> int:
    url = spec if isinstance(spec, str) else ""
    size = image_size_from_url(url) if url.startswith("data:") else None
    return image_tokens(detail if isinstance(detail, str) else None, size, model)


def _part(part: Any, counter: TextCounter, model: str, tally: Tally) -> int:
    if isinstance(part, str):
        return counter.count(part)
    if not isinstance(part, Mapping):
        return tally.fallback("content", part)
    kind = part.get("type")
    if kind == "image_url":  # Chat Completions: {"image_url": {"url": ..., "detail": ...}}
        spec = part.get("image_url")
        spec = spec if isinstance(spec, Mapping) else {"url": spec}
        return _image(spec.get("url"), spec.get("detail"), model)
    if kind == "input_image":  # Responses: {"image_url": ..., "detail": ...}
        return _image(part.get("image_url"), part.get("detail"), model)
    text = part.get("text", part.get("refusal"))
    if isinstance(text, str):
        return counter.count(text)
    if text is not None:
        return tally.fallback("content", text)
    return 0  # audio, file and other parts: their size cannot be known from the body


def _parts(content: Any, counter: TextCounter, model: str, tally: Tally) -> int:
    if isinstance(content, str):
        return counter.count(content)
    if content is None:
        return 0
    if not isinstance(content, _SEQUENCES):
        return tally.fallback("content", content)
    total = 0
    for part in content:
        try:
            total += _part(part, counter, model, tally)
        except Exception:  # a part no rule expected: it alone by its bytes
            total += tally.fallback("content", part)
    return total


def _call(raw: Any, counter: TextCounter, tally: Tally, reason: str) -> int:
    fn = _mapping(raw)
    if fn is None:
        return tally.fallback(reason, raw)
    total = TOOL_CALL_OVERHEAD
    for value in (fn.get("name"), fn.get("arguments")):
        if isinstance(value, str):
            total += counter.count(value)
        elif value is not None:
            total += tally.fallback(reason, value)
    return total


def _chat_message(message: Mapping[str, Any], counter: TextCounter, model: str, tally: Tally) -> int:
    total = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if value is None:
            continue
        if key == "content":
            total += _parts(value, counter, model, tally)
        elif key == "role":
            total += counter.count_word(value) if isinstance(value, str) else tally.fallback("role", value)
        elif key == "name":
            total += (counter.count(value) if isinstance(value, str) else tally.fallback("name", value)) \
                + TOKENS_PER_NAME
        elif key == "tool_calls":
            if not isinstance(value, _SEQUENCES):
                total += tally.fallback("tool_calls", value)
                continue
            for raw in value:
                call = _mapping(raw)
                total += _call(call.get("function"), counter, tally, "tool_calls") if call is not None \
                    else tally.fallback("tool_calls", raw)
        elif key == "function_call":
            total += _call(value, counter, tally, "function_call")
        elif key == "refusal":
            total += counter.count(value) if isinstance(value, str) else tally.fallback("content", value)
    return total


def _response_format(fmt: Any, counter: TextCounter, tally: Tally) -> int:
    if isinstance(fmt, Mapping):
        if fmt.get("type") == "json_schema":
            return count_json(fmt.get("json_schema", fmt.get("schema")), counter, tally, "response_format")
        return 0
    return 0 if fmt is None or isinstance(fmt, str) else tally.fallback("response_format", fmt)


def _tools(body: Mapping[str, Any], counter: TextCounter, tally: Tally, keys: tuple[str, ...]) -> int:
    for key in keys:
        tools = body.get(key)
        if tools is not None and tools != []:
            return count_tools(tools, counter, tally)
    return 0


def count_chat(body: Mapping[str, Any], counter: TextCounter, model: str, tally: Tally | None = None) -> int:
    """Prompt tokens of a Chat Completions body (parts the rules cannot read noted in ``tally``)."""
    tally = tally if tally is not None else Tally()
    total = REPLY_PRIMING
    messages = body.get("messages")
    if isinstance(messages, _SEQUENCES):
        for raw in messages:
            try:
                message = _mapping(raw)
                total += _chat_message(message, counter, model, tally) if message is not None \
                    else tally.fallback("message", raw)
            except Exception:  # a message no rule expected: it alone by its bytes
                total += tally.fallback("message", raw)
    elif messages is not None:
        total += tally.fallback("messages", messages)
    total += _tools(body, counter, tally, ("tools", "functions"))
    if "response_format" in body:
        total += _response_format(body["response_format"], counter, tally)
    return total


def _response_item(raw: Any, counter: TextCounter, model: str, tally: Tally) -> int:
    if isinstance(raw, str):
        return TOKENS_PER_MESSAGE + counter.count_word("user") + counter.count(raw)
    item = _mapping(raw)
    if item is None:
        return tally.fallback("input", raw)
    kind = item.get("type", "message")
    if kind == "message" or ("role" in item and kind not in ("function_call", "function_call_output")):
        role = item.get("role")
        role_tokens = counter.count_word(role) if isinstance(role, str) else \
            (tally.fallback("role", role) if role is not None else 0)
        return TOKENS_PER_MESSAGE + role_tokens + _parts(item.get("content"), counter, model, tally)
    if kind == "function_call":
        return _call(item, counter, tally, "input")
    if kind == "function_call_output":
        return TOKENS_PER_MESSAGE + _parts(item.get("output"), counter, model, tally)
    return 0  # reasoning, item references...: not counted


def count_responses(body: Mapping[str, Any], counter: TextCounter, model: str, tally: Tally | None = None) -> int:
    """Prompt tokens of a Responses API body (parts the rules cannot read noted in ``tally``)."""
    tally = tally if tally is not None else Tally()
    total = REPLY_PRIMING
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        if instructions:
            total += TOKENS_PER_MESSAGE + counter.count_word("system") + counter.count(instructions)
    elif instructions is not None:
        total += tally.fallback("instructions", instructions)
    items = body.get("input")
    if isinstance(items, str):
        total += _response_item(items, counter, model, tally)
    elif isinstance(items, _SEQUENCES):
        for item in items:
            try:
                total += _response_item(item, counter, model, tally)
            except Exception:  # an item no rule expected: it alone by its bytes
                total += tally.fallback("input", item)
    elif items is not None:
        total += tally.fallback("input", items)
    total += _tools(body, counter, tally, ("tools",))
    text = body.get("text")
    if isinstance(text, Mapping):
        total += _response_format(text.get("format"), counter, tally)
    elif text is not None:
        total += tally.fallback("text", text)
    return total


def count_embeddings(body: Mapping[str, Any], counter: TextCounter, tally: Tally | None = None) -> int:
    """Prompt tokens of an Embeddings body: strings by tokens, token arrays by length."""
    tally = tally if tally is not None else Tally()
    data = body.get("input")
    if isinstance(data, str):
        return counter.count(data)
    if data is None:
        return 0
    if not isinstance(data, _SEQUENCES):
        return tally.fallback("input", data)
    total = 0
    for item in data:
        if isinstance(item, str):
            total += counter.count(item)
        elif isinstance(item, int):
            total += 1
        elif isinstance(item, _SEQUENCES):
            total += len(item)
        else:
            total += tally.fallback("input", item)
    return total


def count_body(
    operation: str, body: Mapping[str, Any], counter: TextCounter, model: str, tally: Tally | None = None
) -> int:
    """Dispatch on ``operation``: "chat", "responses" or "embeddings"."""
    if operation == "chat":
        return count_chat(body, counter, model, tally)
    if operation == "responses":
        return count_responses(body, counter, model, tally)
    if operation == "embeddings":
        return count_embeddings(body, counter, tally)
    raise ValueError(f"unknown operation {operation!r}: expected 'chat', 'responses' or 'embeddings'")
