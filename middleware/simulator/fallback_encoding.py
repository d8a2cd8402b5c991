"""The simulator's encodings: tiktoken's when its data loads offline, else the middleware's byte fallback.

Loading goes through :func:`middleware.tokens.encodings.load_encoding`, which never touches the network
(it probes tiktoken's cache file first). Without tokenizer data the simulator then counts and splits
text the way the middleware's estimator falls back (``ceil(utf-8 bytes / 4)``, see
:func:`middleware.tokens.text.fallback_count`): a "token" is a run of up to 4 bytes. Its answers stay
OpenAI-shaped and deterministic; only the token counts are the fallback's, not tiktoken's (a streamed
chunk is then one word piece of at most 4 bytes, and usage counts ``ceil(bytes / 4)`` of the text).
"""

from __future__ import annotations

from typing import Any

GROUP = 4


class ByteFallbackEncoding:
    """Tokens of up to ``GROUP`` utf-8 bytes; ``len(encode_ordinary(t)) == fallback_count(t)``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids: each group of up to 4 bytes packed with its length."""
        data = text.encode("utf-8", "surrogatepass")
        return [int.from_bytes(data[i:i + GROUP], "big") << 3 | len(data[i:i + GROUP])
                for i in range(0, len(data), GROUP)]

    def decode_single_token_bytes(self, token: int) -> bytes:
        """The bytes of one token id."""
        return (token >> 3).to_bytes(token & 7, "big")


def load(name: str) -> Any:
    """The tiktoken encoding ``name`` when its data is available offline, else a :class:`ByteFallbackEncoding`."""
    from middleware.tokens.encodings import load_encoding

    loaded = load_encoding(name).encoding
    return loaded if loaded is not None else ByteFallbackEncoding(name)
