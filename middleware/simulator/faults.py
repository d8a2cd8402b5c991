"""Fault injection: the ``x-sim-fault`` grammar and the runtime fault state.

Grammar: ``;``-separated items, each ``key`` or ``key=value``; keys combine freely::

    status=500                    answer with this HTTP status and an OpenAI-shaped error body
    type=requests  code=...       error ``type`` / ``code`` of that body (429 defaults to a rate-limit body)
    message=TEXT                  error message
    should_retry=true|false       add ``x-should-retry``
    retry_after=S                 add ``retry-after`` (ceil S) and ``retry-after-ms`` to the error
    insufficient_quota            429 insufficient_quota (terminal)
    too_large                     429 "Request too large" (type tokens, code rate_limit_exceeded)
    reset                         close the connection before sending any byte
    delay=S                       wait S seconds (scaled) before answering
    cut_after=N                   stream: abort the connection after N content chunks, no [DONE]
    stall_after=N;stall_s=T       stream: pause T seconds (scaled) after N content chunks, then go on
    malformed_sse[=N]             stream: send a garbage ``data:`` line after N chunks (default: mid-stream)
    truncated_json                non-stream: right Content-Length, body cut in half, connection closed
    truncate_body                 non-stream: a complete response whose JSON is cut in half (Content-Length of
                                  what is sent, connection kept), as from a gateway that truncates bodies
    usage_chunk_with_empty_choice stream with include_usage: the usage chunk carries one choice with an empty
                                  delta instead of ``choices: []`` (LiteLLM's proxy does)
    usage_on_last_chunk           stream with include_usage: no usage chunk; usage rides on the last content chunk
    bad_ratelimit_headers         answer normally but with unparseable ``x-ratelimit-*`` values

``x-sim-fault-once: KEY`` applies the request's ``x-sim-fault`` only the first time KEY is seen;
``x-sim-fault-then: SPEC`` (with it) is the fault of every later request carrying KEY, e.g. a
stream cut once whose resumed requests then fail.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class FaultSyntaxError(ValueError):
    """An ``x-sim-fault`` value does not follow the grammar."""


@dataclass(frozen=True)
class Fault:
    """One parsed fault specification."""

    status: int | None = None
    error_type: str | None = None
    code: str | None = None
    message: str | None = None
    should_retry: bool | None = None
    retry_after_s: float | None = None
    reset: bool = False
    delay_s: float = 0.0
    cut_after: int | None = None
    stall_after: int | None = None
    stall_s: float = 1.0
    malformed_sse: int | None = None
    truncated_json: bool = False
    truncate_body: bool = False
    too_large: bool = False
    bad_ratelimit_headers: bool = False
    usage_chunk_with_empty_choice: bool = False
    usage_on_last_chunk: bool = False

    @property
    def kind(self) -> str:
        """A short label for /stats."""
        if self.reset:
            return "reset"
        if self.too_large:
            return "too_large"
        if self.error_type == "insufficient_quota":
            return "insufficient_quota"
        if self.status is not None:
            return f"status_{self.status}"
        for name, value in (
            ("cut", self.cut_after),
            ("stall", self.stall_after),
            ("malformed_sse", self.malformed_sse),
        ):
            if value is not None:
                return name
        for flag in ("truncated_json", "truncate_body", "bad_ratelimit_headers", "usage_chunk_with_empty_choice",
                     "usage_on_last_chunk"):
            if getattr(self, flag):
                return flag
        return "delay" if self.delay_s else "none"

    @property
    def cuts_json(self) -> bool:
        """A non-streamed JSON body is sent cut in half (``truncated_json`` or ``truncate_body``)."""
        return self.truncated_json or self.truncate_body

    @property
    def is_error(self) -> bool:
        """Whether the fault answers with an error status instead of the real response."""
        return self.status is not None


_MID_STREAM = -1


def parse_fault(spec: str) -> Fault:
    """Parse one ``x-sim-fault`` value; raises :class:`FaultSyntaxError`."""
    values: dict[str, Any] = {}
    for raw in spec.split(";"):
        item = raw.strip()
        if not item:
            continue
        key, has_value, value = (part.strip() for part in item.partition("="))
        try:
            _apply(values, key, value if has_value else None)
        except (ValueError, TypeError) as exc:
            raise FaultSyntaxError(f"bad fault item {item!r}: {exc}") from exc
    return Fault(**values)


def _apply(values: dict[str, Any], key: str, value: str | None) -> None:
    flags = {name: name for name in ("reset", "truncated_json", "truncate_body", "bad_ratelimit_headers",
                                     "usage_chunk_with_empty_choice", "usage_on_last_chunk")}
    ints = {"status": "status", "cut_after": "cut_after", "stall_after": "stall_after"}
    floats = {"retry_after": "retry_after_s", "stall_s": "stall_s", "delay": "delay_s"}
    texts = {"type": "error_type", "code": "code", "message": "message"}
    if key in flags:
        values[flags[key]] = True
    elif key in ints:
        values[ints[key]] = int(_required(value))
    elif key in floats:
        values[floats[key]] = float(_required(value))
    elif key in texts:
        values[texts[key]] = _required(value)
    elif key == "should_retry":
        values["should_retry"] = _required(value).lower() in ("1", "true", "yes")
    elif key == "malformed_sse":
        values["malformed_sse"] = int(value) if value else _MID_STREAM
    elif key == "insufficient_quota":
        values.update(status=429, error_type="insufficient_quota", code="insufficient_quota")
    elif key == "too_large":
        values.update(status=429, error_type="tokens", code="rate_limit_exceeded", too_large=True)
    else:
        raise ValueError(f"unknown key {key!r}")


def _required(value: str | None) -> str:
    if value is None or value == "":
        raise ValueError("a value is required")
    return value


_GARBAGE = {"limit": "lots", "remaining": "-1.5e", "reset": "soon"}


def garble_ratelimit_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with every ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` set to garbage
    (added when absent, e.g. with the limiter disabled)."""
    kept = [(k, v) for k, v in headers if not k.lower().startswith("x-ratelimit-")]
    return kept + [(f"x-ratelimit-{kind}-{res}", value) for kind, value in _GARBAGE.items()
                   for res in ("requests", "tokens")]


def malformed_position(fault: Fault, total_chunks: int) -> int | None:
    """The chunk index after which the garbage line goes, or ``None``."""
    if fault.malformed_sse is None:
        return None
    return total_chunks // 2 if fault.malformed_sse == _MID_STREAM else fault.malformed_sse


@dataclass
class FaultState:
    """Faults chosen by the server itself: random rates, outages, exhausted quota (thread-safe)."""

    seed: int = 0
    fault_rates: dict[str, Fault] = field(default_factory=dict)
    outages: list[tuple[float, float]] = field(default_factory=list)
    outage_fault: Fault = field(default_factory=lambda: Fault(status=503))
    quota_exhausted: bool = False
    started_at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._raw_rates: dict[str, float] = {}
        self._seen_once: set[str] = set()

    def set_rates(self, rates: Mapping[str, float]) -> None:
        """Replace the random fault rates (``{spec: probability}``)."""
        parsed = {spec: parse_fault(spec) for spec in rates}
        with self._lock:
            self._raw_rates = dict(rates)
            self.fault_rates = parsed

    def first_time(self, key: str) -> bool:
        """True the first time ``key`` is seen (``x-sim-fault-once``)."""
        with self._lock:
            if key in self._seen_once:
                return False
            self._seen_once.add(key)
            return True

    def pick(self, now: float) -> Fault | None:
        """The server-chosen fault for a request arriving at ``now`` (monotonic), if any."""
        with self._lock:
            elapsed = now - self.started_at
            if any(start <= elapsed < end for start, end in self.outages):
                return self.outage_fault
            roll = self._rng.random()
            for spec, prob in self._raw_rates.items():
                if roll < prob:
                    return self.fault_rates[spec]
                roll -= prob
        return None

    def update(self, payload: Mapping[str, Any]) -> None:
        """Apply a ``POST /admin/faults`` payload (see :func:`describe`)."""
        now = time.monotonic() - self.started_at
        if "fault_rates" in payload:
            self.set_rates({str(k): float(v) for k, v in dict(payload["fault_rates"]).items()})
        with self._lock:
            if "outage_fault" in payload:
                self.outage_fault = parse_fault(str(payload["outage_fault"]))
            if "outages" in payload:
                self.outages = [(float(a), float(b)) for a, b in payload["outages"]]
            if "outage" in payload:
                self.outages = [o for o in self.outages if o[1] <= now]
                if payload["outage"]:
                    self.outages.append((now, float("inf")))
            if "outage_for_s" in payload:
                self.outages.append((now, now + float(payload["outage_for_s"])))
            if "quota_exhausted" in payload:
                self.quota_exhausted = bool(payload["quota_exhausted"])
            if payload.get("reset_once"):
                self._seen_once.clear()

    def describe(self) -> dict[str, Any]:
        """Current state as JSON-friendly data (``GET /admin/faults``)."""
        with self._lock:
            return {
                "fault_rates": dict(self._raw_rates),
                "outages": [[a, None if b == float("inf") else b] for a, b in self.outages],
                "quota_exhausted": self.quota_exhausted,
                "uptime_s": time.monotonic() - self.started_at,
            }
