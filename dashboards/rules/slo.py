"""SLO burn-rate alerts (SRE Workbook, multi-window multi-burn-rate) and traffic anomaly alerts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dashboards.mixin import MixinConfig
from dashboards.promql import JOB
from dashboards.rules import recording as rec
from dashboards.rules.model import Alert, Group, Runbook, Scenario, Series, Windows, label_ref
from dashboards.rules.scenarios import above, histogram, job_labels, series
from middleware.telemetry.names import (
    L_ERROR_TYPE,
    L_OUTCOME,
    L_TOKEN_TYPE,
    OPERATION_DURATION,
    OUTCOME_ERROR,
    OUTCOME_SUCCESS,
    PREFIX,
    REQUESTS,
    TOKEN_INPUT,
    TOKEN_USAGE,
    count,
    total,
)


@dataclass(frozen=True)
class Burn:
    """One window pair of the Workbook's table."""

    suffix: str
    long: str
    short: str
    factor: float
    for_: str
    severity: str


BURNS = (
    Burn("Fast", "1h", "5m", 14.4, "2m", "critical"),
    Burn("Medium", "6h", "30m", 6.0, "15m", "critical"),
    Burn("Slow", "3d", "6h", 1.0, "1h", "warning"),
)
SLO_LABEL = "slo"


def _budget_alerts(cfg: MixinConfig, w: Windows, kind: str) -> list[Alert]:
    availability = kind == "availability"
    objective = cfg.availability_objective if availability else cfg.latency_objective
    budget = round(1 - objective, 10)
    ratios = rec.ERROR_RATIO if availability else rec.SLOW_RATIO
    what = "failed calls" if availability else f"calls slower than {cfg.latency_threshold_s:g}s"
    if availability:
        inputs: tuple[Series, ...] = (
            series(cfg, REQUESTS, "0+60x150", {L_OUTCOME: OUTCOME_SUCCESS, L_ERROR_TYPE: ""}),
            series(cfg, REQUESTS, "0+60x150", {L_OUTCOME: OUTCOME_ERROR, L_ERROR_TYPE: "APIConnectionError"}),
        )
    else:
        labels = {L_ERROR_TYPE: ""}
        inputs = (*histogram(cfg, OPERATION_DURATION, above(math.inf, "0+10x150", "0+0x150"), labels),
                  series(cfg, OPERATION_DURATION, "0+10x150", labels, count(OPERATION_DURATION)))
    out = []
    for b in BURNS:
        threshold = f"({b.factor:g} * {budget:g})"
        name = f"Llm{kind.capitalize()}BudgetBurn{b.suffix}"
        out.append(Alert(
            name=name,
            expr=f"{ratios[b.long]} > {threshold}\nand\n{ratios[b.short]} > {threshold}",
            for_=w(b.for_),
            severity=b.severity,  # type: ignore[arg-type]
            summary=f"{kind.capitalize()} error budget burning {b.factor:g}x too fast",
            description=(f"Job {label_ref(JOB)}: {what} exceed {b.factor:g}x the error budget "
                         f"({budget:g} of calls) over both {b.long} and {b.short}; objective {objective:g}."),
            labels={SLO_LABEL: kind},
            runbook=Runbook(
                meaning=f"The {kind} SLO ({objective:g}) is consuming its error budget {b.factor:g} times faster "
                        f"than sustainable, over the last {b.long} and still in the last {b.short}.",
                impact=f"At this pace the 30-day budget is gone in {30 / b.factor:.1f} days; callers see "
                       f"{what}.",
                diagnosis="Open the Overview dashboard: error ratio and errors by type (availability) or latency "
                          "quantiles with exemplars (latency). Then Reliability for retries, breakers and terminal "
                          "errors, and Rate limits for throttling waits.",
                mitigation="Fix or roll back the cause found above; for provider incidents shift traffic to "
                           "another model or region; for latency, lower max_tokens or enable streaming.",
                dashboard="llm-overview",
            ),
            scenarios=(Scenario(inputs, "1m", job_labels(cfg)),),
        ))
    return out


def anomaly(cfg: MixinConfig, w: Windows, record: str, on: tuple[str, ...], min_rate: float) -> str:
    """z-score band (vs 1h ago), seasonal guard (vs last week when it exists) and a drop-to-zero guard.

    The band needs a baseline: the record must have existed an hour ago, so the 1h window (taken 30m
    ago) holds at least 30m of samples. Without it a new job (or a fresh Prometheus) compares its
    steady rate with a few minutes of startup ramp, where ``rate()`` under-reads, and is flagged.
    """
    lag = w("30m")
    week = w("1w")
    join = f"on ({', '.join(on)})"
    avg, std = f"{rec.avg_name(record)} offset {lag}", f"{rec.stddev_name(record)} offset {lag}"
    rel = f"{cfg.anomaly_min_relative_change:g}"
    zband = (f"(abs({record} - {avg}) > {cfg.anomaly_sigmas:g} * {std})\n"
             f"and {join} (abs({record} - {avg}) > {rel} * {avg})")
    seasonal = (f"(abs({record} - {record} offset {week}) > {rel} * {record} offset {week})\n"
                f"  or {join} ({record} unless {join} {record} offset {week})")
    busy = f"({avg} > {min_rate:g})"
    history = f"({record} offset {w('1h')})"
    dropped = f"({avg} > {min_rate:g}) unless {join} ({record} > 0)"
    return (f"(\n{zband}\nand {join} (\n  {seasonal}\n)\nand {join} {busy}\nand {join} {history}\n)"
            f"\nor {join} (\n{dropped}\n)")


def anomaly_alerts(cfg: MixinConfig, w: Windows) -> list[Alert]:
    """Request-rate and token-usage anomalies."""
    req_spike = series(cfg, REQUESTS, "0+60x100 6600+600x40", {L_OUTCOME: OUTCOME_SUCCESS, L_ERROR_TYPE: ""})
    req_drop = series(cfg, REQUESTS, "0+60x100 6000+0x40", {L_OUTCOME: OUTCOME_SUCCESS, L_ERROR_TYPE: ""})
    tok = {L_TOKEN_TYPE: TOKEN_INPUT}
    tok_spike = series(cfg, TOKEN_USAGE, "0+6000x100 660000+60000x40", tok, total(TOKEN_USAGE))
    tok_drop = series(cfg, TOKEN_USAGE, "0+6000x100 600000+0x40", tok, total(TOKEN_USAGE))
    common = dict(
        impact="Unexpected load changes cost (spikes) or signal that callers are failing upstream of us (drops).",
        mitigation="A spike: find the caller (traces by service) and cap it with the limiter or a budget. "
                   "A drop: check the application's health and that the job is scraped.",
    )
    return [
        Alert(
            name="LlmRequestRateAnomalous",
            expr=anomaly(cfg, w, rec.REQUEST_RATE, cfg.group_by, cfg.anomaly_min_request_rate),
            for_=w("10m"), severity="warning",
            summary="Request rate far outside its usual band",
            description=(f"Job {label_ref(JOB)}: the 5m request rate left its 1h band (more than "
                         f"{cfg.anomaly_sigmas:g} standard deviations and {cfg.anomaly_min_relative_change:.0%}), "
                         "differs from the same time last week if known, or dropped to zero."),
            runbook=Runbook(
                meaning="Request rate is anomalous against the previous hour and, when history exists, last week.",
                diagnosis=f"Overview dashboard, Requests per second; query `{rec.REQUEST_RATE}` against "
                          f"`{rec.avg_name(rec.REQUEST_RATE)}` and `{rec.REQUEST_RATE} offset 1w`.",
                dashboard="llm-overview", **common),
            scenarios=(Scenario((req_spike,), "101m", job_labels(cfg)),
                       Scenario((req_drop,), "102m", job_labels(cfg))),
        ),
        Alert(
            name="LlmTokenUsageAnomalous",
            expr=anomaly(cfg, w, rec.TOKEN_RATE, (*cfg.group_by, L_TOKEN_TYPE), cfg.anomaly_min_token_rate),
            for_=w("10m"), severity="warning",
            summary="Token usage far outside its usual band",
            description=(f"Job {label_ref(JOB)}: {label_ref(L_TOKEN_TYPE)} tokens per second left the 1h band, "
                         "differ from last week, or dropped to zero."),
            runbook=Runbook(
                meaning="Token consumption (per token type) is anomalous against the previous hour and last week.",
                diagnosis=f"Overview dashboard, Tokens per second and Estimated cost; query `{rec.TOKEN_RATE}`.",
                dashboard="llm-overview", **common),
            scenarios=(Scenario((tok_spike,), "101m", job_labels(cfg, {L_TOKEN_TYPE: TOKEN_INPUT})),
                       Scenario((tok_drop,), "102m", job_labels(cfg, {L_TOKEN_TYPE: TOKEN_INPUT}))),
        ),
    ]


def slo_alerts_group(cfg: MixinConfig, w: Windows) -> Group:
    """Every SLO and anomaly alert."""
    alerts = [*_budget_alerts(cfg, w, "availability"), *_budget_alerts(cfg, w, "latency"), *anomaly_alerts(cfg, w)]
    return Group(f"{PREFIX}.slo.alerts", "slo-alerts.yml", alerts=tuple(alerts))
