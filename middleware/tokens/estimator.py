"""The per-call estimate: prompt tokens, max output tokens, predicted output tokens."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import tiktoken

from .bodies import count_body
from .encodings import encoding_name_for_model, load_encoding
from .text import CacheStats, TextCounter, TokenCache

__all__ = [
    "Estimate",
    "EstimatorEvents",
    "TokenEstimator",
    "count_request_prompt_tokens",
    "default_estimator",
    "max_output_tokens",
]

_log = logging.getLogger(__name__)


class EstimatorEvents(Protocol):
    """Domain events of the estimator (implemented by the telemetry Recorder)."""

    def tokenizer_fallback(self, reason: str) -> None:
        """The tokenizer could not be loaded; estimates use the byte-length fallback."""
        ...


@dataclass(frozen=True, slots=True)
class Estimate:
    """What one call is expected to consume."""

    prompt_tokens: int
    max_output_tokens: int | None
    predicted_output_tokens: int | None
    estimator: Literal["tiktoken", "fallback"]
    encoding: str


def max_output_tokens(operation: str, body: Mapping[str, Any]) -> int | None:
    """Output ceiling of a call: chat ``max_completion_tokens``/``max_tokens`` times ``n``; Responses
    ``max_output_tokens``; 0 for embeddings; None when the body sets no ceiling."""
    if operation == "embeddings":
        return 0
    if operation == "responses":
        value = body.get("max_output_tokens")
        return value if isinstance(value, int) else None
    value = body.get("max_completion_tokens")
    if not isinstance(value, int):
        value = body.get("max_tokens")
    if not isinstance(value, int):
        return None
    n = body.get("n")
    return value * n if isinstance(n, int) and n > 1 else value


class TokenEstimator:
    """Estimates calls before they are sent; encoders are shared per process, the LRU per estimator.

    When an encoding cannot be loaded, counts use the fallback formula (see ``text.fallback_count``),
    ``Estimate.estimator`` is ``"fallback"``, ``events.tokenizer_fallback(reason)`` is called once per
    estimator and encoding, and one warning is logged per process.
    """

    def __init__(
        self,
        default_encoding: str = "o200k_base",
        cache_size: int = 2048,
        events: EstimatorEvents | None = None,
    ) -> None:
        self._default = default_encoding
        self._cache = TokenCache(cache_size)
        self._events = events
        self._counters: dict[str, TextCounter] = {}
        self._lock = threading.Lock()

    def _counter(self, model: str) -> TextCounter:
        name = encoding_name_for_model(model, self._default)
        counter = self._counters.get(name)
        if counter is None:
            counter = self._make_counter(name)
        return counter

    def _make_counter(self, name: str) -> TextCounter:
        loaded = load_encoding(name)
        with self._lock:
            counter = self._counters.get(name)
            if counter is not None:
                return counter
            counter = TextCounter(name, loaded.encoding, self._cache)
            self._counters[name] = counter
        if loaded.encoding is None and self._events is not None:
            try:
                self._events.tokenizer_fallback(loaded.reason or "tokenizer unavailable")
            except Exception:  # telemetry never raises into the caller
                _log.exception("tokenizer_fallback event handler failed")
        return counter

    def encoding_for(self, model: str) -> tiktoken.Encoding | None:
        """The shared encoder for ``model``, or None when its data cannot be loaded."""
        return load_encoding(encoding_name_for_model(model, self._default)).encoding

    def count_text(self, model: str, text: str) -> int:
        """Tokens of ``text`` for ``model`` (fallback formula when no tokenizer)."""
        return self._counter(model).count(text)

    def prompt_tokens(self, operation: str, model: str, body: Mapping[str, Any]) -> int:
        """Prompt tokens of ``body`` for ``model``."""
        return count_body(operation, body, self._counter(model), model)

    def estimate(
        self,
        operation: str,
        model: str,
        body: Mapping[str, Any],
        predicted_output: int | None = None,
    ) -> Estimate:
        """Estimate one call; ``predicted_output`` (e.g. from OutputPredictor) is capped at the max."""
        counter = self._counter(model)
        ceiling = max_output_tokens(operation, body)
        if predicted_output is not None and ceiling is not None:
            predicted_output = min(predicted_output, ceiling)
        return Estimate(
            prompt_tokens=count_body(operation, body, counter, model),
            max_output_tokens=ceiling,
            predicted_output_tokens=predicted_output,
            estimator="tiktoken" if counter.exact else "fallback",
            encoding=counter.encoding_name,
        )

    def cache_stats(self) -> CacheStats:
        """Counters of the long-text / tools-list cache."""
        return self._cache.stats()


_default_lock = threading.Lock()
_default: TokenEstimator | None = None


def default_estimator() -> TokenEstimator:
    """The module-level shared estimator (created on first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = TokenEstimator()
    return _default


def count_request_prompt_tokens(operation: str, body: Mapping[str, Any]) -> int:
    """Prompt tokens of a request ``body`` ("chat", "responses" or "embeddings"), model taken from the body."""
    model = body.get("model")
    return default_estimator().prompt_tokens(operation, model if isinstance(model, str) else "", body)
