"""Overview: traffic, errors, tokens, estimated cost, latency and 429s."""

from __future__ import annotations

from dashboards.mixin import MixinConfig
from dashboards.prices import PRICE_RECORD
from dashboards.promql import Selectors, legend, panel_selectors, quantile, sum_rate
from dashboards.spec import Dashboard, Panel, Query, Row
from middleware.telemetry.names import (
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


def cost_per_second(sel: Selectors, labels: tuple[str, ...] = (L_MODEL,), fn: str = "rate",
                    window: str = "$__rate_interval") -> str:
    """USD per second (or per `window` with fn=increase) from reported tokens joined with the price table."""
    tokens = sum_rate(sel(TOKEN_USAGE, total(TOKEN_USAGE)), (L_MODEL, L_TOKEN_TYPE), window, fn)
    return f"sum by ({', '.join(labels)}) ({tokens} * on ({L_MODEL}, {L_TOKEN_TYPE}) group_left () {PRICE_RECORD})"


def build(cfg: MixinConfig) -> Dashboard:
    """The Overview dashboard for `cfg`."""
    sel = panel_selectors(cfg)
    err, all_ = sel(REQUESTS, eq={L_OUTCOME: OUTCOME_ERROR}), sel(REQUESTS)
    tokens = sel(TOKEN_USAGE, total(TOKEN_USAGE))

    def latency(q: float) -> Query:
        return Query(quantile(q, sel(OPERATION_DURATION, bucket(OPERATION_DURATION)), (L_MODEL,)),
                     f"p{round(q * 100)} " + legend(L_MODEL))

    budget = 1 - cfg.availability_objective
    return Dashboard(
        uid="llm-overview",
        title="LLM middleware / Overview",
        description="Requests, errors, tokens, estimated cost and latency of calls through the OpenAI middleware.",
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
                Panel("Tokens per second", "Input and output tokens per second as reported by the API. A jump "
                      "without a matching request jump means larger prompts or outputs: check the Token estimation "
                      "dashboard.", "short",
                      (Query(sum_rate(tokens, (L_MODEL, L_TOKEN_TYPE)), legend(L_MODEL, L_TOKEN_TYPE)),)),
                Panel("Estimated cost (USD per hour)", "Reported tokens times the documented price table "
                      "(dashboards/prices.py). A model missing here is not in the table: add its price and re-render.",
                      "currencyUSD", (Query(f"{cost_per_second(sel)} * 3600", legend(L_MODEL)),), min=0),
                Panel("Estimated cost over the range", "Total estimated spend over the dashboard time range. Higher "
                      "than budgeted: find the model and the caller with the Tokens panel and the traces.",
                      "currencyUSD", (Query(cost_per_second(sel, fn="increase", window="$__range"), legend(L_MODEL)),),
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
