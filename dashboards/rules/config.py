"""Tunable objectives and thresholds of the generated rules."""

from __future__ import annotations

from dataclasses import dataclass

from middleware.telemetry.names import DURATION_BUCKETS


@dataclass(frozen=True)
class RulesConfig:
    """Objectives and thresholds; change them here and re-render (``python -m dashboards``)."""

    availability_objective: float = 0.995  # share of calls that succeed
    latency_objective: float = 0.99  # share of calls faster than latency_threshold_s
    latency_threshold_s: float = 10.24  # must be a bucket boundary of the duration histogram
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

    def __post_init__(self) -> None:
        if self.latency_threshold_s not in DURATION_BUCKETS:
            raise ValueError(f"latency threshold {self.latency_threshold_s} is not a bucket boundary")

    @property
    def latency_le(self) -> str:
        """The `le` label value of the threshold bucket as Prometheus clients write it."""
        return repr(float(self.latency_threshold_s))
