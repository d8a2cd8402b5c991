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
