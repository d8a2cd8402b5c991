"""Admission through the protected client: waits, refusals with clear errors, their telemetry, and estimates
checked against independent counts (the cookbook's published API figures, an upstream counting differently)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from middleware import Config, LimitConfig, RequestTooLarge, ThrottleTimeout, attempt_history, protect
from middleware.pipeline import Pipeline
from middleware.telemetry import names as n

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "hello"}]


def test_refusal_when_the_wait_would_exceed_the_maximum(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    config = Config(limits=LimitConfig(requests_per_window=1, window_seconds=60, max_wait_seconds=0.2))
    client = protect_with(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url), config)
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    with pytest.raises(ThrottleTimeout) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert info.value.needed_seconds > 50  # one request per minute: about a minute to wait
    assert "max_wait_seconds" in str(info.value)
    assert telemetry.sample(n.THROTTLE_DECISIONS.prom_name, decision=n.DECISION_REFUSED, reason="requests") == 1
    assert telemetry.sample(n.REQUESTS.prom_name, outcome="error", error_type="ThrottleTimeout") == 1
    assert simulator.stats()["total"]["received"] == 1  # the refused call never went upstream
    [refused_span] = [s for s in telemetry.spans(f"chat {MODEL}") if s.status.status_code.name == "ERROR"]
    assert [e.attributes[n.A_DECISION] for e in refused_span.events if e.name == n.E_THROTTLE] == ["refused"]


def test_request_that_can_never_fit_fails_at_once(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    config = Config(limits=LimitConfig(tokens_per_window=100, window_seconds=60))
    client = protect_with(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url), config)
    with pytest.raises(RequestTooLarge) as info:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=500)
    assert info.value.limit == 100 and info.value.tokens > 500
    assert telemetry.sample(n.THROTTLE_DECISIONS.prom_name, decision=n.DECISION_REFUSED, reason="too_large") == 1
    assert attempt_history(info.value) == []  # no attempt was made
    assert simulator.stats()["total"]["received"] == 0


def test_waiting_for_capacity_is_recorded(simulator: Any, protect_with: Any, telemetry: Any) -> None:
    config = Config(limits=LimitConfig(requests_per_window=2, window_seconds=1.0, max_wait_seconds=5))
    client = protect_with(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url), config)
    for _ in range(4):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert telemetry.sample(n.THROTTLE_DECISIONS.prom_name, decision=n.DECISION_WAITED) >= 1
    assert telemetry.sample(n.THROTTLE_WAIT.name + "_sum") > 0.3


# The openai-cookbook's "How to count tokens with tiktoken": its example conversation, for which the OpenAI API
# itself reported 129 prompt tokens on gpt-3.5-turbo-0613 / gpt-4 and 124 on gpt-4o / gpt-4o-mini, and 127 on
# gpt-3.5-turbo-0301, whose older rule (4 tokens per message, a name replacing the role) the simulator can apply.
COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
                                  "into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch "
                                                          "base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to "
                                                               "do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client "
                                "deliverable."},
]
PUBLISHED = {"gpt-4o-mini": 124, "gpt-4o": 124, "gpt-4": 129, "gpt-3.5-turbo": 129}


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_estimates_match_the_cookbooks_published_counts(
    simulator: Any, protect_with: Any, telemetry: Any, model: str,
) -> None:
    """The pre-call estimate through the protected client over HTTP equals the count the OpenAI API published."""
    client = protect_with(openai.OpenAI(api_key="sk-test", base_url=simulator.base_url))
    client.chat.completions.create(model=model, messages=COOKBOOK_MESSAGES, max_tokens=1)
    [span] = telemetry.spans(f"chat {model}")
    [event] = [e for e in span.events if e.name == n.E_ESTIMATE]
    assert event.attributes[n.A_EST_PROMPT_TOKENS] == PUBLISHED[model]


def test_an_upstream_on_the_older_rule_charges_the_published_count(make_simulator: Any) -> None:
    """The disagreeing simulator's accounting is anchored too: 127 for gpt-3.5-turbo-0301's rule (API figure)."""
    sim = make_simulator(tpm=100_000, rpm=100, window_s=60.0, accounting="legacy")
    client = openai.OpenAI(api_key="sk-test", base_url=sim.base_url)
    reply = client.chat.completions.create(model="gpt-3.5-turbo", messages=COOKBOOK_MESSAGES, max_tokens=1)
    assert sim.stats()["total"]["tokens_charged"] == 127 + 1  # prompt by the old rule + max_tokens
    assert reply.usage is not None and reply.usage.prompt_tokens == 129  # usage stays today's count


def test_admission_converges_on_an_upstream_that_counts_differently(
    make_simulator: Any, protect_with: Any, telemetry: Any,
) -> None:
    """Nothing configured, an upstream charging 1.25 x the old rule's count + 20 per request: no call fails,
    at most a few 429s, and the bias learned is the upstream's own ratio (from its /stats, not our code)."""
    window, tpw = 3.0, 9_000
    sim = make_simulator(tpm=tpw, rpm=200, window_s=window, ttft_s=0.02, accounting="legacy", charge_factor=1.25,
                         charge_offset=20, charge_per_choice=True, remaining_rounding="nearest",
                         reset_resolution_s=0.01, reset_rounding="nearest")
    pipeline = Pipeline(Config(limits=LimitConfig(max_wait_seconds=60)), telemetry.recorder)
    client = protect(openai.OpenAI(api_key="sk-conv", base_url=sim.base_url), pipeline=pipeline)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    jobs = [(" ".join(words[(i * 7 + j) % 8] for j in range(20 + (i * 37) % 200)), 20 + (i * 53) % 120)
            for i in range(90)]
    failures: list[BaseException] = []
    started = time.monotonic()

    def call(job: tuple[str, int]) -> None:
        try:
            client.chat.completions.create(model=MODEL, max_tokens=job[1], messages=[
                {"role": "system", "content": "Be brief."}, {"role": "user", "content": job[0]}])
        except BaseException as exc:  # collected: the assertion below names it
            failures.append(exc)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(call, jobs))
    assert failures == []
    stats = sim.stats()["total"]
    assert stats["refused_total"] <= 3, stats["refused"]  # the first window's, before the bias is known
    assert time.monotonic() - started < 60
    estimated = sum(e.attributes[n.A_EST_PROMPT_TOKENS] + e.attributes[n.A_EST_MAX_OUTPUT_TOKENS]
                    for s in telemetry.spans(f"chat {MODEL}") for e in s.events if e.name == n.E_ESTIMATE)
    upstream_ratio = stats["tokens_charged"] / estimated  # its count over ours, for the calls it admitted
    learned = pipeline.limiter.snapshot(pipeline.limiter_key("sk-conv", MODEL))["tokens"].bias
    assert learned == pytest.approx(upstream_ratio, rel=0.05)
    assert upstream_ratio > 1.2  # the two counts do disagree


