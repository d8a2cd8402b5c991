"""Small PromQL builders shared by the dashboards and the rules.

Every metric and label name comes from :mod:`middleware.telemetry.names`; these
helpers only assemble expressions and check that a matcher names a label the
metric really has.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dashboards.mixin import JOB as JOB
from dashboards.mixin import Matcher, MixinConfig
from middleware.telemetry.names import L_MODEL, TAG_LABELS, MetricDef

INSTANCE = "instance"
# The dashboards' model template variable (a Grafana variable name, filtering the model label).
MODEL_VAR = "model"
LE = "le"
RATE_INTERVAL = "$__rate_interval"

# Template variables and the value used for them when a query is run outside Grafana.
TEMPLATE_DEFAULTS: dict[str, str] = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "1h",
    "$job": ".*",
    "$instance": ".*",
    "$model": ".*",
    # The cost dashboard's tag variables are named after the tag keys that are metric labels.
    **{f"${tag}": ".*" for tag in TAG_LABELS},
}

Matchers = Mapping[str, str]


def _matchers(m: MetricDef, eq: Matchers, regex: Matchers, neq: Matchers, family: str,
              nregex: Matchers | None = None) -> list[str]:
    allowed = set(m.labels) | ({LE} if family.endswith("_bucket") else set())
    out: list[str] = []
    for op, group in (("=", eq), ("=~", regex), ("!=", neq), ("!~", nregex or {})):
        for label, value in group.items():
            if label not in allowed:
                raise ValueError(f"{m.name} has no label {label!r}")
            out.append(f'{label}{op}"{value}"')
    return out


def selector(
    m: MetricDef,
    family: str | None = None,
    eq: Matchers | None = None,
    regex: Matchers | None = None,
    neq: Matchers | None = None,
    *,
    templated: bool = True,
    scope: Sequence[Matcher] = (),
    nregex: Matchers | None = None,
) -> str:
    """`family{...}`: the mixin's `scope` matchers, the dashboard template filters (job, instance, model if
    the metric has it) when `templated`, then the given matchers (checked against the metric's labels)."""
    name = family or m.prom_name
    parts: list[str] = [str(x) for x in scope]
    if templated:
        parts += [f'{JOB}=~"$job"', f'{INSTANCE}=~"$instance"']
        if L_MODEL in m.labels:
            parts.append(f'{L_MODEL}=~"${MODEL_VAR}"')
    parts += _matchers(m, eq or {}, regex or {}, neq or {}, name, nregex)
    return f"{name}{{{', '.join(parts)}}}" if parts else name


@dataclass(frozen=True)
class Selectors:
    """`sel(m, ...)`: `selector` bound to a mixin config's matchers, for panels (templated) or rules."""

    scope: tuple[Matcher, ...] = ()
    templated: bool = True

    def __call__(self, m: MetricDef, family: str | None = None, eq: Matchers | None = None,
                 regex: Matchers | None = None, neq: Matchers | None = None, nregex: Matchers | None = None) -> str:
        return selector(m, family, eq, regex, neq, templated=self.templated, scope=self.scope, nregex=nregex)


def panel_selectors(cfg: MixinConfig) -> Selectors:
    """Selectors for dashboard panels: the config's matchers and the template variables."""
    return Selectors(cfg.matchers, templated=True)


def rule_selectors(cfg: MixinConfig) -> Selectors:
    """Selectors for recording and alerting rules: the config's matchers only."""
    return Selectors(cfg.matchers, templated=False)


def by(labels: Iterable[str]) -> str:
    """`by (a, b)` or an empty string."""
    labels = list(labels)
    return f" by ({', '.join(labels)})" if labels else ""


def sum_rate(sel: str, labels: Iterable[str] = (), window: str = RATE_INTERVAL, fn: str = "rate") -> str:
    """`sum by (labels) (rate(sel[window]))`."""
    return f"sum{by(labels)} ({fn}({sel}[{window}]))"


def quantile(q: float, bucket_sel: str, labels: Iterable[str] = (), window: str = RATE_INTERVAL) -> str:
    """`histogram_quantile(q, sum by (le, labels) (rate(bucket[window])))`."""
    return f"histogram_quantile({q:g}, {sum_rate(bucket_sel, [LE, *labels], window)})"


def legend(*labels: str) -> str:
    """A Grafana legend format naming each label value, e.g. `{{model}} {{outcome}}`."""
    return " ".join("{{" + label + "}}" for label in labels) or "__auto"


def substitute(expr: str, values: Mapping[str, str] | None = None) -> str:
    """Replace Grafana template variables so the expression runs on a plain Prometheus."""
    table = {**TEMPLATE_DEFAULTS, **(values or {})}
    # Longest names first so `$__rate_interval` wins over a hypothetical `$__rate`.
    for var in sorted(table, key=len, reverse=True):
        expr = expr.replace(var, table[var])
    leftover = re.findall(r"\$\w+", expr)
    if leftover:
        raise ValueError(f"unsubstituted template variables {leftover} in {expr}")
    return expr


_UNITS = (("d", 86400_000), ("h", 3600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def parse_duration(text: str) -> int:
    """Milliseconds in a simple Prometheus duration such as `5m`, `1h30m` or `3d`."""
    total = 0
    for number, unit in re.findall(r"(\d+)(ms|[smhdw])", text):
        total += int(number) * {"w": 7 * 86400_000, **dict(_UNITS)}[unit]
    if not total and text not in ("0s", "0m"):
        raise ValueError(f"bad duration {text!r}")
    return total


def format_duration(ms: int) -> str:
    """A Prometheus duration for `ms` milliseconds, largest units first (`90000` -> `1m30s`)."""
    if ms <= 0:
        return "0s"
    out = ""
    for unit, size in _UNITS:
        if ms >= size:
            out += f"{ms // size}{unit}"
            ms %= size
    return out


def scale_duration(text: str, scale: float) -> str:
    """Divide a duration by `scale` (at least one millisecond)."""
    return format_duration(max(1, round(parse_duration(text) / scale))) if scale != 1 else text
