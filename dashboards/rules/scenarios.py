"""Helpers to write promtool input series from metric definitions (no retyped names)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from dashboards.promql import INSTANCE, JOB, LE
from dashboards.rules.model import Series
from middleware.telemetry.names import L_MODEL, L_OPERATION, MetricDef, bucket

TEST_JOB = "demo"
TEST_INSTANCE = "demo:9464"
TEST_MODEL = "gpt-4o"
TEST_OPERATION = "chat"
INF = "+Inf"


def series(m: MetricDef, values: str, labels: Mapping[str, str] | None = None, family: str | None = None) -> Series:
    """An input series of `m` with job/instance (and model/operation when the metric has them)."""
    all_labels = {JOB: TEST_JOB, INSTANCE: TEST_INSTANCE}
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
    body = ", ".join(f'{k}="{v}"' for k, v in sorted(all_labels.items()))
    return Series(f"{family or m.prom_name}{{{body}}}", values)


def histogram(m: MetricDef, values_for: Callable[[float], str],
              labels: Mapping[str, str] | None = None) -> tuple[Series, ...]:
    """Bucket series of `m`, one per bound (and +Inf), with the values `values_for(bound)`."""
    bounds = [*map(float, m.buckets), math.inf]
    return tuple(
        series(m, values_for(b), {**(labels or {}), LE: INF if math.isinf(b) else repr(b)}, bucket(m)) for b in bounds
    )


def above(bound: float, values: str, zero: str) -> Callable[[float], str]:
    """Every observation above `bound`: bounds from `bound` up get `values`, lower ones `zero`."""
    return lambda b: values if b >= bound else zero


def job_labels(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Expected alert labels: the job of the test series plus `extra`."""
    return {JOB: TEST_JOB, **(extra or {})}


def job_model() -> dict[str, str]:
    """Expected labels of a per job-and-model alert."""
    return job_labels({L_MODEL: TEST_MODEL})
