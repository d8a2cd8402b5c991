"""Retries under 30% injected 5xx plus a full upstream outage: this middleware against two named baselines.

Contenders, on the same workload in one run, each against its own fresh simulator (same seed):

* ``middleware``: ``protect(OpenAI())`` with the default ``RetryConfig`` (4 attempts, full-jitter backoff,
  retry budget 0.5 + 1/s, circuit breaker whose open state makes calls wait up to 30 s for the probe window
  instead of failing), time-scaled;
* ``sdk``: the raw SDK's own retries (``max_retries=2``, backoff ``min(0.5 * 2**n, 8)`` s with jitter), time-scaled;
* ``tenacity``: tenacity over the SDK (``max_retries=0``; ``stop_after_attempt(5)``, the cookbook's
  ``wait_random_exponential(min=1, max=60)``, retry on ``APIStatusError`` 5xx and ``APIConnectionError``), time-scaled.

Time scale: the real scenario (a call every 0.5 s for 150 s from 4 threads, a 60 s outage 40 s in) is run
``--scale`` times faster (default 1/10: a call every 50 ms, a 6 s outage). Every time constant of every
contender is multiplied by the same factor so that the comparison stays fair: the SDK's backoff (its
``_calculate_retry_timeout`` scaled), tenacity's ``multiplier``/``min``/``max``, and our ``base_delay``,
``max_delay``, breaker window, open time and maximum wait, budget window (its per-second floor divided by the
factor, so that the floor stays the same number of retries per window).

Printed per contender: success ratio, attempts sent upstream (the simulator's ``/stats`` ``received``), upstream
attempts per call, the time to recover (first success completed after the outage ended; real seconds in the
scaled run, then the equivalent unscaled) and the p95 latency from each call's scheduled start (so queueing
behind busy workers counts: a contender that keeps its 4 threads busy retrying delays the calls behind them,
which is how calls scheduled *during* the outage can still succeed after it).
Run: ``python benchmarks/bench_retry.py [--calls 300] [--scale 0.1]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai
from openai.types.chat import ChatCompletionMessageParam
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

from middleware import Config, protect
from middleware.retry import RetryConfig
from middleware.simulator import Simulator, SimulatorConfig

MODEL = "gpt-4o-mini"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say something short."}]
FAULTS = {"status=500": 0.1, "status=502": 0.1, "status=503": 0.1}  # 30% injected 5xx
THREADS = 4


@dataclass
class Result:
    """One contender's figures."""

    name: str
    calls: int
    successes: int
    upstream: int
    recover_s: float | None
    wall_s: float
    p95_s: float


def scaled_retry(cfg: RetryConfig, k: float) -> RetryConfig:
    """Every duration of ``cfg`` times ``k``, every rate divided by ``k``."""
    return dataclasses.replace(
        cfg, base_delay=cfg.base_delay * k, max_delay=cfg.max_delay * k, max_retry_after=cfg.max_retry_after * k,
        deadline_seconds=None if cfg.deadline_seconds is None else cfg.deadline_seconds * k,
        budget_window_seconds=cfg.budget_window_seconds * k,
        budget_min_retries_per_second=cfg.budget_min_retries_per_second / k,
        breaker_window_seconds=cfg.breaker_window_seconds * k, breaker_open_seconds=cfg.breaker_open_seconds * k,
        breaker_max_wait_seconds=cfg.breaker_max_wait_seconds * k)


def middleware_caller(base_url: str, k: float) -> Callable[[], Any]:
    client = protect(openai.OpenAI(api_key="sk-bench", base_url=base_url),
                     Config(retry=scaled_retry(RetryConfig(), k)))
    return lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES)


def sdk_caller(base_url: str, k: float) -> Callable[[], Any]:
    class ScaledOpenAI(openai.OpenAI):
        def _calculate_retry_timeout(self, *args: Any, **kwargs: Any) -> float:
            return float(super()._calculate_retry_timeout(*args, **kwargs)) * k

    client = ScaledOpenAI(api_key="sk-bench", base_url=base_url, max_retries=2)
    return lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500
    return isinstance(exc, openai.APIConnectionError)


def tenacity_caller(base_url: str, k: float) -> Callable[[], Any]:
    client = openai.OpenAI(api_key="sk-bench", base_url=base_url, max_retries=0)

    @retry(stop=stop_after_attempt(5), wait=wait_random_exponential(multiplier=1 * k, min=1 * k, max=60 * k),
           retry=retry_if_exception(_retryable), reraise=True)
    def call() -> Any:
        return client.chat.completions.create(model=MODEL, messages=MESSAGES)

    return call


CONTENDERS: dict[str, Callable[[str, float], Callable[[], Any]]] = {
    "middleware": middleware_caller, "sdk": sdk_caller, "tenacity": tenacity_caller,
}


def run(name: str, calls: int, k: float, seed: int) -> Result:
    """The workload against a fresh simulator: ``calls`` scheduled calls, 4 worker threads, one outage."""
    interval = 0.5 * k
    outage_at, outage_for = 40.0 * k, 60.0 * k
    with Simulator(SimulatorConfig(seed=seed, fault_rates=dict(FAULTS), ttft_s=0.2 * k)) as sim:
        call = CONTENDERS[name](sim.base_url, k)
        call()  # warm up connections and the tokenizer; not counted
        sim.reset_stats()
        todo: queue.Queue[float | None] = queue.Queue()
        start = time.monotonic()
        for i in range(calls):
            todo.put(start + i * interval)
        for _ in range(THREADS):
            todo.put(None)
        done: list[tuple[float, bool, float]] = []
        lock = threading.Lock()

        def worker() -> None:
            while (at := todo.get()) is not None:
                time.sleep(max(0.0, at - time.monotonic()))
                try:
                    call()
                    ok = True
                except Exception:
                    ok = False
                now = time.monotonic()
                with lock:
                    done.append((now, ok, now - at))  # latency from the scheduled start (queueing included)

        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for t in threads:
            t.start()
        time.sleep(max(0.0, start + outage_at - time.monotonic()))
        sim.set_faults(outage_for_s=outage_for)
        outage_end = time.monotonic() + outage_for
        for t in threads:
            t.join()
        wall = time.monotonic() - start
        upstream = int(sim.stats()["total"]["received"])
    after = [at for at, ok, _ in done if ok and at >= outage_end]
    recover = min(after) - outage_end if after else None
    latencies = sorted(lat for _, _, lat in done)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    return Result(name, calls, sum(ok for _, ok, _ in done), upstream, recover, wall, p95)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--scale", type=float, default=0.1, help="time scale applied to every delay (default 1/10)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--only", choices=sorted(CONTENDERS), action="append", help="run only these contenders")
    ns = p.parse_args(argv)
    k = ns.scale
    print(f"{ns.calls} calls from {THREADS} threads, one every {0.5 * k * 1000:.0f} ms; 30% injected 5xx; "
          f"outage of {60 * k:g} s at t={40 * k:g} s (time scale {k:g}: 60 s outage, 150 s workload)")
    results = [run(name, ns.calls, k, ns.seed) for name in (ns.only or list(CONTENDERS))]
    print(f"{'contender':<12}{'success':>9}{'upstream':>10}{'per call':>10}{'recover s':>11}{'(unscaled)':>12}"
          f"{'p95 latency s':>15}{'wall s':>8}")
    for r in results:
        rec = "never" if r.recover_s is None else f"{r.recover_s:.2f}"
        unscaled = "never" if r.recover_s is None else f"{r.recover_s / k:.1f}"
        print(f"{r.name:<12}{r.successes / r.calls:>9.1%}{r.upstream:>10}{r.upstream / r.calls:>10.2f}{rec:>11}"
              f"{unscaled:>12}{r.p95_s:>15.2f}{r.wall_s:>8.1f}")
    by = {r.name: r for r in results}
    ours = by.get("middleware")
    others = [r for r in results if r.name != "middleware"]
    if ours is not None and others:
        best = max(r.successes for r in others)
        met = ours.successes >= best and all(ours.upstream < r.upstream for r in others)
        print(f"target (success >= best baseline, fewer upstream attempts than each): {'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
