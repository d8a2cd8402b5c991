"""Tokens of tool / function definitions (OpenAI cookbook ``num_tokens_for_tools``).

Per function: ``FUNC_INIT`` (7 for o200k_base models, 10 for cl100k_base) + tokens of
``"{name}:{description}"`` (one trailing period dropped); if it has properties, ``PROP_INIT`` (3)
and per property ``PROP_KEY`` (3) + tokens of ``"{key}:{type}:{description}"``; a property with
an ``enum`` adds ``ENUM_INIT`` (-3) and per item ``ENUM_ITEM`` (3) + tokens of the item. Once per
non-empty list: ``FUNC_END`` (12). Extension beyond the cookbook: nested object properties
(``properties`` or ``items.properties``) are counted recursively with the same rule.
Non-function tools (Responses built-ins such as ``web_search``) count the tokens of their JSON.

The count of a whole list is cached in the shared LRU, keyed by a hash of its canonical JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .text import TextCounter

__all__ = ["count_json", "count_tools"]

PROP_INIT = 3
PROP_KEY = 3
ENUM_INIT = -3
ENUM_ITEM = 3
FUNC_END = 12


def _func_init(counter: TextCounter) -> int:
    return 10 if counter.encoding_name == "cl100k_base" else 7


def _strip_period(text: str) -> str:
    return text[:-1] if text.endswith(".") else text


def _as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _properties(props: Mapping[str, Any], counter: TextCounter) -> int:
    total = PROP_INIT
    for key, raw in props.items():
        spec = _as_mapping(raw)
        total += PROP_KEY
        ptype = spec.get("type", "")
        if isinstance(ptype, list):
            ptype = " | ".join(str(t) for t in ptype)
        enum = spec.get("enum")
        if isinstance(enum, list):
            total += ENUM_INIT
            for item in enum:
                total += ENUM_ITEM + counter.count(str(item))
        desc = _strip_period(str(spec.get("description", "")))
        total += counter.count(f"{key}:{ptype}:{desc}")
        nested = _as_mapping(spec.get("properties")) or _as_mapping(_as_mapping(spec.get("items")).get("properties"))
        if nested:
            total += _properties(nested, counter)
    return total


def _function(fn: Mapping[str, Any], counter: TextCounter) -> int:
    desc = _strip_period(str(fn.get("description") or ""))
    total = _func_init(counter) + counter.count(f"{fn.get('name', '')}:{desc}")
    props = _as_mapping(_as_mapping(fn.get("parameters")).get("properties"))
    if props:
        total += _properties(props, counter)
    return total


def count_json(value: Any, counter: TextCounter) -> int:
    """Tokens of ``value`` serialised as compact JSON (a rough rule for schemas without a known format)."""
    return counter.count(json.dumps(value, separators=(",", ":"), default=str))


def _uncached(tools: Iterable[Any], counter: TextCounter) -> int:
    total = 0
    for raw in tools:
        tool = _as_mapping(raw)
        if "function" in tool:  # Chat Completions: {"type": "function", "function": {...}}
            total += _function(_as_mapping(tool["function"]), counter)
        elif tool.get("type", "function") == "function" and "name" in tool:  # Responses / legacy functions
            total += _function(tool, counter)
        else:
            total += count_json(raw, counter)
    return total + FUNC_END


def count_tools(tools: Iterable[Any], counter: TextCounter) -> int:
    """Tokens of a tools (or legacy ``functions``) list, cached per list content."""
    items = list(tools)
    if not items:
        return 0
    payload = json.dumps(items, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8", "surrogatepass")
    key = ("tools", counter.cache_key(payload))
    cached = counter.cache.get(key)
    if cached is not None:
        return cached
    value = _uncached(items, counter)
    counter.cache.put(key, value)
    return value
