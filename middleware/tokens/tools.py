"""Tokens of tool / function definitions (OpenAI cookbook ``num_tokens_for_tools``).

Per function: ``FUNC_INIT`` (7 for o200k_base models, 10 for cl100k_base) + tokens of
``"{name}:{description}"`` (one trailing period dropped); if it has properties, ``PROP_INIT`` (3)
and per property ``PROP_KEY`` (3) + tokens of ``"{key}:{type}:{description}"``; a property with
an ``enum`` adds ``ENUM_INIT`` (-3) and per item ``ENUM_ITEM`` (3) + tokens of the item. Once per
non-empty list: ``FUNC_END`` (12). Extension beyond the cookbook: nested object properties
(``properties`` or ``items.properties``) are counted with the same rule, walked iteratively (no
recursion, however deep the schema; past ``MAX_SCHEMA_PROPERTIES`` properties the rest of a function
is counted by the byte estimate). Non-function tools (Responses built-ins such as ``web_search``)
count the tokens of their JSON.

A tools value of another shape (not a list, a tool that is not an object, a ``function`` that is not
one), or a tool the rule fails on (a value whose ``str()`` raises), is counted by the byte estimate and
noted in the :class:`~middleware.tokens.tally.Tally` as ``tools``; the other tools keep the rule.

The count of a whole list is cached in the shared LRU, keyed by a hash of its canonical JSON (a list
JSON cannot write is counted uncached).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .tally import Tally
from .text import TextCounter

__all__ = ["MAX_SCHEMA_PROPERTIES", "count_json", "count_tools"]

PROP_INIT = 3
PROP_KEY = 3
ENUM_INIT = -3
ENUM_ITEM = 3
FUNC_END = 12
MAX_SCHEMA_PROPERTIES = 10_000
"""Properties counted by the rule per function; the rest of a larger schema is counted by the byte estimate."""


def _func_init(counter: TextCounter) -> int:
    return 10 if counter.encoding_name == "cl100k_base" else 7


def _strip_period(text: str) -> str:
    return text[:-1] if text.endswith(".") else text


def _as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _nested(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    return _as_mapping(spec.get("properties")) or _as_mapping(_as_mapping(spec.get("items")).get("properties"))


def _type_text(ptype: Any) -> str:
    if isinstance(ptype, list):
        return " | ".join(str(t) for t in ptype)
    return str(ptype)


def _properties(props: Mapping[str, Any], counter: TextCounter, tally: Tally) -> int:
    """The properties rule over a schema and its nested objects, without recursion."""
    total = 0
    budget = MAX_SCHEMA_PROPERTIES
    pending: list[Mapping[str, Any]] = [props]
    while pending:
        level = pending.pop()
        total += PROP_INIT
        for key, raw in level.items():
            if budget <= 0:  # a schema too large to walk by the rule: the rest by its bytes
                return total + tally.fallback("tools", pending) + tally.fallback("tools", level)
            budget -= 1
            spec = _as_mapping(raw)
            total += PROP_KEY
            enum = spec.get("enum")
            if isinstance(enum, list):
                total += ENUM_INIT
                for item in enum:
                    total += ENUM_ITEM + counter.count(str(item))
            desc = _strip_period(str(spec.get("description", "")))
            total += counter.count(f"{key}:{_type_text(spec.get('type', ''))}:{desc}")
            nested = _nested(spec)
            if nested:
                pending.append(nested)
    return total


def _function(fn: Mapping[str, Any], counter: TextCounter, tally: Tally) -> int:
    desc = _strip_period(str(fn.get("description") or ""))
    total = _func_init(counter) + counter.count(f"{fn.get('name', '')}:{desc}")
    props = _as_mapping(_as_mapping(fn.get("parameters")).get("properties"))
    if props:
        total += _properties(props, counter, tally)
    return total


def count_json(value: Any, counter: TextCounter, tally: Tally | None = None, reason: str = "response_format") -> int:
    """Tokens of ``value`` serialised as compact JSON (a rough rule for schemas without a known format);
    a value JSON cannot write is counted by the byte estimate, noted as ``reason``."""
    try:
        text = json.dumps(value, separators=(",", ":"), default=str)
    except Exception:  # circular, too deep, an int past the digit limit...
        return (tally or Tally()).fallback(reason, value)
    return counter.count(text)


def _tool(raw: Any, counter: TextCounter, tally: Tally) -> int:
    if not isinstance(raw, Mapping):
        return tally.fallback("tools", raw)
    try:
        if "function" in raw:  # Chat Completions: {"type": "function", "function": {...}}
            fn = raw["function"]
            if not isinstance(fn, Mapping):
                return tally.fallback("tools", raw)
            return _function(fn, counter, tally)
        if raw.get("type", "function") == "function" and "name" in raw:  # Responses / legacy functions
            return _function(raw, counter, tally)
        return count_json(raw, counter, tally, "tools")
    except Exception:  # a schema the rule cannot read: this tool by its bytes, the others by the rule
        return tally.fallback("tools", raw)


def _uncached(tools: list[Any], counter: TextCounter, tally: Tally) -> int:
    return sum(_tool(raw, counter, tally) for raw in tools) + FUNC_END


def count_tools(tools: Any, counter: TextCounter, tally: Tally | None = None) -> int:
    """Tokens of a tools (or legacy ``functions``) list, cached per list content."""
    tally = tally if tally is not None else Tally()
    if not isinstance(tools, (list, tuple)):
        return tally.fallback("tools", tools)
    items = list(tools)
    if not items:
        return 0
    try:
        payload = json.dumps(items, sort_keys=True, separators=(",", ":"), default=str)
    except Exception:  # JSON cannot write it (nor will the SDK): count it, uncached
        return _uncached(items, counter, tally)
    key = ("tools", counter.cache_key(payload.encode("utf-8", "surrogatepass")))
    cached = counter.cache.get(key)
    if cached is not None:
        return cached
    local = Tally()
    value = _uncached(items, counter, local)
    if local.reasons:  # a list that fell back is not cached: it falls back (and is noted) each time
        for reason in local.reasons:
            tally.fell_back(reason)
    else:
        counter.cache.put(key, value)
    return value
