"""Overview: traffic, errors, tokens, cost, latency and 429s."""

from __future__ import annotations

from dashboards.boards.cost import UID as COST_UID
from dashboards.mixin import MixinConfig
from dashboards.promql import legend, panel_selectors, quantile, sum_rate
from dashboards.spec import Dashboard, Panel, Query, Row
from middleware.telemetry.names import (
    COST_USD,
    INFLIGHT,
    L_ERROR_TYPE,
    L_MODEL,
    L_OPERATION,
    L_OUTCOME,
    L_RESOURCE,
    L_TOKEN_TYPE,
    OPERATION_DURATION,
    OUTCOME_ERROR,
    RATE_LIMITED_RESPONSES,
    REQUESTS,
    TOKEN_USAGE,
    bucket,
    total,
)


def build(cfg: MixinConfig) -> Dashboard:
    """The Overview dashboard for `cfg`."""
    sel = panel_selectors(cfg)
    err, all_ = sel(REQUESTS, eq={L_OUTCOME: OUTCOME_ERROR}), sel(REQUESTS)
    tokens = sel(TOKEN_USAGE, total(TOKEN_USAGE))
    cost = sel(COST_USD)

    def latency(q: float) -> Query:
        return Query(quantile(q, sel(OPERATION_DURATION, bucket(OPERATION_DURATION)), (L_MODEL,)),
                     f"p{round(q * 100)} " + legend(L_MODEL))

    budget = 1 - cfg.availability_objective
    return Dashboard(
        uid="llm-overview",
        title="LLM middleware / Overview",
        description="Requests, errors, tokens, cost and latency of calls through the OpenAI middleware.",
        rows=(
            Row("Traffic and errors", (
                Panel("Requests per second", "Protected calls by model and outcome. A sudden drop to zero with no "
                      "deploy: check that the job is up and scraped (Prometheus targets page), then the app logs.",
                      "reqps", (Query(sum_rate(all_, (L_MODEL, L_OUTCOME)), legend(L_MODEL, L_OUTCOME)),)),
                Panel("Error ratio", f"Share of calls that failed, by model. Above the error budget ({budget:.2%} for "
                      f"the {cfg.availability_objective:g} availability objective): open the Reliability dashboard "
                      "(terminal errors, breaker) and the error type panel next to this one.", "percentunit",
                      (Query(f"{sum_rate(err, (L_MODEL,))} / {sum_rate(all_, (L_MODEL,))}", legend(L_MODEL)),),
                      min=0),
                Panel("Errors by type", "Failed calls per second by error type. A new error type appearing usually "
                      "means an upstream or configuration change: read its recent traces in Tempo.", "reqps",
                      (Query(sum_rate(err, (L_MODEL, L_ERROR_TYPE)), legend(L_MODEL, L_ERROR_TYPE)),)),
            )),
            Row("Tokens and cost", (
                Panel("Tokens per second", "Tokens per second by type as reported by the API: input and output, "
                      "and the parts of them that were cached_input and reasoning (do not add those to input and "
                      "output). A jump without a matching request jump means larger prompts or outputs: check the "
                      "Token estimation dashboard.", "short",
                      (Query(sum_rate(tokens, (L_MODEL, L_TOKEN_TYPE)), legend(L_MODEL, L_TOKEN_TYPE)),)),
                Panel("Cost (USD per hour)", "Cost of settled calls per hour by model, computed by the middleware "
                      "from the reported usage and its price table. A model missing here may be unpriced: see the "
                      f"Cost dashboard (/d/{COST_UID}) for unpriced traffic, tags and budgets.",
                      "currencyUSD", (Query(f"{sum_rate(cost, (L_MODEL,))} * 3600", legend(L_MODEL)),), min=0),
                Panel("Cost over the range", "Total spend over the dashboard time range by model. Higher than "
                      f"budgeted: find the team and feature in the Cost dashboard's Top spenders (/d/{COST_UID}).",
                      "currencyUSD", (Query(sum_rate(cost, (L_MODEL,), "$__range", "increase"), legend(L_MODEL)),),
                      kind="stat"),
            )),
            Row("Latency and rate limits", (
                Panel("Latency p50 / p95 / p99", "Call duration quantiles by model (streams: until the stream ends). "
                      f"The latency SLO counts calls slower than {cfg.latency_threshold_s:g}s. Click an exemplar to "
                      "open the slowest traces; if p99 rises alone, look for retries and waits.",
                      "s", tuple(latency(q) for q in (0.5, 0.95, 0.99)), exemplars=True),
                Panel("429 responses", "Rate-limit responses from upstream despite the limiter. Should be near zero: "
                      "if not, see the Rate limits dashboard (learned limits, other clients sharing the key).",
                      "reqps", (Query(sum_rate(sel(RATE_LIMITED_RESPONSES), (L_MODEL, L_RESOURCE)),
                                      legend(L_MODEL, L_RESOURCE)),)),
                Panel("In-flight calls", "Calls in progress by operation. Growing without bound means calls hang: "
                      "check stalls (Streaming) and limiter waits (Rate limits).", "short",
                      (Query(f"sum by ({L_OPERATION}) ({sel(INFLIGHT)})", legend(L_OPERATION)),)),
            )),
        ),
    )
