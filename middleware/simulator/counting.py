"""Token counting for the simulator, delegated to :mod:`middleware.tokens` (imported lazily)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Protocol


class Encoding(Protocol):
    """The part of ``tiktoken.Encoding`` the simulator uses."""

    name: str

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        ...

    def decode_single_token_bytes(self, token: int) -> bytes:
        """Bytes of one token."""
        ...


def count_prompt_tokens(operation: str, body: Mapping[str, Any]) -> int:
    """Prompt tokens of a request, as OpenAI counts them (``chat``, ``responses`` or ``embeddings``)."""
    from middleware.tokens import count_request_prompt_tokens

    return int(count_request_prompt_tokens(operation, body))


@functools.lru_cache(maxsize=256)
def encoding_name(model: str) -> str:
    """The tiktoken encoding name of ``model`` (o200k_base when unknown)."""
    try:
        from middleware.tokens import encoding_name_for_model
    except ImportError:
        return "o200k_base"
    return str(encoding_name_for_model(model))


@functools.lru_cache(maxsize=8)
def get_encoding(name: str) -> Encoding:
    """A cached encoding: tiktoken's, or the offline byte fallback without tokenizer data (see .fallback_encoding)."""
    from .fallback_encoding import load

    enc: Encoding = load(name)
    return enc


def count_text_tokens(model: str, text: str) -> int:
    """Tokens of generated ``text`` in ``model``'s encoding."""
    return len(get_encoding(encoding_name(model)).encode_ordinary(text)) if text else 0


# ---------------------------------------------------------------- rate-limit accounting that is not ours
# What the simulator's *rate limiter* charges a request may deliberately differ from what the middleware
# estimates (``SimulatorConfig.accounting`` and friends), as real upstreams do: the usage reported in
# responses stays the exact count above; only the admission charge disagrees.

ACCOUNTINGS = ("exact", "legacy", "chars")


def _text_values(message: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """``(key, text)`` of a message whose every value is a string, else ``None`` (structured content)."""
    out = []
    for key, value in message.items():
        if not isinstance(value, str):
            return None
        out.append((key, value))
    return out


def legacy_chat_prompt_tokens(body: Mapping[str, Any]) -> int:
    """The openai-cookbook's rule for ``gpt-3.5-turbo-0301``: 4 tokens per message, a name replaces the role
    (-1), every reply primed with 3 tokens (published: 127 tokens for the cookbook's example conversation,
    where today's rule counts 129). Written here from the cookbook, independently of ``middleware.tokens``;
    messages with structured content, and tools, are counted by the exact rule."""
    model = str(body.get("model") or "")
    messages = body.get("messages")
    if not isinstance(messages, list):
        return count_prompt_tokens("chat", body)
    enc = get_encoding(encoding_name(model))
    total = 3
    structured: list[Any] = []
    for message in messages:
        values = _text_values(message) if isinstance(message, Mapping) else None
        if values is None:
            structured.append(message)
            continue
        total += 4
        for key, text in values:
            total += len(enc.encode_ordinary(text)) - (1 if key == "name" else 0)
    rest = {k: v for k, v in body.items() if k != "messages"}
    if structured or any(k in rest for k in ("tools", "functions")):
        # the exact count of what the legacy rule does not cover (structured messages, tool definitions)
        total += count_prompt_tokens("chat", {**rest, "messages": structured}) - 3  # priming counted once
    return total


def chars_prompt_tokens(operation: str, body: Mapping[str, Any]) -> int:
    """A character-based estimate, as rate limiters that do not tokenize use: ``ceil(characters / 4)`` of
    every string in the request's input (messages, input, instructions, tools), plus 4 per message."""
    parts: list[Any] = []
    for key in ("messages", "input", "instructions", "tools", "functions"):
        if key in body:
            parts.append(body[key])
    chars, messages = 0, 0
    stack = list(parts)
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, Mapping):
            if "role" in item:
                messages += 1
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return -(-chars // 4) + 4 * messages


def output_charge(operation: str, body: Mapping[str, Any], max_output: int, per_choice: bool) -> int:
    """The output tokens charged at admission: ``max_output``, times ``n`` when ``per_choice``."""
    n = body.get("n")
    if per_choice and operation == "chat" and isinstance(n, int) and not isinstance(n, bool) and n > 1:
        return max_output * n
    return max_output


def rate_limit_charge(
    operation: str, body: Mapping[str, Any], prompt: int, max_output: int, *,
    accounting: str = "exact", factor: float = 1.0, offset: int = 0, per_choice: bool = False,
) -> int:
    """Tokens the rate limiter charges at admission.

    ``prompt`` is the exact prompt count (``count_prompt_tokens``); ``accounting`` picks the prompt count the
    limiter uses instead (``exact``, ``legacy`` or ``chars``), then ``ceil(factor * prompt) + offset`` plus the
    output charge (``n * max_output`` with ``per_choice``)."""
    if accounting == "legacy" and operation == "chat":
        counted = legacy_chat_prompt_tokens(body)
    elif accounting == "chars" and operation != "embeddings":
        counted = chars_prompt_tokens(operation, body)
    else:
        counted = prompt
    scaled = counted if factor == 1.0 else -int(-(factor * counted) // 1)
    return max(0, scaled + offset) + output_charge(operation, body, max_output, per_choice)
