"""The budget ledger: reserve a call's worst case against its budgets, settle it to the real cost.

``reserve`` is one decision (never sleeps): a :class:`BudgetReservation`, a :class:`BudgetWait`
(``wait`` mode: the call fits once the binding period rolls over, within ``max_wait_seconds``) or
:class:`BudgetExceeded`. Because the worst case is held until the call settles, concurrent calls in
every process sharing the backend cannot together overspend: a budget ends a period above its limit
by at most what calls cost beyond their worst case (a prompt estimate below the real count).

Backends: memory (this process), or Redis shared by every process, with a local fallback while Redis
is down: the fallback starts from the last shared state this process saw, keeping ``fallback_fraction``
of each budget's remaining room (other processes spend too), and what it settles is written back to
Redis when it answers again, as are settlements of Redis reservations that failed meanwhile.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from middleware.redisconn import RedisEvents
from middleware.telemetry import names as n

from .budgets import Budget, BudgetCharge, BudgetReservation, BudgetStatus, BudgetWait, Mode
from .errors import BudgetExceeded
from .events import CostEvents, NoopCostEvents, SafeCostEvents
from .ledger_memory import BackendReply, MemoryLedgerBackend
from .ledger_redis import RedisLedgerBackend

log = logging.getLogger("middleware.cost")

WAIT_MARGIN_SECONDS = 0.05  # sleep this much past the rollover, so that the next decision sees the new period
_MAX_REMEMBERED = 10_000
_MAX_PENDING = 10_000


class BudgetLedger:
    """Budgets in USD per UTC day or month; thread-safe. With ``redis`` (a URL, a client, or a ``redisconn`` handle
    or link) shared via Redis under the shared Redis policy.

    ``label`` turns a budget name into a bounded metric label; ``clock`` is wall time for the memory
    backend and replaces Redis server time when given (tests).
    """

    def __init__(
        self, mode: Mode = "enforce", max_wait_seconds: float = 60.0, *, redis: Any = None,
        prefix: str = "llm_middleware", events: CostEvents | None = None, fallback_fraction: float = 0.5,
        clock: Callable[[], float] | None = None, label: Callable[[str], str] | None = None,
    ) -> None:
        self.mode = mode
        self.max_wait_seconds = max_wait_seconds
        self.fallback_fraction = fallback_fraction
        self._events = SafeCostEvents(events or NoopCostEvents())
        self._label = label or (lambda name: name)
        self._local = MemoryLedgerBackend("memory" if redis is None else "fallback", clock or time.time)
        sink = events if isinstance(events, RedisEvents) else None
        self._shared = None if redis is None else RedisLedgerBackend(redis, prefix=prefix, clock=clock, events=sink)
        self._degraded = False
        self._seen: OrderedDict[str, BudgetStatus] = OrderedDict()
        self._pending: list[tuple[tuple[BudgetCharge, ...], float, str]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(8)  # hold ids are unique across processes

    @property
    def shared(self) -> bool:
        """True when a Redis backend is configured (decisions then do network I/O)."""
        return self._shared is not None

    @property
    def degraded(self) -> bool:
        """True while Redis is down and the local fallback decides."""
        return self._degraded

    # ------------------------------------------------------------------ backend plumbing
    def _remember(self, statuses: Sequence[BudgetStatus]) -> None:
        with self._lock:
            for st in statuses:
                self._seen[st.budget.key] = st
                self._seen.move_to_end(st.budget.key)
            while len(self._seen) > _MAX_REMEMBERED:
                self._seen.popitem(last=False)

    def _redis_failed(self) -> None:
        with self._lock:
            if self._degraded:
                return
            self._degraded = True
            seen = list(self._seen.values())
        self._local.seed(seen, self.fallback_fraction)
        self._events.budget_fallback("redis", True)

    def _redis_ok(self) -> None:
        if not self._degraded:
            return
        with self._lock:
            if not self._degraded:
                return
            self._degraded = False
            pending, self._pending = self._pending, []
        self._events.budget_fallback("redis", False)
        shared = self._shared
        for i, (charges, actual, hold_id) in enumerate(pending):
            if shared is None or shared.settle(charges, actual, hold_id) is None:
                with self._lock:
                    self._pending[:0] = pending[i:]  # Redis failed again: keep the rest for next time
                self._redis_failed()
                return
        if pending:
            log.info("budget ledger: wrote %d settlements made during the Redis outage back to Redis", len(pending))

    def _write_back(
        self, charges: tuple[BudgetCharge, ...], actual: float, hold_id: str,
    ) -> tuple[BudgetStatus, ...] | None:
        """Settle on Redis (``hold_id=""``: add spend only), or queue it until Redis answers again."""
        shared = self._shared
        if shared is not None:  # during the back-off the Redis policy answers at once (counted): no I/O
            statuses = shared.settle(charges, actual, hold_id)
            if statuses is not None:
                self._redis_ok()
                self._remember(statuses)
                return statuses
            self._redis_failed()
        with self._lock:
            if len(self._pending) < _MAX_PENDING:
                self._pending.append((charges, actual, hold_id))
        return None

    def _decide(self, budgets: Sequence[Budget], amount: float, hold_id: str) -> tuple[BackendReply, str]:
        if self._shared is not None:  # during the back-off the Redis policy answers at once (counted): no I/O
            reply = self._shared.reserve(budgets, amount, self.mode == "warn", hold_id)
            if reply is not None:
                self._redis_ok()
                self._remember(reply.statuses)
                return reply, self._shared.name
            self._redis_failed()
        return self._local.reserve(budgets, amount, self.mode == "warn"), self._local.name

    # ------------------------------------------------------------------ decisions
    def reserve(self, budgets: Sequence[Budget], worst_case_usd: float) -> BudgetReservation | BudgetWait:
        """Hold ``worst_case_usd`` on every budget or say why not (one decision; raises BudgetExceeded)."""
        amount = max(0.0, float(worst_case_usd))
        hold_id = f"{self._prefix}-{next(self._ids)}"
        reply, backend = self._decide(budgets, amount, hold_id)
        for st in reply.statuses:
            self._events.budget_state(self._label(st.budget.name), st.budget.period, st.spent_usd, st.budget.limit_usd)
        over = tuple(reply.statuses[i] for i in reply.blocked)
        if reply.committed:
            decision = n.DECISION_WARNED if over else n.DECISION_ADMITTED
            for st in reply.statuses:
                warned = st in over
                self._events.budget_decision(
                    self._label(st.budget.name), st.budget.period, n.DECISION_WARNED if warned else n.DECISION_ADMITTED)
            if over:
                log.warning("budget exceeded (warn mode, call admitted): %s",
                            "; ".join(_describe(st, amount) for st in over))
            charges = tuple(BudgetCharge(st.budget, st.period_id, amount) for st in reply.statuses)
            return BudgetReservation(hold_id, charges, amount, backend, decision, over)
        # Over budget. Waiting helps only if every blocking budget rolls over in time and then has room.
        binding = max(over, key=lambda st: st.ends_in_seconds)
        fits_next_period = all(amount <= st.budget.limit_usd for st in over)
        wait = binding.ends_in_seconds + WAIT_MARGIN_SECONDS
        if self.mode == "wait" and fits_next_period and wait <= self.max_wait_seconds:
            self._events.budget_decision(self._label(binding.budget.name), binding.budget.period, n.DECISION_WAITED)
            return BudgetWait(wait, binding)
        first = over[0]
        for st in over:
            self._events.budget_decision(self._label(st.budget.name), st.budget.period, n.DECISION_REFUSED)
        why = "it can never fit in one period" if not fits_next_period else (
            f"the period rolls over in {binding.ends_in_seconds:.0f}s" + (
                f", more than max_wait_seconds={self.max_wait_seconds:g}" if self.mode == "wait" else ""))
        log.info("budget refused a call: %s", _describe(first, amount))
        raise BudgetExceeded(
            f"budget {first.budget.name} ({first.budget.period} {first.period_id}) exceeded: "
            f"{_describe(first, amount)}; {why}",
            budget=first.budget.name, period=first.budget.period, period_id=first.period_id,
            spent_usd=first.spent_usd, reserved_usd=first.reserved_usd, requested_usd=amount,
            limit_usd=first.budget.limit_usd, retry_in_seconds=binding.ends_in_seconds,
        )

    def settle(self, reservation: BudgetReservation, actual_usd: float) -> None:
        """Replace the held worst case by the real cost (idempotent)."""
        if reservation.closed:
            return
        reservation.closed = True
        self._settle(reservation, max(0.0, float(actual_usd)))

    def _settle(self, reservation: BudgetReservation, actual: float) -> None:
        statuses: tuple[BudgetStatus, ...] | None
        if reservation.backend == self._local.name:
            statuses = self._local.settle(reservation.charges, actual)
            if self._shared is not None:  # admitted by the fallback: the spend goes to Redis as well
                statuses = self._write_back(reservation.charges, actual, "") or statuses
        else:
            statuses = self._write_back(reservation.charges, actual, reservation.id)
        for st in statuses or ():
            self._events.budget_state(self._label(st.budget.name), st.budget.period, st.spent_usd, st.budget.limit_usd)

    def release(self, reservation: BudgetReservation) -> None:
        """Give the whole reservation back: the call was never sent."""
        self.settle(reservation, 0.0)

    def snapshot(self, budgets: Sequence[Budget]) -> tuple[BudgetStatus, ...]:
        """Each budget's status in its current period (from Redis when it answers)."""
        if self._shared is not None and not self._degraded:
            statuses = self._shared.snapshot(budgets)
            if statuses is not None:
                return statuses
            self._redis_failed()
        return self._local.snapshot(budgets)


def _describe(st: BudgetStatus, amount: float) -> str:
    return (f"{st.budget.name} spent ${st.spent_usd:.6f} + ${st.reserved_usd:.6f} in flight + "
            f"${amount:.6f} for this call > limit ${st.budget.limit_usd:.6f} per {st.budget.period}")
