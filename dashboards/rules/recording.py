"""Recording rules: the rates, ratios and quantiles that alerts and heavy panels reuse (cost: rules/cost.py)."""

from __future__ import annotations

from dashboards.mixin import MixinConfig
from dashboards.promql import JOB, LE, quantile, rule_selectors, sum_rate
from dashboards.rules.model import Group, Recording, Windows
from dashboards.values import ATTEMPT_TERMINAL, REASON_INSUFFICIENT_QUOTA, REASON_SERVER_ERROR, RESUME_FAILURE
from middleware.telemetry.names import (
    ATTEMPTS,
    ESTIMATE_ERROR,
    L_MODEL,
    L_OUTCOME,
    L_REASON,
    L_TOKEN_TYPE,
    OPERATION_DURATION,
    OUTCOME_ERROR,
    PREFIX,
    REQUESTS,
    STREAM_ENDS,
    STREAM_INTERRUPTIONS,
    STREAM_RESUMPTIONS,
    STREAM_STALLS,
    STREAM_THROUGHPUT,
    THROTTLE_WAIT,
    TIME_TO_FIRST_CHUNK,
    TOKEN_USAGE,
    MetricDef,
    bucket,
    count,
    total,
)

SLO_WINDOWS = ("5m", "30m", "1h", "6h", "3d")
# The level of a record name: the labels it keeps besides the config's group_by (which add to `job`, as
# the kubernetes mixin's records keep `cluster` without naming it).
JM = (JOB, L_MODEL)


def name(level: tuple[str, ...], m: MetricDef | str, op: str) -> str:
    """`level:metric:operation`, the recording rule naming convention."""
    metric = m if isinstance(m, str) else m.name
    return f"{'_'.join(level)}:{metric}:{op}"


# Names used by alerts and dashboards.
ERROR_RATIO = {w: name((JOB,), REQUESTS, f"error_ratio_rate{w}") for w in SLO_WINDOWS}
SLOW_RATIO = {w: name((JOB,), OPERATION_DURATION, f"slow_ratio_rate{w}") for w in SLO_WINDOWS}
REQUEST_RATE = name((JOB,), REQUESTS, "rate5m")
TOKEN_RATE = name((JOB, L_TOKEN_TYPE), TOKEN_USAGE.name, "rate5m")
RETRY_RATIO = name(JM, ATTEMPTS, "retry_ratio_rate5m")
TERMINAL_RATIO = name(JM, ATTEMPTS, "terminal_ratio_rate5m")
SERVER_ERROR_RATIO = name(JM, ATTEMPTS, "server_error_ratio_rate5m")
LATENCY_P95 = name(JM, OPERATION_DURATION, "p95_5m")
WAIT_P95 = name(JM, THROTTLE_WAIT, "p95_5m")
TTFC_P95 = name(JM, TIME_TO_FIRST_CHUNK, "p95_5m")
THROUGHPUT_P50 = name(JM, STREAM_THROUGHPUT, "p50_5m")
ESTIMATE_ERROR_P90 = name((JOB, L_MODEL, L_TOKEN_TYPE), ESTIMATE_ERROR, "p90_5m")
INTERRUPTION_RATIO = name(JM, STREAM_INTERRUPTIONS, "ratio_rate5m")
STALL_RATIO = name(JM, STREAM_STALLS, "ratio_rate5m")
RESUME_FAILURE_RATIO = name(JM, STREAM_RESUMPTIONS, "failure_ratio_rate5m")


def avg_name(record: str) -> str:
    """The 1h average of a 5m-rate recording."""
    return f"{record}:avg_over_time1h"


def stddev_name(record: str) -> str:
    """The 1h standard deviation of a 5m-rate recording."""
    return f"{record}:stddev_over_time1h"


def _ratio(num: str, den: str, labels: tuple[str, ...], window: str) -> str:
    return f"{sum_rate(num, labels, window)} / {sum_rate(den, labels, window)}"


def slo_group(cfg: MixinConfig, w: Windows) -> Group:
    """Error and slow-call ratios over every SLO window."""
    _s, g = rule_selectors(cfg), cfg.group_by
    rules: list[Recording] = []
    err, all_ = _s(REQUESTS, eq={L_OUTCOME: OUTCOME_ERROR}), _s(REQUESTS)
    fast = _s(OPERATION_DURATION, bucket(OPERATION_DURATION), eq={LE: cfg.latency_le})
    calls = _s(OPERATION_DURATION, count(OPERATION_DURATION))
    for win in SLO_WINDOWS:
        rules.append(Recording(ERROR_RATIO[win], _ratio(err, all_, g, w(win))))
        rules.append(Recording(SLOW_RATIO[win], f"1 - ({_ratio(fast, calls, g, w(win))})"))
    return Group(f"{PREFIX}.slo.recording", "slo-recording.yml", recordings=tuple(rules))


def rates_group(cfg: MixinConfig, w: Windows) -> Group:
    """5m rates, ratios and quantiles per group (job) and model."""
    _s, g = rule_selectors(cfg), cfg.group_by
    gm = (*g, L_MODEL)
    win = w("5m")
    attempts = _s(ATTEMPTS)
    rules = [
        Recording(REQUEST_RATE, sum_rate(_s(REQUESTS), g, win)),
        Recording(avg_name(REQUEST_RATE), f"avg_over_time({REQUEST_RATE}[{w('1h')}])"),
        Recording(stddev_name(REQUEST_RATE), f"stddev_over_time({REQUEST_RATE}[{w('1h')}])"),
        Recording(TOKEN_RATE, sum_rate(_s(TOKEN_USAGE, total(TOKEN_USAGE)), (*g, L_TOKEN_TYPE), win)),
        Recording(avg_name(TOKEN_RATE), f"avg_over_time({TOKEN_RATE}[{w('1h')}])"),
        Recording(stddev_name(TOKEN_RATE), f"stddev_over_time({TOKEN_RATE}[{w('1h')}])"),
        Recording(RETRY_RATIO, f"clamp_min({sum_rate(attempts, gm, win)} - {sum_rate(_s(REQUESTS), gm, win)}, 0)"
                  f" / {sum_rate(_s(REQUESTS), gm, win)}"),
        Recording(TERMINAL_RATIO, _ratio(
            _s(ATTEMPTS, eq={L_OUTCOME: ATTEMPT_TERMINAL}, neq={L_REASON: REASON_INSUFFICIENT_QUOTA}),
            attempts, gm, win)),
        Recording(SERVER_ERROR_RATIO, _ratio(_s(ATTEMPTS, eq={L_REASON: REASON_SERVER_ERROR}), attempts, gm, win)),
        Recording(LATENCY_P95, quantile(0.95, _s(OPERATION_DURATION, bucket(OPERATION_DURATION)), gm, win)),
        Recording(WAIT_P95, quantile(0.95, _s(THROTTLE_WAIT, bucket(THROTTLE_WAIT)), gm, win)),
        Recording(TTFC_P95, quantile(0.95, _s(TIME_TO_FIRST_CHUNK, bucket(TIME_TO_FIRST_CHUNK)), gm, win)),
        Recording(THROUGHPUT_P50, quantile(0.5, _s(STREAM_THROUGHPUT, bucket(STREAM_THROUGHPUT)), gm, win)),
        Recording(avg_name(THROUGHPUT_P50), f"avg_over_time({THROUGHPUT_P50}[{w('1h')}])"),
        Recording(ESTIMATE_ERROR_P90, quantile(0.9, _s(ESTIMATE_ERROR, bucket(ESTIMATE_ERROR)),
                                               (*gm, L_TOKEN_TYPE), win)),
        Recording(INTERRUPTION_RATIO, _ratio(_s(STREAM_INTERRUPTIONS), _s(STREAM_ENDS), gm, win)),
        Recording(STALL_RATIO, _ratio(_s(STREAM_STALLS), _s(STREAM_ENDS), gm, win)),
        Recording(RESUME_FAILURE_RATIO, _ratio(_s(STREAM_RESUMPTIONS, eq={L_OUTCOME: RESUME_FAILURE}),
                                               _s(STREAM_RESUMPTIONS), gm, win)),
    ]
    return Group(f"{PREFIX}.recording", "recording.yml", recordings=tuple(rules))
