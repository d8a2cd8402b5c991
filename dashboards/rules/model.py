"""Data model of the generated Prometheus rules, their promtool tests and runbooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dashboards.promql import format_duration, parse_duration, scale_duration

Severity = Literal["critical", "warning"]


def label_ref(label: str) -> str:
    """`{{ $labels.<label> }}`: a label's value in an alert annotation."""
    return "{{ $labels." + label + " }}"


@dataclass(frozen=True)
class Windows:
    """Scales every window, `for:` and offset so that a test can run hours of rules in minutes."""

    scale: float = 1.0

    def __call__(self, duration: str) -> str:
        """`duration` divided by the scale."""
        return scale_duration(duration, self.scale)


@dataclass(frozen=True)
class Recording:
    """One recording rule."""

    record: str
    expr: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Series:
    """One promtool input series: a metric name, its labels and an expanding-notation `values`."""

    name: str
    labels: dict[str, str]
    values: str

    @property
    def series(self) -> str:
        """The series as promtool reads it, e.g. `x_total{job="demo", model="gpt-4o"}`."""
        body = ", ".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{self.name}{{{body}}}"

    def relabel(self, labels: dict[str, str]) -> Series:
        """The same series with some labels replaced."""
        return Series(self.name, {**self.labels, **labels}, self.values)


@dataclass(frozen=True)
class Scenario:
    """Input under which the alert's condition first holds at `starts` (then fires at `starts + for`)."""

    inputs: tuple[Series, ...]
    starts: str
    labels: dict[str, str]
    interval: str = "1m"


@dataclass(frozen=True)
class Runbook:
    """What the alert means and what to do."""

    meaning: str
    impact: str
    diagnosis: str
    mitigation: str
    dashboard: str  # dashboard uid


@dataclass(frozen=True)
class Alert:
    """One alerting rule with its runbook and its promtool scenarios."""

    name: str
    expr: str
    for_: str
    severity: Severity
    summary: str
    description: str
    runbook: Runbook
    scenarios: tuple[Scenario, ...]
    labels: dict[str, str] = field(default_factory=dict)

    def fires_at(self, scenario: Scenario) -> str:
        """Evaluation time at which the alert must be firing."""
        return format_duration(parse_duration(scenario.starts) + parse_duration(self.for_))


@dataclass(frozen=True)
class Group:
    """A rule group rendered into one file."""

    name: str
    file: str
    recordings: tuple[Recording, ...] = ()
    alerts: tuple[Alert, ...] = ()
    interval: str | None = None
