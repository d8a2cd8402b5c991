"""What an estimate could not read: the parts of a body that fell back to the byte estimate.

A request body comes from the caller and may be anything (``messages=123``, ``role=5``, a tool schema
nested 500 levels deep, a structure that contains itself). The counting rules apply to the shapes the
API accepts; a part of another shape is counted by :func:`fallback_tokens` (``ceil(bytes / 4)`` of its
JSON, the tokenizer-free rule) and its reason code is noted in the call's :class:`Tally`. The API then
judges the body itself; the estimate only has to be a number, and a safe one.

Reason codes (a closed set, usable as span attributes): ``body``, ``messages``, ``message``, ``role``,
``name``, ``content``, ``tool_calls``, ``function_call``, ``tools``, ``response_format``,
``instructions``, ``input``, ``text``, ``max_output_tokens``, ``n``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .text import fallback_count

__all__ = ["MAX_WALK_NODES", "Tally", "fallback_tokens"]

MAX_WALK_NODES = 100_000
"""Values visited at most when a part cannot even be serialised (a cycle, or nesting beyond the recursion limit)."""


class Tally:
    """The reason codes of the parts of one body that fell back (each code once, in order of appearance)."""

    __slots__ = ("reasons",)

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def fell_back(self, reason: str) -> None:
        """Note that a part of kind ``reason`` was counted by the byte estimate."""
        if reason not in self.reasons:
            self.reasons.append(reason)

    def fallback(self, reason: str, value: Any) -> int:
        """Note ``reason`` and return the byte estimate of ``value``."""
        self.fell_back(reason)
        return fallback_tokens(value)


def fallback_tokens(value: Any) -> int:
    """``ceil(bytes / 4)`` of ``value`` as compact JSON; never raises.

    Values JSON cannot write (a cycle, nesting past the recursion limit, an integer past Python's digit
    limit, an object whose ``str`` raises) are sized by an iterative walk instead (each container once,
    at most ``MAX_WALK_NODES`` values).
    """
    try:
        return fallback_count(json.dumps(value, separators=(",", ":"), default=str))
    except Exception:  # RecursionError, ValueError (circular, int digits), TypeError, whatever str() raised
        return (_walk_bytes(value) + 3) // 4


def _walk_bytes(value: Any) -> int:
    total = 0
    seen: set[int] = set()
    stack = [value]
    visited = 0
    try:
        while stack and visited < MAX_WALK_NODES:
            item = stack.pop()
            visited += 1
            if isinstance(item, str):
                total += len(item.encode("utf-8", "surrogatepass")) + 2
            elif isinstance(item, (bytes, bytearray)):
                total += len(item) + 2
            elif isinstance(item, bool) or item is None:
                total += 4
            elif isinstance(item, int):
                total += item.bit_length() * 30103 // 100000 + 2  # decimal digits without str() (digit limit)
            elif isinstance(item, float):
                total += 24
            elif isinstance(item, Mapping | list | tuple | set | frozenset):
                if id(item) in seen:
                    continue
                seen.add(id(item))
                total += 2
                if isinstance(item, Mapping):
                    for key, sub in item.items():
                        stack.append(key)
                        stack.append(sub)
                else:
                    stack.extend(item)
            else:
                total += 16
    except Exception:  # a container whose iteration raises: what was sized so far
        pass
    return total
