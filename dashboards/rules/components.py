"""Component alerts: retries, breakers, quota, limiter, estimation, streaming, files and telemetry."""

from __future__ import annotations

import math
from collections.abc import Callable

from dashboards.mixin import MixinConfig
from dashboards.promql import JOB, Matchers, rule_selectors, sum_rate
from dashboards.rules import recording as rec
from dashboards.rules.model import Alert, Group, Runbook, Scenario, Series, Severity, Windows, label_ref
from dashboards.rules.scenarios import above, beyond, histogram, job_labels, job_model, series
from dashboards.values import (
    ATTEMPT_RETRYABLE,
    ATTEMPT_SUCCESS,
    ATTEMPT_TERMINAL,
    BREAKER_OPEN_VALUE,
    REASON_INSUFFICIENT_QUOTA,
    REASON_SERVER_ERROR,
    RESOURCE_TOKENS,
    RESUME_FAILURE,
    RESUME_SUCCESS,
)
from middleware.telemetry.names import (
    ATTEMPTS,
    BREAKER_STATE,
    ESTIMATE_ERROR,
    FILES_REFUSED,
    L_CAUSE,
    L_COMPONENT,
    L_ENDPOINT,
    L_ERROR_TYPE,
    L_LIMITER_BACKEND,
    L_MODEL,
    L_OUTCOME,
    L_REASON,
    L_REDIS_FEATURE,
    L_RESOURCE,
    L_STREAM_END,
    L_TOKEN_TYPE,
    LIMITER_FALLBACK_ACTIVE,
    OUTCOME_SUCCESS,
    PREFIX,
    RATE_LIMITED_RESPONSES,
    RATELIMIT_LIMIT,
    RATELIMIT_REMAINING,
    REDIS_FALLBACKS,
    REDIS_FEATURE_LIMITER,
    REDIS_REASON_TIMEOUT,
    REQUESTS,
    RETRY_BUDGET_EXHAUSTED,
    STREAM_END_COMPLETED,
    STREAM_ENDS,
    STREAM_INTERRUPTIONS,
    STREAM_RESUMPTIONS,
    STREAM_STALLS,
    STREAM_THROUGHPUT,
    TELEMETRY_ERRORS,
    THROTTLE_WAIT,
    TIME_TO_FIRST_CHUNK,
    TOKEN_INPUT,
    TOKENIZER_FALLBACK,
    MetricDef,
)

_JOB_TEXT = f"Job {label_ref(JOB)}"
_JM_TEXT = f"{_JOB_TEXT}, model {label_ref(L_MODEL)}"


def _sel(cfg: MixinConfig) -> Callable[..., str]:
    """`_s(m, eq, neq)`: a rule selector carrying the config's matchers."""
    sel = rule_selectors(cfg)

    def _s(m: MetricDef, eq: Matchers | None = None, neq: Matchers | None = None) -> str:
        return sel(m, eq=eq, neq=neq)

    return _s


def _alert(name: str, expr: str, for_: str, severity: Severity, summary: str, description: str,
           runbook: Runbook, scenario: Scenario) -> Alert:
    return Alert(name, expr, for_, severity, summary, description, runbook, (scenario,))


def _ok_calls(cfg: MixinConfig, n: str) -> Series:
    return series(cfg, REQUESTS, n, {L_OUTCOME: OUTCOME_SUCCESS, L_ERROR_TYPE: ""})


def _attempts(cfg: MixinConfig, values: str, outcome: str, reason: str) -> Series:
    return series(cfg, ATTEMPTS, values, {L_OUTCOME: outcome, L_REASON: reason})


def _stream_ends(cfg: MixinConfig, values: str) -> Series:
    return series(cfg, STREAM_ENDS, values, {L_STREAM_END: STREAM_END_COMPLETED})


def retry_alerts(cfg: MixinConfig, w: Windows) -> list[Alert]:
    """Retries, breakers, budget and terminal errors."""
    _s, g = _sel(cfg), ", ".join(cfg.group_by)
    ok = _attempts(cfg, "0+60x40", ATTEMPT_SUCCESS, "")
    return [
        _alert("LlmRetryRatioHigh", f"{rec.RETRY_RATIO} > {cfg.retry_ratio_max:g}", w("10m"), "warning",
               "Many calls need retries",
               f"{_JM_TEXT}: more than {cfg.retry_ratio_max:.0%} retries per call over 5m.",
               Runbook("Calls need retries more often than usual.",
                       "Higher latency and token spend; the retry budget may run out next.",
                       f"Reliability dashboard, Attempts by outcome and reason; query `{rec.RETRY_RATIO}`.",
                       "Find the dominant retry reason: 429 (see Rate limits), 5xx or timeouts (provider); "
                       "reduce concurrency or fail over.", "llm-reliability"),
               Scenario((ok, _attempts(cfg, "0+30x40", ATTEMPT_RETRYABLE, REASON_SERVER_ERROR),
                         _ok_calls(cfg, "0+60x40")), "1m", job_model(cfg))),
        _alert("LlmCircuitBreakerOpen",
               f"max by ({g}, {L_MODEL}, {L_ENDPOINT}) ({_s(BREAKER_STATE)}) == {BREAKER_OPEN_VALUE}",
               w("1m"), "warning", "Circuit breaker open",
               f"{_JM_TEXT}: the breaker for endpoint {label_ref(L_ENDPOINT)} is open; "
               "calls wait for a probe or fail.",
               Runbook("Consecutive upstream failures opened the breaker for this model and endpoint.",
                       "Calls to it send nothing upstream: they wait (up to breaker_max_wait_seconds) for a "
                       "half-open probe to succeed, then fail with CircuitOpenError; latency rises meanwhile.",
                       "Reliability dashboard, Breaker state and transitions, then Attempts by reason.",
                       "Check the provider status; route to another model; the breaker closes by itself once "
                       "probes succeed.", "llm-reliability"),
               Scenario((series(cfg, BREAKER_STATE, "2x30", {L_ENDPOINT: "/chat/completions"}),), "0m",
                        {**job_model(cfg), L_ENDPOINT: "/chat/completions"})),
        _alert("LlmRetryBudgetExhausted",
               f"sum by ({g}, {L_MODEL}) (increase({_s(RETRY_BUDGET_EXHAUSTED)}[{w('5m')}])) > 0",
               w("5m"), "warning", "Retry budget exhausted",
               f"{_JM_TEXT}: retries were refused for 5m because the retry budget is spent.",
               Runbook("The retry budget (retries as a share of calls) is spent, so failures go to callers.",
                       "Callers see errors that a retry might have absorbed.",
                       "Reliability dashboard: Retry budget exhausted, Attempts by outcome and reason.",
                       "Fix the failure cause; raise the budget only if upstream is healthy and retries succeed.",
                       "llm-reliability"),
               Scenario((series(cfg, RETRY_BUDGET_EXHAUSTED, "0+1x30"),), "1m", job_model(cfg))),
        _alert("LlmInsufficientQuota",
               f"sum by ({g}, {L_MODEL}) (increase("
               f"{_s(ATTEMPTS, {L_OUTCOME: ATTEMPT_TERMINAL, L_REASON: REASON_INSUFFICIENT_QUOTA})}[{w('5m')}])) > 0",
               w("1m"), "critical", "OpenAI quota exhausted (insufficient_quota)",
               f"{_JM_TEXT}: calls fail with insufficient_quota; they will keep failing until billing is fixed.",
               Runbook("The API answers 429 insufficient_quota: the account has no credit or hit its spend limit.",
                       "Every call fails; retries cannot help and are not attempted.",
                       "Reliability dashboard, Terminal errors by reason; the organisation's billing page.",
                       "Add credit or raise the monthly spend limit; then confirm the panel drops to zero.",
                       "llm-reliability"),
               Scenario((_attempts(cfg, "0+1x30", ATTEMPT_TERMINAL, REASON_INSUFFICIENT_QUOTA),), "1m",
                        job_model(cfg))),
        _alert("LlmTerminalErrorRatioHigh", f"{rec.TERMINAL_RATIO} > {cfg.terminal_ratio_max:g}", w("10m"),
               "warning", "Many calls fail with non-retryable errors",
               f"{_JM_TEXT}: more than {cfg.terminal_ratio_max:.0%} of attempts fail terminally (other than quota).",
               Runbook("Attempts fail with errors a retry cannot fix (bad request, auth, request too large).",
                       "The affected calls fail for callers.",
                       "Reliability dashboard, Terminal errors by reason; traces of failed calls.",
                       "Fix the request (size, parameters) or credentials; roll back a recent change.",
                       "llm-reliability"),
               Scenario((ok, _attempts(cfg, "0+60x40", ATTEMPT_TERMINAL, "invalid_request")), "1m", job_model(cfg))),
        _alert("LlmUpstreamServerErrorsHigh", f"{rec.SERVER_ERROR_RATIO} > {cfg.server_error_ratio_max:g}", w("5m"),
               "warning", "Upstream 5xx rising",
               f"{_JM_TEXT}: more than {cfg.server_error_ratio_max:.0%} of attempts get 5xx from upstream.",
               Runbook("The provider answers with server errors.",
                       "Retries add latency and cost; the breaker may open.",
                       "Reliability dashboard, Upstream 5xx; the provider status page.",
                       "Wait it out with retries, or fail over to another model or region.", "llm-reliability"),
               Scenario((ok, _attempts(cfg, "0+60x40", ATTEMPT_RETRYABLE, REASON_SERVER_ERROR)), "1m", job_model(cfg))),
    ]


def limiter_alerts(cfg: MixinConfig, w: Windows) -> list[Alert]:
    """Throttling, 429s, capacity, Redis fallback and estimate drift."""
    _s, g = _sel(cfg), ", ".join(cfg.group_by)
    tokens = {L_RESOURCE: RESOURCE_TOKENS}
    return [
        _alert("LlmThrottleWaitHigh", f"{rec.WAIT_P95} > {cfg.throttle_wait_p95_max_s:g}", w("15m"), "warning",
               "Calls wait long in the limiter",
               f"{_JM_TEXT}: p95 limiter wait above {cfg.throttle_wait_p95_max_s:g}s for 15m.",
               Runbook("The workload needs more capacity than the rate limits allow.",
                       "Calls are slower by the wait; callers with deadlines may time out.",
                       f"Rate limits dashboard, Throttle wait p95 and Remaining capacity; query `{rec.WAIT_P95}`.",
                       "Spread the load, raise the account tier, or lower max_tokens so reservations are smaller.",
                       "llm-rate-limits"),
               Scenario(histogram(cfg, THROTTLE_WAIT, above(math.inf, "0+10x40", "0+0x40")), "1m", job_model(cfg))),
        _alert("LlmRateLimitedDespiteLimiter",
               f"sum by ({g}, {L_MODEL}) (rate({_s(RATE_LIMITED_RESPONSES)}[{w('5m')}])) > "
               f"{cfg.rate_limited_max_per_s:g}", w("10m"), "warning", "429s from upstream despite the limiter",
               f"{_JM_TEXT}: upstream 429 responses keep arriving although the limiter admits calls.",
               Runbook("The limiter's view of capacity is wrong: another client shares the key, limits changed, "
                       "or estimates are too low.", "Retries and cooldowns add latency and cost.",
                       "Rate limits dashboard: 429s despite the limiter, Learned limits, Estimate error p90.",
                       "Use the shared (Redis) limiter for every process on the key; lower configured limits.",
                       "llm-rate-limits"),
               Scenario((series(cfg, RATE_LIMITED_RESPONSES, "0+6x30", tokens),), "3m", job_model(cfg))),
        _alert("LlmRateLimitCapacityLow",
               f"min by ({g}, {L_MODEL}, {L_RESOURCE}) ({_s(RATELIMIT_REMAINING)} / {_s(RATELIMIT_LIMIT)}) < "
               f"{cfg.remaining_capacity_min:g}", w("10m"), "warning", "Rate-limit capacity nearly spent",
               f"{_JM_TEXT}: less than {cfg.remaining_capacity_min:.0%} of the {label_ref(L_RESOURCE)} "
               "limit remains.",
               Runbook(f"Remaining requests or tokens stayed under {cfg.remaining_capacity_min:.0%} of the limit.",
                       "New calls wait for capacity; waits and refusals follow.",
                       "Rate limits dashboard, Remaining capacity ratio.",
                       "Reduce load or move some to another model; ask for a higher limit.", "llm-rate-limits"),
               Scenario((series(cfg, RATELIMIT_REMAINING, f"{50 * cfg.remaining_capacity_min:g}x30", tokens),
                         series(cfg, RATELIMIT_LIMIT, "100x30", tokens)),
                        "0m", {**job_model(cfg), **tokens})),
        _alert("LlmLimiterRedisFallback",
               f"max by ({g}, {L_LIMITER_BACKEND}) ({_s(LIMITER_FALLBACK_ACTIVE)}) == 1", w("2m"), "warning",
               "Shared limiter unreachable: local fallback in use",
               f"{_JOB_TEXT}: the {label_ref(L_LIMITER_BACKEND)} limiter backend is unreachable; each process "
               "limits alone.",
               Runbook("The shared limiter backend (Redis) cannot be reached; processes fall back to local limits.",
                       "The fleet as a whole can exceed the account's limits: expect 429s.",
                       "Rate limits dashboard, Redis fallback active and Limiter decision time; Redis logs.",
                       "Restore Redis (health, memory, network); processes switch back by themselves.",
                       "llm-rate-limits"),
               Scenario((series(cfg, LIMITER_FALLBACK_ACTIVE, "1x30", {L_LIMITER_BACKEND: "redis"}),), "0m",
                        job_labels(cfg, {L_LIMITER_BACKEND: "redis"}))),
        _alert("LlmRedisFallbacks",
               f"sum by ({g}, {L_REDIS_FEATURE}) (rate({_s(REDIS_FALLBACKS)}[{w('5m')}])) > 0", w("5m"),
               "warning", "Shared state in Redis unusable: features decide locally",
               f"{_JOB_TEXT}: {label_ref(L_REDIS_FEATURE)} operations keep falling back from Redis to local "
               "state.",
               Runbook("Redis is down, slow (commands past the timeout) or refusing commands, for the feature "
                       "named: limiter, retry (budget and breaker), checkpoint or budget.",
                       "Each process decides alone: the fleet can exceed rate limits and budgets, retry storms "
                       "are bounded per process only, checkpoints are skipped (a crash loses the stream). With "
                       "fallback=fail, admission is refused instead (RedisUnavailable).",
                       "Rate limits dashboard, Redis operations answered locally (by feature and reason); Redis "
                       "logs, latency and memory; the WARNING the middleware logs when Redis becomes unusable.",
                       "Restore Redis (health, memory, network, password); processes use it again after their "
                       "back-off (MIDDLEWARE_REDIS_BACKOFF_MAX at most). Raise MIDDLEWARE_REDIS_TIMEOUT if Redis "
                       "is only slow.", "llm-rate-limits"),
               Scenario((series(cfg, REDIS_FALLBACKS, "0+60x30", {L_REDIS_FEATURE: REDIS_FEATURE_LIMITER,
                                                                  L_REASON: REDIS_REASON_TIMEOUT}),),
                        "1m", job_labels(cfg, {L_REDIS_FEATURE: REDIS_FEATURE_LIMITER}))),
        _alert("LlmTokenEstimateDrift", f"{rec.ESTIMATE_ERROR_P90} > {cfg.estimate_error_p90_max:g}", w("30m"),
               "warning", "Token estimates drifting",
               f"{_JM_TEXT}: p90 {label_ref(L_TOKEN_TYPE)} estimate error above "
               f"{cfg.estimate_error_p90_max:.0%} for 30m.",
               Runbook(f"Pre-call token estimates differ from reported usage by more than "
                       f"{cfg.estimate_error_p90_max:.0%} for most calls.",
                       "Reservations are wrong: under-estimates cause 429s, over-estimates waste capacity.",
                       "Token estimation dashboard, Estimate error ratio and Estimates by estimator.",
                       "Check for the tokenizer fallback, new request shapes (tools, images) or a new model "
                       "encoding; update the estimator.", "llm-token-estimation"),
               Scenario(histogram(cfg, ESTIMATE_ERROR, above(beyond(ESTIMATE_ERROR, cfg.estimate_error_p90_max),
                                                             "0+10x60", "0+0x60"), {L_TOKEN_TYPE: TOKEN_INPUT}),
                        "1m", {**job_model(cfg), L_TOKEN_TYPE: TOKEN_INPUT})),
        _alert("LlmTokenizerFallbackActive", f"max by ({g}) ({_s(TOKENIZER_FALLBACK)}) == 1", w("10m"), "warning",
               "Tokenizer data missing: fallback estimates in use",
               f"{_JOB_TEXT}: tiktoken data could not be loaded; token estimates are coarse.",
               Runbook("The tokenizer encodings could not be loaded, so a character-based estimate is used.",
                       "Estimates are less accurate: more 429s or wasted capacity.",
                       "Token estimation dashboard, Tokenizer fallback active; application logs at startup.",
                       "Provide the encodings in TIKTOKEN_CACHE_DIR (or allow the download) and restart.",
                       "llm-token-estimation"),
               Scenario((series(cfg, TOKENIZER_FALLBACK, "1x30"),), "0m", job_labels(cfg))),
    ]


def streaming_alerts(cfg: MixinConfig, w: Windows) -> list[Alert]:
    """First chunk latency, interruptions, stalls, resumptions and throughput."""
    ends = _stream_ends(cfg, "0+10x40")
    collapsed = histogram(cfg, STREAM_THROUGHPUT, lambda b: "0+10x90" if b >= 100 else (
        "0+0x60 10+10x29" if b >= 10 else "0+0x90"))
    return [
        _alert("LlmTimeToFirstChunkHigh", f"{rec.TTFC_P95} > {cfg.ttfc_p95_max_s:g}", w("10m"), "warning",
               "Slow first chunk",
               f"{_JM_TEXT}: p95 time to first chunk above {cfg.ttfc_p95_max_s:g}s for 10m.",
               Runbook("Streams take long to produce their first chunk.",
                       "Users wait before seeing any output.",
                       "Streaming dashboard, Time to first chunk with exemplars; Rate limits for waits.",
                       "Shorten prompts, use a faster model, or check the provider's latency.", "llm-streaming"),
               Scenario(histogram(cfg, TIME_TO_FIRST_CHUNK, above(beyond(TIME_TO_FIRST_CHUNK, cfg.ttfc_p95_max_s),
                                                                  "0+10x40", "0+0x40")), "1m", job_model(cfg))),
        _alert("LlmStreamInterruptionsHigh", f"{rec.INTERRUPTION_RATIO} > {cfg.stream_interruption_ratio_max:g}",
               w("10m"), "warning", "Streams interrupted often",
               f"{_JM_TEXT}: more than {cfg.stream_interruption_ratio_max:.0%} of streams are interrupted.",
               Runbook("Streams break before completion (stalls, dropped connections, server errors).",
                       "Resumption adds latency; without it callers get partial output.",
                       "Streaming dashboard, Interruptions by cause and Resumptions by outcome.",
                       "Connection causes: check proxies and idle timeouts; server errors: the provider.",
                       "llm-streaming"),
               Scenario((ends, series(cfg, STREAM_INTERRUPTIONS, "0+1x40", {L_CAUSE: "connection"})), "1m",
                        job_model(cfg))),
        _alert("LlmStreamStallsHigh", f"{rec.STALL_RATIO} > {cfg.stream_stall_ratio_max:g}", w("10m"), "warning",
               "Streams stall often",
               f"{_JM_TEXT}: more than {cfg.stream_stall_ratio_max:.0%} of streams stall.",
               Runbook("Streams go idle longer than the stall timeout.",
                       "Stalled streams are resumed or fail, adding latency.",
                       "Streaming dashboard, Stalls and Time per chunk p95.",
                       "Check the provider; raise the stall timeout if long pauses are normal for the model.",
                       "llm-streaming"),
               Scenario((ends, series(cfg, STREAM_STALLS, "0+1x40")), "1m", job_model(cfg))),
        _alert("LlmStreamResumptionFailures", f"{rec.RESUME_FAILURE_RATIO} > {cfg.resumption_failure_ratio_max:g}",
               w("10m"), "warning", "Stream resumptions failing",
               f"{_JM_TEXT}: more than {cfg.resumption_failure_ratio_max:.0%} of resumptions fail.",
               Runbook("Interrupted streams cannot be resumed.",
                       "Callers get StreamInterrupted with partial output instead of a complete answer.",
                       "Streaming dashboard, Resumptions by outcome and Checkpoints written.",
                       "Check the checkpoint store and that background mode responses are still retrievable.",
                       "llm-streaming"),
               Scenario((series(cfg, STREAM_RESUMPTIONS, "0+5x40", {L_OUTCOME: RESUME_FAILURE}),
                         series(cfg, STREAM_RESUMPTIONS, "0+5x40", {L_OUTCOME: RESUME_SUCCESS})), "1m",
                        job_model(cfg))),
        _alert("LlmStreamThroughputCollapse",
               f"{rec.THROUGHPUT_P50} < {cfg.throughput_collapse_factor:g} * {rec.avg_name(rec.THROUGHPUT_P50)}",
               w("10m"), "warning", "Stream throughput collapsed",
               f"{_JM_TEXT}: median output tokens/s fell below {cfg.throughput_collapse_factor:.0%} of the last "
               "hour's average.",
               Runbook("Streams deliver tokens much more slowly than in the last hour.",
                       "Long answers take much longer; deadlines may be missed.",
                       "Streaming dashboard, Output tokens per second per stream and Time per chunk.",
                       "Usually provider-side: switch model or region, or reduce output length.", "llm-streaming"),
               Scenario(collapsed, "63m", job_model(cfg))),
    ]


def ops_alerts(cfg: MixinConfig, w: Windows) -> list[Alert]:
    """File refusals and telemetry errors."""
    _s, g = _sel(cfg), ", ".join(cfg.group_by)
    now = sum_rate(_s(FILES_REFUSED), (*cfg.group_by, L_REASON), w("5m"))
    before = f"sum by ({g}, {L_REASON}) (rate({_s(FILES_REFUSED)}[{w('1h')}] offset {w('5m')}))"
    return [
        _alert("LlmFileRefusalsSpike",
               f"{now} > {cfg.file_refusals_min_per_s:g}\nunless on ({g}, {L_REASON})\n"
               f"{now} <= {cfg.file_refusals_spike_factor:g} * {before}", w("5m"), "warning",
               "File refusals spiking",
               f"{_JOB_TEXT}: files refused for reason {label_ref(L_REASON)} at more than "
               f"{cfg.file_refusals_spike_factor:g}x the last hour's rate.",
               Runbook("Many files are refused by the confined reader (escape, special, too large, binary...).",
                       "The affected files are not processed; 'escape' may be an attack through paths.",
                       "Operations dashboard, Files read and refused by reason.",
                       "Escape/special: find the caller supplying paths; too_large/binary: fix the input set.",
                       "llm-operations"),
               Scenario((series(cfg, FILES_REFUSED, "0+10x30", {L_REASON: "escape"}),), "4m",
                        job_labels(cfg, {L_REASON: "escape"}))),
        _alert("LlmTelemetryErrors",
               f"sum by ({g}, {L_COMPONENT}) (increase({_s(TELEMETRY_ERRORS)}[{w('5m')}])) > 0", w("5m"),
               "warning", "Telemetry failing",
               f"{_JOB_TEXT}: the {label_ref(L_COMPONENT)} telemetry component keeps failing; data is lost.",
               Runbook("Telemetry failures were swallowed to keep calls going (exporter, recorder).",
                       "Traces or metrics are missing; calls are unaffected.",
                       "Operations dashboard, Telemetry errors; application logs (logged once per failure kind).",
                       "Check the OpenTelemetry Collector endpoint and its health.", "llm-operations"),
               Scenario((series(cfg, TELEMETRY_ERRORS, "0+1x30", {L_COMPONENT: "exporter"}),), "1m",
                        job_labels(cfg, {L_COMPONENT: "exporter"}))),
    ]


def component_groups(cfg: MixinConfig, w: Windows) -> list[Group]:
    """One group per area."""
    return [
        Group(f"{PREFIX}.retry.alerts", "retry-alerts.yml", alerts=tuple(retry_alerts(cfg, w))),
        Group(f"{PREFIX}.limits.alerts", "limits-alerts.yml", alerts=tuple(limiter_alerts(cfg, w))),
        Group(f"{PREFIX}.streaming.alerts", "streaming-alerts.yml", alerts=tuple(streaming_alerts(cfg, w))),
        Group(f"{PREFIX}.operations.alerts", "operations-alerts.yml", alerts=tuple(ops_alerts(cfg, w))),
    ]
