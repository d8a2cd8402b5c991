"""Reliability: attempts, retries, backoff, retry budget and circuit breakers."""

from __future__ import annotations

from dashboards.mixin import MixinConfig
from dashboards.promql import Selectors, legend, panel_selectors, quantile, sum_rate
from dashboards.spec import Dashboard, Panel, Query, Row
from dashboards.values import ATTEMPT_TERMINAL, BREAKER_OPEN_VALUE, REASON_SERVER_ERROR
from middleware.telemetry.names import (
    ATTEMPTS,
    BACKOFF,
    BREAKER_STATE,
    BREAKER_TRANSITIONS,
    L_BREAKER_STATE,
    L_ENDPOINT,
    L_MODEL,
    L_OUTCOME,
    L_REASON,
    REQUESTS,
    RETRY_BUDGET_EXHAUSTED,
    bucket,
    total,
)


def retry_ratio(sel: Selectors, window: str = "$__rate_interval") -> str:
    """Retries per call: (attempts - calls) / calls, by model."""
    attempts = sum_rate(sel(ATTEMPTS), (L_MODEL,), window)
    calls = sum_rate(sel(REQUESTS), (L_MODEL,), window)
    return f"clamp_min({attempts} - {calls}, 0) / {calls}"


def build(cfg: MixinConfig) -> Dashboard:
    """The Reliability dashboard for `cfg`."""
    sel = panel_selectors(cfg)
    return Dashboard(
        uid="llm-reliability",
        title="LLM middleware / Reliability",
        description="Attempts and their outcomes, retries, backoff, retry budget and circuit breakers.",
        rows=(
            Row("Attempts and retries", (
                Panel("Attempts by outcome and reason", "HTTP attempts sent upstream. Retryable failures rising: "
                      "upstream trouble or throttling; terminal failures: fix the request or the account.", "reqps",
                      (Query(sum_rate(sel(ATTEMPTS), (L_OUTCOME, L_REASON)), legend(L_OUTCOME, L_REASON)),)),
                Panel("Retry ratio", f"Retries per call by model. Above {cfg.retry_ratio_max:g} for long "
                      "(LlmRetryRatioHigh): upstream is degraded; the breaker and retry budget should cap it, check "
                      "them below.", "percentunit", (Query(retry_ratio(sel), legend(L_MODEL)),), min=0,
                      thresholds=((cfg.retry_ratio_max, "red"),)),
                Panel("Upstream 5xx", "Server-error attempts per second. Rising: check the provider's status page; "
                      "retries absorb short bursts.", "reqps",
                      (Query(sum_rate(sel(ATTEMPTS, eq={L_REASON: REASON_SERVER_ERROR}), (L_MODEL,)),
                             legend(L_MODEL)),)),
            )),
            Row("Backoff and budget", (
                Panel("Backoff p95", "95th percentile of one backoff sleep by reason. Long sleeps come from "
                      "retry-after headers: heed them, or shed load.", "s",
                      (Query(quantile(0.95, sel(BACKOFF, bucket(BACKOFF)), (L_REASON,)), legend(L_REASON)),),
                      exemplars=True),
                Panel("Seconds spent in backoff per second", "Total sleep time per second across calls: the latency "
                      "tax of retries. High: reduce retries or fix the failing dependency.", "s",
                      (Query(sum_rate(sel(BACKOFF, total(BACKOFF)), (L_MODEL,)), legend(L_MODEL)),)),
                Panel("Retry budget exhausted", "Retries refused because the budget was spent: failures now reach "
                      "callers. Investigate the failure cause rather than raising the budget.", "ops",
                      (Query(sum_rate(sel(RETRY_BUDGET_EXHAUSTED), (L_MODEL,)), legend(L_MODEL)),)),
            )),
            Row("Circuit breakers and terminal errors", (
                Panel("Breaker state", "0 closed, 1 half-open, 2 open. Open: calls send nothing and wait for a "
                      "half-open probe (or fail with CircuitOpenError past breaker_max_wait_seconds); check upstream "
                      "health.", "short",
                      (Query(f"max by ({L_MODEL}, {L_ENDPOINT}) ({sel(BREAKER_STATE)})",
                             legend(L_MODEL, L_ENDPOINT)),), min=0, max=2,
                      thresholds=((BREAKER_OPEN_VALUE, "red"),)),
                Panel("Breaker transitions", "Transitions by the state entered. Flapping between open and half-open: "
                      "the upstream is intermittently failing; tune the breaker window.", "ops",
                      (Query(sum_rate(sel(BREAKER_TRANSITIONS), (L_MODEL, L_BREAKER_STATE)),
                             legend(L_MODEL, L_BREAKER_STATE)),)),
                Panel("Terminal errors by reason", "Attempts that can not succeed on retry (insufficient_quota, "
                      "request too large, auth). insufficient_quota: add credit or raise the spend limit now.",
                      "reqps",
                      (Query(sum_rate(sel(ATTEMPTS, eq={L_OUTCOME: ATTEMPT_TERMINAL}), (L_MODEL, L_REASON)),
                             legend(L_MODEL, L_REASON)),)),
            )),
        ),
    )
