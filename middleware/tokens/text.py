"""Counting the tokens of one string, with a bounded LRU cache for long strings.

Long repeated texts (system prompts, instructions, tool schemas) are encoded once:
strings of at least ``LONG_TEXT_CHARS`` characters are keyed by
``(encoding, blake2b-128(utf-8 text))`` in an LRU of ``cache_size`` entries. Short strings
are encoded directly: hashing them would cost about as much as encoding them.

Fallback (no tokenizer data): ``ceil(utf-8 bytes / 4)`` per string. Measured against o200k_base:
English prose +7 %, Python code +12 %, Japanese -4 %, Chinese -11 %, German +43 %, Russian
(2-byte Cyrillic letters) +130 %. It mostly overestimates, which is the safe side for admission.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import tiktoken

__all__ = ["LONG_TEXT_CHARS", "CacheStats", "TextCounter", "TokenCache", "fallback_count"]

LONG_TEXT_CHARS = 256
SHORT_CACHE_ENTRIES = 4096
"""Texts shorter than ``LONG_TEXT_CHARS`` are memoised per counter, this many at most (then the map empties)."""


def fallback_count(text: str) -> int:
    """Tokenizer-free estimate: ceil(utf-8 bytes / 4)."""
    return (len(text.encode("utf-8", "surrogatepass")) + 3) // 4


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters of the long-text cache: hits, misses, current size, capacity."""

    hits: int
    misses: int
    size: int
    capacity: int


class TokenCache:
    """Thread-safe bounded LRU mapping hashable keys to token counts."""

    def __init__(self, capacity: int) -> None:
        self._capacity = max(0, capacity)
        self._data: OrderedDict[object, int] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get(self, key: object) -> int | None:
        """Return the cached count for ``key`` (marking it recently used) or None."""
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self._misses += 1
                return None
            self._data.move_to_end(key)
            self._hits += 1
            return value

    def put(self, key: object, value: int) -> None:
        """Store ``value`` under ``key``, evicting the least recently used entry if full."""
        if self._capacity == 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._capacity:
                self._data.popitem(last=False)

    def stats(self) -> CacheStats:
        """Snapshot of the cache counters."""
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._data), self._capacity)


class TextCounter:
    """Counts tokens of strings with one encoding (or the fallback formula when ``encoding`` is None)."""

    __slots__ = ("_cache", "_encode", "_short", "_small", "encoding_name", "exact")

    def __init__(self, encoding_name: str, encoding: tiktoken.Encoding | None, cache: TokenCache) -> None:
        self.encoding_name = encoding_name
        self.exact = encoding is not None
        self._encode = encoding.encode_ordinary if encoding is not None else None
        self._cache = cache
        self._small: dict[str, int] = {}
        self._short: dict[str, int] = {}

    def count(self, text: str) -> int:
        """Tokens of ``text`` as ordinary text (special-token markers are not special in API input).

        Short texts (system prompts, templates: the same strings call after call) are memoised in a bounded
        map (emptied when full); long ones in the shared LRU by content hash.
        """
        if len(text) < LONG_TEXT_CHARS:
            short = self._short
            value = short.get(text)
            if value is None:
                value = len(self._encode(text)) if self._encode is not None else fallback_count(text)
                if len(short) >= SHORT_CACHE_ENTRIES:
                    short.clear()
                short[text] = value
            return value
        key = self.cache_key(text.encode("utf-8", "surrogatepass"))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        value = len(self._encode(text)) if self._encode is not None else fallback_count(text)
        self._cache.put(key, value)
        return value

    def count_word(self, text: str) -> int:
        """Tokens of a short recurring string (role, type name); memoised up to 256 distinct values."""
        value = self._small.get(text)
        if value is None:
            value = self.count(text)
            if len(self._small) < 256:
                self._small[text] = value
        return value

    def cache_key(self, payload: bytes) -> tuple[str, bool, bytes]:
        """Cache key of a derived payload (e.g. a serialised tools list) for this counter."""
        return (self.encoding_name, self.exact, hashlib.blake2b(payload, digest_size=16).digest())

    @property
    def cache(self) -> TokenCache:
        """The shared LRU this counter uses."""
        return self._cache
