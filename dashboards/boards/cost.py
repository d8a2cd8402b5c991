"""Cost: spend per model and tag, top spenders, token types and cached savings, unpriced traffic, budgets.

Every figure comes from the cost the middleware computes at settlement from the usage the API reported
and its price table (``llm_middleware_cost_usd_total``), never from a price table of the dashboards.
"""

from __future__ import annotations

from dashboards.mixin import MixinConfig
from dashboards.promql import legend, panel_selectors, sum_rate
from dashboards.rules.cost import folded_budgets, period_seconds_left_vector
from dashboards.spec import Dashboard, Panel, Query, Row, Variable
from middleware.telemetry.names import (
    BUDGET_DECISIONS,
    BUDGET_FALLBACK_ACTIVE,
    BUDGET_LIMIT_USD,
    BUDGET_SPEND_USD,
    COST_SAVINGS_USD,
    COST_USD,
    DECISION_ADMITTED,
    L_BUDGET,
    L_BUDGET_BACKEND,
    L_BUDGET_DECISION,
    L_FEATURE,
    L_MODEL,
    L_PERIOD,
    L_REASON,
    L_TAG_KEY,
    L_TEAM,
    L_TOKEN_TYPE,
    REQUESTS,
    TAG_LABELS,
    TAG_VALUES_FOLDED,
    UNPRICED_CALLS,
)

UID = "llm-cost"
_TAGS = (L_TEAM, L_FEATURE)
_BUDGET = (L_BUDGET, L_PERIOD)
_FAST_PACE = "1h"  # the window of LlmCostBudgetBurnFast's long pace, drawn by the projection panel
_PER_HOUR = 3600


def build(cfg: MixinConfig) -> Dashboard:
    """The Cost dashboard for `cfg`."""
    sel = panel_selectors(cfg)
    # The cost counter filtered by the dashboard's tag variables too (named after the tag keys).
    tag_filter = dict(zip(_TAGS, (f"${tag}" for tag in TAG_LABELS), strict=True))
    cost = sel(COST_USD, regex=tag_filter)
    budget = ", ".join(_BUDGET)

    def per_hour(labels: tuple[str, ...]) -> str:
        return f"{sum_rate(cost, labels)} * {_PER_HOUR}"

    def over_range(metric_sel: str, labels: tuple[str, ...]) -> str:
        return sum_rate(metric_sel, labels, "$__range", "increase")

    spend, limit = sel(BUDGET_SPEND_USD), sel(BUDGET_LIMIT_USD)
    pace = f"max by ({budget}) (rate({sel(BUDGET_SPEND_USD, nregex=folded_budgets())}[{_FAST_PACE}]))"
    projected = (f"(max by ({budget}) ({spend}) + {pace} * on ({L_PERIOD}) group_left () "
                 f"({period_seconds_left_vector()})) / max by ({budget}) ({limit})")
    share = cfg.budget_projected_share_max
    return Dashboard(
        uid=UID,
        title="LLM middleware / Cost",
        description="What calls cost (from reported usage and the price table), who spends it (team and feature "
                    "tags), what is unpriced, what the prompt cache saves, and how budgets hold.",
        variables=(Variable(TAG_LABELS[0], COST_USD, L_TEAM), Variable(TAG_LABELS[1], COST_USD, L_FEATURE)),
        rows=(
            Row("Spend", (
                Panel("Spend rate by model (USD per hour)", "Cost of settled calls per hour by model, computed "
                      "from the usage the API reported. A model that rises without more traffic: longer prompts "
                      "or outputs (Spend by token type); a model missing here may be unpriced (see below).",
                      "currencyUSD", (Query(per_hour((L_MODEL,)), legend(L_MODEL)),), min=0),
                Panel("Spend rate by team and feature (USD per hour)", "Cost per hour by attribution tags "
                      "(middleware.tags(team=..., feature=...) or request metadata). Empty tags: untagged calls; "
                      "'other': values beyond the label cap (Tag values folded). Use it to find who spends.",
                      "currencyUSD", (Query(per_hour(_TAGS), legend(*_TAGS)),), min=0),
                Panel("Spend over the range", "Total cost of the calls settled in the dashboard's time range "
                      "(for the job, instance, model, team and feature chosen). Compare with the budgets below.",
                      "currencyUSD", (Query(over_range(cost, ()), "spend"),), kind="stat"),
            )),
            Row("Spend over the range and top spenders", (
                Panel("Spend over the range by model", "Cost per model over the time range: where the money "
                      "went. Move high-volume work to a cheaper model or the Batch API (half price).",
                      "currencyUSD", (Query(over_range(cost, (L_MODEL,)), legend(L_MODEL), instant=True),),
                      kind="bargauge"),
                Panel("Spend over the range by team and feature", "Cost per team and feature over the time "
                      "range: the cumulative spend of each tag. Tag budgets (MIDDLEWARE_BUDGETS team=...) cap it.",
                      "currencyUSD", (Query(over_range(cost, _TAGS), legend(*_TAGS), instant=True),),
                      kind="bargauge"),
                Panel("Top spenders", "The ten team, feature and model combinations that spent most over the "
                      "range. Start any cost investigation here, then open their traces (span attributes "
                      "llm_middleware.cost.* and llm_middleware.tag.*).", "currencyUSD",
                      (Query(f"topk(10, {over_range(cost, (*_TAGS, L_MODEL))})", legend(*_TAGS, L_MODEL),
                             instant=True),), kind="table"),
            )),
            Row("Token types and cached savings", (
                Panel("Spend by token type (USD per hour)", "Cost per hour by token type: input (uncached), "
                      "cached_input, output (visible) and reasoning (o-series and gpt-5 models bill reasoning "
                      "tokens as output). Reasoning dominating: lower reasoning_effort or use a non-reasoning model.",
                      "currencyUSD", (Query(per_hour((L_TOKEN_TYPE,)), legend(L_TOKEN_TYPE)),), min=0),
                Panel("Cached-token savings (USD per hour)", "What cached prompt tokens saved per hour: their count "
                      "times the input price minus the cached-input price. Zero for a model with long repeated "
                      "prompts: the prefix changes between calls (put the static part first, 1024+ tokens).",
                      "currencyUSD", (Query(f"{sum_rate(sel(COST_SAVINGS_USD), (L_MODEL,))} * {_PER_HOUR}",
                                            legend(L_MODEL)),), min=0),
                Panel("Cached-token savings over the range", "Total saved by the prompt cache over the time range, "
                      "next to the spend: how much longer shared prefixes would save.", "currencyUSD",
                      (Query(over_range(sel(COST_SAVINGS_USD), ()), "saved"),), kind="stat"),
            )),
            Row("Unpriced traffic and attribution", (
                Panel("Unpriced share of calls", "Calls settled without a price over all calls. Above "
                      f"{cfg.unpriced_share_max:.0%} (red) LlmUnpricedTrafficHigh fires: spend and budgets "
                      "under-count these calls. Add the model to a price file (MIDDLEWARE_PRICES_FILE).",
                      "percentunit",
                      (Query(f"{sum_rate(sel(UNPRICED_CALLS), ())} / {sum_rate(sel(REQUESTS), ())}", "unpriced"),),
                      min=0, thresholds=((cfg.unpriced_share_max, "red"),)),
                Panel("Unpriced calls by model and reason", "Unpriced calls per second: unknown_model (not in the "
                      "price table: a new model, a fine-tune), no_output_price, no_usage (a stream without "
                      "usage, or a proxy that strips it). Each reason has its fix in the LlmUnpricedTrafficHigh "
                      "runbook.", "reqps",
                      (Query(sum_rate(sel(UNPRICED_CALLS), (L_MODEL, L_REASON)), legend(L_MODEL, L_REASON)),)),
                Panel("Tag values folded", "Tag values folded into 'other' over the range because a key had more "
                      "distinct values than the label cap (MIDDLEWARE_TAG_VALUE_CAP). Non-zero: a tag carries ids; "
                      "keep ids in end_user (spans only) or raise the cap.", "short",
                      (Query(over_range(sel(TAG_VALUES_FOLDED), (L_TAG_KEY,)), legend(L_TAG_KEY)),), kind="stat"),
            )),
            Row("Budgets", (
                Panel("Budget spend vs limit", "Settled spend of each budget in its current UTC period (day or "
                      "month; it drops at the rollover) and its limit. Budgets named api_key=... are keyed by the "
                      "API key's hash. Spend near the limit: calls will be refused, wait or warn (the budget mode).",
                      "currencyUSD",
                      (Query(f"max by ({budget}) ({spend})", "spend " + legend(*_BUDGET)),
                       Query(f"max by ({budget}) ({limit})", "limit " + legend(*_BUDGET))), min=0),
                Panel("Projected spend at period end / limit", f"Spend so far plus the last {_FAST_PACE}'s pace "
                      "times the seconds left in the period, over the limit: the quantity of the budget burn alerts "
                      f"(red above {share:.0%}: LlmCostBudgetBurnFast at this pace and the 5m one, "
                      "LlmCostBudgetBurnSlow at the 6h and 30m ones). Find the spender in Spend rate by team and "
                      "feature.", "percentunit", (Query(projected, legend(*_BUDGET)),), min=0,
                      thresholds=((share, "red"),)),
                Panel("Budget used", "Spend over limit in the current period. At 100% an enforce-mode budget "
                      "refuses calls (BudgetExceeded) until the period rolls over.", "percentunit",
                      (Query(f"max by ({budget}) ({spend}) / max by ({budget}) ({limit})", legend(*_BUDGET)),),
                      kind="gauge", min=0, max=1, thresholds=((share, "red"),)),
                Panel("Budget refusals, waits and warnings", "Budget decisions other than admitted, per second: "
                      "refused (enforce mode: the call failed with BudgetExceeded), waited (wait mode: for the "
                      "period to roll over), warned (warn mode: admitted over budget). Raise the budget or cut the "
                      "spender.", "ops",
                      (Query(sum_rate(sel(BUDGET_DECISIONS, neq={L_BUDGET_DECISION: DECISION_ADMITTED}),
                                      (*_BUDGET, L_BUDGET_DECISION)), legend(*_BUDGET, L_BUDGET_DECISION)),)),
                Panel("Budget decisions over the range", "Every budget decision over the time range, by decision "
                      "(admitted, refused, waited, warned): the share of calls a budget stopped.", "short",
                      (Query(over_range(sel(BUDGET_DECISIONS), (L_BUDGET_DECISION,)), legend(L_BUDGET_DECISION),
                             instant=True),), kind="bargauge"),
                Panel("Budget fallback active", "1 while the shared budget backend (Redis) is unreachable and each "
                      "process decides from a local ledger holding part of the remaining room: budgets are then "
                      "approximate. Check Redis (the same as for the limiter).", "short",
                      (Query(f"max by ({L_BUDGET_BACKEND}) ({sel(BUDGET_FALLBACK_ACTIVE)})",
                             legend(L_BUDGET_BACKEND)),), kind="stat", thresholds=((1, "red"),)),
            )),
        ),
    )
