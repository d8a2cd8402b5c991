"""Four processes, each a real protected ``openai.OpenAI`` client, share one Redis budget against a
simulator (its own process) that enforces the same limits: zero 429s, the budget never exceeded,
and Redis killed and restarted mid-run loses no request. ``jitter_margin_seconds`` (MARGIN) absorbs the
delay between a call's admission and its arrival upstream on a loaded 2-core machine (16 threads in 4
processes plus the simulator and Redis): while the upstream bucket is full, refill is lost for that delay.

During the outage every process holds ``fallback_fraction = 1/4`` of the budget, its buckets start
empty at the switch (charged with its calls still queued on Redis), and the restarted Redis is
lowered to the processes' local levels before its first decision, so the aggregate stays within the
budget; the only 429s possible come from timing jitter at the hand-overs, and the pipeline retries
them (bounded below). The default (``fallback_fraction=None``) gives each process 1/N of the budget, N
the live peers counted in Redis (4 here); a fixed 0.5 would let four processes admit twice the budget
(``test_limits_redis_multiprocess``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from middleware.simulator import SimulatorProcess, start_subprocess
from tests.fixtures.redis_server import RedisServer
from tests.http import default_http_client

MARGIN = 1.0
WINDOW, RPW, TPW = 6.0, 60, 18000  # OpenAI-like rates (10 rps, 3000 tok/s) with a short window
PROCESSES, THREADS = 4, 4
MODEL = "gpt-4o-mini"
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]


def _body(rng: random.Random) -> tuple[str, int]:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 300))), rng.randint(30, 350)


def _worker(base_url: str, redis_url: str, prefix: str, seed: int, calls: int, fallback: float,
            barrier: Any, out: Any) -> None:
    import openai

    from middleware import Config, protect
    from middleware.limits import LimitConfig
    from middleware.redisconn import RedisConfig

    statuses: Counter[int] = Counter()
    sent: list[tuple[float, str]] = []
    lock = threading.Lock()

    def on_request(request: Any) -> None:
        with lock:
            sent.append((time.time(), request.content.decode()))

    def on_response(response: Any) -> None:
        with lock:
            statuses[response.status_code] += 1

    http = default_http_client(event_hooks={"request": [on_request], "response": [on_response]})
    limits = LimitConfig(requests_per_window=RPW, tokens_per_window=TPW, window_seconds=WINDOW,
                         redis_url=redis_url, redis_prefix=prefix, fallback_fraction=fallback,
                         max_wait_seconds=60, jitter_margin_seconds=MARGIN)
    # Redis is probed again within 0.25 s of a failure (the shared policy's back-off, short for this test)
    redis = RedisConfig(backoff_initial_seconds=0.25, backoff_max_seconds=0.25)
    client = protect(openai.OpenAI(base_url=base_url, api_key="sk-same", http_client=http),
                     Config(limits=limits, redis=redis))
    rng = random.Random(seed)
    jobs = [_body(rng) for _ in range(calls)]
    failures: list[str] = []
    done = [0]

    def run(mine: list[tuple[str, int]]) -> None:
        for text, max_tokens in mine:
            try:
                client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}],
                                               max_tokens=max_tokens)
                with lock:
                    done[0] += 1
            except Exception as exc:
                with lock:
                    failures.append(repr(exc))

    barrier.wait(60)
    threads = [threading.Thread(target=run, args=(jobs[i::THREADS],)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put({"statuses": dict(statuses), "sent": sent, "failures": failures, "done": done[0],
             "degraded_ever": bool(client._middleware_pipeline.limiter.degraded)})  # type: ignore[attr-defined]


@pytest.fixture
def limited_simulator() -> Iterator[SimulatorProcess]:
    sim = start_subprocess(rpm=RPW, tpm=TPW, window_s=WINDOW, ttft_s=0.03)
    try:
        yield sim
    finally:
        sim.stop()


def _run(sim: SimulatorProcess, url: str, calls: int, fallback: float = 0.25,
         during: Any = None) -> tuple[float, float, list[dict[str, Any]]]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    barrier = ctx.Barrier(PROCESSES + 1)
    prefix = f"e2e{uuid.uuid4().hex[:8]}"
    procs = [ctx.Process(target=_worker, args=(sim.base_url, url, prefix, seed, calls, fallback, barrier, out))
             for seed in range(PROCESSES)]
    for p in procs:
        p.start()
    barrier.wait(60)
    start = time.time()
    if during is not None:
        during()
    results = [out.get(timeout=120) for _ in procs]
    wall = time.time() - start
    for p in procs:
        p.join(10)
    return start, wall, results


def _charges(results: list[dict[str, Any]]) -> list[tuple[float, int]]:
    from middleware.simulator.counting import count_prompt_tokens

    events = []
    for r in results:
        for at, body in r["sent"]:
            data = json.loads(body)
            events.append((at, count_prompt_tokens("chat", data) + int(data["max_tokens"])))
    return sorted(events)


def _max_excess(events: list[tuple[float, int]]) -> tuple[float, float]:
    """Largest (admitted - (capacity + refill)) over any interval, for requests and tokens."""
    worst_r = worst_t = -1e18
    for i in range(len(events)):
        tok = 0
        for n, j in enumerate(range(i, len(events)), start=1):
            tok += events[j][1]
            span = events[j][0] - events[i][0]
            worst_r = max(worst_r, n - (RPW + RPW * span / WINDOW))
            worst_t = max(worst_t, tok - (TPW + TPW * span / WINDOW))
    return worst_r, worst_t


@pytest.mark.slow
def test_four_protected_clients_share_redis_with_zero_429s(redis_url: str, limited_simulator: SimulatorProcess) -> None:
    calls = 30
    _, wall, results = _run(limited_simulator, redis_url, calls)
    stats = limited_simulator.stats()["total"]
    assert all(not r["failures"] for r in results), [r["failures"][:2] for r in results]
    assert sum(r["done"] for r in results) == PROCESSES * calls
    assert stats["refused_total"] == 0, stats["refused"]
    assert sum(r["statuses"].get(429, 0) for r in results) == 0
    assert stats["received"] == PROCESSES * calls  # no retries were needed either
    worst_r, worst_t = _max_excess(_charges(results))
    assert worst_r <= 0.5 and worst_t <= 0.02 * TPW, (worst_r, worst_t)  # client send times: a little jitter
    charged = stats["tokens_charged"]
    # the lower bound with buckets that start full, less the capacity the margin holds back on purpose
    bound = max((charged - TPW) / (TPW / WINDOW), (stats["admitted"] - RPW) / (RPW / WINDOW)) + MARGIN
    assert bound / wall > 0.85, (bound, wall)  # the budget is used, not just respected


@pytest.mark.slow
def test_redis_killed_and_restarted_mid_run_loses_no_request(
    redis_server: RedisServer, redis_url: str, limited_simulator: SimulatorProcess,
) -> None:
    calls = 30

    def chaos() -> None:
        def go() -> None:
            time.sleep(3.0)
            redis_server.kill()
            time.sleep(3.0)
            redis_server.start()

        threading.Thread(target=go, daemon=True).start()

    _, wall, results = _run(limited_simulator, redis_url, calls, during=chaos)
    stats = limited_simulator.stats()["total"]
    assert all(not r["failures"] for r in results), [r["failures"][:2] for r in results]
    assert sum(r["done"] for r in results) == PROCESSES * calls
    assert stats["served"] == PROCESSES * calls
    refused = stats["refused_total"]
    assert refused == sum(r["statuses"].get(429, 0) for r in results)
    assert refused <= 4, stats["refused"]  # hand-over jitter only (see the module doc)
    assert wall < 45
