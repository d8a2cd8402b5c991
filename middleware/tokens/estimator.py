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
from .tally import Tally
from .text import CacheStats, TextCounter, TokenCache

__all__ = [
    "MAX_OUTPUT_CEILING",
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
    """What one call is expected to consume.

    ``estimator`` is ``"fallback"`` when any part of the count came from the byte estimate: the tokenizer
    could not be loaded, or ``fallback`` names the parts of the body the rules could not read (reason codes
    of :mod:`middleware.tokens.tally`; the API judges such a body, the estimate only has to be safe).
    """

    prompt_tokens: int
    max_output_tokens: int | None
    predicted_output_tokens: int | None
    estimator: Literal["tiktoken", "fallback"]
    encoding: str
    fallback: tuple[str, ...] = ()


MAX_OUTPUT_CEILING = 2**31 - 1
"""The largest output ceiling read from a body (a 32-bit integer, as the API takes); beyond it, none is read."""
_MAX_N = 128  # the API's bound on ``n``


def _ceiling(value: Any) -> int | None:
    """A token count the API could accept: a non-negative int within the 32-bit range (not a bool)."""
    return value if type(value) is int and 0 <= value <= MAX_OUTPUT_CEILING else None


def _max_output(operation: str, body: Mapping[str, Any], tally: Tally) -> int | None:
    if operation == "embeddings":
        return 0
    keys = _RESPONSES_KEYS if operation == "responses" else _CHAT_KEYS
    for key in keys:
        raw = body.get(key)
        if raw is None:
            continue
        value = _ceiling(raw)
        if value is None:  # a negative, huge, fractional or non-numeric ceiling: the API will judge it
            tally.fell_back("max_output_tokens")
            continue
        if operation == "chat":
            n = body.get("n")
            if n is not None:
                if type(n) is not int or not 1 <= n <= _MAX_N:
                    tally.fell_back("n")
                elif n > 1:
                    value *= n
        return value
    return None


class _Unnoted(Tally):
    """A tally that notes nothing (for callers that only want the number)."""

    __slots__ = ()

    def fell_back(self, reason: str) -> None:
        """Nothing to note."""


_UNNOTED = _Unnoted()
_CHAT_KEYS = ("max_completion_tokens", "max_tokens")
_RESPONSES_KEYS = ("max_output_tokens",)


def max_output_tokens(operation: str, body: Mapping[str, Any]) -> int | None:
    """Output ceiling of a call: chat ``max_completion_tokens``/``max_tokens`` times ``n``; Responses
    ``max_output_tokens``; 0 for embeddings; None when the body sets no ceiling the API could accept
    (negative, beyond ``MAX_OUTPUT_CEILING``, not an integer)."""
    return _max_output(operation, body, _UNNOTED)


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
        """Prompt tokens of ``body`` for ``model`` (never raises on a hostile body: see :meth:`estimate`)."""
        return _count(operation, body, self._counter(model), model, Tally())

    def estimate(
        self,
        operation: str,
        model: str,
        body: Mapping[str, Any],
        predicted_output: int | None = None,
    ) -> Estimate:
        """Estimate one call; ``predicted_output`` (e.g. from OutputPredictor) is capped at the max.

        Never raises on what a caller put in the body: parts the rules cannot read are counted by the byte
        estimate and named in ``Estimate.fallback`` (one log record per reason code and process).
        """
        counter = self._counter(model)
        tally = Tally()
        try:
            ceiling = _max_output(operation, body, tally)
        except Exception:  # a body whose lookups raise (a hostile Mapping): no ceiling read
            tally.fell_back("body")
            ceiling = None
        if predicted_output is not None and ceiling is not None:
            predicted_output = min(predicted_output, ceiling)
        if operation not in _OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}: expected 'chat', 'responses' or 'embeddings'")
        try:
            prompt = count_body(operation, body, counter, model, tally)
        except Exception:  # the per-part guards did not hold (a Mapping whose lookups raise): the body's bytes
            prompt = tally.fallback("body", body)
        if tally.reasons:
            _note_fallback(tally.reasons)
        return Estimate(
            prompt_tokens=prompt,
            max_output_tokens=ceiling,
            predicted_output_tokens=predicted_output,
            estimator="tiktoken" if counter.exact and not tally.reasons else "fallback",
            encoding=counter.encoding_name,
            fallback=tuple(tally.reasons),
        )

    def cache_stats(self) -> CacheStats:
        """Counters of the long-text / tools-list cache."""
        return self._cache.stats()


_OPERATIONS = frozenset({"chat", "responses", "embeddings"})


def _count(operation: str, body: Mapping[str, Any], counter: TextCounter, model: str, tally: Tally) -> int:
    """count_body, with the whole body by its bytes should the per-part guards not hold (never raises)."""
    if operation not in _OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}: expected 'chat', 'responses' or 'embeddings'")
    try:
        return count_body(operation, body, counter, model, tally)
    except Exception:
        return tally.fallback("body", body)


_noted: set[str] = set()


def _note_fallback(reasons: list[str]) -> None:
    """One log record per reason code and process (the reasons are a closed set: the set stays small)."""
    new = [r for r in reasons if r not in _noted]
    if new:
        _noted.update(new)
        _log.info("token estimate: body parts the rules cannot read (%s) counted by their bytes; the API "
                  "judges the body (logged once per part kind)", ", ".join(new))


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
