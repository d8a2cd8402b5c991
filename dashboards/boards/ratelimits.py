"""Rate limits: the limiter's decisions, waits, reservations and learned limits."""

from __future__ import annotations

from dashboards.mixin import MixinConfig
from dashboards.promql import legend, panel_selectors, quantile, sum_rate
from dashboards.spec import Dashboard, Panel, Query, Row
from middleware.telemetry.names import (
    ESTIMATE_ERROR,
    L_DECISION,
    L_LIMITER_BACKEND,
    L_MODEL,
    L_REASON,
    L_REDIS_FEATURE,
    L_RESOURCE,
    L_TOKEN_TYPE,
    LIMITER_DECISION_SECONDS,
    LIMITER_FALLBACK_ACTIVE,
    LIMITER_FALLBACKS,
    RATE_LIMITED_RESPONSES,
    RATELIMIT_COOLDOWNS,
    RATELIMIT_HEADER_ERRORS,
    RATELIMIT_LIMIT,
    RATELIMIT_REMAINING,
    REDIS_FALLBACKS,
    THROTTLE_DECISIONS,
    THROTTLE_WAIT,
    TOKENS_RESERVED,
    TOKENS_SETTLED,
    bucket,
)


def _gauge(title: str, description: str, expr: str) -> Panel:
    return Panel(title, description, "short", (Query(expr, legend(L_MODEL, L_RESOURCE)),), kind="gauge")


def build(cfg: MixinConfig) -> Dashboard:
    """The Rate limits dashboard for `cfg`."""
    sel = panel_selectors(cfg)
    remaining_ratio = (f"max by ({L_MODEL}, {L_RESOURCE}) ({sel(RATELIMIT_REMAINING)})"
                       f" / max by ({L_MODEL}, {L_RESOURCE}) ({sel(RATELIMIT_LIMIT)})")
    decision_buckets = sel(LIMITER_DECISION_SECONDS, bucket(LIMITER_DECISION_SECONDS))
    return Dashboard(
        uid="llm-rate-limits",
        title="LLM middleware / Rate limits",
        description="Client-side rate limiting: admissions, waits, reservations, learned limits and upstream 429s.",
        rows=(
            Row("Decisions and waits", (
                Panel("Throttle decisions", "Limiter decisions per second by decision and binding reason. Many "
                      "'refused': the max wait is too short for the load or the limits are too low for the workload.",
                      "ops", (Query(sum_rate(sel(THROTTLE_DECISIONS), (L_DECISION, L_REASON)),
                                    legend(L_DECISION, L_REASON)),)),
                Panel("Throttle wait p95", "95th percentile of the time a call waited before admission; above "
                      f"{cfg.throttle_wait_p95_max_s:g}s LlmThrottleWaitHigh fires. Sustained waits mean the workload "
                      "exceeds the quota: spread it, raise limits, or accept the latency.", "s",
                      (Query(quantile(0.95, sel(THROTTLE_WAIT, bucket(THROTTLE_WAIT)), (L_MODEL,)),
                             legend(L_MODEL)),),
                      exemplars=True, thresholds=((cfg.throttle_wait_p95_max_s, "red"),)),
                Panel("Reserved vs settled tokens", "Tokens reserved at admission vs charged after settlement. "
                      "Reserved far above settled: max_tokens is oversized and capacity is wasted; lower it or enable "
                      "prediction.", "short",
                      (Query(sum_rate(sel(TOKENS_RESERVED), (L_MODEL,)), "reserved " + legend(L_MODEL)),
                       Query(sum_rate(sel(TOKENS_SETTLED), (L_MODEL,)), "settled " + legend(L_MODEL)))),
            )),
            Row("Limits and capacity", (
                _gauge("Learned limits", "Current limit per window (configured or learned from "
                       "x-ratelimit-limit-*). Unexpected values: compare with the account's limits page; headers may "
                       "be missing (see parse errors).",
                       f"max by ({L_MODEL}, {L_RESOURCE}) ({sel(RATELIMIT_LIMIT)})"),
                _gauge("Remaining capacity", "Remaining requests/tokens in the limiter. Near zero for long: the "
                       "limiter is the bottleneck; see the wait panel.",
                       f"min by ({L_MODEL}, {L_RESOURCE}) ({sel(RATELIMIT_REMAINING)})"),
                Panel("Remaining capacity ratio", f"Remaining / limit. Under {cfg.remaining_capacity_min:.0%} "
                      "(red; LlmRateLimitCapacityLow) for minutes: the quota is nearly spent; expect waits. Consider "
                      "a higher tier or shifting load to another model.", "percentunit",
                      (Query(remaining_ratio, legend(L_MODEL, L_RESOURCE)),), kind="gauge", min=0, max=1,
                      thresholds=((cfg.remaining_capacity_min, "green"),), base_color="red"),
            )),
            Row("429s and cooldowns", (
                Panel("429s despite the limiter", "Upstream 429 responses. Should stay near zero (the alert fires "
                      f"above {cfg.rate_limited_max_per_s:g}/s): other clients may share the API key, or the learned "
                      "limits are stale; check cooldowns and header errors.", "reqps",
                      (Query(sum_rate(sel(RATE_LIMITED_RESPONSES), (L_MODEL, L_RESOURCE)),
                             legend(L_MODEL, L_RESOURCE)),)),
                Panel("Cooldowns", "Cooldowns entered after a 429. Repeated cooldowns: lower the configured limits "
                      "or find the other consumer of the key.", "ops",
                      (Query(sum_rate(sel(RATELIMIT_COOLDOWNS), (L_MODEL, L_RESOURCE)),
                             legend(L_MODEL, L_RESOURCE)),)),
                Panel("Rate-limit header errors", "x-ratelimit-* headers missing or unparseable. Non-zero: a proxy "
                      "strips headers or the format changed; the limiter then relies on configured limits only.",
                      "ops", (Query(sum_rate(sel(RATELIMIT_HEADER_ERRORS), (L_REASON,)), legend(L_REASON)),)),
            )),
            Row("Limiter backend and estimates", (
                Panel("Redis fallback active", "1 while the shared (Redis) limiter is unreachable and each process "
                      "limits alone, so the fleet can exceed the quota. Check Redis health and network.", "short",
                      (Query(f"max by ({L_LIMITER_BACKEND}) ({sel(LIMITER_FALLBACK_ACTIVE)})",
                             legend(L_LIMITER_BACKEND)),
                       Query(sum_rate(sel(LIMITER_FALLBACKS), (L_LIMITER_BACKEND,)),
                             "switches/s " + legend(L_LIMITER_BACKEND))),
                      kind="stat", thresholds=((1, "red"),)),
                Panel("Redis operations answered locally", "Operations of each feature sharing state through "
                      "Redis (limiter, retry, checkpoint, budget) that did not use Redis, by reason: timeout, "
                      "connection, error, or skipped during the back-off after a failure. Non-zero: the fleet "
                      "decides with local state (see LlmRedisFallbacks).", "ops",
                      (Query(sum_rate(sel(REDIS_FALLBACKS), (L_REDIS_FEATURE, L_REASON)),
                             legend(L_REDIS_FEATURE, L_REASON)),)),
                Panel("Limiter decision time", "p50/p99 time of one limiter decision by backend. Redis p99 above a "
                      "few ms adds latency to every call: check Redis load and round-trip time.", "s",
                      (Query(quantile(0.5, decision_buckets, (L_LIMITER_BACKEND,)),
                             "p50 " + legend(L_LIMITER_BACKEND)),
                       Query(quantile(0.99, decision_buckets, (L_LIMITER_BACKEND,)),
                             "p99 " + legend(L_LIMITER_BACKEND)))),
                Panel("Estimate error p90", "90th percentile of |estimated - actual| / actual tokens. Above "
                      f"{cfg.estimate_error_p90_max:.0%}: reservations are off; see the Token estimation dashboard.",
                      "percentunit",
                      (Query(quantile(0.9, sel(ESTIMATE_ERROR, bucket(ESTIMATE_ERROR)), (L_MODEL, L_TOKEN_TYPE)),
                             legend(L_MODEL, L_TOKEN_TYPE)),)),
            )),
        ),
    )
