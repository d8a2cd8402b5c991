"""Operations: file reads and refusals, chunking, and the telemetry pipeline's own health."""

from __future__ import annotations

from dashboards.mixin import MixinConfig
from dashboards.promql import LE, legend, panel_selectors, quantile, sum_rate
from dashboards.spec import Dashboard, Panel, Query, Row
from middleware.telemetry.names import (
    CHUNKING_SECONDS,
    FILE_BYTES_READ,
    FILE_CHUNK_SIZE,
    FILE_CHUNKS,
    FILE_TOKENS_READ,
    FILES_READ,
    FILES_REFUSED,
    L_COMPONENT,
    L_REASON,
    MODELS_FOLDED,
    TELEMETRY_ERRORS,
    bucket,
)


def build(cfg: MixinConfig) -> Dashboard:
    """The Operations dashboard for `cfg`."""
    sel = panel_selectors(cfg)
    chunk_buckets = sel(FILE_CHUNK_SIZE, bucket(FILE_CHUNK_SIZE))
    return Dashboard(
        uid="llm-operations",
        title="LLM middleware / Operations",
        description="Confined file reads, token-aware chunking and telemetry health.",
        rows=(
            Row("Files", (
                Panel("Files read and refused", "Files read per second and refusals by reason. 'escape' or "
                      "'special': something tried to read outside the allowed root; investigate the caller. Refusals "
                      f"above {cfg.file_refusals_spike_factor:g}x the last hour's rate raise LlmFileRefusalsSpike.",
                      "ops",
                      (Query(sum_rate(sel(FILES_READ)), "read"),
                       Query(sum_rate(sel(FILES_REFUSED), (L_REASON,)), "refused " + legend(L_REASON)))),
                Panel("Bytes read per second", "Bytes read from files. A spike: a large folder is being processed; "
                      "check token spend next.", "Bps", (Query(sum_rate(sel(FILE_BYTES_READ)), "bytes"),)),
                Panel("Tokens read per second", "Tokens read from files, the input side of the token budget. Compare "
                      "with the Overview's tokens panel.", "short",
                      (Query(sum_rate(sel(FILE_TOKENS_READ)), "tokens"),)),
            )),
            Row("Chunking", (
                Panel("Chunks per second", "Chunks produced from files. Zero while files are read: chunking fails; "
                      "check the application logs.", "ops", (Query(sum_rate(sel(FILE_CHUNKS)), "chunks"),)),
                Panel("Chunk size distribution", "Chunk sizes in tokens over time. Most chunks tiny: the chunk size "
                      "or the input format is wrong; most at the cap: raise the size if the model allows.", "short",
                      (Query(f"sum by ({LE}) (increase({chunk_buckets}[$__rate_interval]))", legend(LE),
                             heatmap=True),),
                      kind="heatmap"),
                Panel("Chunk size p50 / p95", "Median and p95 chunk size in tokens. p95 far from the configured size: "
                      "check the chunker settings and the input files.", "short",
                      (Query(quantile(0.5, chunk_buckets), "p50"), Query(quantile(0.95, chunk_buckets), "p95"))),
                Panel("Chunking throughput", "Bytes chunked per second of chunking time. Falling: the tokenizer is "
                      "slow (fallback?) or files are pathological.", "Bps",
                      (Query(f"{sum_rate(sel(FILE_BYTES_READ))} / {sum_rate(sel(CHUNKING_SECONDS))}",
                             "throughput"),)),
            )),
            Row("Telemetry health", (
                Panel("Telemetry errors", "Swallowed telemetry failures by component. Non-zero: an exporter or the "
                      "collector is unreachable; calls are unaffected but data is lost.", "ops",
                      (Query(sum_rate(sel(TELEMETRY_ERRORS), (L_COMPONENT,)), legend(L_COMPONENT)),)),
                Panel("Model labels folded", "Calls whose model was folded into 'other' at the label cap. Non-zero: "
                      "raise the cap if these are legitimate models.", "ops",
                      (Query(sum_rate(sel(MODELS_FOLDED)), "folded"),)),
            )),
        ),
    )
