"""The limiter algorithm on one key's state: token buckets with debt ("virtual scheduling").

Each bucket has a capacity (the limit), refills continuously at ``capacity / window`` and starts
full. A reservation is committed at once: every known bucket is debited, possibly into debt, and
the caller sleeps until the deepest debt is refilled. Later callers see the deeper debt and get a
later admission time, so admission order is arrival order (FIFO) and a large request is never
starved by small ones. If the wait would exceed ``max_wait`` nothing is committed.

While calls are queued (an admission in the future), a newcomer is never admitted before the last of
them plus its own cost's refill time or ``REORDER_SECONDS``, the shorter, even if a correction credited
the level meanwhile: admission order stays commit order, which the comparisons with the upstream's
headers rely on.

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

Converging on the upstream's own count (``correct``): the model is a copy of the upstream's bucket,
held ``margin`` below it. Each commit records the upstream level it predicts right after the call
reaches it (``Debit.expected``); the call's ``x-ratelimit-remaining-*`` header gives the truth. The
difference not yet corrected (``expected - remaining - corrections made since the commit``) is
applied to the level at once (debt included, so queued calls are pushed back or forward), and
counted in the bucket's cumulative ``corrections``. Three things are learned from it:

- the **bias** of the tokens bucket: the upstream's tokens per token we estimate, measured over the
  calls between two corrections at least ``BIAS_PERIOD`` of the limit apart as
  ``(model spend + corrections) / raw estimates``; every later reservation is charged
  ``ceil(tokens * bias)``, so the calls queued in between are already priced right. The bias is
  never below 1: an upstream that counts fewer tokens than we estimate is followed by the level
  corrections (credits) alone, because a measured ratio below 1 may as well be a refill-rate error
  (a window not yet learned exactly) or jitter, and pricing calls below our estimate on such noise
  costs 429s;
- the **margin**: a decaying peak of the shortfalls seen (``expected`` above the truth), held back
  from the capacity so that the arrival jitter that caused them does not cost a 429;
- the level itself, for the calls still in flight.

Only paced calls (queued, or the bucket empty at their admission, so the next call is admitted at
least its cost's refill time later) admitted at least ``REORDER_SECONDS`` after the call committed
before them are compared exactly: calls admitted together (a burst while the bucket has room) reach the
upstream in any order, so what one of their headers says depends on that order; they only ever lower
the level (an excess is credited back by the next paced call), and teach neither margin nor bias.
Headers of calls committed before the last one used are ignored too (they
would undo a newer truth).
The Redis Lua script (``redis_script.py``) implements the same steps.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from middleware.limits.types import (
    LEARNABLE,
    REASON_COOLDOWN,
    REASON_NO_LIMITS,
    REASON_WITHIN_LIMIT,
    TOKEN_BUCKETS,
    TOKENS,
    BackendDecision,
    Charge,
    Debit,
    LearnedLimits,
    LimitState,
)

DEADBAND = 1.5  # deviations this small are the header's rounding (down or to the nearest unit), not an error
MARGIN_DECAY = 0.995  # per header used: a shortfall seen 600 headers ago weighs 5 %
MARGIN_FACTOR = 2.0  # the margin holds back twice the (decayed) largest shortfall seen
MIN_MARGIN = 2 * DEADBAND  # the rounding a synchronised model may still be off by, held back once compared
MAX_MARGIN_FRACTION = 0.25  # never hold back more than a quarter of the limit
BIAS_PERIOD = 0.25  # bias measured over calls worth at least 1/4 of the tokens limit (estimated) ...
BIAS_SAMPLE = 200.0  # ... and at least this many tokens (rounding of one header is then below 1 %)
BIAS_MAX = 4.0
REORDER_SECONDS = 0.02  # calls admitted closer together than this may reach the upstream in either order
_TOKEN_ORDER = tuple(sorted(TOKEN_BUCKETS))  # the token buckets in the order "too large" is judged
_epochs = itertools.count(1)


@dataclass
class Bucket:
    """Level (may be negative: debt) as of ``updated``; ``credits`` counts all refunds ever given."""

    level: float
    updated: float
    credits: float = 0.0
    queue_at: float = -math.inf  # admission time of the latest commit
    tat: float = -math.inf  # GCRA chain of the commits: max(tat, admission) + cost / rate
    corrections: float = 0.0  # cumulative level changes other than commits and refill (debits positive)
    spent: float = 0.0  # cumulative cost committed
    raw: float = 0.0  # the same before the bias
    dropped: float = 0.0  # cumulative estimates of released calls (never charged upstream)
    seq: float = 0.0  # commits so far
    seen: float = 0.0  # seq of the latest commit whose header was used


@dataclass
class KeyState:
    """All buckets of one limiter key, the limits, window, bias and margins learned for it, its cooldown."""

    buckets: dict[str, Bucket] = field(default_factory=dict)
    learned: dict[str, float] = field(default_factory=dict)
    window: float | None = None  # refill window learned from headers (used when the config allows)
    cooldown_until: float = -math.inf
    epoch: str = field(default_factory=lambda: str(next(_epochs)))
    bias: float = 1.0
    # (spent, raw, dropped, corrections) when the bias was last measured
    bias_base: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    margins: dict[str, float] = field(default_factory=dict)  # learned hold-back per bucket, in its units
    # the memory backend's cache of ``shape(...)`` for this state: reset by whatever changes ``learned``,
    # ``window`` or ``margins`` (``learn``) and by a change of the backend's scale
    shape: Shape | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Shape:
    """One key's buckets as configured and learned: limits, capacities after the margin, windows."""

    full: dict[str, float]  # limit per known bucket (times the fallback scale)
    caps: dict[str, float]  # capacity the model holds (limit minus the margin)
    windows: dict[str, float]  # refill windows, shortened with the capacity (same rate)


def shape(
    state: KeyState, configured: dict[str, float | None], windows_of: Callable[[float | None], dict[str, float]],
    scale: float, margin: float, initial: float = 0.0,
) -> Shape:
    """The key's limits, capacities and windows: configured margin (seconds) or learned one, the larger.

    Each known bucket's limit is the smaller of configured and learned, times ``scale`` (``full``). Its capacity
    is lowered by ``rate * margin`` (a margin of at most half the window), its window shortened alike to keep
    the rate: a bucket of capacity ``cap - rate * J`` refilled at ``rate`` never lets calls arriving up to J
    seconds out of schedule overrun an upstream bucket of capacity ``cap`` (``LimitConfig``).
    ``initial``: share of a tokens limit held back while its bucket has no learned margin yet (requests are
    counted alike on both sides: one per call).
    """
    learned, held = state.learned, state.margins
    windows = windows_of(state.window)
    full: dict[str, float] = {}
    caps: dict[str, float] = {}
    wins = dict(windows)
    for name, conf in configured.items():
        seen = learned.get(name)
        limit = conf if seen is None else seen if conf is None else min(conf, seen)
        if limit is None:
            continue
        full[name] = cap = limit * scale
        window = windows[name]
        j = max(margin, held.get(name, cap * initial if name in TOKEN_BUCKETS else 0.0) * window / cap)
        if j <= 0:
            caps[name] = cap
            continue
        keep = 1.0 - min(j, window / 2) / window
        caps[name] = cap * keep
        wins[name] = window * keep
    return Shape(full, caps, wins)


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


def cost(name: str, requests: int | float, tokens: int | float) -> float:
    """What one reservation costs in bucket ``name``."""
    return float(tokens if name in TOKEN_BUCKETS else requests)


def charged(tokens: int, bias: float, full: dict[str, float]) -> int:
    """Tokens a reservation of ``tokens`` (our estimate) is charged: ``ceil(tokens * bias)``, within the limit."""
    if bias == 1.0:
        return tokens  # min(tokens, max(tokens, limit)) for every limit
    out = math.ceil(tokens * bias)
    for name in _TOKEN_ORDER:
        if name in full:
            out = min(out, max(tokens, math.floor(full[name])))
    return out


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

    ``limits`` are the capacities before any margin (what "too large" is judged against).
    """
    refill(state, caps, windows, now)
    full = caps if limits is None else limits
    for name in _TOKEN_ORDER:
        if name in full and tokens > full[name] / scale:
            return BackendDecision("too_large", 0.0, name, now, limit=full[name] / scale)
    price = charged(tokens, state.bias, full)
    # what one call costs in a token bucket and in a requests bucket (``cost``)
    token_cost, raw_cost = float(price), float(tokens)
    wait, reason = 0.0, REASON_WITHIN_LIMIT if caps else REASON_NO_LIMITS
    held = state.buckets
    for name, cap in caps.items():
        b, amount = held[name], token_cost if name in TOKEN_BUCKETS else 1.0
        need = -(b.level - amount) * windows[name] / cap
        if b.queue_at > now:  # FIFO: never ahead of a call already queued (a credit must not let one jump)
            need = max(need, b.queue_at - now + min(REORDER_SECONDS, amount * windows[name] / cap))
        if need > 0 and need > wait:
            wait, reason = need, name
    if state.cooldown_until - now > wait:
        wait, reason = state.cooldown_until - now, REASON_COOLDOWN
    if wait > max_wait:
        return BackendDecision("timeout", wait, reason, now)
    if not caps:
        return BackendDecision("ok", wait, reason, now, None)
    debits: list[Debit] = []
    admit_at = now + wait
    for name, cap in caps.items():
        b = held[name]
        if name in TOKEN_BUCKETS:
            amount, raw = token_cost, raw_cost
        else:
            amount = raw = 1.0
        rate = cap / windows[name]
        # admitted at now + wait: the bucket cannot hold more than it will have refilled by then
        b.level = level = min(b.level, cap - wait * rate) - amount
        tat_before, queue_before = b.tat, b.queue_at
        b.queue_at = admit_at
        b.tat = tat = max(tat_before, admit_at) + amount / rate
        b.spent += amount
        b.raw += raw
        b.seq += 1
        expected = level + wait * rate + (full.get(name, cap) - cap)
        debits.append(Debit(name, amount, level, b.credits, tat_before, tat, queue_before,
                            expected, b.corrections, b.spent, b.raw, b.seq))
    return BackendDecision("ok", wait, reason, now, Charge(now, admit_at, state.epoch, tuple(debits)))


def give_back(
    state: KeyState, caps: dict[str, float], windows: dict[str, float], now: float,
    requests: int, tokens: int, charge: Charge, raw_tokens: int | None = None,
) -> None:
    """Credit (positive amounts, bounded: see the module doc) or debit (negative) the charged buckets.

    ``tokens`` is in charged units (after the bias), ``raw_tokens`` the same amount as estimated; a release
    (``requests > 0``) also takes the call's estimate out of the bias sample, and refunds nothing once a
    header of this call or of a later one was compared (``correct`` saw the upstream without it and gave
    it back already). Every credit and extra charge counts in the bucket's ``corrections``: a header
    compared later knows the model moved.
    """
    if charge.epoch != state.epoch:
        return
    refill(state, caps, windows, now)
    raw_total = tokens if raw_tokens is None else raw_tokens
    held = state.buckets
    for d in charge.debits:
        name = d.bucket
        b, cap = held.get(name), caps.get(name)
        if name in TOKEN_BUCKETS:  # ``cost``
            amount, raw = float(tokens), float(raw_total)
        else:
            amount = raw = float(requests)
        if b is None or cap is None or amount == 0:
            continue
        if requests > 0:
            b.dropped += raw  # a released call was never charged upstream: its estimate leaves the bias sample
            if d.seq <= b.seen:
                continue  # a header of this call or a later one was compared: the correction gave it back
        if amount < 0:
            b.level += amount
            b.corrections -= amount
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
        b.corrections -= credit
        if latest:
            kept = d.cost - credit
            b.tat = max(tat, charge.admit_at) + kept / rate if kept > 0 else tat
            b.queue_at = queue_at


def correct(state: KeyState, s: Shape, name: str, d: Debit, remaining: float, now: float, exact: bool) -> None:
    """Move the model to the upstream's ``remaining`` after the call of debit ``d``; learn margin and bias.

    Not ``exact`` (a call of a burst, whose place in the upstream's order is unknown): only lower the level.
    """
    b, cap, full = state.buckets[name], s.caps[name], s.full[name]
    rate = cap / s.windows[name]
    delta = d.expected - remaining - (b.corrections - d.corrections)
    b.seen = d.seq
    applied = 0.0
    if delta > DEADBAND:
        applied = delta
    elif delta < -DEADBAND and exact:
        # the upstream holds more than we thought: newcomers may use it before the calls already queued,
        # whose admission times stay (the refund ceiling of ``give_back`` does not apply to the truth)
        applied = -max(0.0, min(-delta, cap - b.level))
    b.level -= applied
    b.corrections += applied
    b.tat += applied / rate  # the GCRA chain moves with the level (level = cap - rate * (tat - now))
    if exact:
        held = full - cap  # the initial margin (or the configured one) until one was learned
        margin = max(MIN_MARGIN, state.margins.get(name, held) * MARGIN_DECAY, delta * MARGIN_FACTOR)
        state.margins[name] = min(margin, full * MAX_MARGIN_FRACTION, max(0.0, full - 1.0))  # one call still fits
    if name == TOKENS and (exact or not state.margins.get(name)):
        # before the first exact comparison, a provisional bias from the burst: it only ever raises the price
        learn_bias(state, b, d, full, provisional=not exact, residual=min(0.0, delta - applied))


def learn_bias(state: KeyState, b: Bucket, d: Debit, full: float, provisional: bool = False,
               residual: float = 0.0) -> None:
    """Measure the bias over the calls committed since the last measurement, once they are enough.

    ``provisional`` (a burst's header, before any exact one): the measurement may only raise the bias, and
    the sample is not closed; ``residual`` is the part of this header's deviation the level did not take
    (a burst's credit), by which the corrections overstate the upstream's count.
    """
    spent0, raw0, dropped0, corr0 = state.bias_base
    estimated = d.raw - raw0 - (b.dropped - dropped0)
    if estimated >= max(full * BIAS_PERIOD, BIAS_SAMPLE):
        # what the upstream charged for the calls up to this one (the model's commits plus every other
        # level change since: refunds, corrections) per token we estimated for the calls it did charge
        charged = d.spent - spent0 + b.corrections - corr0 + residual
        bias = min(BIAS_MAX, max(1.0, charged / estimated))
        if provisional:
            state.bias = max(state.bias, bias)
        else:
            state.bias = bias
            state.bias_base = (d.spent, d.raw, b.dropped, b.corrections)


def learn_shaped(
    state: KeyState,
    configured: dict[str, float | None],
    windows_of: Callable[[float | None], dict[str, float]],
    now: float,
    seen: LearnedLimits,
    scale: float = 1.0,
    margin: float = 0.0,
    charge: Charge | None = None,
    initial: float = 0.0,
    current: Shape | None = None,
) -> tuple[dict[str, LimitState], Shape]:
    """Adopt header limits and window, then correct the levels (see the module doc).

    ``current``: the state's shape under these arguments, if the caller holds it; the shape after learning is
    returned with the states (a caller caching shapes keeps it). A shape is computed again only when its
    inputs changed (limits, window, margins).

    With the ``charge`` of the call these headers answer (same state, no fallback scale), each level is
    corrected by the uncorrected deviation (``correct``; ``LimitState.used`` says it was compared; a
    refused call's headers say what the upstream holds without it); without it the level is only lowered,
    ``level = min(level, remaining)`` (the header excludes our calls still in flight). Levels are first
    brought to ``now`` at the old capacities and rates, then the new ones apply.
    ``windows_of(learned_window)`` gives the windows in force (a configured window may ignore it).
    """
    before = shape(state, configured, windows_of, scale, margin, initial) if current is None else current
    refill(state, before.caps, before.windows, now)
    changed = False
    for name, limit in seen.limits.items():
        if name in LEARNABLE and limit > 0 and state.learned.get(name) != limit:
            state.learned[name] = limit
            changed = True
    if seen.window is not None and seen.window > 0 and seen.window != state.window:
        state.window = seen.window
        changed = True
    if seen.bias is not None and seen.bias > 0:
        state.bias = seen.bias
    s = shape(state, configured, windows_of, scale, margin, initial) if changed else before
    if changed:
        refill(state, s.caps, s.windows, now)
    debits = {d.bucket: d for d in charge.debits} if charge is not None and charge.epoch == state.epoch else {}
    out: dict[str, LimitState] = {}
    for name in LEARNABLE:
        if name not in s.caps:
            continue
        b = state.buckets[name]
        remaining = seen.remaining.get(name)
        d = debits.get(name) if scale == 1.0 else None
        used = False
        if remaining is not None and d is not None and charge is not None:
            # only a paced call (queued, or the bucket empty at its admission: the next call comes at least its
            # cost's refill time later, ``decide``) and admitted apart from the one before it has a place in the
            # upstream's order (a burst arrives in any order): the others only ever lower the level; calls
            # older than the last one used would undo a newer truth
            rate = s.caps[name] / s.windows[name]
            wait = charge.admit_at - charge.at
            paced = wait > 0 or d.level_after + wait * rate <= DEADBAND
            if d.seq > b.seen:
                exact = paced and charge.admit_at - d.queue_before >= REORDER_SECONDS
                # sent ``delay`` after its admission: the upstream had refilled that much more
                margin_before = state.margins.get(name)
                correct(state, s, name, d, remaining - charge.delay * rate, now, exact)
                used = True
                held = s.full[name] - s.caps[name]
                if state.margins.get(name) != margin_before:
                    s = shape(state, configured, windows_of, scale, margin, initial)
                # the margin held back changed: the level follows, so that level + margin stays the upstream's
                b.level -= (s.full[name] - s.caps[name]) - held
                refill(state, s.caps, s.windows, now)
        elif remaining is not None:
            b.level = min(b.level, remaining * scale)
        out[name] = state_of(state, s, name, used=used)
    return out, s


def state_of(state: KeyState, s: Shape, name: str, cooldown: float = 0.0, used: bool = False) -> LimitState:
    """The public view of one bucket."""
    bias = state.bias if name in TOKEN_BUCKETS else 1.0
    margin = state.margins.get(name, s.full[name] - s.caps[name])
    return LimitState(s.caps[name], state.buckets[name].level, cooldown, bias, margin, used)


def cooldown(
    state: KeyState, caps: dict[str, float], windows: dict[str, float], now: float,
    seconds: float, resources: tuple[str, ...], empty: bool = True,
) -> None:
    """Block the key until ``now + seconds`` and (``empty``) empty the named buckets (debt is kept).

    Emptying is the crude correction for a 429 whose headers could not be compared (``learn``).
    """
    refill(state, caps, windows, now)
    state.cooldown_until = max(state.cooldown_until, now + seconds)
    for name in resources if empty else ():
        b = state.buckets.get(name)
        if b is not None and b.level > 0:
            b.corrections += b.level  # the upstream said it is empty: a correction like any other
            b.level = 0.0


def shift(state: KeyState, s: Shape, charge: Charge, tokens: int) -> float:
    """Seconds a call committed with ``charge`` (``tokens`` estimated) should wait beyond its admission.

    What was learned since its commit, in each token bucket at its rate: the net corrections (the upstream
    holds less than the call's schedule assumed) and the call's own price at the bias learned since (a call
    queued before the bias was known would reach the upstream underpriced).
    Requests are counted alike on both sides: their bucket never delays a call that is already queued.
    """
    if charge.epoch != state.epoch:
        return 0.0
    out = 0.0
    for d in charge.debits:
        b, cap = state.buckets.get(d.bucket), s.caps.get(d.bucket)
        if b is None or not cap or d.bucket not in TOKEN_BUCKETS or b.seen >= d.seq:
            continue  # once a header of this call or a later one was compared, later drift is not this call's
        owed = b.corrections - d.corrections + max(0.0, charged(tokens, state.bias, s.full) - d.cost)
        out = max(out, owed * s.windows[d.bucket] / cap)
    return out


def snapshot(state: KeyState, s: Shape, now: float) -> dict[str, LimitState]:
    """Limit and level per known bucket, with the cooldown left, the bias and the margin."""
    refill(state, s.caps, s.windows, now)
    left = max(0.0, state.cooldown_until - now)
    return {name: state_of(state, s, name, left) for name in s.caps}


def idle(state: KeyState, s: Shape, now: float) -> bool:
    """Nothing outstanding: no debt, no commit queued for the future, no cooldown (safe to forget)."""
    if state.cooldown_until > now:
        return False
    refill(state, s.caps, s.windows, now)
    return all(b.level >= 0 and b.queue_at <= now for b in state.buckets.values())
