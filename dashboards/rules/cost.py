"""Cost rules (issue 16): spend on the real cost counter, budget burn projected to the period's end, spend
anomalies against the weekly baseline, unpriced traffic.

Budget burn follows the SRE Workbook's multi-window alerts, with a projection instead of an error-budget
ratio: a budget burns too fast when, at the pace of the last long window *and* still at the pace of the last
short window, its spend at the end of the current UTC period (what it has spent plus the pace times the
seconds left) exceeds ``budget_projected_share_max`` of its limit. Fast (1h and 5m, critical) catches a
sudden spend; slow (6h and 30m, warning) a steady one.

The pace is the rate of the budget spend gauge: it only grows within a period and drops to (about) zero
when the period rolls over, which ``rate()`` treats as a counter reset, so the pace is right across the
rollover. Each process reports the budgets it charges (all of them the same shared spend with Redis), so
budgets are aggregated with ``max``. A budget whose name was folded into ``<scope>=other`` (beyond the tag
value cap) mixes several budgets in one series and is left out.

The seconds left in the period are computed in PromQL from the evaluation time, in UTC as the ledger's
periods (``middleware.cost.periods``); they are not time-scaled (``scale`` compresses windows and ``for:``,
not the calendar).
"""

from __future__ import annotations

from dashboards.mixin import MixinConfig
from dashboards.promql import JOB, rule_selectors, sum_rate
from dashboards.rules.model import Alert, Group, Recording, Runbook, Scenario, Windows, label_ref
from dashboards.rules.recording import JM, avg_name, name, stddev_name
from dashboards.rules.scenarios import job_labels, series
from dashboards.rules.slo import anomaly
from middleware.telemetry.names import (
    BUDGET_LIMIT_USD,
    BUDGET_SPEND_USD,
    COST_USD,
    L_BUDGET,
    L_ERROR_TYPE,
    L_MODEL,
    L_OUTCOME,
    L_PERIOD,
    L_REASON,
    OTHER_TAG,
    OUTCOME_SUCCESS,
    PERIOD_DAY,
    PERIOD_MONTH,
    PREFIX,
    REQUESTS,
    UNPRICED_CALLS,
    UNPRICED_UNKNOWN_MODEL,
)

DAY_SECONDS = 86_400
BUDGET_LEVEL = (JOB, L_BUDGET, L_PERIOD)
BUDGET_WINDOWS = ("5m", "30m", "1h", "6h")

# Record names used by alerts, runbooks and the cost dashboard's descriptions.
SPEND_RATE = name((JOB,), COST_USD, "rate5m")  # USD/s per group (the anomaly alert's record)
MODEL_SPEND_RATE = name(JM, COST_USD, "rate5m")  # USD/s per group and model
UNPRICED_RATIO = name((JOB,), UNPRICED_CALLS, "ratio_rate5m")
BUDGET_SPEND = name(BUDGET_LEVEL, BUDGET_SPEND_USD, "max")
BUDGET_LIMIT = name(BUDGET_LEVEL, BUDGET_LIMIT_USD, "max")
BUDGET_SPEND_RATE = {w: name(BUDGET_LEVEL, BUDGET_SPEND_USD, f"rate{w}") for w in BUDGET_WINDOWS}
BUDGET_PROJECTED = {w: name(BUDGET_LEVEL, BUDGET_SPEND_USD, f"projected_rate{w}") for w in BUDGET_WINDOWS}
PERIOD_LEFT = f"{PREFIX}:budget_period_remaining_seconds"


def period_seconds_left() -> dict[str, str]:
    """PromQL for the seconds until the current UTC period rolls over, by period (names.PERIOD_*)."""
    into_day = f"time() % {DAY_SECONDS}"
    return {
        PERIOD_DAY: f"vector({DAY_SECONDS} - {into_day})",
        PERIOD_MONTH: f"{DAY_SECONDS} * (days_in_month() - day_of_month() + 1) - {into_day}",
    }


def period_seconds_left_vector() -> str:
    """One vector of the seconds left, labelled by period: for panels, which cannot rely on the records."""
    return " or ".join(f'label_replace({expr}, "{L_PERIOD}", "{period}", "", "")'
                       for period, expr in period_seconds_left().items())


def folded_budgets() -> dict[str, str]:
    """The `nregex` matcher that leaves out budgets folded into `<scope>=other`."""
    return {L_BUDGET: f".*={OTHER_TAG}"}


def cost_group(cfg: MixinConfig, w: Windows) -> Group:
    """Spend rates from the cost counter, unpriced ratio, and the budget records the burn alerts read."""
    _s, g = rule_selectors(cfg), cfg.group_by
    level = ", ".join((*g, L_BUDGET, L_PERIOD))
    spend = _s(BUDGET_SPEND_USD, nregex=folded_budgets())
    win = w("5m")
    rules = [
        *(Recording(PERIOD_LEFT, expr, {L_PERIOD: period}) for period, expr in period_seconds_left().items()),
        Recording(SPEND_RATE, sum_rate(_s(COST_USD), g, win)),
        Recording(avg_name(SPEND_RATE), f"avg_over_time({SPEND_RATE}[{w('1h')}])"),
        Recording(stddev_name(SPEND_RATE), f"stddev_over_time({SPEND_RATE}[{w('1h')}])"),
        Recording(MODEL_SPEND_RATE, sum_rate(_s(COST_USD), (*g, L_MODEL), win)),
        Recording(UNPRICED_RATIO, f"{sum_rate(_s(UNPRICED_CALLS), g, win)} / {sum_rate(_s(REQUESTS), g, win)}"),
        Recording(BUDGET_SPEND, f"max by ({level}) ({spend})"),
        Recording(BUDGET_LIMIT, f"max by ({level}) ({_s(BUDGET_LIMIT_USD, nregex=folded_budgets())})"),
    ]
    for win_name in BUDGET_WINDOWS:
        rate = BUDGET_SPEND_RATE[win_name]
        rules.append(Recording(rate, f"max by ({level}) (rate({spend}[{w(win_name)}]))"))
        rules.append(Recording(BUDGET_PROJECTED[win_name],
                               f"{BUDGET_SPEND} + {rate} * on ({L_PERIOD}) group_left () {PERIOD_LEFT}"))
    return Group(f"{PREFIX}.cost.recording", "cost-recording.yml", recordings=tuple(rules))


# One budget window pair: long and short windows, for:, severity.
_BURNS = (("Fast", "1h", "5m", "2m", "critical"), ("Slow", "6h", "30m", "15m", "warning"))
_BUDGET = "team=search"


def _budget_scenario(cfg: MixinConfig, long: str) -> Scenario:
    """A steady spend of $0.01 a minute ($14.40 a day) under a daily limit of $1000, lowered to $10 once
    the long window holds only this pace: the projection first exceeds the limit at that minute."""
    minutes = {"1h": 60, "6h": 360}[long] + 1
    n = minutes + 100
    labels = {L_BUDGET: _BUDGET, L_PERIOD: PERIOD_DAY}
    return Scenario(
        (series(cfg, BUDGET_SPEND_USD, f"0+0.01x{n}", labels),
         series(cfg, BUDGET_LIMIT_USD, f"1000x{minutes - 1} 10x{n - minutes}", labels),
         # a budget folded into "other" mixes several budgets: never alerted on, even far over its limit
         series(cfg, BUDGET_SPEND_USD, f"0+1x{n}", {L_BUDGET: f"team={OTHER_TAG}", L_PERIOD: PERIOD_DAY}),
         series(cfg, BUDGET_LIMIT_USD, f"1x{n}", {L_BUDGET: f"team={OTHER_TAG}", L_PERIOD: PERIOD_DAY})),
        f"{minutes}m", job_labels(cfg, labels))


def budget_alerts(cfg: MixinConfig, w: Windows) -> list[Alert]:
    """Budget burn: the spend at the period's end, projected at two paces, above the configured share."""
    share = f"{cfg.budget_projected_share_max:g}"
    out = []
    for suffix, long, short, for_, severity in _BURNS:
        threshold = f"({share} * {BUDGET_LIMIT})"
        out.append(Alert(
            name=f"LlmCostBudgetBurn{suffix}",
            expr=(f"{BUDGET_PROJECTED[long]} > {threshold}\nand\n{BUDGET_PROJECTED[short]} > {threshold}\n"
                  f"and\n{BUDGET_SPEND_RATE[short]} > 0"),
            for_=w(for_),
            severity=severity,  # type: ignore[arg-type]
            summary=f"Budget on course to run out before its period ends ({long} pace)",
            description=(f"Job {label_ref(JOB)}: at the spend pace of the last {long}, and still of the last "
                         f"{short}, budget {label_ref(L_BUDGET)} ({label_ref(L_PERIOD)}) reaches "
                         f"{cfg.budget_projected_share_max:.0%} of its limit before the period ends."),
            runbook=Runbook(
                meaning=f"A budget's spend so far in its period plus its pace over the last {long} "
                        f"(confirmed over the last {short}) times the seconds left in its UTC period exceeds "
                        f"{cfg.budget_projected_share_max:.0%} of its limit.",
                impact="When the budget is spent, calls charged to it are refused with BudgetExceeded (enforce "
                       "mode), wait for the next period (wait mode) or go on over budget (warn mode); until then "
                       "money is spent faster than planned.",
                diagnosis=f"Cost dashboard: Budget spend vs limit, Projected spend at period end, then Spend rate "
                          f"by team and feature and by model to find who spends; queries `{BUDGET_PROJECTED[long]}`"
                          f" and `{BUDGET_SPEND_RATE[long]}`. A budget named `api_key=...` is keyed by the API "
                          "key's hash (the limiter's key).",
                mitigation="Find the caller or feature that spends (tags), reduce its traffic or max_tokens, move "
                           "it to a cheaper model or the Batch API, or raise the budget "
                           "(MIDDLEWARE_BUDGETS) if the spend is planned.",
                dashboard="llm-cost",
            ),
            scenarios=(_budget_scenario(cfg, long),),
        ))
    return out


def spend_anomaly(cfg: MixinConfig, w: Windows) -> Alert:
    """Spend far outside its band: the token-usage anomaly alert's expression on the spend rate."""
    spike = series(cfg, COST_USD, "0+0.06x100 6.6+0.6x40")
    drop = series(cfg, COST_USD, "0+0.06x100 6+0x40")
    return Alert(
        name="LlmSpendAnomalous",
        expr=anomaly(cfg, w, SPEND_RATE, cfg.group_by, cfg.anomaly_min_spend_rate),
        for_=w("10m"), severity="warning",
        summary="Spend far outside its usual band",
        description=(f"Job {label_ref(JOB)}: the 5m spend rate (USD/s) left its 1h band (more than "
                     f"{cfg.anomaly_sigmas:g} standard deviations and {cfg.anomaly_min_relative_change:.0%}), "
                     "differs from the same time last week if known, or dropped to zero."),
        runbook=Runbook(
            meaning="The spend rate is anomalous against the previous hour and, when history exists, last week. "
                    "The band needs an hour of history before the z-score part can fire.",
            impact="A spike spends money faster than usual (a loop, a bigger model, longer outputs); a drop can "
                   "mean callers fail upstream of us or every call is refused by a budget.",
            diagnosis=f"Cost dashboard: Spend rate by model, by team and feature, Spend by token type; query "
                      f"`{SPEND_RATE}` against `{avg_name(SPEND_RATE)}` and `{SPEND_RATE} offset 1w`.",
            mitigation="A spike: find the tag or model (Top spenders), cap it with a budget or the limiter. A drop: "
                       "check budget refusals and the application's health.",
            dashboard="llm-cost",
        ),
        scenarios=(Scenario((spike,), "101m", job_labels(cfg)), Scenario((drop,), "102m", job_labels(cfg))),
    )


def unpriced_alert(cfg: MixinConfig, w: Windows) -> Alert:
    """A share of calls above the threshold settled without a price."""
    ok = series(cfg, REQUESTS, "0+60x40", {L_OUTCOME: OUTCOME_SUCCESS, L_ERROR_TYPE: ""})
    # enough unpriced calls to exceed the share, whatever the configured share
    unpriced = round(60 * min(1.0, 2 * cfg.unpriced_share_max), 6)
    bad = series(cfg, UNPRICED_CALLS, f"0+{unpriced:g}x40", {L_REASON: UNPRICED_UNKNOWN_MODEL})
    return Alert(
        name="LlmUnpricedTrafficHigh",
        expr=f"{UNPRICED_RATIO} > {cfg.unpriced_share_max:g}",
        for_=w("10m"), severity="warning",
        summary="Many calls cannot be priced",
        description=(f"Job {label_ref(JOB)}: more than {cfg.unpriced_share_max:.0%} of calls settled without a "
                     "price over 5m; spend and budgets under-count them."),
        runbook=Runbook(
            meaning="Calls settle without a cost: their model is not in the price table (unknown_model), has no "
                    "output price (no_output_price) or the API reported no usage (no_usage).",
            impact="Their spend is missing from the cost metrics, the dashboards and the budgets (an unpriced call "
                   "is admitted without a reservation; a budgeted call whose usage is never reported stays "
                   "charged at its worst case).",
            diagnosis=f"Cost dashboard: Unpriced share of calls and Unpriced calls by model and reason; query "
                      f"`{UNPRICED_RATIO}`.",
            mitigation="unknown_model: add the model (or an alias) to a price file (MIDDLEWARE_PRICES_FILE); "
                       "no_usage: request usage on streams (stream_options include_usage) or find the proxy "
                       "that drops it.",
            dashboard="llm-cost",
        ),
        scenarios=(Scenario((ok, bad), "1m", job_labels(cfg)),),
    )


def cost_alerts_group(cfg: MixinConfig, w: Windows) -> Group:
    """Every cost alert."""
    alerts = (*budget_alerts(cfg, w), spend_anomaly(cfg, w), unpriced_alert(cfg, w))
    return Group(f"{PREFIX}.cost.alerts", "cost-alerts.yml", alerts=alerts)
