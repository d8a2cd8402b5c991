"""Every metric, label, span, event and attribute name the middleware emits.

This module is the single source of truth: the recorder, the dashboards, the
Prometheus rules and the generated metrics reference (``docs/metrics.md``) all
import from here. Never retype one of these strings elsewhere.

Prometheus names follow Prometheus practice (base units, unit suffix, ``_total``
on counters). Where the OpenTelemetry GenAI semantic conventions define a metric
we use it, with its advised bucket boundaries; its OTel instrument name is kept in
``MetricDef.otel_name``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PREFIX = "llm_middleware"

# --------------------------------------------------------------------------- labels
# Prometheus label names: a small closed set. OTel attribute names for the same
# dimensions are in OTEL_ATTRIBUTE_FOR_LABEL.
L_MODEL = "model"
L_OPERATION = "operation"
L_OUTCOME = "outcome"
L_ERROR_TYPE = "error_type"
L_TOKEN_TYPE = "token_type"
L_DECISION = "decision"
L_REASON = "reason"
L_RESOURCE = "resource"
L_LIMITER = "limiter"
L_STATE = "state"
L_ENDPOINT = "endpoint"
L_CAUSE = "cause"
L_ESTIMATOR = "estimator"
L_COMPONENT = "component"
L_BACKEND = "backend"
L_KIND = "kind"

OTEL_ATTRIBUTE_FOR_LABEL: dict[str, str] = {
    L_MODEL: "gen_ai.request.model",
    L_OPERATION: "gen_ai.operation.name",
    L_ERROR_TYPE: "error.type",
    L_TOKEN_TYPE: "gen_ai.token.type",
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
# L_KIND on the estimate bias counter.
KIND_ESTIMATED = "estimated"
KIND_ACTUAL = "actual"
# L_OUTCOME on stream resumptions.
RESUME_SUCCESS = "success"
RESUME_FAILURE = "failure"
# Circuit breaker gauge values.
BREAKER_STATE_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
BREAKER_OPEN_VALUE = 2
# Exemplar label carrying the trace id (Grafana links it to Tempo).
EXEMPLAR_TRACE_ID = "trace_id"

# --------------------------------------------------------------------------- span names and attributes
PROVIDER_NAME = "openai"
SPAN_CALL = "{operation} {model}"  # GenAI convention: "{gen_ai.operation.name} {gen_ai.request.model}"
SPAN_ATTEMPT = "{method} {route}"  # HTTP client convention, e.g. "POST /chat/completions"
SPAN_FILE_PROCESS = "process_files"
SPAN_RESUME_CHECKPOINT = "resume_checkpoint"

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
A_PATH_HASH = "llm_middleware.file.path_hash"

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

# --------------------------------------------------------------------------- metrics

MetricType = Literal["counter", "histogram", "gauge"]

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


@dataclass(frozen=True)
class MetricDef:
    """One metric: its Prometheus name (without `_total`), type, labels, unit and help."""

    name: str
    type: MetricType
    labels: tuple[str, ...]
    help: str
    unit: str = ""
    buckets: tuple[float, ...] = ()
    otel_name: str = ""
    area: str = "core"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def prom_name(self) -> str:
        """The name as it appears in the exposition (counters gain `_total`)."""
        return self.name + "_total" if self.type == "counter" else self.name

    @property
    def instrument_name(self) -> str:
        """The OTel instrument name: the semconv name where one exists, else ours."""
        return self.otel_name or self.name


def _m(
    name: str,
    type_: MetricType,
    labels: tuple[str, ...],
    help_: str,
    *,
    unit: str = "",
    buckets: tuple[float, ...] = (),
    otel_name: str = "",
    area: str = "core",
) -> MetricDef:
    return MetricDef(name, type_, labels, help_, unit, buckets, otel_name, area)


P = PREFIX
# ---- core (every call)
OPERATION_DURATION = _m(
    "gen_ai_client_operation_duration_seconds", "histogram", (L_MODEL, L_OPERATION, L_ERROR_TYPE),
    "GenAI operation duration, from the call to its last byte (streams: until the stream ends).",
    unit="s", buckets=DURATION_BUCKETS, otel_name="gen_ai.client.operation.duration",
)
TOKEN_USAGE = _m(
    "gen_ai_client_token_usage_tokens", "histogram", (L_MODEL, L_OPERATION, L_TOKEN_TYPE),
    "Tokens used per call as the API reports them, by token type (input, output).",
    unit="{token}", buckets=TOKEN_BUCKETS, otel_name="gen_ai.client.token.usage",
)
TIME_TO_FIRST_CHUNK = _m(
    "gen_ai_client_operation_time_to_first_chunk_seconds", "histogram", (L_MODEL, L_OPERATION),
    "Time from the call to the first streamed chunk.",
    unit="s", buckets=DURATION_BUCKETS, otel_name="gen_ai.client.operation.time_to_first_chunk", area="streaming",
)
TIME_PER_OUTPUT_CHUNK = _m(
    "gen_ai_client_operation_time_per_output_chunk_seconds", "histogram", (L_MODEL, L_OPERATION),
    "Time between consecutive streamed chunks after the first.",
    unit="s", buckets=TIME_PER_CHUNK_BUCKETS, otel_name="gen_ai.client.operation.time_per_output_chunk",
    area="streaming",
)
REQUESTS = _m(
    f"{P}_requests", "counter", (L_MODEL, L_OPERATION, L_OUTCOME, L_ERROR_TYPE),
    "Protected calls by outcome (success, error) and error type.",
)
INFLIGHT = _m(f"{P}_inflight_requests", "gauge", (L_OPERATION,), "Protected calls in progress.")
TELEMETRY_ERRORS = _m(
    f"{P}_telemetry_errors", "counter", (L_COMPONENT,),
    "Telemetry failures (exporter, recorder) swallowed so that the call goes on.",
)
MODELS_FOLDED = _m(
    f"{P}_model_labels_folded", "counter", (),
    "Calls whose model name was folded into 'other' because the model label cap was reached.",
)

# ---- token estimation
TOKEN_ESTIMATES = _m(
    f"{P}_token_estimates", "counter", (L_MODEL, L_OPERATION, L_ESTIMATOR),
    "Token estimates made before a call, by estimator (tiktoken, fallback).", area="tokens",
)
ESTIMATED_TOKENS = _m(
    f"{P}_estimated_tokens", "histogram", (L_MODEL, L_TOKEN_TYPE, L_KIND),
    "Estimated tokens per call: kind=prompt, max_output or predicted_output.",
    unit="{token}", buckets=TOKEN_BUCKETS, area="tokens",
)
ESTIMATE_ERROR = _m(
    f"{P}_token_estimate_error_ratio", "histogram", (L_MODEL, L_TOKEN_TYPE),
    "Absolute relative estimate error once a call settles: |estimated - actual| / actual "
    "(input: prompt estimate; output: predicted output).",
    unit="1", buckets=RATIO_BUCKETS, area="tokens",
)
ESTIMATE_BIAS_TOKENS = _m(
    f"{P}_token_estimate_bias_tokens", "counter", (L_MODEL, L_TOKEN_TYPE, L_KIND),
    "Tokens estimated and actually used (kind=estimated|actual), to compute the estimate bias.",
    area="tokens",
)
TOKENIZER_FALLBACK = _m(
    f"{P}_tokenizer_fallback_active", "gauge", (),
    "1 when tokenizer data could not be loaded and the documented fallback estimate is in use.",
    area="tokens",
)

# ---- limiter
THROTTLE_DECISIONS = _m(
    f"{P}_throttle_decisions", "counter", (L_MODEL, L_DECISION, L_REASON),
    "Limiter decisions: admitted (at once), waited, refused; reason = the binding resource or cause.",
    area="limits",
)
THROTTLE_WAIT = _m(
    f"{P}_throttle_wait_seconds", "histogram", (L_MODEL,),
    "Seconds a call waited in the limiter before it was admitted.",
    unit="s", buckets=WAIT_BUCKETS, area="limits",
)
TOKENS_RESERVED = _m(
    f"{P}_tokens_reserved", "counter", (L_MODEL,), "Tokens reserved at admission.", area="limits",
)
TOKENS_SETTLED = _m(
    f"{P}_tokens_settled", "counter", (L_MODEL,),
    "Tokens charged once calls settled against reported usage.", area="limits",
)
RATELIMIT_LIMIT = _m(
    f"{P}_ratelimit_limit", "gauge", (L_MODEL, L_RESOURCE),
    "Current limit per window (configured or learned from x-ratelimit-limit-*).", area="limits",
)
RATELIMIT_REMAINING = _m(
    f"{P}_ratelimit_remaining", "gauge", (L_MODEL, L_RESOURCE),
    "Remaining capacity in the limiter (requests or tokens).", area="limits",
)
RATELIMIT_COOLDOWNS = _m(
    f"{P}_ratelimit_cooldowns", "counter", (L_MODEL, L_RESOURCE),
    "Cooldowns entered after a 429 rate-limit response.", area="limits",
)
RATE_LIMITED_RESPONSES = _m(
    f"{P}_rate_limited_responses", "counter", (L_MODEL, L_RESOURCE),
    "429 rate-limit responses received from upstream (despite the limiter).", area="limits",
)
RATELIMIT_HEADER_ERRORS = _m(
    f"{P}_ratelimit_header_errors", "counter", (L_REASON,),
    "x-ratelimit-* headers that were missing or could not be parsed.", area="limits",
)
LIMITER_FALLBACK_ACTIVE = _m(
    f"{P}_limiter_fallback_active", "gauge", (L_BACKEND,),
    "1 while the shared limiter backend is unreachable and the local fallback is in use.", area="limits",
)
LIMITER_FALLBACKS = _m(
    f"{P}_limiter_fallbacks", "counter", (L_BACKEND,),
    "Switches to the local fallback limiter because the shared backend failed.", area="limits",
)
LIMITER_DECISION_SECONDS = _m(
    f"{P}_limiter_decision_seconds", "histogram", (L_BACKEND,),
    "Time one limiter decision takes with a shared backend (Redis, or its local fallback while Redis is down).",
    unit="s", buckets=(0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05), area="limits",
)

# ---- retries
ATTEMPTS = _m(
    f"{P}_attempts", "counter", (L_MODEL, L_OPERATION, L_OUTCOME, L_REASON),
    "HTTP attempts sent upstream: outcome success, retryable or terminal; reason = failure class.",
    area="retry",
)
BACKOFF = _m(
    f"{P}_backoff_seconds", "histogram", (L_MODEL, L_REASON),
    "Delays slept before a retry, and waits for an open circuit breaker (reason circuit_open).",
    unit="s", buckets=WAIT_BUCKETS, area="retry",
)
RETRY_BUDGET_EXHAUSTED = _m(
    f"{P}_retry_budget_exhausted", "counter", (L_MODEL,),
    "Retries refused because the retry budget was spent.", area="retry",
)
BREAKER_STATE = _m(
    f"{P}_circuit_breaker_state", "gauge", (L_MODEL, L_ENDPOINT),
    "Circuit breaker state: 0 closed, 1 half-open, 2 open.", area="retry",
)
BREAKER_TRANSITIONS = _m(
    f"{P}_circuit_breaker_transitions", "counter", (L_MODEL, L_ENDPOINT, L_STATE),
    "Circuit breaker transitions, by the state entered.", area="retry",
)

# ---- streaming
STREAM_CHUNKS = _m(
    f"{P}_stream_chunks", "counter", (L_MODEL, L_OPERATION), "Streamed chunks received.", area="streaming",
)
STREAM_DURATION = _m(
    f"{P}_stream_duration_seconds", "histogram", (L_MODEL, L_OPERATION),
    "Duration of streams, from the call to the end of the stream.",
    unit="s", buckets=LONG_DURATION_BUCKETS, area="streaming",
)
STREAM_THROUGHPUT = _m(
    f"{P}_stream_output_tokens_per_second", "histogram", (L_MODEL, L_OPERATION),
    "Output tokens per second of each finished stream (after the first chunk).",
    unit="{token}/s", buckets=THROUGHPUT_BUCKETS, area="streaming",
)
STREAMS_ACTIVE = _m(f"{P}_streams_active", "gauge", (L_OPERATION,), "Streams open now.", area="streaming")
STREAM_ENDS = _m(
    f"{P}_stream_ends", "counter", (L_MODEL, L_OPERATION, L_STATE),
    "Streams ended, by how they ended (completed, error, closed_early, abandoned).", area="streaming",
)
STREAM_STALLS = _m(
    f"{P}_stream_stalls", "counter", (L_MODEL,), "Streams that went idle longer than the stall timeout.",
    area="streaming",
)
STREAM_INTERRUPTIONS = _m(
    f"{P}_stream_interruptions", "counter", (L_MODEL, L_CAUSE),
    "Streams interrupted, by cause (stall, connection, server_error, malformed).", area="streaming",
)
STREAM_RESUMPTIONS = _m(
    f"{P}_stream_resumptions", "counter", (L_MODEL, L_OUTCOME),
    "Stream resumption attempts, by outcome (success, failure).", area="streaming",
)
STREAM_RESUME_LOST = _m(
    f"{P}_stream_resumption_lost_seconds", "histogram", (L_MODEL,),
    "Seconds lost per resumption (from the interruption to the first chunk after it).",
    unit="s", buckets=WAIT_BUCKETS, area="streaming",
)
CHECKPOINTS_WRITTEN = _m(
    f"{P}_checkpoints_written", "counter", (L_MODEL, L_BACKEND), "Stream checkpoints written.",
    area="streaming",
)
FORCED_STREAMS = _m(
    f"{P}_forced_streams", "counter", (L_MODEL, L_REASON),
    "Non-streaming calls sent as streams (reason: threshold, adaptive).", area="streaming",
)
ADAPTIVE_THRESHOLD = _m(
    f"{P}_stream_adaptive_threshold_tokens", "gauge", (L_MODEL,),
    "Current max-output-tokens threshold above which calls are streamed.", area="streaming",
)

# ---- files
FILES_READ = _m(f"{P}_files_read", "counter", (), "Files read through the confined reader.", area="files")
FILES_REFUSED = _m(
    f"{P}_files_refused", "counter", (L_REASON,),
    "Files refused or skipped, by reason (escape, special, too_large, binary, changed, ...).", area="files",
)
FILE_BYTES_READ = _m(f"{P}_file_read_bytes", "counter", (), "Bytes read from files.", area="files")
FILE_TOKENS_READ = _m(f"{P}_file_read_tokens", "counter", (), "Tokens read from files.", area="files")
FILE_CHUNKS = _m(f"{P}_file_chunks", "counter", (), "Chunks produced from files.", area="files")
FILE_CHUNK_SIZE = _m(
    f"{P}_file_chunk_size_tokens", "histogram", (), "Chunk sizes in tokens.",
    unit="{token}", buckets=CHUNK_TOKEN_BUCKETS, area="files",
)
CHUNKING_SECONDS = _m(
    f"{P}_file_chunking_seconds", "counter", (), "Seconds spent chunking (for throughput: bytes / seconds).",
    unit="s", area="files",
)

# =========================================================================== cost (issue 16)
# Self-contained block: labels, label values, span names and metrics of middleware.cost.
# ---- labels
L_TEAM = "team"
L_FEATURE = "feature"
L_BUDGET = "budget"
L_PERIOD = "period"
L_TAG_KEY = "tag_key"
# Attribution tags that become metric labels, in this order (other allow-listed tags, e.g. end_user,
# go to spans and logs only: user ids never become labels). Values are folded by middleware.cost.TagFolder.
TAG_LABELS: tuple[str, ...] = (L_TEAM, L_FEATURE)
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
A_COST_BATCH = "llm_middleware.cost.batch"
A_COST_UNPRICED = "llm_middleware.cost.unpriced"
A_COST_UNPRICED_REASON = "llm_middleware.cost.unpriced_reason"
A_TAG_PREFIX = "llm_middleware.tag."  # + tag key, e.g. llm_middleware.tag.team
A_BUDGET = "llm_middleware.budget.name"
A_BUDGET_PERIOD = "llm_middleware.budget.period"
A_BUDGET_DECISION = "llm_middleware.budget.decision"
A_BUDGET_RESERVED_USD = "llm_middleware.budget.reserved_usd"
A_BUDGET_SPENT_USD = "llm_middleware.budget.spent_usd"
A_BUDGET_LIMIT_USD = "llm_middleware.budget.limit_usd"
E_BUDGET = "llm_middleware.budget"
# ---- metrics
COST_USD = _m(
    f"{P}_cost_usd", "counter", (L_MODEL, L_TOKEN_TYPE, *TAG_LABELS),
    "Cost of calls in USD, computed at settlement from reported usage and the price table, by token type "
    "(input = uncached input, cached_input, output = visible output, reasoning) and attribution tags.",
    unit="{USD}", area="cost",
)
COST_SAVINGS_USD = _m(
    f"{P}_cost_cached_savings_usd", "counter", (L_MODEL,),
    "USD saved by cached input tokens (their count times input price minus cached-input price).",
    unit="{USD}", area="cost",
)
UNPRICED_CALLS = _m(
    f"{P}_unpriced_calls", "counter", (L_MODEL, L_REASON),
    "Calls whose cost is unknown (reason: unknown_model, no_output_price, no_usage); never guessed.",
    area="cost",
)
BUDGET_SPEND_USD = _m(
    f"{P}_budget_spend_usd", "gauge", (L_BUDGET, L_PERIOD),
    "Settled spend of a budget in its current period (UTC day or month), as last seen by this process.",
    unit="{USD}", area="cost",
)
BUDGET_LIMIT_USD = _m(
    f"{P}_budget_limit_usd", "gauge", (L_BUDGET, L_PERIOD), "Configured limit of a budget per period.",
    unit="{USD}", area="cost",
)
BUDGET_DECISIONS = _m(
    f"{P}_budget_decisions", "counter", (L_BUDGET, L_PERIOD, L_DECISION),
    "Budget admission decisions per budget: admitted, waited (one per wait for the period to roll over), "
    "refused, warned (over budget, admitted in warn mode).",
    area="cost",
)
BUDGET_FALLBACK_ACTIVE = _m(
    f"{P}_budget_fallback_active", "gauge", (L_BACKEND,),
    "1 while the shared budget backend is unreachable and this process's local fallback ledger decides.",
    area="cost",
)
TAG_VALUES_FOLDED = _m(
    f"{P}_tag_values_folded", "counter", (L_TAG_KEY,),
    "Attribution tag values folded into 'other' because the per-key or combination cap was reached.",
    area="cost",
)
# =========================================================================== end of cost block

ALL_METRICS: tuple[MetricDef, ...] = tuple(v for v in list(globals().values()) if isinstance(v, MetricDef))

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
