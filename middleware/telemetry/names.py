"""Every metric, label, span, event and attribute name the middleware emits.

This module is the single source of truth: the recorder, the dashboards, the
Prometheus rules and the generated metrics reference (``docs/metrics.md``) all
import from here. Never retype one of these strings elsewhere.

Each metric is defined once, as its OpenTelemetry instrument: name, unit, kind and
attribute keys (GenAI semantic-convention keys where they exist, ``llm_middleware.*``
for ours). Its Prometheus name and label names are derived from that definition by
the standard OTel-to-Prometheus translation (:mod:`.promnames`), so ``/metrics`` and
the same metric sent as OTLP through a Collector (or to Prometheus's OTLP receiver)
give identical series. Where the GenAI conventions define a metric we use it, with
its advised bucket boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from .promnames import MetricKind, prometheus_label_name, prometheus_metric_name, prometheus_unit

PREFIX = "llm_middleware"

# --------------------------------------------------------------------------- span names and attributes
PROVIDER_NAME = "openai"
SPAN_CALL = "{operation} {model}"  # GenAI convention: "{gen_ai.operation.name} {gen_ai.request.model}"
SPAN_ATTEMPT = "{method} {route}"  # HTTP client convention, e.g. "POST /chat/completions"
SPAN_FILE_PROCESS = "process_files"  # INTERNAL span around middleware.files.process_files (calls are children)
SPAN_RESUME_CHECKPOINT = "resume_checkpoint"  # INTERNAL span around middleware.streaming.resume (the call is a child)

A_OPERATION = "gen_ai.operation.name"
A_PROVIDER = "gen_ai.provider.name"
A_REQUEST_MODEL = "gen_ai.request.model"
A_RESPONSE_MODEL = "gen_ai.response.model"
A_RESPONSE_ID = "gen_ai.response.id"
A_FINISH_REASONS = "gen_ai.response.finish_reasons"
A_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
A_REQUEST_STREAM = "gen_ai.request.stream"  # not (yet) in semconv; documented as ours
A_USAGE_INPUT = "gen_ai.usage.input_tokens"
A_USAGE_OUTPUT = "gen_ai.usage.output_tokens"
A_INPUT_MESSAGES = "gen_ai.input.messages"
A_OUTPUT_MESSAGES = "gen_ai.output.messages"
A_ERROR_TYPE = "error.type"
A_SERVER_ADDRESS = "server.address"
A_SERVER_PORT = "server.port"
A_HTTP_METHOD = "http.request.method"
A_HTTP_STATUS = "http.response.status_code"
A_HTTP_RESEND_COUNT = "http.request.resend_count"
A_URL_TEMPLATE = "url.template"
A_UPSTREAM_REQUEST_ID = "openai.request.id"

# Our own attributes (prefix "llm_middleware.").
A_ESTIMATOR = "llm_middleware.estimator"
A_EST_PROMPT_TOKENS = "llm_middleware.estimate.prompt_tokens"
A_EST_MAX_OUTPUT_TOKENS = "llm_middleware.estimate.max_output_tokens"
A_EST_PREDICTED_OUTPUT_TOKENS = "llm_middleware.estimate.predicted_output_tokens"
A_RESERVED_TOKENS = "llm_middleware.reserved_tokens"
A_DECISION = "llm_middleware.throttle.decision"
A_REASON = "llm_middleware.reason"
A_WAIT_SECONDS = "llm_middleware.wait_seconds"
A_DELAY_SECONDS = "llm_middleware.delay_seconds"
A_ATTEMPT = "llm_middleware.attempt"
A_ATTEMPTS = "llm_middleware.attempts"
A_LIMITER_KEY = "llm_middleware.limiter_key"
A_FORCED_STREAM = "llm_middleware.forced_stream"
A_CHUNK_INDEX = "llm_middleware.chunk.index"
A_CHUNKS = "llm_middleware.stream.chunks"
A_CHUNKS_DROPPED = "llm_middleware.stream.chunk_events_dropped"
A_TTFC = "llm_middleware.stream.time_to_first_chunk"
A_STREAM_END = "llm_middleware.stream.end"
A_CAUSE = "llm_middleware.cause"
A_CHECKPOINT_ID = "llm_middleware.checkpoint.id"
A_SEQUENCE = "llm_middleware.sequence_number"
A_LOST_SECONDS = "llm_middleware.lost_seconds"
A_PARTIAL_CHARS = "llm_middleware.partial.chars"
A_ERROR_CODE = "llm_middleware.error.code"  # the upstream's error code or type, never its message
A_BREAKER_STATE = "llm_middleware.circuit_breaker.state"
A_FILES = "llm_middleware.files"  # process_files span: the number of inputs
A_FILE_ROOT_HASH = "llm_middleware.file.root_hash"  # process_files span: SHA-256 prefix of the root (never the path)

# Span event names.
E_ESTIMATE = "gen_ai.estimate"
E_THROTTLE = "llm_middleware.throttle"
E_BACKOFF = "llm_middleware.backoff"
E_CHUNK = "gen_ai.chunk"
E_STREAM_SUMMARY = "llm_middleware.stream.summary"
E_STALL = "llm_middleware.stream.stall"
E_INTERRUPTION = "llm_middleware.stream.interruption"
E_RESUME = "llm_middleware.stream.resume"
E_CHECKPOINT = "llm_middleware.stream.checkpoint"
E_BREAKER = "llm_middleware.circuit_breaker"
E_FORCED_STREAM = "llm_middleware.forced_stream"
E_TELEMETRY_DEGRADED = "llm_middleware.telemetry_degraded"

# Stream end states (span attribute A_STREAM_END).
STREAM_END_COMPLETED = "completed"
STREAM_END_ERROR = "error"
STREAM_END_CLOSED = "closed_early"
STREAM_END_ABANDONED = "abandoned"

# --------------------------------------------------------------------------- metric attributes
# The OTel attribute key of every metric dimension (K_*) and its Prometheus label (L_*), derived.
# Semantic-convention keys where one fits; the span attribute of the same concept where we have one.
K_MODEL = A_REQUEST_MODEL  # gen_ai.request.model (bounded: beyond a cap, "other")
K_OPERATION = A_OPERATION  # gen_ai.operation.name: chat, responses, embeddings
K_ERROR_TYPE = A_ERROR_TYPE  # error.type: exception class or failure class, "" on success
K_TOKEN_TYPE = "gen_ai.token.type"  # input, output
K_PROVIDER = A_PROVIDER  # gen_ai.provider.name: a fixed attribute of the GenAI metrics
K_ENDPOINT = A_URL_TEMPLATE  # url.template: the routed path a circuit breaker guards ("/chat/completions")
K_OUTCOME = "llm_middleware.outcome"
K_DECISION = A_DECISION  # llm_middleware.throttle.decision
K_REASON = A_REASON  # llm_middleware.reason
K_CAUSE = A_CAUSE  # llm_middleware.cause (of a stream interruption)
K_ESTIMATOR = A_ESTIMATOR  # llm_middleware.estimator
K_STREAM_END = A_STREAM_END  # llm_middleware.stream.end: how a stream ended
K_RESOURCE = "llm_middleware.ratelimit.resource"  # requests, tokens
K_BREAKER_STATE = "llm_middleware.circuit_breaker.to_state"  # the state a breaker entered
K_COMPONENT = "llm_middleware.telemetry.component"
K_LIMITER_BACKEND = "llm_middleware.limiter.backend"
K_CHECKPOINT_BACKEND = "llm_middleware.checkpoint.backend"
K_ESTIMATE_KIND = "llm_middleware.estimate.kind"  # prompt, max_output, predicted_output
K_TOKEN_SOURCE = "llm_middleware.token.source"  # estimated, actual
K_REDIS_FEATURE = "llm_middleware.redis.feature"  # limiter, retry, checkpoint, budget (middleware.redisconn)


def label(key: str) -> str:
    """The Prometheus label name of a metric attribute key."""
    return prometheus_label_name(key)


L_MODEL = label(K_MODEL)
L_OPERATION = label(K_OPERATION)
L_ERROR_TYPE = label(K_ERROR_TYPE)
L_TOKEN_TYPE = label(K_TOKEN_TYPE)
L_PROVIDER = label(K_PROVIDER)
L_ENDPOINT = label(K_ENDPOINT)
L_OUTCOME = label(K_OUTCOME)
L_DECISION = label(K_DECISION)
L_REASON = label(K_REASON)
L_CAUSE = label(K_CAUSE)
L_ESTIMATOR = label(K_ESTIMATOR)
L_STREAM_END = label(K_STREAM_END)
L_RESOURCE = label(K_RESOURCE)
L_BREAKER_STATE = label(K_BREAKER_STATE)
L_COMPONENT = label(K_COMPONENT)
L_LIMITER_BACKEND = label(K_LIMITER_BACKEND)
L_CHECKPOINT_BACKEND = label(K_CHECKPOINT_BACKEND)
L_ESTIMATE_KIND = label(K_ESTIMATE_KIND)
L_TOKEN_SOURCE = label(K_TOKEN_SOURCE)
L_REDIS_FEATURE = label(K_REDIS_FEATURE)

METRIC_ATTRIBUTES: tuple[str, ...] = tuple(v for k, v in list(globals().items()) if k.startswith("K_"))
OTEL_ATTRIBUTE_FOR_LABEL: dict[str, str] = {label(k): k for k in METRIC_ATTRIBUTES}

# Label names of releases before the OTel-aligned names -> the labels that replaced them (a name
# that meant two things was split). For migrating saved queries; docs/metrics.md lists them.
RENAMED_LABELS: dict[str, tuple[str, ...]] = {
    "model": (L_MODEL,),
    "operation": (L_OPERATION,),
    "token_type": (L_TOKEN_TYPE,),
    "endpoint": (L_ENDPOINT,),
    "outcome": (L_OUTCOME,),
    "decision": (L_DECISION,),
    "reason": (L_REASON,),
    "cause": (L_CAUSE,),
    "estimator": (L_ESTIMATOR,),
    "resource": (L_RESOURCE,),
    "component": (L_COMPONENT,),
    "state": (L_STREAM_END, L_BREAKER_STATE),
    "backend": (L_LIMITER_BACKEND, L_CHECKPOINT_BACKEND),
    "kind": (L_ESTIMATE_KIND, L_TOKEN_SOURCE),
}

# Closed label values.
OUTCOME_SUCCESS = "success"
OUTCOME_ERROR = "error"
TOKEN_INPUT = "input"
TOKEN_OUTPUT = "output"
OTHER_MODEL = "other"
# L_OUTCOME on the attempts counter.
ATTEMPT_SUCCESS = "success"
ATTEMPT_RETRYABLE = "retryable"
ATTEMPT_TERMINAL = "terminal"
# L_REASON on attempts (failure classes used by rules; the full set is middleware.retry's).
REASON_INSUFFICIENT_QUOTA = "insufficient_quota"
REASON_SERVER_ERROR = "server_error"
# L_DECISION on throttle decisions.
DECISION_ADMITTED = "admitted"
DECISION_WAITED = "waited"
DECISION_REFUSED = "refused"
# L_RESOURCE on limiter metrics.
RESOURCE_REQUESTS = "requests"
RESOURCE_TOKENS = "tokens"
# L_ESTIMATE_KIND on the estimated tokens histogram.
ESTIMATE_PROMPT = "prompt"
ESTIMATE_MAX_OUTPUT = "max_output"
ESTIMATE_PREDICTED_OUTPUT = "predicted_output"
# L_TOKEN_SOURCE on the estimate bias counter.
KIND_ESTIMATED = "estimated"
KIND_ACTUAL = "actual"
# L_OUTCOME on stream resumptions.
RESUME_SUCCESS = "success"
RESUME_FAILURE = "failure"
# L_REDIS_FEATURE: the features sharing state through Redis (middleware.redisconn).
REDIS_FEATURE_LIMITER = "limiter"
REDIS_FEATURE_RETRY = "retry"
REDIS_FEATURE_CHECKPOINT = "checkpoint"
REDIS_FEATURE_BUDGET = "budget"
REDIS_FEATURES: tuple[str, ...] = (REDIS_FEATURE_LIMITER, REDIS_FEATURE_RETRY, REDIS_FEATURE_CHECKPOINT,
                                   REDIS_FEATURE_BUDGET)
# L_REASON on Redis fallbacks: why an operation did not use Redis.
REDIS_REASON_TIMEOUT = "timeout"  # connect or read timeout: a slow or stalled Redis
REDIS_REASON_CONNECTION = "connection"  # refused, reset, unreachable
REDIS_REASON_ERROR = "error"  # any other Redis error (OOM, READONLY, a script error)
REDIS_REASON_BACKOFF = "backoff"  # not tried: Redis failed moments ago and its back-off has not expired
REDIS_REASONS: tuple[str, ...] = (REDIS_REASON_TIMEOUT, REDIS_REASON_CONNECTION, REDIS_REASON_ERROR,
                                  REDIS_REASON_BACKOFF)
# Circuit breaker gauge values.
BREAKER_STATE_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
BREAKER_OPEN_VALUE = 2
# Exemplar label carrying the trace id (Grafana links it to Tempo).
EXEMPLAR_TRACE_ID = "trace_id"

# --------------------------------------------------------------------------- log records
# Structured records on the "middleware" logger (telemetry/logs.py). A record states its facts under the span
# attribute names above (the same fields as the span or span event of the same decision); these are the fields a
# span does not need as attributes (it has its own ids, duration and status), and the closed set of events.
LOG_EVENT = "llm_middleware.event"  # which decision the record is about: one of LOG_EVENTS
LOG_TRACE_ID = "trace_id"  # 32 hex digits ("" when no sampled span)
LOG_SPAN_ID = "span_id"  # 16 hex digits
LOG_OUTCOME = K_OUTCOME  # success, error
LOG_DURATION_SECONDS = "llm_middleware.duration_seconds"
LOG_CHECKPOINT_BACKEND = K_CHECKPOINT_BACKEND
LOG_CALL_END = "call_end"
LOG_RETRY = "retry"
LOG_THROTTLE_WAIT = "throttle_wait"
LOG_REFUSED = "refused"
LOG_BREAKER = "breaker"
LOG_STALL = "stall"
LOG_INTERRUPTION = "interruption"
LOG_RESUMPTION = "resumption"
LOG_CHECKPOINT = "checkpoint"
LOG_CHECKPOINT_RESUMED = "checkpoint_resumed"
LOG_FILE_REFUSED = "file_refused"
LOG_EVENTS: tuple[str, ...] = (
    LOG_CALL_END, LOG_RETRY, LOG_THROTTLE_WAIT, LOG_REFUSED, LOG_BREAKER, LOG_STALL, LOG_INTERRUPTION,
    LOG_RESUMPTION, LOG_CHECKPOINT, LOG_CHECKPOINT_RESUMED, LOG_FILE_REFUSED,
)

# --------------------------------------------------------------------------- metrics

MetricType = Literal["counter", "histogram", "gauge"]  # the Prometheus type

# OTel GenAI advised bucket boundaries.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)
TIME_PER_CHUNK_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
# Ours.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
RATIO_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
LONG_DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0)
THROUGHPUT_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
CHUNK_TOKEN_BUCKETS = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
DECISION_BUCKETS = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05)

_PROMETHEUS_TYPE: dict[str, MetricType] = {
    "counter": "counter", "updowncounter": "gauge", "histogram": "histogram", "gauge": "gauge",
}


@dataclass(frozen=True)
class MetricDef:
    """One metric, defined once as its OTel instrument; the Prometheus side is derived.

    ``attributes`` are the OTel attribute keys whose values the recorder passes, positionally and in
    this order; ``fixed`` are constant attributes appended to every point (both sides).
    """

    instrument: str
    kind: MetricKind
    attributes: tuple[str, ...]
    help: str
    unit: str = ""
    buckets: tuple[float, ...] = ()
    area: str = "core"
    fixed: tuple[tuple[str, str], ...] = ()

    @property
    def instrument_name(self) -> str:
        """The OTel instrument name (the semconv name where one exists)."""
        return self.instrument

    @property
    def type(self) -> MetricType:
        """The Prometheus metric type (an up-down counter is a gauge there)."""
        return _PROMETHEUS_TYPE[self.kind]

    @cached_property
    def prom_name(self) -> str:
        """The name in the exposition, as the standard translation gives it (counters end in `_total`)."""
        return prometheus_metric_name(self.instrument, self.unit, self.kind)

    @cached_property
    def name(self) -> str:
        """The Prometheus metric family name: `prom_name` without a counter's `_total`."""
        return self.prom_name.removesuffix("_total") if self.kind == "counter" else self.prom_name

    @cached_property
    def labels(self) -> tuple[str, ...]:
        """Prometheus label names: the translated attribute keys, then the fixed ones."""
        return tuple(label(k) for k in (*self.attributes, *(k for k, _ in self.fixed)))

    @property
    def prom_unit(self) -> str:
        """The Prometheus unit (OpenMetrics UNIT metadata), e.g. `seconds`; empty for counts."""
        return prometheus_unit(self.unit)


_KEY_FOR_LABEL = {**OTEL_ATTRIBUTE_FOR_LABEL}


def _m(
    name: str,
    type_: MetricKind,
    attributes: tuple[str, ...],
    help_: str,
    *,
    unit: str = "",
    buckets: tuple[float, ...] = (),
    otel_name: str = "",
    area: str = "core",
    fixed: tuple[tuple[str, str], ...] = (),
) -> MetricDef:
    """Define a metric by its OTel instrument name, kind, attribute keys and unit.

    Definitions written for the earlier helper still work: a Prometheus-style name translates to
    itself (without `_total`), `otel_name` wins over `name`, and a label name given where an attribute
    key is expected is mapped to its key.
    """
    keys = tuple(_KEY_FOR_LABEL.get(a, a) for a in attributes)
    return MetricDef(otel_name or name, type_, keys, help_, unit, buckets, area, fixed)


P = PREFIX
_GEN_AI = ((K_PROVIDER, PROVIDER_NAME),)  # gen_ai.provider.name is required on the GenAI metrics
# ---- core (every call)
OPERATION_DURATION = _m(
    "gen_ai.client.operation.duration", "histogram", (K_MODEL, K_OPERATION, K_ERROR_TYPE),
    "GenAI operation duration, from the call to its last byte (streams: until the stream ends).",
    unit="s", buckets=DURATION_BUCKETS, fixed=_GEN_AI,
)
TOKEN_USAGE = _m(
    "gen_ai.client.token.usage", "histogram", (K_MODEL, K_OPERATION, K_TOKEN_TYPE),
    "Tokens used per call as the API reports them, by token type (input, output).",
    unit="{token}", buckets=TOKEN_BUCKETS, fixed=_GEN_AI,
)
TIME_TO_FIRST_CHUNK = _m(
    "gen_ai.client.operation.time_to_first_chunk", "histogram", (K_MODEL, K_OPERATION),
    "Time from the call to the first streamed chunk.",
    unit="s", buckets=DURATION_BUCKETS, area="streaming", fixed=_GEN_AI,
)
TIME_PER_OUTPUT_CHUNK = _m(
    "gen_ai.client.operation.time_per_output_chunk", "histogram", (K_MODEL, K_OPERATION),
    "Time between consecutive streamed chunks after the first.",
    unit="s", buckets=TIME_PER_CHUNK_BUCKETS, area="streaming", fixed=_GEN_AI,
)
REQUESTS = _m(
    f"{P}.requests", "counter", (K_MODEL, K_OPERATION, K_OUTCOME, K_ERROR_TYPE),
    "Protected calls by outcome (success, error) and error type.", unit="{request}",
)
INFLIGHT = _m(
    f"{P}.inflight_requests", "updowncounter", (K_OPERATION,), "Protected calls in progress.", unit="{request}",
)
TELEMETRY_ERRORS = _m(
    f"{P}.telemetry.errors", "counter", (K_COMPONENT,),
    "Telemetry failures (exporter, recorder) swallowed so that the call goes on.", unit="{error}",
)
MODELS_FOLDED = _m(
    f"{P}.model_labels.folded", "counter", (),
    "Calls whose model name was folded into 'other' because the model label cap was reached.", unit="{call}",
)

# ---- token estimation
TOKEN_ESTIMATES = _m(
    f"{P}.token.estimates", "counter", (K_MODEL, K_OPERATION, K_ESTIMATOR),
    "Token estimates made before a call, by estimator (tiktoken, fallback).", unit="{estimate}", area="tokens",
)
ESTIMATED_TOKENS = _m(
    f"{P}.estimated_tokens", "histogram", (K_MODEL, K_TOKEN_TYPE, K_ESTIMATE_KIND),
    "Estimated tokens per call, by estimate kind (prompt, max_output, predicted_output).",
    unit="{token}", buckets=TOKEN_BUCKETS, area="tokens",
)
ESTIMATE_ERROR = _m(
    f"{P}.token.estimate_error_ratio", "histogram", (K_MODEL, K_TOKEN_TYPE),
    "Absolute relative estimate error once a call settles: |estimated - actual| / actual "
    "(input: prompt estimate; output: predicted output).",
    unit="1", buckets=RATIO_BUCKETS, area="tokens",
)
ESTIMATE_BIAS_TOKENS = _m(
    f"{P}.token.estimate_bias_tokens", "counter", (K_MODEL, K_TOKEN_TYPE, K_TOKEN_SOURCE),
    "Tokens estimated and actually used (source estimated, actual), to compute the estimate bias.",
    unit="{token}", area="tokens",
)
TOKENIZER_FALLBACK = _m(
    f"{P}.tokenizer.fallback_active", "gauge", (),
    "1 when tokenizer data could not be loaded and the documented fallback estimate is in use.",
    area="tokens",
)

# ---- limiter
THROTTLE_DECISIONS = _m(
    f"{P}.throttle.decisions", "counter", (K_MODEL, K_DECISION, K_REASON),
    "Limiter decisions: admitted (at once), waited, refused; reason = the binding resource or cause.",
    unit="{decision}", area="limits",
)
THROTTLE_WAIT = _m(
    f"{P}.throttle.wait", "histogram", (K_MODEL,),
    "Seconds a call waited in the limiter before it was admitted.",
    unit="s", buckets=WAIT_BUCKETS, area="limits",
)
TOKENS_RESERVED = _m(
    f"{P}.tokens.reserved", "counter", (K_MODEL,), "Tokens reserved at admission.", unit="{token}", area="limits",
)
TOKENS_SETTLED = _m(
    f"{P}.tokens.settled", "counter", (K_MODEL,),
    "Tokens charged once calls settled against reported usage.", unit="{token}", area="limits",
)
RATELIMIT_LIMIT = _m(
    f"{P}.ratelimit.limit", "gauge", (K_MODEL, K_RESOURCE),
    "Current limit per window (configured or learned from x-ratelimit-limit-*), in requests or tokens.",
    area="limits",
)
RATELIMIT_REMAINING = _m(
    f"{P}.ratelimit.remaining", "gauge", (K_MODEL, K_RESOURCE),
    "Remaining capacity in the limiter (requests or tokens).", area="limits",
)
RATELIMIT_COOLDOWNS = _m(
    f"{P}.ratelimit.cooldowns", "counter", (K_MODEL, K_RESOURCE),
    "Cooldowns entered after a 429 rate-limit response.", unit="{cooldown}", area="limits",
)
RATE_LIMITED_RESPONSES = _m(
    f"{P}.rate_limited_responses", "counter", (K_MODEL, K_RESOURCE),
    "429 rate-limit responses received from upstream (despite the limiter).", unit="{response}", area="limits",
)
RATELIMIT_HEADER_ERRORS = _m(
    f"{P}.ratelimit.header_errors", "counter", (K_REASON,),
    "x-ratelimit-* headers that were missing or could not be parsed.", unit="{error}", area="limits",
)
LIMITER_FALLBACK_ACTIVE = _m(
    f"{P}.limiter.fallback_active", "gauge", (K_LIMITER_BACKEND,),
    "1 while the shared limiter backend is unreachable and the local fallback is in use.", area="limits",
)
LIMITER_FALLBACKS = _m(
    f"{P}.limiter.fallbacks", "counter", (K_LIMITER_BACKEND,),
    "Switches to the local fallback limiter because the shared backend failed.", unit="{switch}", area="limits",
)
LIMITER_DECISION_SECONDS = _m(
    f"{P}.limiter.decision.duration", "histogram", (K_LIMITER_BACKEND,),
    "Time one limiter decision takes with a shared backend (Redis, or its local fallback while Redis is down).",
    unit="s", buckets=DECISION_BUCKETS, area="limits",
)

# ---- Redis: the shared state of the limiter, the retry state, checkpoints and budgets (middleware.redisconn)
REDIS_FALLBACKS = _m(
    f"{P}.redis.fallbacks", "counter", (K_REDIS_FEATURE, K_REASON),
    "Operations on shared state that did not use Redis, by feature and reason (timeout, connection, error; "
    "backoff: skipped because Redis failed moments ago): answered by the feature's local fallback, or refused "
    "with RedisConfig.fallback='fail'.",
    unit="{operation}", area="redis",
)

# ---- retries
ATTEMPTS = _m(
    f"{P}.attempts", "counter", (K_MODEL, K_OPERATION, K_OUTCOME, K_REASON),
    "HTTP attempts sent upstream: outcome success, retryable or terminal; reason = failure class.",
    unit="{attempt}", area="retry",
)
BACKOFF = _m(
    f"{P}.backoff", "histogram", (K_MODEL, K_REASON),
    "Delays slept before a retry, and waits for an open circuit breaker (reason circuit_open).",
    unit="s", buckets=WAIT_BUCKETS, area="retry",
)
RETRY_BUDGET_EXHAUSTED = _m(
    f"{P}.retry_budget.exhausted", "counter", (K_MODEL,),
    "Retries refused because the retry budget was spent.", unit="{retry}", area="retry",
)
BREAKER_STATE = _m(
    f"{P}.circuit_breaker.state", "gauge", (K_MODEL, K_ENDPOINT),
    "Circuit breaker state: 0 closed, 1 half-open, 2 open.", area="retry",
)
BREAKER_TRANSITIONS = _m(
    f"{P}.circuit_breaker.transitions", "counter", (K_MODEL, K_ENDPOINT, K_BREAKER_STATE),
    "Circuit breaker transitions, by the state entered.", unit="{transition}", area="retry",
)

# ---- streaming
STREAM_CHUNKS = _m(
    f"{P}.stream.chunks", "counter", (K_MODEL, K_OPERATION), "Streamed chunks received.", unit="{chunk}",
    area="streaming",
)
STREAM_DURATION = _m(
    f"{P}.stream.duration", "histogram", (K_MODEL, K_OPERATION),
    "Duration of streams, from the call to the end of the stream.",
    unit="s", buckets=LONG_DURATION_BUCKETS, area="streaming",
)
STREAM_THROUGHPUT = _m(
    f"{P}.stream.output_tokens", "histogram", (K_MODEL, K_OPERATION),
    "Output tokens per second of each finished stream (after the first chunk).",
    unit="{token}/s", buckets=THROUGHPUT_BUCKETS, area="streaming",
)
STREAMS_ACTIVE = _m(
    f"{P}.streams.active", "updowncounter", (K_OPERATION,), "Streams open now.", unit="{stream}",
    area="streaming",
)
STREAM_ENDS = _m(
    f"{P}.stream.ends", "counter", (K_MODEL, K_OPERATION, K_STREAM_END),
    "Streams ended, by how they ended (completed, error, closed_early, abandoned).", unit="{stream}",
    area="streaming",
)
STREAM_STALLS = _m(
    f"{P}.stream.stalls", "counter", (K_MODEL,), "Streams that went idle longer than the stall timeout.",
    unit="{stall}", area="streaming",
)
STREAM_INTERRUPTIONS = _m(
    f"{P}.stream.interruptions", "counter", (K_MODEL, K_CAUSE),
    "Streams interrupted, by cause (stall, connection, server_error, malformed).", unit="{interruption}",
    area="streaming",
)
STREAM_RESUMPTIONS = _m(
    f"{P}.stream.resumptions", "counter", (K_MODEL, K_OUTCOME),
    "Stream resumption attempts, by outcome (success, failure).", unit="{resumption}", area="streaming",
)
STREAM_RESUME_LOST = _m(
    f"{P}.stream.resumption_lost", "histogram", (K_MODEL,),
    "Seconds lost per resumption (from the interruption to the first chunk after it).",
    unit="s", buckets=WAIT_BUCKETS, area="streaming",
)
CHECKPOINTS_WRITTEN = _m(
    f"{P}.checkpoints.written", "counter", (K_MODEL, K_CHECKPOINT_BACKEND), "Stream checkpoints written.",
    unit="{checkpoint}", area="streaming",
)
FORCED_STREAMS = _m(
    f"{P}.forced_streams", "counter", (K_MODEL, K_REASON),
    "Non-streaming calls sent as streams (reason: threshold, adaptive).", unit="{call}", area="streaming",
)
ADAPTIVE_THRESHOLD = _m(
    f"{P}.stream.adaptive_threshold_tokens", "gauge", (K_MODEL,),
    "Current max-output-tokens threshold above which calls are streamed.", unit="{token}", area="streaming",
)

# ---- files
FILES_READ = _m(
    f"{P}.files.read", "counter", (), "Files read through the confined reader.", unit="{file}", area="files",
)
FILES_REFUSED = _m(
    f"{P}.files.refused", "counter", (K_REASON,),
    "Files refused or skipped, by reason (escape, special, too_large, binary, changed, ...).", unit="{file}",
    area="files",
)
FILE_BYTES_READ = _m(f"{P}.file.read", "counter", (), "Bytes read from files.", unit="By", area="files")
FILE_TOKENS_READ = _m(
    f"{P}.file.read_tokens", "counter", (), "Tokens read from files.", unit="{token}", area="files",
)
FILE_CHUNKS = _m(f"{P}.file.chunks", "counter", (), "Chunks produced from files.", unit="{chunk}", area="files")
FILE_CHUNK_SIZE = _m(
    f"{P}.file.chunk_size_tokens", "histogram", (), "Chunk sizes in tokens.",
    unit="{token}", buckets=CHUNK_TOKEN_BUCKETS, area="files",
)
CHUNKING_SECONDS = _m(
    f"{P}.file.chunking.time", "counter", (), "Seconds spent chunking (for throughput: bytes / seconds).",
    unit="s", area="files",
)

# =========================================================================== cost (issue 16)
# Self-contained block: labels, label values, span names and metrics of middleware.cost.
# ---- attribution tags and metric attributes
# Attribution tags that become metric attributes, in this order (other allow-listed tags, e.g. end_user,
# go to spans and logs only: user ids never become labels). Values are folded by middleware.cost.TagFolder.
TAG_LABELS: tuple[str, ...] = ("team", "feature")
A_TAG_PREFIX = "llm_middleware.tag."  # + tag key, e.g. llm_middleware.tag.team
K_TEAM = A_TAG_PREFIX + "team"
K_FEATURE = A_TAG_PREFIX + "feature"
K_TAGS: tuple[str, ...] = tuple(A_TAG_PREFIX + t for t in TAG_LABELS)
K_BUDGET = "llm_middleware.budget.name"
K_PERIOD = "llm_middleware.budget.period"
K_BUDGET_DECISION = "llm_middleware.budget.decision"
K_BUDGET_BACKEND = "llm_middleware.budget.backend"
K_TAG_KEY = "llm_middleware.tag.key"
L_TEAM = label(K_TEAM)
L_FEATURE = label(K_FEATURE)
L_BUDGET = label(K_BUDGET)
L_PERIOD = label(K_PERIOD)
L_BUDGET_DECISION = label(K_BUDGET_DECISION)
L_BUDGET_BACKEND = label(K_BUDGET_BACKEND)
L_TAG_KEY = label(K_TAG_KEY)
# ---- label values
TOKEN_CACHED_INPUT = "cached_input"  # L_TOKEN_TYPE: part of "input" read from the prompt cache
TOKEN_REASONING = "reasoning"  # L_TOKEN_TYPE: part of "output" spent on reasoning
OTHER_TAG = "other"  # a tag value beyond the per-key (or combination) cap
PERIOD_DAY = "day"
PERIOD_MONTH = "month"
DECISION_WARNED = "warned"  # L_DECISION on budget decisions: over budget, admitted in "warn" mode
UNPRICED_UNKNOWN_MODEL = "unknown_model"  # L_REASON on unpriced calls
UNPRICED_NO_OUTPUT_PRICE = "no_output_price"
UNPRICED_NO_USAGE = "no_usage"
UNPRICED_NO_CEILING = "no_output_ceiling"  # worst case only: no max output in the request, table or config
# ---- span attributes and events
A_USAGE_CACHED_INPUT = "gen_ai.usage.cache_read.input_tokens"  # semconv (development); included in input
A_USAGE_REASONING = "gen_ai.usage.reasoning.output_tokens"  # semconv (development); included in output
A_COST_USD = "llm_middleware.cost.usd"
A_COST_INPUT_USD = "llm_middleware.cost.input_usd"
A_COST_CACHED_INPUT_USD = "llm_middleware.cost.cached_input_usd"
A_COST_OUTPUT_USD = "llm_middleware.cost.output_usd"
A_COST_REASONING_USD = "llm_middleware.cost.reasoning_usd"
A_COST_SAVINGS_USD = "llm_middleware.cost.cached_savings_usd"
A_COST_PRICED_AS = "llm_middleware.cost.priced_as"
A_COST_UNPRICED = "llm_middleware.cost.unpriced"
A_COST_UNPRICED_REASON = "llm_middleware.cost.unpriced_reason"
A_BUDGET = K_BUDGET
A_BUDGET_PERIOD = K_PERIOD
A_BUDGET_DECISION = K_BUDGET_DECISION
A_BUDGET_RESERVED_USD = "llm_middleware.budget.reserved_usd"
A_BUDGET_SPENT_USD = "llm_middleware.budget.spent_usd"
A_BUDGET_LIMIT_USD = "llm_middleware.budget.limit_usd"
E_BUDGET = "llm_middleware.budget"
# ---- metrics
COST_USD = _m(
    f"{P}.cost.usd", "counter", (K_MODEL, K_TOKEN_TYPE, *K_TAGS),
    "Cost of calls in USD, computed at settlement from reported usage and the price table, by token type "
    "(input = uncached input, cached_input, output = visible output, reasoning) and attribution tags.",
    unit="{USD}", area="cost",
)
COST_SAVINGS_USD = _m(
    f"{P}.cost.cached_savings.usd", "counter", (K_MODEL,),
    "USD saved by cached input tokens (their count times input price minus cached-input price).",
    unit="{USD}", area="cost",
)
UNPRICED_CALLS = _m(
    f"{P}.unpriced_calls", "counter", (K_MODEL, K_REASON),
    "Calls whose cost is unknown (reason: unknown_model, no_output_price, no_usage); never guessed.",
    unit="{call}", area="cost",
)
BUDGET_SPEND_USD = _m(
    f"{P}.budget.spend.usd", "gauge", (K_BUDGET, K_PERIOD),
    "Settled spend of a budget in its current period (UTC day or month), as last seen by this process.",
    unit="{USD}", area="cost",
)
BUDGET_LIMIT_USD = _m(
    f"{P}.budget.limit.usd", "gauge", (K_BUDGET, K_PERIOD), "Configured limit of a budget per period.",
    unit="{USD}", area="cost",
)
BUDGET_DECISIONS = _m(
    f"{P}.budget.decisions", "counter", (K_BUDGET, K_PERIOD, K_BUDGET_DECISION),
    "Budget admission decisions per budget: admitted, waited (one per wait for the period to roll over), "
    "refused, warned (over budget, admitted in warn mode).",
    unit="{decision}", area="cost",
)
BUDGET_FALLBACK_ACTIVE = _m(
    f"{P}.budget.fallback_active", "gauge", (K_BUDGET_BACKEND,),
    "1 while the shared budget backend is unreachable and this process's local fallback ledger decides.",
    area="cost",
)
TAG_VALUES_FOLDED = _m(
    f"{P}.tag_values_folded", "counter", (K_TAG_KEY,),
    "Attribution tag values folded into 'other' because the per-key or combination cap was reached.",
    unit="{value}", area="cost",
)
# =========================================================================== end of cost block


def all_metrics() -> tuple[MetricDef, ...]:
    """Every metric defined in this module, in definition order (also ones appended after this point)."""
    seen: dict[int, MetricDef] = {}
    for v in list(globals().values()):
        if isinstance(v, MetricDef):
            seen.setdefault(id(v), v)
    return tuple(seen.values())


ALL_METRICS: tuple[MetricDef, ...] = all_metrics()

# Metric names of releases before the OTel-aligned names -> their definition today.
RENAMED_METRICS: dict[str, MetricDef] = {
    "gen_ai_client_token_usage_tokens": TOKEN_USAGE,
    "llm_middleware_limiter_decision_seconds": LIMITER_DECISION_SECONDS,
    "llm_middleware_file_chunking_seconds_total": CHUNKING_SECONDS,
}


# The metric family of each histogram as it appears in queries.
def bucket(m: MetricDef) -> str:
    """`<name>_bucket` for a histogram."""
    return m.name + "_bucket"


def count(m: MetricDef) -> str:
    """`<name>_count` for a histogram."""
    return m.name + "_count"


def total(m: MetricDef) -> str:
    """`<name>_sum` for a histogram."""
    return m.name + "_sum"
