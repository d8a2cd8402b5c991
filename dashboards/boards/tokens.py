"""Token estimation: estimators, estimate error, tokenizer fallback, predicted vs actual."""

from __future__ import annotations

from dashboards.mixin import MixinConfig
from dashboards.promql import legend, panel_selectors, quantile, sum_rate
from dashboards.spec import Dashboard, Panel, Query, Row
from dashboards.values import KIND_ACTUAL, KIND_ESTIMATED
from middleware.telemetry.names import (
    ESTIMATE_BIAS_TOKENS,
    ESTIMATE_ERROR,
    ESTIMATED_TOKENS,
    L_ESTIMATE_KIND,
    L_ESTIMATOR,
    L_MODEL,
    L_TOKEN_SOURCE,
    L_TOKEN_TYPE,
    TOKEN_ESTIMATES,
    TOKENIZER_FALLBACK,
    bucket,
)

_LABELS = (L_MODEL, L_TOKEN_TYPE)


def build(cfg: MixinConfig) -> Dashboard:
    """The Token estimation dashboard for `cfg`."""
    sel = panel_selectors(cfg)
    err = sel(ESTIMATE_ERROR, bucket(ESTIMATE_ERROR))

    def bias(source: str) -> str:
        return sum_rate(sel(ESTIMATE_BIAS_TOKENS, eq={L_TOKEN_SOURCE: source}), _LABELS)

    return Dashboard(
        uid="llm-token-estimation",
        title="LLM middleware / Token estimation",
        description="How well tokens are estimated before calls: estimators, error, fallback and bias.",
        rows=(
            Row("Estimates", (
                Panel("Estimates by estimator", "Estimates per second by estimator. Any 'fallback' share: tokenizer "
                      "data is missing (TIKTOKEN_CACHE_DIR); estimates are then coarse.", "ops",
                      (Query(sum_rate(sel(TOKEN_ESTIMATES), (L_MODEL, L_ESTIMATOR)),
                             legend(L_MODEL, L_ESTIMATOR)),)),
                Panel("Tokenizer fallback active", "1 when tokenizer data could not be loaded. Provide the encodings "
                      "(see tiktoken_cache/README.md) and restart.", "short",
                      (Query(f"max({sel(TOKENIZER_FALLBACK)})", "fallback"),), kind="stat",
                      thresholds=((1, "red"),)),
                Panel("Estimated tokens p50 by kind", "Median estimated prompt, max output and predicted output "
                      "tokens. max_output far above predicted: callers oversize max_tokens.", "short",
                      (Query(quantile(0.5, sel(ESTIMATED_TOKENS, bucket(ESTIMATED_TOKENS)), (L_MODEL, L_ESTIMATE_KIND)),
                             legend(L_MODEL, L_ESTIMATE_KIND)),), exemplars=True),
            )),
            Row("Accuracy", (
                Panel("Estimate error ratio p50 / p90", "|estimated - actual| / actual by model and token type. p90 "
                      f"above {cfg.estimate_error_p90_max:.0%} (LlmTokenEstimateDrift): the estimator misses part of "
                      "the request (tools, images) or the model's encoding changed.", "percentunit",
                      (Query(quantile(0.5, err, _LABELS), "p50 " + legend(*_LABELS)),
                       Query(quantile(0.9, err, _LABELS), "p90 " + legend(*_LABELS))),
                      thresholds=((cfg.estimate_error_p90_max, "red"),)),
                Panel("Predicted vs actual tokens", "Estimated and actual tokens per second. Persistent gaps mean "
                      "biased reservations: the limiter over- or under-books capacity.", "short",
                      (Query(bias(KIND_ESTIMATED), "estimated " + legend(*_LABELS)),
                       Query(bias(KIND_ACTUAL), "actual " + legend(*_LABELS)))),
                Panel("Estimate bias", "Estimated / actual tokens (1 = unbiased). Below 1: under-estimates cause "
                      "429s; above 1: wasted capacity.", "percentunit",
                      (Query(f"{bias(KIND_ESTIMATED)} / {bias(KIND_ACTUAL)}", legend(*_LABELS)),)),
            )),
        ),
    )
