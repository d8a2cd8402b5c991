"""Budgets in memory: rules, UTC periods, enforce / wait / warn, settlement, rollover, concurrency, config."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timezone
from typing import Any

import pytest

from middleware.cost import (
    Budget,
    BudgetExceeded,
    BudgetLedger,
    BudgetReservation,
    BudgetRule,
    BudgetWait,
    CostConfig,
    CostServices,
    Usage,
    budgets_for,
    parse_rules,
)
from middleware.cost.periods import period_end, period_id
from middleware.errors import ConfigError
from middleware.telemetry import names as n


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Events:
    """Records the budget events (cost events are not exercised here)."""

    def __init__(self) -> None:
        self.decisions: list[tuple[str, str, str]] = []
        self.states: dict[tuple[str, str], tuple[float, float]] = {}

    def budget_decision(self, budget: str, period: str, decision: str) -> None:
        self.decisions.append((budget, period, decision))

    def budget_state(self, budget: str, period: str, spent_usd: float, limit_usd: float) -> None:
        self.states[(budget, period)] = (spent_usd, limit_usd)

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


def test_rules_parse_and_reject_nonsense() -> None:
    rules = parse_rules("api_key/day=50, team=*/month=300; team=search/day=20.5")
    assert rules == (BudgetRule("api_key", "*", "day", 50.0), BudgetRule("team", "*", "month", 300.0),
                     BudgetRule("team", "search", "day", 20.5))
    for bad in ("team/day=5", "team=x/week=5", "team=x/day=lots", "nonsense", "team=x/day=-1"):
        with pytest.raises(ConfigError):
            parse_rules(bad)


def test_budgets_for_a_call_specific_rules_win() -> None:
    rules = parse_rules("api_key/day=50,team=*/day=10,team=search/day=20,team=*/month=100,feature=x/day=1")
    got = budgets_for(rules, "abc123", {"team": "search", "feature": "y"})
    assert set(got) == {Budget("api_key=abc123", "day", 50), Budget("team=search", "day", 20),
                        Budget("team=search", "month", 100)}
    assert budgets_for(rules, "abc123", {}) == (Budget("api_key=abc123", "day", 50),)


@pytest.mark.parametrize(("now", "day", "day_end", "month", "month_end"), [
    ("2026-11-30T23:59:59", "2026-11-30", "2026-12-01T00:00:00", "2026-11", "2026-12-01T00:00:00"),
    ("2026-12-31T12:00:00", "2026-12-31", "2027-01-01T00:00:00", "2026-12", "2027-01-01T00:00:00"),
    ("2028-02-29T00:00:00", "2028-02-29", "2028-03-01T00:00:00", "2028-02", "2028-03-01T00:00:00"),
    ("1999-01-01T00:00:00", "1999-01-01", "1999-01-02T00:00:00", "1999-01", "1999-02-01T00:00:00"),
])
def test_utc_periods(now: str, day: str, day_end: str, month: str, month_end: str) -> None:
    t = ts(now)
    assert (period_id("day", t), period_end("day", t)) == (day, ts(day_end))
    assert (period_id("month", t), period_end("month", t)) == (month, ts(month_end))


def test_enforce_refuses_with_budget_period_and_spend_so_far() -> None:
    clock, events = Clock(ts("2026-11-30T10:00:00")), Events()
    ledger = BudgetLedger("enforce", clock=clock, events=events)
    team = Budget("team=search", "day", 1.00)
    held = [ledger.reserve([team], 0.30) for _ in range(3)]
    assert all(isinstance(r, BudgetReservation) for r in held)
    with pytest.raises(BudgetExceeded) as err:
        ledger.reserve([team], 0.30)  # 0.90 held + 0.30 > 1.00
    e = err.value
    assert (e.budget, e.period, e.period_id, e.limit_usd) == ("team=search", "day", "2026-11-30", 1.00)
    assert (e.spent_usd, e.reserved_usd, e.requested_usd) == (0.0, pytest.approx(0.90), 0.30)
    assert e.retry_in_seconds == pytest.approx(14 * 3600)
    # settling to the real (smaller) cost makes room again; spend so far is then the settled amount
    for r in held:
        assert isinstance(r, BudgetReservation)
        ledger.settle(r, 0.10)
        ledger.settle(r, 5.00)  # idempotent
    assert isinstance(ledger.reserve([team], 0.30), BudgetReservation)
    status = ledger.snapshot([team])[0]
    assert (status.spent_usd, status.reserved_usd) == (pytest.approx(0.30), pytest.approx(0.30))
    assert events.states[("team=search", "day")] == (pytest.approx(0.30), 1.00)
    assert ("team=search", "day", n.DECISION_REFUSED) in events.decisions
    # a call larger than the whole budget can never fit: refused in every mode but warn
    with pytest.raises(BudgetExceeded, match="can never fit"):
        BudgetLedger("wait", max_wait_seconds=10**9, clock=clock).reserve([team], 1.50)


def test_all_budgets_of_a_call_must_have_room_and_nothing_is_held_on_refusal() -> None:
    ledger = BudgetLedger(clock=Clock(ts("2026-11-30T10:00:00")))
    key, team = Budget("api_key=k1", "month", 10.0), Budget("team=search", "day", 1.0)
    assert isinstance(ledger.reserve([key, team], 0.9), BudgetReservation)
    with pytest.raises(BudgetExceeded) as err:
        ledger.reserve([key, team], 0.2)
    assert err.value.budget == "team=search"
    assert ledger.snapshot([key])[0].reserved_usd == pytest.approx(0.9)  # the refused call held nothing


def test_release_gives_everything_back() -> None:
    ledger = BudgetLedger(clock=Clock(ts("2026-11-30T10:00:00")))
    b = Budget("api_key=k", "day", 1.0)
    r = ledger.reserve([b], 1.0)
    assert isinstance(r, BudgetReservation)
    ledger.release(r)
    assert ledger.snapshot([b])[0].spent_usd == 0 and ledger.snapshot([b])[0].reserved_usd == 0


def test_wait_mode_waits_for_the_rollover_within_max_wait() -> None:
    clock, events = Clock(ts("2026-11-30T23:59:58")), Events()
    ledger = BudgetLedger("wait", max_wait_seconds=5, clock=clock, events=events)
    b = Budget("team=search", "day", 1.0)
    first = ledger.reserve([b], 0.8)
    assert isinstance(first, BudgetReservation)
    wait = ledger.reserve([b], 0.5)
    assert isinstance(wait, BudgetWait)
    assert wait.seconds == pytest.approx(2.05)
    assert wait.status.period_id == "2026-11-30"
    clock.sleep(wait.seconds)
    after = ledger.reserve([b], 0.5)
    assert isinstance(after, BudgetReservation)
    assert after.charges[0].period_id == "2026-12-01"
    assert [d for *_, d in events.decisions] == [n.DECISION_ADMITTED, n.DECISION_WAITED, n.DECISION_ADMITTED]
    # a monthly budget rolls over too late: refused
    month = Budget("team=search", "month", 1.0)
    assert isinstance(ledger.reserve([month], 0.9), BudgetReservation)
    with pytest.raises(BudgetExceeded, match="more than max_wait_seconds=5"):
        ledger.reserve([month], 0.2)


def test_warn_mode_admits_and_reports() -> None:
    events = Events()
    ledger = BudgetLedger("warn", clock=Clock(ts("2026-11-30T10:00:00")), events=events)
    b = Budget("team=search", "day", 1.0)
    ledger.reserve([b], 0.9)
    over = ledger.reserve([b], 0.9)
    assert isinstance(over, BudgetReservation)
    assert over.decision == n.DECISION_WARNED and over.over[0].budget == b
    assert events.decisions[-1] == ("team=search", "day", n.DECISION_WARNED)


def test_a_call_straddling_midnight_settles_in_the_period_it_was_charged_in() -> None:
    clock = Clock(ts("2026-11-30T23:59:59"))
    ledger = BudgetLedger(clock=clock)
    b = Budget("api_key=k", "day", 1.0)
    r = ledger.reserve([b], 0.9)
    assert isinstance(r, BudgetReservation)
    clock.sleep(2.0)
    ledger.settle(r, 0.7)
    today = ledger.snapshot([b])[0]
    assert (today.period_id, today.spent_usd, today.reserved_usd) == ("2026-12-01", 0.0, 0.0)


def test_threads_never_overspend() -> None:
    ledger = BudgetLedger()
    b = Budget("team=load", "day", 2.0)
    spent: list[float] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(300):
            worst = rng.uniform(0.001, 0.05)
            try:
                r = ledger.reserve([b], worst)
            except BudgetExceeded:
                continue
            assert isinstance(r, BudgetReservation)
            actual = worst * rng.uniform(0.2, 1.0)
            with lock:
                spent.append(actual)
            ledger.settle(r, actual)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    status = ledger.snapshot([b])[0]
    assert status.spent_usd == pytest.approx(sum(spent))
    assert sum(spent) <= 2.0
    assert sum(spent) > 1.5  # the budget was actually used up, not just refused


def test_services_admit_settle_and_unpriced() -> None:
    clock, events = Clock(ts("2026-11-30T23:59:59")), Events()
    config = CostConfig(budgets=parse_rules("team=search/day=0.02"), budget_mode="wait", budget_max_wait_seconds=5)
    services = CostServices(config, events, clock=clock, sleep=clock.sleep)
    tags = {"team": "search"}
    # gpt-4o worst case: 1,000 prompt tokens at $2.50 + 1,000 output tokens at $10.00 per 1M = $0.0125
    r = services.admit("k", "gpt-4o", tags, 1_000, 1_000)
    assert r is not None and r.amount_usd == pytest.approx(0.0125, rel=1e-12)
    # a second one does not fit today: admit sleeps through midnight and is admitted tomorrow
    r2 = services.admit("k", "gpt-4o", tags, 1_000, 1_000)
    assert r2 is not None and r2.charges[0].period_id == "2026-12-01"
    cost = services.settle(r, "gpt-4o", Usage(1_000, 200), tags=tags)
    assert cost.total_usd == pytest.approx((1_000 * 2.50 + 200 * 10.00) / 1e6, rel=1e-12)
    assert services.decide("k", "gpt-4o", {"team": "other"}, 1_000, 1_000) is None  # no budget applies
    assert services.decide("k", "mystery-model", tags, 1_000, 1_000) is None  # unpriced: unbudgeted
    services.release(r2)
    assert services.ledger is not None
    status = services.ledger.snapshot([Budget("team=search", "day", 0.02)])[0]
    assert (status.spent_usd, status.reserved_usd) == (0.0, 0.0)
    # without usage the reservation stays charged at its worst case
    r3 = services.admit("k", "gpt-4o", tags, 1_000, 1_000)
    assert services.settle(r3, "gpt-4o", None, tags=tags).reason == n.UNPRICED_NO_USAGE  # type: ignore[union-attr]
    assert services.ledger.snapshot([Budget("team=search", "day", 0.02)])[0].spent_usd == pytest.approx(0.0125)


def test_cost_config_from_env() -> None:
    env = {
        "MIDDLEWARE_PRICES_FILE": "/etc/prices.yaml",
        "MIDDLEWARE_TAG_KEYS": "team, project",
        "MIDDLEWARE_TAG_VALUE_CAP": "20",
        "MIDDLEWARE_TAG_COMBINATION_CAP": "100",
        "MIDDLEWARE_BUDGETS": "api_key/day=50;project=*/month=300",
        "MIDDLEWARE_BUDGET_MODE": "wait",
        "MIDDLEWARE_BUDGET_MAX_WAIT": "30",
        "MIDDLEWARE_REDIS_URL": "redis://r:6379/0",
        "MIDDLEWARE_BUDGET_DEFAULT_MAX_OUTPUT": "none",
    }
    c = CostConfig.from_env(env)
    assert str(c.prices_file) == "/etc/prices.yaml"
    assert (c.tags.keys, c.tags.value_cap, c.tags.combination_cap) == (("team", "project"), 20, 100)
    assert c.budgets == (BudgetRule("api_key", "*", "day", 50), BudgetRule("project", "*", "month", 300))
    assert (c.budget_mode, c.budget_max_wait_seconds, c.redis_url) == ("wait", 30.0, "redis://r:6379/0")
    assert c.default_max_output_tokens is None
    assert CostConfig.from_env({}) == CostConfig()
    for name, value in (("MIDDLEWARE_BUDGET_MODE", "strict"), ("MIDDLEWARE_TAG_VALUE_CAP", "many"),
                        ("MIDDLEWARE_BUDGETS", "team/day=1"), ("MIDDLEWARE_BUDGET_MAX_WAIT", "soon"),
                        ("MIDDLEWARE_TAG_KEYS", "team,Bad Key"), ("MIDDLEWARE_TAG_KEYS", "api_key")):
        with pytest.raises(ConfigError, match=name):
            CostConfig.from_env({name: value})
