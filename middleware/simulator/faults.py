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

Counted faults, for tests that must not depend on the clock: ``x-sim-fault-key: KEY`` with
``x-sim-fault-times: N`` applies the request's ``x-sim-fault`` to the first N requests carrying KEY (so a call
retried by the client fails exactly N attempts, then succeeds); ``x-sim-fault-once: KEY`` is the same with N = 1.
Server-side, ``fault_times`` (``--fault-times SPEC@N``, or ``POST /admin/faults`` at runtime) is a queue of
``(SPEC, N)``: the next N generation requests without a fault header of their own get SPEC, then the next
entry's, and so on; it goes before outages and random rates.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import Number


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


MAX_FAULT_TIMES = 1_000_000
"""Upper bound of a fault's count (``x-sim-fault-times``, ``fault_times``)."""


TIMES = Number(1, MAX_FAULT_TIMES, integer=True)
"""A fault count: ``x-sim-fault-times``, the N of ``fault_times`` / ``--fault-times SPEC@N``."""


def parse_times(text: str) -> int:
    """The ``x-sim-fault-times`` header: plain decimal text checked against :data:`TIMES`; FaultSyntaxError."""
    try:
        count: int = TIMES.parse(text.strip())
    except ValueError as exc:
        raise FaultSyntaxError(f"x-sim-fault-times={text!r} is not allowed ({exc}): expected {TIMES.allowed}"
                               ) from None
    return count


def parse_fault_times(items: object) -> list[tuple[str, int]]:
    """A ``fault_times`` queue, ``[[SPEC, N], ...]`` (or tuples): every spec parsed and every count checked;
    raises FaultSyntaxError naming the bad entry (its message reads after ``fault_times: ``)."""
    if isinstance(items, str | bytes) or not isinstance(items, list | tuple):
        raise FaultSyntaxError(f"{items!r} is not allowed: expected a list of [SPEC, N] pairs")
    queue: list[tuple[str, int]] = []
    for item in items:
        if isinstance(item, str | bytes) or not isinstance(item, list | tuple) or len(item) != 2 or not isinstance(
                item[0], str):
            raise FaultSyntaxError(f"entry {item!r} is not allowed: expected [SPEC, N]")
        spec, times = item
        try:
            parse_fault(spec)
        except FaultSyntaxError as exc:
            raise FaultSyntaxError(f"fault {spec!r} is not allowed ({exc})") from None
        try:
            count: int = TIMES.check(times)
        except (ValueError, TypeError) as exc:
            raise FaultSyntaxError(f"count of fault {spec!r}={times!r} is not allowed ({exc}): expected "
                                   f"{TIMES.allowed}") from None
        queue.append((spec, count))
    return queue


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
    """Faults chosen by the server itself: counted faults, outages, random rates, exhausted quota (thread-safe)."""

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
        self._seen: dict[str, int] = {}  # x-sim-fault-key / x-sim-fault-once: requests seen per key
        self._counted: list[tuple[str, Fault, int]] = []  # fault_times: (spec, fault, remaining), in order

    def set_rates(self, rates: Mapping[str, float]) -> None:
        """Replace the random fault rates (``{spec: probability}``)."""
        parsed = {spec: parse_fault(spec) for spec in rates}
        with self._lock:
            self._raw_rates = dict(rates)
            self.fault_rates = parsed

    def set_counted(self, items: object) -> None:
        """Replace the queue of counted faults (``[[spec, N], ...]``, see :func:`parse_fault_times`)."""
        queue = [(spec, parse_fault(spec), times) for spec, times in parse_fault_times(items)]
        with self._lock:
            self._counted = queue

    def within(self, key: str, times: int) -> bool:
        """Count one more request carrying ``key``; True while at most ``times`` have been seen
        (``x-sim-fault-key`` with ``x-sim-fault-times``; ``x-sim-fault-once`` is ``times=1``)."""
        with self._lock:
            seen = self._seen[key] = self._seen.get(key, 0) + 1
            return seen <= times

    def first_time(self, key: str) -> bool:
        """True the first time ``key`` is seen (``x-sim-fault-once``)."""
        return self.within(key, 1)

    def pick(self, now: float) -> Fault | None:
        """The server-chosen fault for a request arriving at ``now`` (monotonic), if any: the next counted
        fault, else an outage's, else one drawn from the random rates."""
        with self._lock:
            if self._counted:
                spec, fault, remaining = self._counted[0]
                if remaining > 1:
                    self._counted[0] = (spec, fault, remaining - 1)
                else:
                    del self._counted[0]
                return fault
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
        if "fault_times" in payload:
            self.set_counted(payload["fault_times"])
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
                self._seen.clear()

    def describe(self) -> dict[str, Any]:
        """Current state as JSON-friendly data (``GET /admin/faults``)."""
        with self._lock:
            return {
                "fault_rates": dict(self._raw_rates),
                "fault_times": [[spec, remaining] for spec, _, remaining in self._counted],
                "outages": [[a, None if b == float("inf") else b] for a, b in self.outages],
                "quota_exhausted": self.quota_exhausted,
                "uptime_s": time.monotonic() - self.started_at,
            }
