"""The tokenizer used for chunking: tiktoken when its data loads, else a documented byte estimate.

Fallback (no tokenizer data): one "token" per started group of 4 UTF-8 bytes, i.e.
``ceil(len(text.encode("utf-8")) / 4)`` (the same formula as ``middleware.tokens``); the pseudo
token ids encode their bytes so that decoding works.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

_log = logging.getLogger(__name__)
FALLBACK_NAME = "utf8-bytes/4"


def resolve_encoding(model: str) -> Any:
    """The shared ``tiktoken.Encoding`` for ``model`` (via :mod:`middleware.tokens`), or None when unavailable."""
    from ..tokens import default_estimator

    try:
        return default_estimator().encoding_for(model)
    except Exception:
        _log.warning("tokenizer unavailable for %s; using the %s estimate", model, FALLBACK_NAME, exc_info=True)
        return None


class Tokenizer:
    """Uniform access to counts, token ids and their bytes, for tiktoken or the byte fallback.

    ``exact_sums`` is True when counts of text pieces cut at pre-token boundaries add up exactly
    (tiktoken); the fallback is only subadditive, so chunk counts are then recomputed per chunk.
    """

    def __init__(self, encoding: Any) -> None:
        self._enc = encoding
        self.name: str = encoding.name if encoding is not None else FALLBACK_NAME
        self.exact_sums = encoding is not None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens: special-token text is encoded as ordinary text)."""
        if self._enc is not None:
            return self._enc.encode_ordinary(text)  # type: ignore[no-any-return]
        data = text.encode("utf-8", "surrogatepass")
        return [int.from_bytes(b"\x01" + data[i : i + 4], "big") for i in range(0, len(data), 4)]

    def count(self, text: str) -> int:
        """Number of tokens of ``text``."""
        if self._enc is not None:
            return len(self._enc.encode_ordinary(text))
        return math.ceil(len(text.encode("utf-8", "surrogatepass")) / 4)

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        """The UTF-8 bytes that ``tokens`` stand for (may end or start inside a character)."""
        if self._enc is not None:
            return bytes(self._enc.decode_bytes(list(tokens)))
        return b"".join(t.to_bytes((t.bit_length() + 7) // 8, "big")[1:] for t in tokens)

    def token_byte_lengths(self, tokens: Sequence[int]) -> list[int]:
        """The byte length of each token."""
        if self._enc is not None:
            return [len(self._enc.decode_single_token_bytes(t)) for t in tokens]
        return [(t.bit_length() + 7) // 8 - 1 for t in tokens]
