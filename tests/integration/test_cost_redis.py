"""Budgets on a real Redis: the script's calendar, parity with memory, two processes, fallback and recovery."""

from __future__ import annotations

import multiprocessing as mp
import random
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
import redis

from middleware.cost import Budget, BudgetCharge, BudgetExceeded, BudgetLedger, BudgetReservation, BudgetWait
from middleware.cost.ledger_memory import MemoryLedgerBackend
from middleware.cost.ledger_redis import RedisLedgerBackend
from middleware.cost.periods import period_end, period_id
from tests.fixtures.redis_server import RedisServer


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Fallbacks:
    def __init__(self) -> None:
        self.changes: list[bool] = []

    def budget_fallback(self, backend: str, active: bool) -> None:
        self.changes.append(active)

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


def test_the_script_computes_utc_periods_like_python(redis_url: str) -> None:
    """Server-side calendar (Lua) against Python's datetime, across month, year and leap-year ends."""
    rng = random.Random(7)
    instants = [ts(t) for t in ("2026-11-30T23:59:59.999", "2026-12-01T00:00:00", "2028-02-29T12:00:00",
                                "2100-02-28T23:59:59", "2000-02-29T00:00:00", "1970-01-01T00:00:00")]
    instants += [rng.uniform(0, 4_102_444_800) for _ in range(300)]  # 1970 .. 2100
    clock = Clock(0.0)
    backend = RedisLedgerBackend(redis_url, prefix=f"t{uuid.uuid4().hex[:6]}", clock=clock)
    for t in instants:
        clock.now = t
        got = backend.snapshot([Budget("x=y", "day", 1.0), Budget("x=y", "month", 1.0)])
        assert got is not None
        day, month = got
        assert (day.period_id, month.period_id) == (period_id("day", t), period_id("month", t)), t
        assert day.ends_in_seconds == pytest.approx(period_end("day", t) - t, abs=1e-6), t
        assert month.ends_in_seconds == pytest.approx(period_end("month", t) - t, abs=1e-6), t


def test_redis_and_memory_decide_alike(redis_url: str) -> None:
    clock = Clock(ts("2026-11-30T22:00:00"))
    shared = RedisLedgerBackend(redis_url, prefix=f"t{uuid.uuid4().hex[:6]}", clock=clock)
    local = MemoryLedgerBackend(clock=clock)
    budgets = [Budget("api_key=k", "day", 0.5), Budget("team=a", "month", 0.8)]
    rng = random.Random(3)
    held: list[Any] = []
    for step in range(400):
        clock.now += rng.uniform(0, 60)  # crosses midnight: the day budget rolls over, the month does not
        if held and rng.random() < 0.5:
            amount, hold, charges_pair = held.pop(rng.randrange(len(held)))
            actual = amount * rng.uniform(0, 1.2)
            a = shared.settle(charges_pair[0], actual, hold)
            b = local.settle(charges_pair[1], actual)
        else:
            amount, hold = rng.uniform(0.001, 0.1), f"h{step}"
            ra, rb = shared.reserve(budgets, amount, False, hold), local.reserve(budgets, amount, False)
            assert ra is not None
            assert (ra.committed, ra.blocked) == (rb.committed, rb.blocked), step
            a, b = ra.statuses, rb.statuses
            if ra.committed:
                held.append((amount, hold, tuple(tuple(BudgetCharge(s.budget, s.period_id, amount) for s in x)
                                                 for x in (a, b))))
        assert a is not None
        for x, y in zip(a, b):
            assert (x.period_id, x.spent_usd, x.reserved_usd) == (y.period_id, pytest.approx(y.spent_usd),
                                                                   pytest.approx(y.reserved_usd)), step


def test_keys_expire_a_period_after_their_period_ends(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}"
    ledger = BudgetLedger(redis=redis_url, prefix=prefix)
    r = ledger.reserve([Budget("team=a", "day", 1.0), Budget("team=a", "month", 1.0)], 0.1)
    assert isinstance(r, BudgetReservation) and r.backend == "redis"
    client = redis.Redis.from_url(redis_url)
    now = float(client.time()[0])
    day_ttl = client.ttl("{" + prefix + ":budget}:team=a:day")
    month_ttl = client.ttl("{" + prefix + ":budget}:team=a:month")
    assert day_ttl == pytest.approx(period_end("day", now) - now + 86_400, abs=2)
    assert month_ttl == pytest.approx(period_end("month", now) - now + 31 * 86_400, abs=2)


LIMIT, WORST_MAX, PROCESSES = 0.50, 0.02, 2


def _worker(url: str, prefix: str, ready: Any, out: Any) -> None:
    ledger = BudgetLedger("enforce", redis=url, prefix=prefix)
    budget = Budget("team=shared", "day", LIMIT)
    rng = random.Random()
    spent, refusals, errors = 0.0, [], []
    ready.wait(60)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        worst = rng.uniform(0.002, WORST_MAX)
        try:
            r = ledger.reserve([budget], worst)
        except BudgetExceeded as exc:
            refusals.append({"budget": exc.budget, "period": exc.period, "period_id": exc.period_id,
                             "spent": exc.spent_usd, "reserved": exc.reserved_usd, "limit": exc.limit_usd,
                             "requested": exc.requested_usd})
            if len(refusals) >= 20:
                break
            continue
        except Exception as exc:  # pragma: no cover - reported to the parent
            errors.append(repr(exc))
            break
        assert isinstance(r, BudgetReservation)
        actual = worst * rng.uniform(0.3, 1.2)  # some calls cost more than estimated (prompt undercounted)
        time.sleep(rng.uniform(0, 0.003))  # the call in flight
        ledger.settle(r, actual)
        spent += actual
    out.put({"spent": spent, "refusals": refusals, "errors": errors, "backend_degraded": ledger.degraded})


@pytest.mark.slow
def test_two_processes_never_exceed_one_redis_budget(redis_url: str) -> None:
    ctx = mp.get_context("spawn")
    out, ready = ctx.Queue(), ctx.Barrier(PROCESSES + 1)
    prefix = f"mp{uuid.uuid4().hex[:8]}"
    procs = [ctx.Process(target=_worker, args=(redis_url, prefix, ready, out)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    ready.wait(60)
    results = [out.get(timeout=90) for _ in procs]
    for p in procs:
        p.join(10)
    assert all(not r["errors"] and not r["backend_degraded"] for r in results), results
    total = sum(r["spent"] for r in results)
    # never over the limit by more than one call's worst case, and really used up by both processes
    assert total <= LIMIT + WORST_MAX
    assert total > LIMIT - 2 * WORST_MAX
    assert all(r["spent"] > 0 for r in results)
    shared = BudgetLedger(redis=redis_url, prefix=prefix).snapshot([Budget("team=shared", "day", LIMIT)])[0]
    assert shared.spent_usd == pytest.approx(total)
    refusal = next(r for res in results for r in res["refusals"])
    assert (refusal["budget"], refusal["period"], refusal["limit"]) == ("team=shared", "day", LIMIT)
    assert refusal["period_id"] == shared.period_id
    assert refusal["spent"] + refusal["reserved"] + refusal["requested"] > LIMIT
    assert refusal["spent"] > LIMIT - 2 * WORST_MAX  # the spend so far, as Redis saw it


@pytest.mark.slow
def test_redis_down_falls_back_and_writes_back_on_recovery() -> None:
    server = RedisServer()
    server.start()
    try:
        events = Fallbacks()
        ledger = BudgetLedger(redis=server.url, prefix="fb", events=events, fallback_fraction=0.5)
        b = Budget("team=a", "day", 1.0)
        r = ledger.reserve([b], 0.4)
        assert isinstance(r, BudgetReservation) and r.backend == "redis"
        ledger.settle(r, 0.4)  # Redis: 0.40 spent, 0.60 left
        in_flight = ledger.reserve([b], 0.1)  # held on Redis when it dies (and restarts without its data)
        assert isinstance(in_flight, BudgetReservation)
        server.kill()
        # the fallback starts from the last shared state with half the remaining room: 0.5 x 0.5 = 0.25
        local = ledger.reserve([b], 0.2)
        assert isinstance(local, BudgetReservation) and local.backend == "fallback"
        assert events.changes == [True] and ledger.degraded
        with pytest.raises(BudgetExceeded):
            ledger.reserve([b], 0.1)
        ledger.settle(local, 0.15)
        ledger.settle(in_flight, 0.05)  # fails on Redis: queued
        across = ledger.reserve([b], 0.03)  # admitted by the fallback, settled after Redis is back
        assert isinstance(across, BudgetReservation) and across.backend == "fallback"
        server.start()  # same port, data lost (no persistence): the outage's spend must be written back
        time.sleep(5.2)  # the Redis pause after a failure
        again = ledger.reserve([b], 0.01)
        assert isinstance(again, BudgetReservation) and again.backend == "redis"
        assert events.changes == [True, False] and not ledger.degraded
        status = ledger.snapshot([b])[0]
        assert status.spent_usd == pytest.approx(0.15 + 0.05)  # written back after recovery
        assert status.reserved_usd == pytest.approx(0.01)  # the lost hold of in_flight is not subtracted
        ledger.settle(across, 0.02)
        assert ledger.snapshot([b])[0].spent_usd == pytest.approx(0.15 + 0.05 + 0.02)
    finally:
        server.stop()


def test_wait_decision_on_redis_server_time(redis_url: str) -> None:
    """In wait mode the seconds to wait come from Redis server time (the period's real end)."""
    ledger = BudgetLedger("wait", max_wait_seconds=10 ** 7, redis=redis_url, prefix=f"t{uuid.uuid4().hex[:6]}")
    b = Budget("team=a", "day", 0.1)
    assert isinstance(ledger.reserve([b], 0.1), BudgetReservation)
    wait = ledger.reserve([b], 0.05)
    assert isinstance(wait, BudgetWait)
    server_now = float(redis.Redis.from_url(redis_url).time()[0])
    assert wait.seconds == pytest.approx(period_end("day", server_now) - server_now, abs=2)
