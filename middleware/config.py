"""One Config object for the whole middleware; ``Config.from_env()`` reads ``MIDDLEWARE_*`` variables."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from .cost import CostConfig
from .errors import ConfigError
from .limits import LimitConfig
from .retry import RetryConfig


@dataclass(frozen=True)
class StreamConfig:
    """Streaming behaviour: forced streaming, stall detection, resumption and checkpoints."""

    force_stream_above_tokens: int | None = 4096
    """Non-streaming calls whose max output tokens exceed this are sent as streams (None: never)."""
    adaptive_threshold: bool = False
    """Learn the threshold per model from observed time to first token and output rate."""
    adaptive_target_seconds: float = 60.0
    """With the adaptive threshold: stream calls expected to take longer than this."""
    idle_timeout_seconds: float = 120.0
    """No chunk for this long: the stream counts as stalled (broken) and is resumed."""
    resume: bool = True
    max_resumptions: int = 3
    return_partial: bool = False
    """On an unrecoverable interruption return the partial result instead of raising StreamInterrupted."""
    checkpoint_dir: Path | None = None
    checkpoint_redis_url: str | None = None
    checkpoint_every_chunks: int = 200
    checkpoint_ttl_seconds: float = 24 * 3600.0
    checkpoint_replay_headers: tuple[str, ...] = ("openai-beta", "openai-organization", "openai-project")
    """Request headers a checkpoint stores to replay (an allow-list; never put credentials here)."""
    force_background: bool = False
    """Send streaming Responses calls with ``background: true`` so that a broken stream can be resumed."""
    on_progress: Callable[[Any], None] | None = None
    """Called with a ``middleware.streaming.Progress`` about every ``progress_interval_seconds``."""
    progress_interval_seconds: float = 0.5


@dataclass(frozen=True)
class Config:
    """Everything the protected client needs; every field has a safe default."""

    limits: LimitConfig = field(default_factory=LimitConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    streaming: StreamConfig = field(default_factory=StreamConfig)
    limiter_scope: Literal["model", "shared"] = "model"
    """"model": one budget per API key and model; "shared": one budget per API key (an organisation's limit)."""
    reserve_output: Literal["max", "predicted"] = "max"
    """Reserve the request's max output tokens, or the learned prediction when history justifies less."""
    default_encoding: str = "o200k_base"
    capture_content: bool | None = None
    """Record message content in spans; None reads OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT."""
    model_label_cap: int = 50
    cost: CostConfig = field(default_factory=CostConfig)
    """Prices, attribution tags and budgets (``middleware.cost``)."""

    def with_(self, **changes: Any) -> Config:
        """A copy with some fields changed."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build a Config from ``MIDDLEWARE_*`` variables (see docs/configuration.md)."""
        e = os.environ if env is None else env
        limits = LimitConfig(
            requests_per_window=_float(e, "MIDDLEWARE_RPM"),
            tokens_per_window=_float(e, "MIDDLEWARE_TPM"),
            window_seconds=_float(e, "MIDDLEWARE_WINDOW_SECONDS"),
            requests_per_day=_float(e, "MIDDLEWARE_RPD"),
            tokens_per_day=_float(e, "MIDDLEWARE_TPD"),
            max_wait_seconds=_float(e, "MIDDLEWARE_MAX_WAIT_SECONDS") or 60.0,
            redis_url=e.get("MIDDLEWARE_REDIS_URL") or None,
        )
        retry = RetryConfig(
            max_attempts=int(_float(e, "MIDDLEWARE_MAX_ATTEMPTS") or RetryConfig().max_attempts),
            max_retry_after=_or(_float(e, "MIDDLEWARE_MAX_RETRY_AFTER"), RetryConfig().max_retry_after),
            redis_url=e.get("MIDDLEWARE_REDIS_URL") or None,
            breaker_max_wait_seconds=_or(_float(e, "MIDDLEWARE_BREAKER_MAX_WAIT"),
                                         RetryConfig().breaker_max_wait_seconds),
        )
        stream_defaults = StreamConfig()
        threshold = e.get("MIDDLEWARE_FORCE_STREAM_ABOVE")
        streaming = replace(
            stream_defaults,
            force_stream_above_tokens=(
                None if threshold in ("", "none", "off") else int(threshold)
            ) if threshold is not None else stream_defaults.force_stream_above_tokens,
            adaptive_threshold=e.get("MIDDLEWARE_ADAPTIVE_STREAMING", "").lower() in ("1", "true", "yes"),
            idle_timeout_seconds=_float(e, "MIDDLEWARE_STREAM_IDLE_TIMEOUT") or stream_defaults.idle_timeout_seconds,
            checkpoint_dir=Path(e["MIDDLEWARE_CHECKPOINT_DIR"]) if e.get("MIDDLEWARE_CHECKPOINT_DIR") else None,
            checkpoint_redis_url=e.get("MIDDLEWARE_CHECKPOINT_REDIS_URL") or None,
        )
        scope = e.get("MIDDLEWARE_LIMITER_SCOPE", "model")
        reserve = e.get("MIDDLEWARE_RESERVE_OUTPUT", "max")
        if scope not in ("model", "shared"):
            raise ConfigError(f"MIDDLEWARE_LIMITER_SCOPE must be 'model' or 'shared', not {scope!r}")
        if reserve not in ("max", "predicted"):
            raise ConfigError(f"MIDDLEWARE_RESERVE_OUTPUT must be 'max' or 'predicted', not {reserve!r}")
        return cls(limits=limits, retry=retry, streaming=streaming, limiter_scope=scope,  # type: ignore[arg-type]
                   reserve_output=reserve, cost=CostConfig.from_env(e))  # type: ignore[arg-type]


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None


def config_fields() -> list[str]:
    """Names of the top-level config fields (for docs)."""
    return [f.name for f in fields(Config)]
