"""Deterministic output: text as a pure function of (seed, model, conversation, length).

The text is a stream of single-token pieces (words with a leading space, ``.`` and ``,``) drawn
from a fixed vocabulary by an RNG seeded with a hash of the request, so a length-N output is a
prefix of every longer one and each streamed chunk is exactly one token. Continuation: when the
conversation ends with an assistant message whose text is a prefix of the full output, only the
rest is produced.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .counting import get_encoding

_WORD_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will can more about said "
    "what out up them into some could time only other new like then also its may first any over these after "
    "two most made well way work years just even where through many much before good must back how because "
    "under long see day people world make still own three same place great between high life house water "
    "system small large number part light during open order public power company market model stream token "
    "limit budget window signal metric trace span error retry latency queue request response server client "
    "simple careful quiet bright early late green blue river stone cloud field garden city road bridge tower "
    "learn build test measure watch follow carry bring hold keep start close begin share answer write read"
)
_WORDS = tuple(_WORD_TEXT.split())
_MAX_ITEMS = 100  # a schema's minItems is honoured up to this (a hostile 10**9 would exhaust memory)


@functools.lru_cache(maxsize=8)
def vocabulary(encoding_name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Words that are one token in ``encoding_name``: (with a leading space, capitalised openers)."""
    enc = get_encoding(encoding_name)
    spaced = tuple(f" {w}" for w in _WORDS if len(enc.encode_ordinary(f" {w}")) == 1)
    openers = tuple(w.capitalize() for w in _WORDS if len(enc.encode_ordinary(w.capitalize())) == 1)
    return spaced, openers


def conversation_digest(seed: int, model: str, conversation: Any) -> bytes:
    """The hash every deterministic choice of one request derives from."""
    blob = json.dumps([seed, model, conversation], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).digest()


def output_length(digest: bytes, low: int, high: int) -> int:
    """A deterministic length in ``[low, high]`` tokens."""
    span = max(0, high - low) + 1
    return max(0, low) + int.from_bytes(digest[-8:], "big") % span


@functools.lru_cache(maxsize=512)
def word_pieces(digest: bytes, encoding_name: str, n: int) -> tuple[str, ...]:
    """The first ``n`` single-token pieces of the word stream for ``digest``."""
    spaced, openers = vocabulary(encoding_name)
    rng = random.Random(digest)
    pieces: list[str] = []
    previous_punct = True
    for i in range(n):
        roll = rng.random()
        if i == 0:
            pieces.append(rng.choice(openers))
            previous_punct = False
        elif not previous_punct and roll < 0.08:
            pieces.append("." if roll < 0.05 else ",")
            previous_punct = True
        else:
            pieces.append(rng.choice(spaced))
            previous_punct = False
    return tuple(pieces)


def token_pieces(text: str, encoding_name: str) -> tuple[str, ...]:
    """Split ASCII ``text`` into its tokens' texts (joining them gives ``text`` back)."""
    enc = get_encoding(encoding_name)
    return tuple(enc.decode_single_token_bytes(t).decode() for t in enc.encode_ordinary(text))


def json_for_schema(digest: bytes, schema: Mapping[str, Any]) -> str:
    """Compact JSON text, deterministic for ``digest``, that fits a simple JSON schema."""
    return json.dumps(_value(schema, random.Random(digest), 0), separators=(", ", ": "))


def _value(schema: Mapping[str, Any], rng: random.Random, depth: int) -> Any:
    if schema.get("enum"):
        return rng.choice(list(schema["enum"]))
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if schema.get("anyOf"):
        return _value(schema["anyOf"][0], rng, depth)
    if kind == "object":
        props: Mapping[str, Any] = schema.get("properties", {})
        return {name: _value(sub, rng, depth + 1) for name, sub in props.items()} if depth < 6 else {}
    if kind == "array":
        items: Mapping[str, Any] = schema.get("items", {"type": "string"})
        count = min(int(schema.get("minItems", 0)), _MAX_ITEMS) + rng.randint(1, 3)
        return [_value(items, rng, depth + 1) for _ in range(count)] if depth < 6 else []
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 1000)))
    if kind == "number":
        return round(rng.uniform(float(schema.get("minimum", 0)), float(schema.get("maximum", 1000))), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))


@dataclass(frozen=True)
class Output:
    """What one request produces: the chunks to emit and why it stopped."""

    pieces: tuple[str, ...]
    finish_reason: Literal["stop", "length"]
    prefix_chars: int = 0

    @property
    def text(self) -> str:
        """The emitted text (without any continued prefix)."""
        return "".join(self.pieces)


def plan_output(full: tuple[str, ...], prefix: str | None, max_new: int | None) -> Output:
    """Continue ``full`` after ``prefix`` (if it is one) and cap the new pieces at ``max_new``."""
    start: tuple[str, ...] = full
    prefix_chars = 0
    if prefix and "".join(full).startswith(prefix):
        prefix_chars = len(prefix)
        consumed = 0
        for index, piece in enumerate(full):
            if consumed + len(piece) > prefix_chars:
                head = piece[prefix_chars - consumed :]
                start = (head, *full[index + 1 :])
                break
            consumed += len(piece)
        else:
            start = ()
    if max_new is not None and max_new < len(start):
        return Output(start[: max(0, max_new)], "length", prefix_chars)
    return Output(start, "stop", prefix_chars)
