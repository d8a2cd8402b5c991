"""The in-memory limiter with an injected clock: FIFO debt, timeouts, settling, learning, cooldowns."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from middleware.errors import ConfigError, RequestTooLarge, ThrottleTimeout
from middleware.limits import LimitConfig, Limiter, LimiterKey

KEY = LimiterKey("k1:gpt-test", "gpt-test")


class Clock:
    """Fake monotonic clock; ``sleep`` advances it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Events:
    """Records every limiter event."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.calls if n == name]


def make(clock: Clock, events: Any = None, **cfg: Any) -> Limiter:
    """The bucket algorithm itself (no initial margin unless asked for)."""
    return Limiter(LimitConfig(**{"initial_margin": 0.0, **cfg}), events, clock=clock, sleep=clock.sleep)


def frozen(**cfg: Any) -> tuple[Limiter, Clock]:
    """A limiter whose sleeps do not advance time: every reservation arrives at the same instant."""
    clock = Clock()
    return Limiter(LimitConfig(**{"initial_margin": 0.0, **cfg}), clock=clock, sleep=lambda s: None), clock


def test_without_known_limits_admits_at_once() -> None:
    lim = make(Clock(), initial_concurrency=0)
    res = [lim.reserve(KEY, 10**9) for _ in range(100)]
    assert {(r.decision, r.reason, r.wait_seconds) for r in res} == {("admitted", "no_limits", 0.0)}
    assert lim.snapshot(KEY) == {}


def test_requests_wait_for_refill() -> None:
    clock = Clock()
    lim = make(clock, requests_per_window=3, window_seconds=1.0)
    first = [lim.reserve(KEY, 0) for _ in range(3)]
    assert all(r.decision == "admitted" and r.reason == "within_limit" for r in first)
    fourth = lim.reserve(KEY, 0)
    assert fourth.decision == "waited" and fourth.reason == "requests"
    assert fourth.wait_seconds == pytest.approx(1 / 3)
    assert clock.slept == [pytest.approx(1 / 3)]


def test_fifo_large_request_is_not_starved() -> None:
    lim, _ = frozen(tokens_per_window=100, window_seconds=10.0, max_wait_seconds=100)
    lim.reserve(KEY, 60)
    big = lim.reserve(KEY, 100)
    assert big.reason == "tokens" and big.wait_seconds == pytest.approx(6.0)
    smalls = [lim.reserve(KEY, 1) for _ in range(20)]
    # every later small request is scheduled after the big one, in arrival order
    waits = [s.wait_seconds for s in smalls]
    assert waits[0] > big.wait_seconds and waits == sorted(waits)


def test_timeout_names_needed_seconds_and_commits_nothing() -> None:
    lim, _ = frozen(tokens_per_window=10, window_seconds=10.0, max_wait_seconds=1.0)
    lim.reserve(KEY, 10)
    before = lim.snapshot(KEY)
    with pytest.raises(ThrottleTimeout) as err:
        lim.reserve(KEY, 5)
    assert err.value.needed_seconds == pytest.approx(5.0)
    assert err.value.max_wait_seconds == 1.0 and err.value.reason == "tokens"
    assert "5.000s" in str(err.value)
    assert lim.snapshot(KEY) == before


def test_request_larger_than_window_is_refused_at_once() -> None:
    lim, _ = frozen(tokens_per_window=10, window_seconds=10.0, max_wait_seconds=1000)
    with pytest.raises(RequestTooLarge) as err:
        lim.reserve(KEY, 11)
    assert (err.value.tokens, err.value.limit) == (11, 10)
    assert lim.snapshot(KEY)["tokens"].remaining == 10
    lim2, _ = frozen(tokens_per_day=50)
    with pytest.raises(RequestTooLarge):
        lim2.reserve(KEY, 51)


def test_day_bucket_binds() -> None:
    lim, _ = frozen(requests_per_day=2, max_wait_seconds=60)
    lim.reserve(KEY, 1)
    lim.reserve(KEY, 1)
    with pytest.raises(ThrottleTimeout) as err:
        lim.reserve(KEY, 1)
    assert err.value.reason == "requests_per_day"
    assert err.value.needed_seconds == pytest.approx(43200)


def test_settle_refunds_and_charges_extra() -> None:
    lim, _ = frozen(tokens_per_window=100, window_seconds=10.0)
    res = lim.reserve(KEY, 80)
    lim.settle(res, 30)
    assert lim.snapshot(KEY)["tokens"].remaining == pytest.approx(70)
    lim.settle(res, 0)  # settling twice is a no-op
    assert lim.snapshot(KEY)["tokens"].remaining == pytest.approx(70)
    res2 = lim.reserve(KEY, 10)
    lim.settle(res2, 50)
    assert lim.snapshot(KEY)["tokens"].remaining == pytest.approx(20)


def test_release_gives_everything_back_once() -> None:
    lim, _ = frozen(requests_per_window=5, tokens_per_window=100, window_seconds=10.0)
    res = lim.reserve(KEY, 40)
    lim.release(res)
    lim.release(res)
    snap = lim.snapshot(KEY)
    assert snap["requests"].remaining == pytest.approx(5) and snap["tokens"].remaining == pytest.approx(100)


def test_refund_cannot_exceed_what_refill_already_restored() -> None:
    # A reserves the whole window; the bucket refills; B reserves; A's refund must not let C burst.
    clock = Clock()
    lim = Limiter(LimitConfig(tokens_per_window=10, window_seconds=10.0, max_wait_seconds=100, initial_margin=0),
                  clock=clock, sleep=lambda s: None)
    a = lim.reserve(KEY, 10)
    clock.now += 5
    lim.reserve(KEY, 5)
    lim.settle(a, 0)  # A used nothing: at most 10 - (0 + 5) = 5 may come back
    assert lim.snapshot(KEY)["tokens"].remaining == pytest.approx(5)
    assert lim.reserve(KEY, 10).wait_seconds == pytest.approx(5)


def test_learn_converges_from_nothing() -> None:
    """A fake upstream with 10 requests per 1 s: after the first response the limiter never overruns it."""
    clock = Clock()
    events = Events()
    lim = make(clock, events, window_seconds=1.0, max_wait_seconds=10)
    level, updated, rejected = 10.0, clock.now, 0
    for _ in range(60):
        lim.reserve(KEY, 0)
        level = min(10.0, level + (clock.now - updated) * 10)
        updated = clock.now
        if level < 1 - 1e-9:
            rejected += 1
        else:
            level -= 1
        lim.learn(KEY, {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": str(int(level)),
                        "x-ratelimit-reset-requests": "100ms"})
    assert rejected == 0
    assert lim.snapshot(KEY)["requests"].limit == 10
    learned = events.named("limits_learned")
    assert learned[0] == ("gpt-test", "requests", 10.0, 9.0)
    assert events.named("ratelimit_header_error")[0] == ("missing_limit_tokens",)


def test_learn_only_lowers_the_level_and_respects_configured_limit() -> None:
    lim, _ = frozen(tokens_per_window=500, window_seconds=60.0)
    lim.reserve(KEY, 100)
    lim.learn(KEY, {"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "1000"})
    state = lim.snapshot(KEY)["tokens"]
    assert state.limit == 500 and state.remaining == pytest.approx(400)  # stale header: not raised
    lim.learn(KEY, {"x-ratelimit-limit-tokens": "300", "x-ratelimit-remaining-tokens": "120"})
    state = lim.snapshot(KEY)["tokens"]
    assert state.limit == 300 and state.remaining == pytest.approx(120)


def test_learning_can_be_disabled() -> None:
    lim, _ = frozen(learn_from_headers=False)
    lim.learn(KEY, {"x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0"})
    assert lim.snapshot(KEY) == {}


def test_cooldown_blocks_and_empties_bucket() -> None:
    clock = Clock()
    events = Events()
    lim = make(clock, events, requests_per_window=100, tokens_per_window=1000, window_seconds=60.0)
    lim.on_rate_limited(KEY, "tokens", 2.0, {})
    snap = lim.snapshot(KEY)
    assert snap["tokens"].remaining == 0 and snap["requests"].remaining == 100
    assert snap["tokens"].cooldown_seconds == pytest.approx(2.0)
    res = lim.reserve(KEY, 1)
    assert res.reason == "cooldown" and res.wait_seconds == pytest.approx(2.0)
    assert events.named("cooldown") == [("gpt-test", "tokens", 2.0)]


def test_cooldown_resource_rules() -> None:
    lim, _ = frozen(requests_per_window=100, tokens_per_window=1000)
    lim.on_rate_limited(KEY, "insufficient_quota", 30.0, {})
    assert lim.snapshot(KEY)["tokens"].cooldown_seconds == 0
    lim.on_rate_limited(KEY, None, None, {"x-ratelimit-reset-requests": "3s", "x-ratelimit-reset-tokens": "1s"})
    snap = lim.snapshot(KEY)
    assert snap["requests"].remaining == 0 and snap["tokens"].remaining == 0
    assert snap["requests"].cooldown_seconds == pytest.approx(3.0)


def test_waiter_rechecks_a_cooldown_that_started_while_it_slept() -> None:
    clock = Clock()
    lim: Limiter

    def sleep(seconds: float) -> None:
        if not clock.slept:
            lim.on_rate_limited(KEY, "requests", 2.0, {})
        clock.sleep(seconds)

    lim = Limiter(LimitConfig(requests_per_window=1, window_seconds=1.0, initial_margin=0), clock=clock, sleep=sleep)
    lim.reserve(KEY, 0)
    res = lim.reserve(KEY, 0)
    # the 2 s cooldown began as the waiter fell asleep for 1 s: it sleeps 1 s more
    assert res.reason == "cooldown" and res.wait_seconds == pytest.approx(2.0)
    assert clock.slept == [pytest.approx(1.0), pytest.approx(1.0)]


def test_failing_events_never_reach_the_caller() -> None:
    class Broken:
        def __getattr__(self, name: str) -> Any:
            def fail(*args: Any) -> None:
                raise RuntimeError("exporter down")
            return fail

    lim = make(Clock(), Broken(), requests_per_window=1)
    lim.reserve(KEY, 1)
    lim.on_rate_limited(KEY, "requests", 0.1, {"x-ratelimit-limit-requests": "oops"})


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ConfigError):
        LimitConfig(tokens_per_window=0)
    with pytest.raises(ConfigError):
        LimitConfig(fallback_fraction=1.5)


def test_async_reserve_waits_and_cancellation_gives_back() -> None:
    lim = Limiter(LimitConfig(tokens_per_window=10, window_seconds=10.0, max_wait_seconds=30, initial_margin=0))

    async def main() -> None:
        await lim.reserve_async(KEY, 10)
        task = asyncio.create_task(lim.reserve_async(KEY, 5))
        await asyncio.sleep(0.05)
        assert lim.snapshot(KEY)["tokens"].remaining < -4  # committed as debt while waiting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert lim.snapshot(KEY)["tokens"].remaining == pytest.approx(0.05, abs=0.05)

    asyncio.run(main())


def test_async_short_wait_is_admitted() -> None:
    lim = Limiter(LimitConfig(requests_per_window=20, window_seconds=1.0, initial_margin=0))

    async def main() -> list[float]:
        res = await asyncio.gather(*(lim.reserve_async(KEY, 1) for _ in range(22)))
        return [r.wait_seconds for r in res]

    started = time.monotonic()
    waits = asyncio.run(main())
    assert sorted(waits)[-1] == pytest.approx(0.1, abs=0.01)
    assert 0.09 < time.monotonic() - started < 1.0


def test_threads_share_one_budget() -> None:
    lim = Limiter(LimitConfig(requests_per_window=50, window_seconds=0.5, max_wait_seconds=5, initial_margin=0))
    admitted: list[float] = []
    started = time.monotonic()

    def worker() -> None:
        for _ in range(15):
            lim.reserve(KEY, 1)
            admitted.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    elapsed = max(admitted) - started
    assert len(admitted) == 120
    assert len(admitted) <= 50 + 100 * elapsed + 1  # capacity + refill over the run
    assert elapsed > (120 - 50) / 100 * 0.95  # and it did have to wait


def test_a_headerless_answer_ends_the_first_burst_and_is_counted() -> None:
    """An upstream that sends no x-ratelimit-* header (vLLM, many gateways): its first answer ends the key's
    first burst (the calls after it are no longer held to ``initial_concurrency``), once per answer counted as
    ``absent``; nothing is learned and no window is estimated."""
    clock, events = Clock(), Events()
    lim = Limiter(LimitConfig(initial_concurrency=1, initial_wait_seconds=5.0, max_wait_seconds=10.0), events,
                  clock=clock, sleep=clock.sleep)
    first = lim.reserve(KEY, 10)
    assert first.probe and clock.slept == []
    lim.learn(KEY, {"content-type": "application/json", "x-request-id": "req_1"}, first)
    held = [lim.reserve(KEY, 10) for _ in range(3)]  # in flight together: no longer one at a time
    assert clock.slept == [] and not any(r.probe for r in held)
    lim.learn(KEY, {}, held[0])
    assert events.named("ratelimit_header_error") == [("absent",), ("absent",)]
    assert events.named("limits_learned") == [] and lim.snapshot(KEY) == {} and lim.learned_window(KEY) is None
