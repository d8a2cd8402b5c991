"""Unbounded input, bounded state: 100,000 distinct model names through the limiter and the retry controller."""

from __future__ import annotations

import gc
import os
import random

import openai

from middleware.limits import LimitConfig, Limiter, LimiterKey
from middleware.retry import RetryConfig, RetryController
from tests.http import http as httpx2

MODELS = 100_000
WARM = 20_000  # the maps are full (4096 entries each) long before this point
_SDK = openai.OpenAI(api_key="sk-test", max_retries=0)


def _server_error() -> openai.APIStatusError:
    response = httpx2.Response(503, json={"error": {"message": "overloaded", "type": "server_error"}},
                               request=httpx2.Request("POST", "https://api.openai.com/v1/chat/completions"))
    return _SDK._make_status_error_from_response(response)


def _rss() -> int:
    """Resident set size of this process in bytes (Linux)."""
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _headers(i: int) -> dict[str, str]:
    return {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms", "x-ratelimit-limit-tokens": "200000",
            "x-ratelimit-remaining-tokens": str(199_000 - i % 500), "x-ratelimit-reset-tokens": "300ms"}


def test_hundred_thousand_models_leave_the_memory_flat() -> None:
    limiter = Limiter(LimitConfig())  # nothing configured: every model learns its limits from headers
    retry = RetryController.from_config(RetryConfig())
    failure = _server_error()
    rng = random.Random(5)
    warm = 0
    for i in range(MODELS):
        model = f"model-{i}-{rng.random():.6f}"
        key = LimiterKey(f"hash:{model}", model)
        state = retry.start(key.id, "/chat/completions", model)
        state.before_attempt()
        res = limiter.reserve(key, 100 + i % 900)
        if i % 10 == 0:  # a failed attempt first (the breaker and the budget see it), then the retry
            state.on_failure(failure)
            state.before_attempt()
        limiter.learn(key, _headers(i), res)
        state.on_success()
        limiter.settle(res, 50 + i % 900)
        if i == WARM:
            warm = _rss()
    end = _rss()
    sizes = limiter.state_sizes()
    assert sizes["keys"] <= limiter.config.max_keys and sizes["estimators"] <= limiter.config.max_keys
    assert sizes["initial"] == 0 and sizes["queued"] == 0
    assert retry.breaker is not None and retry.budget is not None
    assert retry.breaker.size <= 4096 and retry.budget.size <= 4096
    # 80,000 more models after the warm-up: flat (generously, under 16 MB; measured 0.3 MB). Without the
    # bounds (max_keys and the breaker/budget caps raised to 10**9) the same loop grows the process by ~430 MB.
    assert end - warm < 16 * 1024 * 1024, (warm, end)
