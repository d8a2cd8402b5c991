"""Helpers to write promtool input series from metric definitions and the mixin config (no retyped names).

Test series carry every label the rules group by and satisfy the config's selector, so the rendered
rule tests pass for a user's own config too. With a selector, :func:`decoys` adds a copy of each
input series that the selector excludes (and that belongs to another group): if any query forgot the
selector, that copy would fire an extra alert and the promtool test would fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from dashboards.mixin import Matcher, MixinConfig
from dashboards.promql import INSTANCE, JOB, LE
from dashboards.rules.model import Series
from middleware.telemetry.names import L_MODEL, L_OPERATION, MetricDef, bucket

TEST_JOB = "demo"
TEST_INSTANCE = "demo:9464"
TEST_MODEL = "gpt-4o"
TEST_OPERATION = "chat"
INF = "+Inf"
_DEFAULTS = {JOB: TEST_JOB, INSTANCE: TEST_INSTANCE}


def _satisfying(label: str, matchers: Iterable[Matcher], candidates: Iterable[str]) -> str | None:
    on_label = [m for m in matchers if m.label == label]
    for value in candidates:
        if all(m.matches(value) for m in on_label):
            return value
    return None


def _candidates(label: str, matchers: Iterable[Matcher]) -> list[str]:
    own = [m for m in matchers if m.label == label]
    out = [m.value for m in own if m.op == "="]
    for m in own:
        if m.op == "=~":
            out += [alt.strip("()^$") for alt in m.value.split("|")]
    return [*out, _DEFAULTS.get(label, f"test-{label}"), f"{label}-1"]


def scope_labels(cfg: MixinConfig) -> dict[str, str]:
    """Label values of the test series: job, instance, every group-by label, all satisfying the selector."""
    labels: dict[str, str] = {}
    for label in dict.fromkeys([JOB, INSTANCE, *cfg.group_by, *(m.label for m in cfg.matchers)]):
        value = _satisfying(label, cfg.matchers, _candidates(label, cfg.matchers))
        if value is None:
            raise ValueError(f"no test value of label {label!r} satisfies the selector {cfg.selector!r}")
        labels[label] = value
    return labels


def decoy_labels(cfg: MixinConfig) -> dict[str, str] | None:
    """Labels that put a copy of a test series outside the selector and in another group (None without one)."""
    if not cfg.matchers:
        return None
    scope = scope_labels(cfg)
    out: dict[str, str] = {}
    for label in dict.fromkeys(m.label for m in cfg.matchers):
        own = [m for m in cfg.matchers if m.label == label]
        candidates = [f"decoy-{label}", "decoy", "", *(m.value for m in own), scope[label] + "-decoy"]
        value = next((v for v in candidates if not all(m.matches(v) for m in own)), None)
        if value is None:
            return None
        out[label] = value
    first = cfg.group_by[0]
    if first not in out:
        out[first] = scope.get(first, "") + "-decoy"
    return out


def series(cfg: MixinConfig, m: MetricDef, values: str, labels: Mapping[str, str] | None = None,
           family: str | None = None) -> Series:
    """An input series of `m` with the scope labels (and model/operation when the metric has them)."""
    all_labels = scope_labels(cfg)
    if L_MODEL in m.labels:
        all_labels[L_MODEL] = TEST_MODEL
    if L_OPERATION in m.labels:
        all_labels[L_OPERATION] = TEST_OPERATION
    extra = dict(labels or {})
    allowed = set(m.labels) | {LE}
    unknown = set(extra) - allowed
    if unknown:
        raise ValueError(f"{m.name} has no labels {unknown}")
    all_labels.update(extra)
    return Series(family or m.prom_name, all_labels, values)


def histogram(cfg: MixinConfig, m: MetricDef, values_for: Callable[[float], str],
              labels: Mapping[str, str] | None = None) -> tuple[Series, ...]:
    """Bucket series of `m`, one per bound (and +Inf), with the values `values_for(bound)`."""
    bounds = [*map(float, m.buckets), math.inf]
    return tuple(
        series(cfg, m, values_for(b), {**(labels or {}), LE: INF if math.isinf(b) else repr(b)}, bucket(m))
        for b in bounds
    )


def above(bound: float, values: str, zero: str) -> Callable[[float], str]:
    """Every observation above `bound`: bounds from `bound` up get `values`, lower ones `zero`."""
    return lambda b: values if b >= bound else zero


def beyond(m: MetricDef, threshold: float) -> float:
    """A bucket bound whose bucket lies entirely above `threshold` (for `above`): any quantile of
    observations there exceeds the threshold."""
    bounds = sorted(float(b) for b in m.buckets)
    lower = next((b for b in bounds if b >= threshold), math.inf)
    return next((b for b in bounds if b > lower), math.inf)


def job_labels(cfg: MixinConfig, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Expected alert labels: the group-by labels of the test series plus `extra`."""
    scope = scope_labels(cfg)
    return {**{g: scope[g] for g in cfg.group_by}, **(extra or {})}


def job_model(cfg: MixinConfig) -> dict[str, str]:
    """Expected labels of a per group-and-model alert."""
    return job_labels(cfg, {L_MODEL: TEST_MODEL})
