"""From a request to its deterministic output: text, JSON for a schema, or a tool call.

Usage details, as OpenAI reports them: reasoning models (o-series, gpt-5) spend deterministic reasoning
tokens first (``x-sim-reasoning-tokens: N`` fixes them; ``reasoning_effort`` scales them), counted in the
completion tokens; with ``max_new`` the visible output gets what they leave. A prompt whose first 1024+
tokens repeat a recent prompt of the same model reports them as cached, in 128-token increments (OpenAI's
prompt caching).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .call import Call, Services
from .config import MAX_OUTPUT_TOKENS
from .counting import count_text_tokens, encoding_name, get_encoding
from .stats import Stats
from .textgen import Output, conversation_digest, json_for_schema, output_length, plan_output, token_pieces, word_pieces

CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")
_EFFORT = {"none": 0.0, "minimal": 0.0, "low": 0.5, "medium": 1.0, "high": 2.0}


@dataclass(frozen=True)
class ToolCall:
    """A forced function call."""

    call_id: str
    name: str
    arguments: Output


@dataclass(frozen=True)
class Generated:
    """The output of one generation request and its token counts (completion includes reasoning)."""

    output: Output
    tool_call: ToolCall | None
    completion_tokens: int
    reasoning_tokens: int = 0
    cached_tokens: int = 0


class PromptCache:
    """Digests of recent prompt prefixes, one per 128-token block from 1024 tokens on (LRU, bounded)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def lookup_and_store(self, model: str, tokens: Sequence[int]) -> int:
        """Tokens of the longest cached prefix (0, 1024, 1152, ...); stores this prompt's prefixes."""
        if len(tokens) < CACHE_MIN_TOKENS:
            return 0
        h = hashlib.sha256(model.encode())
        digests: list[tuple[int, bytes]] = []
        start = 0
        for end in range(CACHE_MIN_TOKENS, len(tokens) + 1, CACHE_STEP_TOKENS):
            h.update(array("Q", tokens[start:end]).tobytes())  # 64 bits: the byte fallback's ids pass 2**32
            start = end
            digests.append((end, h.digest()))
        cached = 0
        with self._lock:
            for end, digest in digests:
                if digest not in self._seen:
                    break
                cached = end
            for _, digest in digests:
                self._seen[digest] = None
                self._seen.move_to_end(digest)
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
        return cached


_CACHES: weakref.WeakKeyDictionary[Stats, PromptCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def prompt_cache(svc: Services) -> PromptCache:
    """The prompt cache of one simulator server (kept per server: keyed by the Stats object it owns)."""
    with _CACHES_LOCK:
        cache = _CACHES.get(svc.stats)
        if cache is None:
            cache = _CACHES[svc.stats] = PromptCache()
        return cache


def prompt_text(body: Mapping[str, Any]) -> str:
    """The prompt as one text in the order the model reads it: tools, instructions, then each item."""
    parts: list[str] = []
    if body.get("tools"):
        parts.append(json.dumps(body["tools"], sort_keys=True, separators=(",", ":"), default=str))
    if isinstance(body.get("instructions"), str):
        parts.append("<|system|>" + body["instructions"])
    items = body.get("messages", body.get("input"))
    for item in [{"role": "user", "content": items}] if isinstance(items, str) else items or ():
        if isinstance(item, Mapping):
            text = message_text(item.get("content")) or json.dumps(item, sort_keys=True, default=str)
            parts.append(f"<|{item.get('role', item.get('type', ''))}|>{text}")
    return "".join(parts)


def cached_tokens(svc: Services, call: Call) -> int:
    """Prompt tokens served from the (simulated) prompt cache, at most the prompt in 128-token steps."""
    if call.prompt_tokens < CACHE_MIN_TOKENS:
        return 0
    tokens = get_encoding(encoding_name(call.model)).encode_ordinary(prompt_text(call.body))
    cached = prompt_cache(svc).lookup_and_store(call.model, tokens)
    ceiling = call.prompt_tokens - (call.prompt_tokens - CACHE_MIN_TOKENS) % CACHE_STEP_TOKENS
    return min(cached, ceiling)


def reasoning_tokens(call: Call, digest: bytes, max_new: int | None) -> int:
    """Deterministic reasoning tokens of a reasoning model (0 for others); they come first and may use
    up all of ``max_new`` (the visible output then gets what is left)."""
    if not _REASONING_MODEL.match(call.model):
        return 0
    planned = call.header_int("x-sim-reasoning-tokens")
    if planned is None:
        options = call.body.get("reasoning")
        effort = call.body.get("reasoning_effort") or (
            options.get("effort") if isinstance(options, Mapping) else None) or "medium"
        base = output_length(hashlib.sha256(digest + b"reasoning").digest(), 16, 256)
        planned = int(base * _EFFORT.get(str(effort), 1.0))
    planned = max(0, planned)
    return planned if max_new is None else min(planned, max(0, max_new))


def message_text(content: Any) -> str:
    """Plain text of a message ``content`` (a string or a list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def split_trailing_assistant(items: Sequence[Any]) -> tuple[list[Any], str | None]:
    """(conversation without a trailing assistant message, that message's text or ``None``)."""
    if items and isinstance(items[-1], Mapping) and items[-1].get("role") == "assistant":
        last = items[-1]
        if not last.get("tool_calls") and last.get("type", "message") == "message":
            return list(items[:-1]), message_text(last.get("content"))
    return list(items), None


def forced_tool(body: Mapping[str, Any], header: str | None) -> Mapping[str, Any] | None:
    """The function definition a request forces, if any (``tool_choice`` or ``x-sim-tool-call``)."""
    tools = [t for t in body.get("tools") or () if isinstance(t, Mapping) and t.get("type") == "function"]
    if not tools:
        return None
    defs = [t.get("function", t) for t in tools]
    choice = body.get("tool_choice")
    wanted: str | None = None
    if isinstance(choice, Mapping):
        wanted = str(choice.get("function", choice).get("name", ""))
    elif choice == "required" or header:
        wanted = header if header and header not in ("1", "true", "any") else str(defs[0].get("name"))
    if wanted is None:
        return None
    chosen: Mapping[str, Any] = next((d for d in defs if d.get("name") == wanted), defs[0])
    return chosen


def generate(
    svc: Services,
    call: Call,
    conversation: Any,
    prefix: str | None,
    max_new: int | None,
    schema: Mapping[str, Any] | None,
) -> Generated:
    """Produce the deterministic output of ``call`` (continuing ``prefix`` when it is one)."""
    cfg = svc.config
    seed = call.seed if call.seed is not None else cfg.seed
    digest = conversation_digest(seed, call.model, conversation)
    enc = encoding_name(call.model)
    cached = cached_tokens(svc, call)
    tool = forced_tool(call.body, call.ex.request.headers.get("x-sim-tool-call"))
    if tool is not None:
        params = tool.get("parameters") or {"type": "object", "properties": {}}
        args = plan_output(token_pieces(json_for_schema(digest, params), enc), None, None)
        text = str(tool.get("name", "")) + args.text
        tool_call = ToolCall("call_" + secrets.token_hex(12), str(tool.get("name", "")), args)
        reasoning = reasoning_tokens(call, digest, None)
        return Generated(Output((), "stop"), tool_call, count_text_tokens(call.model, text) + reasoning, reasoning,
                         cached)
    if schema is not None:
        full = token_pieces(json_for_schema(digest, schema), enc)
    else:
        length = call.header_int("x-sim-output-tokens")
        if length is None:
            length = output_length(digest, cfg.output_tokens_min, cfg.output_tokens_max)
        full = word_pieces(digest, enc, min(max(0, length), MAX_OUTPUT_TOKENS))
    reasoning = reasoning_tokens(call, digest, max_new)
    output = plan_output(full, prefix, None if max_new is None else max_new - reasoning)
    return Generated(output, None, count_text_tokens(call.model, output.text) + reasoning, reasoning, cached)
