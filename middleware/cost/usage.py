"""Token usage with its details, read from what the API returned (SDK objects or raw JSON).

Chat completions report ``prompt_tokens`` (``prompt_tokens_details.cached_tokens`` included) and
``completion_tokens`` (``completion_tokens_details.reasoning_tokens`` included); the Responses API
``input_tokens``/``input_tokens_details.cached_tokens`` and ``output_tokens``/
``output_tokens_details.reasoning_tokens``; embeddings only ``prompt_tokens``. Any field may be missing
or ``None`` (older SDKs, other servers): it then counts as 0, and a usage without input or output
tokens at all is "not reported" (:func:`usage_from` returns None).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Usage:
    """Tokens of one call. ``cached_input_tokens`` is part of ``input_tokens``, ``reasoning_tokens`` of
    ``output_tokens`` (as the API reports them)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        if self.input_tokens < 0 or self.output_tokens < 0 or self.cached_input_tokens < 0 \
                or self.reasoning_tokens < 0:
            bad = next(name for name in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")
                       if getattr(self, name) < 0)
            raise ValueError(f"Usage.{bad} must not be negative")
        # A server may report details larger than the total (rounding, other accounting): never bill
        # more cached (cheaper) or reasoning tokens than there are input or output tokens.
        if self.cached_input_tokens > self.input_tokens:
            object.__setattr__(self, "cached_input_tokens", self.input_tokens)
        if self.reasoning_tokens > self.output_tokens:
            object.__setattr__(self, "reasoning_tokens", self.output_tokens)

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens billed at the full input price."""
        return self.input_tokens - self.cached_input_tokens

    @property
    def visible_output_tokens(self) -> int:
        """Output tokens that are not reasoning tokens."""
        return self.output_tokens - self.reasoning_tokens

    def __add__(self, other: Usage) -> Usage:
        """The usage of two requests together (a stream and its resumptions)."""
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens, self.reasoning_tokens + other.reasoning_tokens,
        )


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if type(obj) is dict:
        return obj.get(name)
    fields = getattr(obj, "__dict__", None)
    if fields is not None and name in fields:  # an SDK model's field (read without pydantic's __getattr__)
        return fields[name]
    if isinstance(obj, Mapping):
        return obj.get(name)
    extra = getattr(obj, "__pydantic_extra__", None)
    if isinstance(extra, dict):  # a pydantic model: not a field, maybe an extra one (a server's own)
        return extra.get(name)
    return getattr(obj, name, None)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        return None
    return int(value)


def _first(obj: Any, *names: str) -> int | None:
    for name in names:
        value = _count(_field(obj, name))
        if value is not None:
            return value
    return None


def read_usage(usage: Any) -> Usage | None:
    """A :class:`Usage` from a usage object or mapping (chat, Responses or embeddings shape), or None."""
    if usage is None:
        return None
    inp = _first(usage, "prompt_tokens", "input_tokens")
    out = _first(usage, "completion_tokens", "output_tokens")
    if inp is None and out is None:
        return None
    in_details = _field(usage, "prompt_tokens_details") or _field(usage, "input_tokens_details")
    out_details = _field(usage, "completion_tokens_details") or _field(usage, "output_tokens_details")
    return Usage(
        input_tokens=inp or 0,
        output_tokens=out or 0,
        cached_input_tokens=_first(in_details, "cached_tokens") or 0,
        reasoning_tokens=_first(out_details, "reasoning_tokens") or 0,
    )


def usage_from(result: Any) -> Usage | None:
    """The usage of a response, a stream chunk or event, or their JSON: ``result.usage`` (or
    ``result.response.usage`` for Responses stream events such as ``response.completed``), else None."""
    usage = _field(result, "usage")
    if usage is None:
        usage = _field(_field(result, "response"), "usage")
    return read_usage(usage)
