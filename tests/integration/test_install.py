"""``install()`` / ``uninstall()``: every openai client constructed while installed is protected, one pipeline.

Real clients over real HTTP to the built-in simulator; the SDK classes are checked as they are (their
``__dict__`` before install and after uninstall). The hook's tests are marked ``sdk``: scripts/matrix.sh runs
them against every supported openai release.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest

import middleware
from middleware import Config, LimitConfig, pipeline_of, protect
from middleware.pipeline import Pipeline
from middleware.telemetry import names as n
from middleware.telemetry.recorder import Recorder
from tests.fixtures.telemetry import TelemetryKit

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "hello"}]
CLASSES = (openai.OpenAI, openai.AsyncOpenAI, openai.AzureOpenAI, openai.AsyncAzureOpenAI)


@pytest.fixture(autouse=True)
def _always_uninstalled() -> Iterator[None]:
    middleware.uninstall()
    yield
    middleware.uninstall()


@pytest.fixture
def pipeline(telemetry: TelemetryKit) -> Pipeline:
    """A pipeline recording into the test's telemetry kit."""
    return Pipeline(Config(), telemetry.recorder)


def class_dicts() -> dict[type, dict[str, Any]]:
    return {cls: dict(cls.__dict__) for cls in CLASSES}


def test_import_and_install_state() -> None:
    assert middleware.installed() is None
    assert type(openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="k")) is openai.OpenAI


@pytest.mark.sdk  # the hook must work on every supported SDK release
def test_clients_constructed_while_installed_are_protected_and_share_one_pipeline(
        simulator: Any, pipeline: Pipeline, telemetry: TelemetryKit) -> None:
    before = openai.OpenAI(base_url=simulator.base_url, api_key="sk-1")
    installed = middleware.install(pipeline=pipeline)
    assert installed is pipeline and middleware.installed() is pipeline
    sync = openai.OpenAI(base_url=simulator.base_url, api_key="sk-1")
    aio = openai.AsyncOpenAI(base_url=simulator.base_url, api_key="sk-1")
    azure = openai.AzureOpenAI(api_key="sk-1", api_version="2024-06-01", azure_endpoint=simulator.root_url)
    aazure = openai.AsyncAzureOpenAI(api_key="sk-1", api_version="2024-06-01", azure_endpoint=simulator.root_url)
    for client, cls in ((sync, openai.OpenAI), (aio, openai.AsyncOpenAI), (azure, openai.AzureOpenAI),
                        (aazure, openai.AsyncAzureOpenAI)):
        assert isinstance(client, cls) and type(client).__name__ == cls.__name__
        assert pipeline_of(client) is pipeline
    with pytest.raises(TypeError):
        pipeline_of(before)  # constructed before install(): left as it was
    assert type(before) is openai.OpenAI
    assert pipeline_of(before.with_options(timeout=5)) is pipeline  # a client it derives now is a new client

    sync.chat.completions.create(model=MODEL, messages=MESSAGES)
    asyncio.run(aio.chat.completions.create(model=MODEL, messages=MESSAGES))
    before.chat.completions.create(model=MODEL, messages=MESSAGES)
    calls = telemetry.spans(n.SPAN_CALL.format(operation="chat", model=MODEL))
    assert len(calls) == 2  # the two installed clients' calls; the older client's went past the middleware
    assert simulator.stats()["total"]["served"] == 3


@pytest.mark.sdk  # the hook must work on every supported SDK release
def test_uninstall_restores_the_classes_exactly_and_leaves_new_clients_untouched(
        simulator: Any, pipeline: Pipeline, telemetry: TelemetryKit) -> None:
    original = class_dicts()
    middleware.install(pipeline=pipeline)
    assert class_dicts() != original
    kept = openai.OpenAI(base_url=simulator.base_url, api_key="sk-1")
    middleware.uninstall()
    assert class_dicts() == original
    middleware.uninstall()  # idempotent
    assert class_dicts() == original and middleware.installed() is None

    fresh = openai.OpenAI(base_url=simulator.base_url, api_key="sk-1")
    afresh = openai.AsyncAzureOpenAI(api_key="sk-1", api_version="2024-06-01", azure_endpoint=simulator.root_url)
    assert type(fresh) is openai.OpenAI and type(afresh) is openai.AsyncAzureOpenAI
    fresh.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert telemetry.spans() == []
    kept.chat.completions.create(model=MODEL, messages=MESSAGES)  # constructed while installed: still protected
    assert pipeline_of(kept) is pipeline and len(telemetry.spans(n.SPAN_CALL.format(operation="chat", model=MODEL)))


def test_install_is_idempotent_and_an_explicit_config_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIDDLEWARE_RPM", "123")
    monkeypatch.setenv("MIDDLEWARE_MAX_ATTEMPTS", "2")
    first = middleware.install()  # no config: MIDDLEWARE_* variables
    assert first.config.limits.requests_per_window == 123 and first.config.retry.max_attempts == 2
    assert middleware.install() is first and middleware.install(first.config) is first
    assert middleware.install(pipeline=first) is first
    original = class_dicts()
    middleware.install()
    assert class_dicts() == original  # a second install wraps nothing again

    explicit = Config(limits=LimitConfig(requests_per_window=7))
    second = middleware.install(explicit)
    assert second is not first and second.config is explicit and middleware.installed() is second
    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="k")
    assert pipeline_of(client) is second


@pytest.mark.sdk  # the hook must work on every supported SDK release
def test_protect_still_works_on_an_installed_client(simulator: Any, pipeline: Pipeline,
                                                   telemetry: TelemetryKit) -> None:
    middleware.install(pipeline=pipeline)
    installed_client = openai.OpenAI(base_url=simulator.base_url, api_key="sk-1")
    own = Pipeline(Config(), Recorder(registry=telemetry.registry, tracer_provider=telemetry.provider))
    mine = protect(installed_client, pipeline=own)
    assert pipeline_of(mine) is own and pipeline_of(installed_client) is pipeline
    assert isinstance(mine, openai.OpenAI) and type(mine) is type(installed_client)
    mine.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert own.limiter is not pipeline.limiter
    assert pipeline_of(mine.with_options(timeout=3)) is own  # derived clients keep their pipeline


@pytest.mark.sdk  # the hook must work on every supported SDK release
def test_concurrent_install_and_construction_are_safe(simulator: Any, pipeline: Pipeline) -> None:
    """Threads installing (the same pipeline) and constructing clients at once: every client constructed
    after the first install completed is protected by that pipeline, and the classes are wrapped once."""
    start = threading.Barrier(8)
    results: list[Any] = []
    lock = threading.Lock()

    def installer() -> None:
        start.wait(10)
        got = middleware.install(pipeline=pipeline)
        with lock:
            results.append(got)

    def builder() -> None:
        start.wait(10)
        clients = [openai.OpenAI(base_url=simulator.base_url, api_key="k") for _ in range(20)]
        with lock:
            results.extend(clients)

    threads = [threading.Thread(target=installer) for _ in range(4)] + [threading.Thread(target=builder)
                                                                         for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r for r in results if isinstance(r, Pipeline)] == [pipeline] * 4
    clients = [r for r in results if not isinstance(r, Pipeline)]
    assert len(clients) == 80
    for client in clients:  # each is either untouched or protected by the one pipeline, never half of it
        assert type(client) is openai.OpenAI or pipeline_of(client) is pipeline
    wrapped = openai.OpenAI.__dict__["__init__"]
    assert wrapped.__wrapped__ is not None and not hasattr(wrapped.__wrapped__, "__wrapped__")
    assert pipeline_of(openai.OpenAI(base_url=simulator.base_url, api_key="k")) is pipeline


# --- two clients built in different places share one budget ------------------------------------------------------

RPW, WINDOW, CALLS = 3, 1.5, 6


def _client_built_by_module_a(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="sk-same", max_retries=0)


class _ServiceB:
    """Some other component that builds its own (async) client from parameters."""

    def __init__(self, base_url: str) -> None:
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-same", max_retries=0)

    async def ask_many(self, n_calls: int, tag: str) -> int:
        replies = [await self.client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4,
                                                             extra_headers={"x-sim-tag": tag})
                   for _ in range(n_calls)]
        return len(replies)


def _burst(base_url: str, tag: str) -> tuple[int, int]:
    """Module A's client (sync, in a thread) and service B's client (async) each make CALLS calls at once."""
    a = _client_built_by_module_a(base_url)
    b = _ServiceB(base_url)
    done = [0]

    def run_a() -> None:
        for _ in range(CALLS):
            a.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, extra_headers={"x-sim-tag": tag})
            done[0] += 1

    thread = threading.Thread(target=run_a)
    thread.start()
    b_done = asyncio.run(b.ask_many(CALLS, tag))
    thread.join()
    return done[0], b_done


def _most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


def test_two_clients_built_in_different_places_share_one_budget(make_simulator: Any,
                                                                telemetry: TelemetryKit) -> None:
    sim = make_simulator(rpm=RPW, window_s=WINDOW)
    limits = LimitConfig(requests_per_window=RPW, window_seconds=WINDOW, jitter_margin_seconds=0.1)
    pipeline = middleware.install(pipeline=Pipeline(Config(limits=limits), telemetry.recorder))
    assert _burst(sim.base_url, "shared") == (CALLS, CALLS)
    total = sim.stats()["total"]
    assert total["refused_total"] == 0 and total["served"] == 2 * CALLS  # together, never over the limit
    # Token bucket of RPW refilled over WINDOW: at most RPW (burst) + RPW (refill) arrivals in any window.
    assert _most_in_any_window(sim.request_times("shared"), WINDOW) <= 2 * RPW
    assert telemetry.sample(n.THROTTLE_DECISIONS.prom_name, decision=n.DECISION_WAITED) >= CALLS
    assert pipeline.limiter is pipeline_of(_client_built_by_module_a(sim.base_url)).limiter


def test_without_install_two_separately_protected_clients_overrun_the_limit(make_simulator: Any) -> None:
    """The control: a pipeline each (two budgets for one key) and the upstream refuses requests."""
    sim = make_simulator(rpm=RPW, window_s=WINDOW)
    limits = LimitConfig(requests_per_window=RPW, window_seconds=WINDOW, jitter_margin_seconds=0.1)
    a = protect(_client_built_by_module_a(sim.base_url), Config(limits=limits))
    b = protect(openai.OpenAI(base_url=sim.base_url, api_key="sk-same", max_retries=0), Config(limits=limits))
    threads = [threading.Thread(target=lambda c=c: [c.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=4) for _ in range(CALLS)]) for c in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sim.stats()["total"]["refused_total"] > 0
