"""In-memory budget backend (one process), also the fallback while Redis is down.

Per budget and period kind one slot holds the current period (id, settled spend, reserved in flight)
and the previous one, so that a call admitted before a period rolled over settles in the period it was
charged in. The Redis script (``ledger_redis.py``) implements the same rules.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .budgets import Budget, BudgetCharge, BudgetStatus
from .periods import period_end, period_id, period_seconds

_MAX_SLOTS = 100_000


def fits(spent: float, reserved: float, amount: float, limit: float) -> bool:
    """Whether ``amount`` more stays within ``limit`` (with a tolerance for float rounding)."""
    return spent + reserved + amount <= limit + 1e-9 * max(1.0, limit)


@dataclass(frozen=True)
class BackendReply:
    """A reserve decision: committed or not, each budget's status afterwards, and which ones block."""

    committed: bool
    statuses: tuple[BudgetStatus, ...]
    blocked: tuple[int, ...]


class _Slot:
    __slots__ = ("ends", "p", "q", "qr", "qs", "r", "s")

    def __init__(self, pid: str, ends: float) -> None:
        self.p, self.s, self.r, self.ends = pid, 0.0, 0.0, ends
        self.q, self.qs, self.qr = "", 0.0, 0.0

    def roll(self, pid: str, ends: float) -> None:
        if pid != self.p:
            self.q, self.qs, self.qr = self.p, self.s, self.r
            self.p, self.s, self.r = pid, 0.0, 0.0
        self.ends = ends


class MemoryLedgerBackend:
    """Budgets of this process only. ``clock`` is wall time (Unix seconds; UTC periods)."""

    def __init__(self, name: str = "memory", clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self._clock = clock
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()

    def _slot(self, budget: Budget, now: float) -> _Slot:
        pid, ends = period_id(budget.period, now), period_end(budget.period, now)
        slot = self._slots.get(budget.key)
        if slot is None:
            if len(self._slots) >= _MAX_SLOTS:
                self._prune(now)
            slot = self._slots[budget.key] = _Slot(pid, ends)
        else:
            slot.roll(pid, ends)
        return slot

    def _prune(self, now: float) -> None:
        """Forget slots whose period ended more than a full period ago (their calls have long settled)."""
        for key in [k for k, s in self._slots.items() if s.ends + period_seconds("month") < now]:
            del self._slots[key]

    @staticmethod
    def _status(budget: Budget, slot: _Slot, now: float) -> BudgetStatus:
        return BudgetStatus(budget, slot.p, slot.s, slot.r, max(0.0, slot.ends - now))

    def reserve(self, budgets: Sequence[Budget], amount: float, commit_anyway: bool) -> BackendReply:
        """Hold ``amount`` on every budget if all have room (or ``commit_anyway``); one atomic decision."""
        with self._lock:
            now = self._clock()
            slots = [self._slot(b, now) for b in budgets]
            blocked = tuple(
                i for i, (b, s) in enumerate(zip(budgets, slots)) if not fits(s.s, s.r, amount, b.limit_usd))
            committed = not blocked or commit_anyway
            if committed:
                for slot in slots:
                    slot.r += amount
            return BackendReply(committed, tuple(self._status(b, s, now) for b, s in zip(budgets, slots)), blocked)

    def settle(self, charges: Sequence[BudgetCharge], actual: float) -> tuple[BudgetStatus, ...]:
        """Replace each charge's held amount by ``actual`` spend in the period it was charged in."""
        with self._lock:
            now = self._clock()
            out = []
            for charge in charges:
                slot = self._slot(charge.budget, now)
                if charge.period_id == slot.p:
                    slot.r, slot.s = max(0.0, slot.r - charge.amount_usd), slot.s + actual
                elif charge.period_id == slot.q:
                    slot.qr, slot.qs = max(0.0, slot.qr - charge.amount_usd), slot.qs + actual
                out.append(self._status(charge.budget, slot, now))
            return tuple(out)

    def snapshot(self, budgets: Sequence[Budget]) -> tuple[BudgetStatus, ...]:
        """Each budget's current status (read only)."""
        with self._lock:
            now = self._clock()
            return tuple(self._status(b, self._slot(b, now), now) for b in budgets)

    def seed(self, statuses: Sequence[BudgetStatus], fraction: float) -> None:
        """Start a fallback from the last shared state: each budget keeps ``fraction`` of the room it had."""
        with self._lock:
            now = self._clock()
            for st in statuses:
                slot = self._slot(st.budget, now)
                if slot.p != st.period_id:
                    continue
                used = st.spent_usd + st.reserved_usd
                room = max(0.0, st.budget.limit_usd - used)
                slot.s = max(slot.s, used + (1.0 - fraction) * room - slot.r)
