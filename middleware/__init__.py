"""Observability-first middleware for the OpenAI Python SDK.

Three ways in: ``opentelemetry-instrument python app.py`` (no code: the ``llm_middleware`` instrumentor,
:mod:`middleware.instrumentation`), ``install()`` (every client constructed afterwards, one pipeline) and
``protect(client)`` (one client). ``import middleware`` patches nothing.

``protect(client)`` wraps an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` client: every chat
completion, response and embedding call is estimated, admitted against requests- and
tokens-per-minute limits, retried with backoff, streamed with stall detection and resumption,
priced from the usage the API reports (attributed with ``tags(...)``, capped by budgets), and observed
(OpenTelemetry spans and metrics, Prometheus ``/metrics`` with exemplars).
"""

import logging as _logging

from ._version import __version__
from .client import pipeline_of, protect
from .config import Config, StreamConfig
from .cost import BudgetExceeded, CostConfig, TagConfig, tags
from .errors import (
    AttemptRecord,
    CheckpointNotFound,
    CircuitOpenError,
    ConfigError,
    FileOperationError,
    MiddlewareError,
    PartialResult,
    RedisUnavailable,
    RequestTooLarge,
    RetryAfterTooLong,
    StreamInterrupted,
    ThrottleTimeout,
    attempt_history,
)
from .install import install, installed, uninstall
from .limits import LimitConfig
from .redisconn import RedisConfig
from .retry import RateLimitWaitExceeded, RetryConfig
from .telemetry.setup import TelemetryHandle, setup_telemetry

__all__ = [
    "AttemptRecord",
    "BudgetExceeded",
    "CheckpointNotFound",
    "CircuitOpenError",
    "Config",
    "ConfigError",
    "CostConfig",
    "FileOperationError",
    "LimitConfig",
    "MiddlewareError",
    "PartialResult",
    "RateLimitWaitExceeded",
    "RedisConfig",
    "RedisUnavailable",
    "RequestTooLarge",
    "RetryAfterTooLong",
    "RetryConfig",
    "StreamConfig",
    "StreamInterrupted",
    "TagConfig",
    "TelemetryHandle",
    "ThrottleTimeout",
    "__version__",
    "attempt_history",
    "install",
    "installed",
    "pipeline_of",
    "protect",
    "setup_telemetry",
    "tags",
    "uninstall",
]

# Library etiquette: records go to the "middleware" logger; where they end up is the application's choice.
_logging.getLogger("middleware").addHandler(_logging.NullHandler())
