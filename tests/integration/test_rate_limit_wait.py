"""No request lost to a rate limit: a caller never sees a 429 while its wait budget lasts, and gets a clear
error after. The real SDK over HTTP to the simulator, which answers requests with a rate-limit 429
(type tokens, retry-after 0.3 s, its x-ratelimit-* headers): a counted number of them (the next N requests,
however fast the machine), or all of them for as long as an outage lasts."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from prometheus_client import CollectorRegistry

from middleware import Config, LimitConfig, RetryConfig, ThrottleTimeout, attempt_history, protect
from middleware.pipeline import Pipeline
from middleware.retry import RateLimitWaitExceeded
from middleware.telemetry import names as n
from middleware.telemetry.recorder import Recorder

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "hello"}]
RETRY_AFTER = 0.3
RATE_LIMITED = f"status=429;type=tokens;code=rate_limit_exceeded;retry_after={RETRY_AFTER}"
TPM = 90_000
RATE_LIMITS = 6  # 429s in a row: three times max_attempts=2


def client_for(base_url: str, max_wait: float) -> tuple[Any, Pipeline]:
    config = Config(limits=LimitConfig(max_wait_seconds=max_wait), retry=RetryConfig(max_attempts=2))
    pipeline = Pipeline(config, Recorder(registry=CollectorRegistry()))
    return protect(openai.OpenAI(api_key="sk-wait", base_url=base_url), pipeline=pipeline), pipeline


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_no_rate_limit_error_while_the_wait_budget_lasts(make_simulator: Any, mode: str) -> None:
    sim = make_simulator(tpm=TPM, rpm=1000, window_s=60.0)
    client, pipeline = client_for(sim.base_url, max_wait=10.0)
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)  # limits known
    sim.set_faults(fault_times=[(RATE_LIMITED, RATE_LIMITS)])  # the next RATE_LIMITS requests, whenever they come
    started = time.monotonic()
    if mode == "sync":
        reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    else:
        import asyncio

        aclient = protect(openai.AsyncOpenAI(api_key="sk-wait", base_url=sim.base_url), pipeline=pipeline)
        reply = asyncio.run(aclient.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5))
    elapsed = time.monotonic() - started
    assert reply.choices[0].message.content  # it got through: the 429s were waited out, none reached us
    stats = sim.stats()["total"]
    assert stats["faults"]["status_429"] == RATE_LIMITS  # well past max_attempts=2: rate limits are not attempts
    assert stats["received"] == 1 + RATE_LIMITS + 1  # and nothing else was sent
    assert elapsed >= RATE_LIMITS * RETRY_AFTER  # each retry-after was waited (a sleep never ends early)
    assert elapsed < 60  # a hang guard only
    budget = pipeline.retry.budget
    assert budget is not None
    key = pipeline.limiter_key("sk-wait", MODEL).id
    assert budget.balance(key) >= budget.floor  # no retry tokens withdrawn for the 429s


def test_a_clear_error_once_the_wait_budget_is_spent(make_simulator: Any) -> None:
    sim = make_simulator(tpm=TPM, rpm=1000, window_s=60.0)
    client, pipeline = client_for(sim.base_url, max_wait=1.5)
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    sim.set_faults(outage=True, outage_fault=RATE_LIMITED)
    started = time.monotonic()
    with pytest.raises(RateLimitWaitExceeded) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    elapsed = time.monotonic() - started
    error = info.value
    assert isinstance(error, ThrottleTimeout)  # existing `except ThrottleTimeout` handlers still catch it
    assert isinstance(error.__cause__, openai.RateLimitError)  # the last 429, with its response
    assert error.resource == "tokens" and error.limit == TPM and error.max_wait_seconds == 1.5
    assert 0.9 <= error.waited_seconds <= 1.5 < elapsed + 0.5
    assert elapsed < 1.5 + 10  # a hang guard only; that it did not sleep in vain is checked below

    text = str(error)
    assert f"rate limited on tokens (limit {TPM})" in text and "max_wait_seconds=1.5" in text
    history = attempt_history(error)
    assert len(history) >= 3 and {a.reason for a in history} == {"rate_limit"}
    # It did not sleep in vain past its budget: every wait after a 429 was followed by an attempt, and every
    # attempt reached the simulator (the first call, then the rate-limited ones).
    assert _samples(pipeline, f"{n.P}_backoff_seconds_count", reason="rate_limit") == len(history) - 1
    assert history[-1].delay_seconds == 0.0
    assert sim.stats()["total"]["received"] == 1 + len(history)


def _samples(pipeline: Pipeline, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels match (by short name: ``reason`` is llm_middleware_reason)."""
    def value(sample_labels: dict[str, str], key: str) -> str | None:
        return next((sample_labels[k] for k in (key, *n.RENAMED_LABELS.get(key, ())) if k in sample_labels), None)

    return sum(s.value for family in pipeline.recorder.registry.collect() for s in family.samples
               if s.name == name and all(value(s.labels, k) == v for k, v in labels.items()))
