"""Closed label values the dashboards and rules select on.

They are defined in ``middleware.telemetry.names`` (the one names module) and re-exported
here for the queries.
"""

from __future__ import annotations

from middleware.telemetry.names import (
    ATTEMPT_RETRYABLE,
    ATTEMPT_SUCCESS,
    ATTEMPT_TERMINAL,
    BREAKER_OPEN_VALUE,
    DECISION_REFUSED,
    DECISION_WAITED,
    EXEMPLAR_TRACE_ID,
    KIND_ACTUAL,
    KIND_ESTIMATED,
    REASON_INSUFFICIENT_QUOTA,
    REASON_SERVER_ERROR,
    RESOURCE_REQUESTS,
    RESOURCE_TOKENS,
    RESUME_FAILURE,
    RESUME_SUCCESS,
)

__all__ = [
    "ATTEMPT_RETRYABLE",
    "ATTEMPT_SUCCESS",
    "ATTEMPT_TERMINAL",
    "BREAKER_OPEN_VALUE",
    "DECISION_REFUSED",
    "DECISION_WAITED",
    "EXEMPLAR_TRACE_ID",
    "KIND_ACTUAL",
    "KIND_ESTIMATED",
    "REASON_INSUFFICIENT_QUOTA",
    "REASON_SERVER_ERROR",
    "RESOURCE_REQUESTS",
    "RESOURCE_TOKENS",
    "RESUME_FAILURE",
    "RESUME_SUCCESS",
]
