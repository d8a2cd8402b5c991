"""The limiter algorithm on one key's state: token buckets with debt ("virtual scheduling").

Each bucket has a capacity (the limit), refills continuously at ``capacity / window`` and starts
full. A reservation is committed at once: every known bucket is debited, possibly into debt, and
the caller sleeps until the deepest debt is refilled. Later callers see the deeper debt and get a
later admission time, so admission order is arrival order (FIFO) and a large request is never
starved by small ones. If the wait would exceed ``max_wait`` nothing is committed.

A commit admitted at ``now + wait`` (the wait may come from another bucket or a cooldown) debits
``min(level, cap - rate * wait) - cost``: a bucket cannot hold more at admission than it refills
by then (the GCRA update ``TAT = max(TAT, admission) + cost / rate``).

Refunds (settle below the reservation, release) are bounded twice: a credit for a debit made at
time ``t`` is at most ``cap - (level_after_debit + refill since t + credits given since t)`` (an
upper bound of the level reached since ``t``: room already refilled up to the capacity is not given
twice), and while a commit is still queued for a fixed admission time in the future, the level
after a credit stays below ``cap - rate * (tat - now)``, ``tat`` being the GCRA chain of all
commits (newcomers must not bunch up with the queue). Without these bounds refunds could
over-admit; the price is that refunds arriving while calls are queued are partly lost (conservative).
Buckets whose limit is unknown are not accounted; with no known limit the call is admitted at once.
The Redis Lua script (``redis_script.py``) implements the same steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from middleware.limits.types import (
    LEARNABLE,
    REASON_COOLDOWN,
    REASON_NO_LIMITS,
    REASON_WITHIN_LIMIT,
    TOKEN_BUCKETS,
    BackendDecision,
    Charge,
    Debit,
    LearnedLimits,
    LimitState,
)


@dataclass
class Bucket:
    """Level (may be negative: debt) as of ``updated``; ``credits`` counts all refunds ever given."""

    level: float
    updated: float
    credits: float = 0.0
    queue_at: float = -math.inf  # admission time of the latest commit
    tat: float = -math.inf  # GCRA chain of the commits: max(tat, admission) + cost / rate


@dataclass
class KeyState:
    """All buckets of one limiter key, the limits and window learned for it and its cooldown."""

    buckets: dict[str, Bucket] = field(default_factory=dict)
    learned: dict[str, float] = field(default_factory=dict)
    window: float | None = None  # refill window learned from headers (used when the config allows)
    cooldown_until: float = -math.inf
    epoch: str = "0"


def effective_caps(configured: dict[str, float | None], learned: dict[str, float], scale: float) -> dict[str, float]:
    """Capacity per known bucket: the smaller of configured and learned, times ``scale``."""
    caps: dict[str, float] = {}
    for name, conf in configured.items():
        seen = learned.get(name)
        cap = conf if seen is None else seen if conf is None else min(conf, seen)
        if cap is not None:
            caps[name] = cap * scale
    return caps


def with_margin(
    caps: dict[str, float], windows: dict[str, float], margin: float,
) -> tuple[dict[str, float], dict[str, float]]:
    """Capacities lowered by ``rate * margin`` (at most half), windows shortened to keep each rate.

    A bucket of capacity ``cap - rate * J`` refilled at ``rate`` never lets calls arriving up to J
    seconds out of schedule overrun an upstream bucket of capacity ``cap`` (``LimitConfig``).
    """
    if margin <= 0:
        return caps, dict(windows)
    out_caps, out_windows = {}, dict(windows)
    for name, cap in caps.items():
        window = windows[name]
        keep = 1.0 - min(margin, window / 2) / window
        out_caps[name] = cap * keep
        out_windows[name] = window * keep
    return out_caps, out_windows


def refill(state: KeyState, caps: dict[str, float], windows: dict[str, float], now: float) -> None:
    """Bring every known bucket to ``now`` (new buckets start full; levels never exceed capacity)."""
    for name, cap in caps.items():
        b = state.buckets.get(name)
        if b is None:
            state.buckets[name] = Bucket(cap, now)
            continue
        if now > b.updated:
            b.level += (now - b.updated) * cap / windows[name]
            b.updated = now
        b.level = min(b.level, cap)


def cost(name: str, requests: int, tokens: int) -> float:
    """What one reservation costs in bucket ``name``."""
    return float(tokens if name in TOKEN_BUCKETS else requests)


def decide(
    state: KeyState,
    caps: dict[str, float],
    windows: dict[str, float],
    now: float,
    tokens: int,
    max_wait: float,
    scale: float = 1.0,
    limits: dict[str, float] | None = None,
) -> BackendDecision:
    """Refill, then commit the reservation (1 request, ``tokens`` tokens) or refuse it; see the module doc.

    ``limits`` are the capacities before any jitter margin (what "too large" is judged against).
    """
    refill(state, caps, windows, now)
    full = caps if limits is None else limits
    for name in sorted(TOKEN_BUCKETS & full.keys()):
        if tokens > full[name] / scale:
            return BackendDecision("too_large", 0.0, name, now, limit=full[name] / scale)
    wait, reason = 0.0, REASON_WITHIN_LIMIT if caps else REASON_NO_LIMITS
    for name, cap in caps.items():
        after = state.buckets[name].level - cost(name, 1, tokens)
        if after < 0 and -after * windows[name] / cap > wait:
            wait, reason = -after * windows[name] / cap, name
    if state.cooldown_until - now > wait:
        wait, reason = state.cooldown_until - now, REASON_COOLDOWN
    if wait > max_wait:
        return BackendDecision("timeout", wait, reason, now)
    debits: list[Debit] = []
    for name, cap in caps.items():
        b, amount = state.buckets[name], cost(name, 1, tokens)
        # admitted at now + wait: the bucket cannot hold more than it will have refilled by then
        b.level = min(b.level, cap - wait * cap / windows[name]) - amount
        tat_before, queue_before = b.tat, b.queue_at
        b.queue_at = now + wait
        b.tat = max(b.tat, now + wait) + amount * windows[name] / cap
        debits.append(Debit(name, amount, b.level, b.credits, tat_before, b.tat, queue_before))
    charge = Charge(now, now + wait, state.epoch, tuple(debits)) if debits else None
    return BackendDecision("ok", wait, reason, now, charge)


def give_back(
    state: KeyState, caps: dict[str, float], windows: dict[str, float], now: float,
    requests: int, tokens: int, charge: Charge,
) -> None:
    """Credit (positive amounts, bounded: see the module doc) or debit (negative) the charged buckets."""
    if charge.epoch != state.epoch:
        return
    refill(state, caps, windows, now)
    for d in charge.debits:
        b, cap = state.buckets.get(d.bucket), caps.get(d.bucket)
        amount = cost(d.bucket, requests, tokens)
        if b is None or cap is None or amount == 0:
            continue
        if amount < 0:
            b.level += amount
            continue
        rate = cap / windows[d.bucket]
        latest = b.tat == d.tat_after  # nothing committed since: the commit can be undone exactly
        tat, queue_at = b.tat, b.queue_at
        if latest:
            tat = d.tat_before
            queue_at = d.queue_before if amount >= d.cost else b.queue_at
        bound = d.level_after + max(0.0, now - charge.at) * rate + max(0.0, b.credits - d.credits)
        ceiling = cap - (tat - now) * rate if queue_at > now else cap
        credit = min(amount, cap - bound, ceiling - b.level)
        if credit <= 0:
            continue
        b.level += credit
        b.credits += credit
        if latest:
            kept = d.cost - credit
            b.tat = max(tat, charge.admit_at) + kept / rate if kept > 0 else tat
            b.queue_at = queue_at


def learn(
    state: KeyState,
    configured: dict[str, float | None],
    windows_of: Callable[[float | None], dict[str, float]],
    now: float,
    seen: LearnedLimits,
    scale: float = 1.0,
    margin: float = 0.0,
) -> dict[str, LimitState]:
    """Adopt header limits and window; correct levels downward only: ``level = min(level, remaining)``.

    Levels are first brought to ``now`` at the old capacities and rates, then the new ones apply.
    ``windows_of(learned_window)`` gives the windows in force (a configured window may ignore it).
    """
    refill(state, *with_margin(effective_caps(configured, state.learned, scale), windows_of(state.window), margin),
           now)
    for name, limit in seen.limits.items():
        if name in LEARNABLE and limit > 0:
            state.learned[name] = limit
    if seen.window is not None and seen.window > 0:
        state.window = seen.window
    caps, windows = with_margin(effective_caps(configured, state.learned, scale), windows_of(state.window), margin)
    refill(state, caps, windows, now)
    out: dict[str, LimitState] = {}
    for name in LEARNABLE:
        if name not in caps:
            continue
        b = state.buckets[name]
        remaining = seen.remaining.get(name)
        if remaining is not None:
            b.level = min(b.level, remaining * scale)
        out[name] = LimitState(caps[name], b.level)
    return out


def cooldown(
    state: KeyState, caps: dict[str, float], windows: dict[str, float], now: float,
    seconds: float, resources: tuple[str, ...],
) -> None:
    """Block the key until ``now + seconds`` and empty the named buckets (debt is kept)."""
    refill(state, caps, windows, now)
    state.cooldown_until = max(state.cooldown_until, now + seconds)
    for name in resources:
        b = state.buckets.get(name)
        if b is not None:
            b.level = min(b.level, 0.0)


def snapshot(state: KeyState, caps: dict[str, float], windows: dict[str, float], now: float) -> dict[str, LimitState]:
    """Limit and level per known bucket, with the cooldown left."""
    refill(state, caps, windows, now)
    left = max(0.0, state.cooldown_until - now)
    return {name: LimitState(cap, state.buckets[name].level, left) for name, cap in caps.items()}
