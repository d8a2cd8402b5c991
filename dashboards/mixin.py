"""The mixin config: the one object every dashboard, rule, rule test and Kubernetes object is rendered from.

As in the kubernetes and node mixins, a user renders their own copy by changing the config, never the
generated files: a selector scoping every query of every panel and rule to their series (job,
namespace, cluster...), the labels rules aggregate by, the SLO objectives and alert thresholds (which
the dashboards reuse: a panel never retypes a rule threshold), where runbooks live, and the metadata
of the Kubernetes forms (``PrometheusRule``, dashboard ``ConfigMap`` objects for the Grafana sidecar).

    middleware dashboards render --selector 'job="my-api"' --out DIR
    middleware dashboards render --config my-mixin.yaml --out DIR

The default config renders exactly what ``deploy/`` and ``docs/runbooks/`` hold.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from middleware.telemetry.names import DURATION_BUCKETS

JOB = "job"
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True)
class Matcher:
    """One PromQL label matcher, e.g. ``job="my-api"``."""

    label: str
    op: str
    value: str

    def __str__(self) -> str:
        return f'{self.label}{self.op}"{self.value}"'

    def matches(self, value: str) -> bool:
        """Whether a label value satisfies this matcher (regexes anchored, as in Prometheus)."""
        text = self.value.encode().decode("unicode_escape")
        if self.op == "=":
            return value == text
        if self.op == "!=":
            return value != text
        hit = re.fullmatch(text, value) is not None
        return hit if self.op == "=~" else not hit


def parse_selector(text: str) -> tuple[Matcher, ...]:
    """The matchers of a selector such as ``job="my-api", namespace=~"prod|staging"`` (braces optional)."""
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    if not body.strip():
        return ()
    out: list[Matcher] = []
    pos = 0
    while pos < len(body):
        m = _MATCHER.match(body, pos)
        if m is None:
            raise ValueError(f"bad selector {text!r} at {body[pos:]!r}: expected label=\"value\" (=, !=, =~, !~)")
        if m.group(2) in ("=~", "!~"):
            try:
                re.compile(m.group(3).encode().decode("unicode_escape"))
            except re.error as exc:
                raise ValueError(f"bad regex in selector {text!r}: {exc}") from None
        out.append(Matcher(m.group(1), m.group(2), m.group(3)))
        pos = m.end()
        if pos < len(body):
            if body[pos] != ",":
                raise ValueError(f"bad selector {text!r}: expected ',' at {body[pos:]!r}")
            pos += 1
    return tuple(out)


@dataclass(frozen=True)
class MixinConfig:
    """Selectors, aggregation labels, objectives and thresholds, and Kubernetes metadata.

    Change a field and re-render; the rules, their promtool tests, the runbooks and the dashboards
    all follow.
    """

    # --- scope
    selector: str = ""  # PromQL matchers added to every series selector of every panel and rule
    group_by: tuple[str, ...] = (JOB,)  # labels every rule keeps when it aggregates (add cluster, namespace)
    # --- SLOs
    availability_objective: float = 0.995  # share of calls that succeed
    latency_objective: float = 0.99  # share of calls faster than latency_threshold_s
    latency_threshold_s: float = 10.24  # must be a bucket boundary of the duration histogram
    # --- alert thresholds (the dashboards draw and quote the same values)
    anomaly_sigmas: float = 3.0
    anomaly_min_relative_change: float = 0.25
    anomaly_min_request_rate: float = 0.01  # req/s below which request-rate anomalies are ignored
    anomaly_min_token_rate: float = 1.0  # tokens/s below which token anomalies are ignored
    retry_ratio_max: float = 0.2
    terminal_ratio_max: float = 0.05
    server_error_ratio_max: float = 0.05
    throttle_wait_p95_max_s: float = 5.0
    rate_limited_max_per_s: float = 0.05
    remaining_capacity_min: float = 0.1
    estimate_error_p90_max: float = 0.15
    ttfc_p95_max_s: float = 5.0
    stream_interruption_ratio_max: float = 0.05
    stream_stall_ratio_max: float = 0.05
    resumption_failure_ratio_max: float = 0.2
    throughput_collapse_factor: float = 0.5
    file_refusals_min_per_s: float = 0.1
    file_refusals_spike_factor: float = 3.0
    # --- cost (issue 16)
    budget_projected_share_max: float = 1.0  # budget burn alerts: projected spend at the period's end / limit
    unpriced_share_max: float = 0.05  # share of calls that could not be priced
    anomaly_min_spend_rate: float = 0.0001  # USD/s below which spend anomalies are ignored ($0.36 an hour)
    # --- links and Kubernetes forms
    runbook_url: str = "docs/runbooks/{alert}.md"  # {alert} is replaced by the alert name
    namespace: str = "monitoring"  # of the PrometheusRule and the dashboard ConfigMaps
    name: str = "llm-middleware"  # prefix of the Kubernetes object names
    rule_labels: Mapping[str, str] = field(default_factory=dict)  # e.g. {"release": "kube-prometheus-stack"}
    grafana_folder: str = ""  # the sidecar's folder annotation (grafana_folder), empty for none

    def __post_init__(self) -> None:
        if self.latency_threshold_s not in DURATION_BUCKETS:
            raise ValueError(f"latency threshold {self.latency_threshold_s} is not a bucket boundary")
        parse_selector(self.selector)
        if not self.group_by or not all(_LABEL.fullmatch(g) for g in self.group_by):
            raise ValueError(f"group_by must be label names, got {self.group_by!r}")
        if not self.budget_projected_share_max > 0:
            raise ValueError("budget_projected_share_max must be > 0")
        if not 0 < self.unpriced_share_max < 1:
            raise ValueError("unpriced_share_max must be in (0, 1)")
        if "{alert}" not in self.runbook_url:
            raise ValueError("runbook_url must contain {alert}")
        object.__setattr__(self, "group_by", tuple(self.group_by))
        object.__setattr__(self, "rule_labels", dict(self.rule_labels))

    @property
    def matchers(self) -> tuple[Matcher, ...]:
        """The selector's matchers."""
        return parse_selector(self.selector)

    @property
    def latency_le(self) -> str:
        """The `le` label value of the threshold bucket as Prometheus clients write it."""
        return repr(float(self.latency_threshold_s))

    def runbook_link(self, alert: str) -> str:
        """The runbook URL of one alert."""
        return self.runbook_url.replace("{alert}", alert)

    def with_overrides(self, **changes: Any) -> MixinConfig:
        """A copy with some fields changed (validated like the original)."""
        return dataclasses.replace(self, **changes)


def load_config(path: Path | None = None, **overrides: Any) -> MixinConfig:
    """A config from a YAML or JSON mapping of field names (unknown fields are refused), then overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        import yaml

        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of MixinConfig fields")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(MixinConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown mixin config fields {sorted(unknown)}; known: {sorted(known)}")
    if isinstance(values.get("group_by"), str):
        values["group_by"] = tuple(g.strip() for g in values["group_by"].split(",") if g.strip())
    elif "group_by" in values:
        values["group_by"] = tuple(values["group_by"])
    return MixinConfig(**values)


DEFAULT = MixinConfig()
