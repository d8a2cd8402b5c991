"""Streaming: first chunk, chunk cadence, throughput, stalls, interruptions and resumptions."""

from __future__ import annotations

from dashboards.mixin import MixinConfig
from dashboards.promql import Selectors, legend, panel_selectors, quantile, sum_rate
from dashboards.spec import Dashboard, Panel, Query, Row
from middleware.telemetry.names import (
    ADAPTIVE_THRESHOLD,
    CHECKPOINTS_WRITTEN,
    FORCED_STREAMS,
    L_CAUSE,
    L_CHECKPOINT_BACKEND,
    L_MODEL,
    L_OPERATION,
    L_OUTCOME,
    L_REASON,
    L_STREAM_END,
    STREAM_CHUNKS,
    STREAM_DURATION,
    STREAM_ENDS,
    STREAM_INTERRUPTIONS,
    STREAM_RESUME_LOST,
    STREAM_RESUMPTIONS,
    STREAM_STALLS,
    STREAM_THROUGHPUT,
    STREAMS_ACTIVE,
    TIME_PER_OUTPUT_CHUNK,
    TIME_TO_FIRST_CHUNK,
    MetricDef,
    bucket,
    total,
)


def _quantiles(sel: Selectors, m: MetricDef, qs: tuple[float, ...]) -> tuple[Query, ...]:
    s = sel(m, bucket(m))
    return tuple(Query(quantile(q, s, (L_MODEL,)), f"p{round(q * 100)} " + legend(L_MODEL)) for q in qs)


def build(cfg: MixinConfig) -> Dashboard:
    """The Streaming dashboard for `cfg`."""
    sel = panel_selectors(cfg)
    return Dashboard(
        uid="llm-streaming",
        title="LLM middleware / Streaming",
        description="Streamed calls: time to first chunk, chunk cadence, throughput, stalls, interruptions, "
                    "resumptions.",
        rows=(
            Row("Responsiveness", (
                Panel("Time to first chunk p50 / p95", "Wait before the first streamed chunk; a p95 above "
                      f"{cfg.ttfc_p95_max_s:g}s raises LlmTimeToFirstChunkHigh. p95 rising: upstream queueing or "
                      "long prompts; click an exemplar for the trace.", "s",
                      _quantiles(sel, TIME_TO_FIRST_CHUNK, (0.5, 0.95)), exemplars=True,
                      thresholds=((cfg.ttfc_p95_max_s, "red"),)),
                Panel("Time per chunk p50 / p95", "Gap between consecutive chunks. Rising p95 with stable p50: bursts "
                      "of slowness upstream; compare with stalls.", "s",
                      _quantiles(sel, TIME_PER_OUTPUT_CHUNK, (0.5, 0.95)), exemplars=True),
                Panel("Stream duration p50 / p95 / p99", "Whole-stream duration. Exemplars link to the slowest "
                      "streams' traces: open them to see stalls, resumptions and chunk timing.", "s",
                      _quantiles(sel, STREAM_DURATION, (0.5, 0.95, 0.99)), exemplars=True),
            )),
            Row("Throughput", (
                Panel("Chunks per second", "Streamed chunks received per second. Falling with steady stream counts: "
                      "upstream slowed down.", "ops",
                      (Query(sum_rate(sel(STREAM_CHUNKS), (L_MODEL,)), legend(L_MODEL)),)),
                Panel("Output tokens per second per stream", "Median and slow-end (p10) token throughput of "
                      "finished streams. A median below "
                      f"{cfg.throughput_collapse_factor:.0%} of the last hour's (LlmStreamThroughputCollapse): "
                      "provider degradation; consider another model.", "short",
                      (*_quantiles(sel, STREAM_THROUGHPUT, (0.5, 0.1)),), exemplars=True),
                Panel("Active streams", "Streams open now. Growing without bound: streams are not closed by callers "
                      "(leak) or hang; check abandoned ends and stalls.", "short",
                      (Query(f"sum by ({L_OPERATION}) ({sel(STREAMS_ACTIVE)})", legend(L_OPERATION)),)),
            )),
            Row("Failures and recovery", (
                Panel("Stream ends by state", "How streams ended. 'abandoned' means callers dropped the stream "
                      "without closing it; 'error' rising: look at interruptions by cause.", "ops",
                      (Query(sum_rate(sel(STREAM_ENDS), (L_STREAM_END,)), legend(L_STREAM_END)),)),
                Panel("Stalls", "Streams idle longer than the stall timeout (alert above "
                      f"{cfg.stream_stall_ratio_max:.0%} of streams). Rising: upstream hangs; lower the timeout only "
                      "if resumption works.", "ops",
                      (Query(sum_rate(sel(STREAM_STALLS), (L_MODEL,)), legend(L_MODEL)),)),
                Panel("Interruptions by cause", "Streams interrupted (stall, connection, server_error, malformed); "
                      f"alert above {cfg.stream_interruption_ratio_max:.0%} of streams. Connection: network path; "
                      "server_error: provider; malformed: SDK or proxy issue.", "ops",
                      (Query(sum_rate(sel(STREAM_INTERRUPTIONS), (L_CAUSE,)), legend(L_CAUSE)),)),
                Panel("Resumptions by outcome", "Resumption attempts (alert when more than "
                      f"{cfg.resumption_failure_ratio_max:.0%} fail). Failures: checkpoints lost or the upstream "
                      "response expired; check the checkpoint store.", "ops",
                      (Query(sum_rate(sel(STREAM_RESUMPTIONS), (L_OUTCOME,)), legend(L_OUTCOME)),)),
                Panel("Seconds lost to interruptions", "Seconds lost per second (interruption to next chunk). High: "
                      "resumption is slow; check backoff and the provider.", "s",
                      (Query(sum_rate(sel(STREAM_RESUME_LOST, total(STREAM_RESUME_LOST)), (L_MODEL,)),
                             legend(L_MODEL)),)),
                Panel("Checkpoints written", "Checkpoints per second by backend. Zero while streams run: "
                      "checkpointing is disabled or its store fails.", "ops",
                      (Query(sum_rate(sel(CHECKPOINTS_WRITTEN), (L_CHECKPOINT_BACKEND,)),
                             legend(L_CHECKPOINT_BACKEND)),)),
            )),
            Row("Forced streaming", (
                Panel("Forced streams", "Non-streaming calls sent as streams, by reason. Unexpected volume: review "
                      "the threshold below.", "ops",
                      (Query(sum_rate(sel(FORCED_STREAMS), (L_MODEL, L_REASON)), legend(L_MODEL, L_REASON)),)),
                Panel("Adaptive threshold", "Max-output-token threshold above which calls are streamed. Oscillating: "
                      "the latency signal is noisy; pin a static threshold.", "short",
                      (Query(f"max by ({L_MODEL}) ({sel(ADAPTIVE_THRESHOLD)})", legend(L_MODEL)),)),
            )),
        ),
    )
