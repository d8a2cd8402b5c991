"""Issue 12.4: every bad configuration value is a ConfigError naming the setting, the value and what is allowed.

The allowed/refused decisions come from the issue (garbage, nan, inf, negatives where a duration or a
limit cannot be negative, a Redis URL that is not one; ``0`` is a value) and from what the other tools
on the way would read: a shell or a Go program reads no non-ASCII digits and no ``_`` separators.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from middleware import Config, ConfigError, CostConfig, LimitConfig, RedisConfig, RetryConfig, StreamConfig

BAD_VALUES = [
    ("MIDDLEWARE_FORCE_STREAM_ABOVE", "abc"),  # the examples first
    ("MIDDLEWARE_MAX_ATTEMPTS", "nan"),
    ("MIDDLEWARE_MAX_ATTEMPTS", "inf"),
    ("MIDDLEWARE_STREAM_IDLE_TIMEOUT", "-5"),
    ("MIDDLEWARE_STREAM_IDLE_TIMEOUT", "nan"),
    ("MIDDLEWARE_REDIS_URL", "not-a-url"),
    ("MIDDLEWARE_MAX_ATTEMPTS", "2.5"),  # silently truncated to 2 before
    ("MIDDLEWARE_MAX_ATTEMPTS", "0"),
    ("MIDDLEWARE_MAX_ATTEMPTS", "9" * 5000),  # past int()'s digit limit
    ("MIDDLEWARE_MAX_ATTEMPTS", "1e9"),
    ("MIDDLEWARE_STREAM_IDLE_TIMEOUT", "0"),  # every stream would stall at once
    ("MIDDLEWARE_STREAM_IDLE_TIMEOUT", "1e300"),  # overflows timers
    ("MIDDLEWARE_RPM", "-1"),
    ("MIDDLEWARE_RPM", "0"),
    ("MIDDLEWARE_RPM", "1e400"),  # float() says inf
    ("MIDDLEWARE_RPM", "\u0661\u0662\u0663"),  # Arabic-Indic digits: float() accepts them
    ("MIDDLEWARE_RPM", "\uff15\uff10\uff10"),  # full-width 500
    ("MIDDLEWARE_RPM", "1_000"),
    ("MIDDLEWARE_TPM", "Infinity"),
    ("MIDDLEWARE_WINDOW_SECONDS", "-inf"),
    ("MIDDLEWARE_MAX_WAIT_SECONDS", "-1"),
    ("MIDDLEWARE_MAX_WAIT_SECONDS", "inf"),
    ("MIDDLEWARE_MAX_RETRY_AFTER", "nan"),
    ("MIDDLEWARE_BREAKER_MAX_WAIT", "-0.5"),
    ("MIDDLEWARE_FORCE_STREAM_ABOVE", "-1"),
    ("MIDDLEWARE_FORCE_STREAM_ABOVE", "4096.5"),
    ("MIDDLEWARE_ADAPTIVE_STREAMING", "maybe"),  # silently false before
    ("MIDDLEWARE_REDIS_URL", "http://127.0.0.1:6379/0"),
    ("MIDDLEWARE_REDIS_URL", "redis://"),
    ("MIDDLEWARE_REDIS_URL", "redis://cache:99999/0"),
    ("MIDDLEWARE_REDIS_URL", "redis://cache:6379/zero"),
    ("MIDDLEWARE_REDIS_URL", "redis://ca che:6379"),
    ("MIDDLEWARE_REDIS_TIMEOUT", "0"),
    ("MIDDLEWARE_REDIS_TIMEOUT", "nan"),
    ("MIDDLEWARE_REDIS_CONNECT_TIMEOUT", "-1"),
    ("MIDDLEWARE_REDIS_BACKOFF_INITIAL", "1h"),
    ("MIDDLEWARE_REDIS_BACKOFF_MAX", "inf"),
    ("MIDDLEWARE_REDIS_FALLBACK", "retry"),
    ("MIDDLEWARE_CHECKPOINT_REDIS_URL", "localhost:6379"),
    ("MIDDLEWARE_CHECKPOINT_DIR", "ckpt\x00/etc"),
]
# Garbage the original code already refused by name (``lots``, ``0x10``, ``galaxy``...) is in tests/unit/test_config.py.


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_value_is_a_config_error_naming_variable_value_and_allowed(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({name: value})
    message = str(info.value)
    assert name in message
    assert repr(value[:20])[1:-1] in message  # the value (long ones are cut, not dumped)
    assert "expected" in message and info.value.allowed and info.value.allowed in message
    assert len(message) < 400


def test_a_password_in_a_bad_redis_url_is_never_shown() -> None:
    for url in ("redis://:hunter2@cache:99999/0", "http://user:hunter2@cache/0", "cache:hunter2@host"):
        with pytest.raises(ConfigError) as info:
            Config.from_env({"MIDDLEWARE_REDIS_URL": url})
        assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_zero_means_zero_not_the_default() -> None:
    config = Config.from_env({"MIDDLEWARE_MAX_WAIT_SECONDS": "0", "MIDDLEWARE_BREAKER_MAX_WAIT": "0",
                              "MIDDLEWARE_FORCE_STREAM_ABOVE": "0"})
    assert config.limits.max_wait_seconds == 0  # fail fast; was silently 60
    assert config.retry.breaker_max_wait_seconds == 0
    assert config.streaming.force_stream_above_tokens == 0


def test_careless_but_unambiguous_values_are_read() -> None:
    config = Config.from_env({
        "MIDDLEWARE_LIMITER_SCOPE": " Shared\n", "MIDDLEWARE_RESERVE_OUTPUT": "PREDICTED",
        "MIDDLEWARE_ADAPTIVE_STREAMING": " ON ", "MIDDLEWARE_FORCE_STREAM_ABOVE": "Off",
        "MIDDLEWARE_RPM": "1e3", "MIDDLEWARE_REDIS_URL": " rediss://u:p@cache:6380/1 ",
    })
    assert config.limiter_scope == "shared" and config.reserve_output == "predicted"
    assert config.streaming.adaptive_threshold is True and config.streaming.force_stream_above_tokens is None
    assert config.limits.requests_per_window == 1000.0
    assert config.redis.url == "rediss://u:p@cache:6380/1"
    assert [config.redis_for(f).url for f in ("limiter", "retry", "budget")] == [config.redis.url] * 3  # type: ignore[union-attr]


BAD_OBJECTS: list[tuple[str, Any]] = [
    ("StreamConfig.idle_timeout_seconds", lambda: StreamConfig(idle_timeout_seconds=-5)),
    ("StreamConfig.idle_timeout_seconds", lambda: StreamConfig(idle_timeout_seconds=math.nan)),
    ("StreamConfig.force_stream_above_tokens", lambda: StreamConfig(force_stream_above_tokens=-1)),
    ("StreamConfig.max_resumptions", lambda: StreamConfig(max_resumptions=-1)),
    ("StreamConfig.checkpoint_every_chunks", lambda: StreamConfig(checkpoint_every_chunks=0)),
    ("StreamConfig.checkpoint_ttl_seconds", lambda: StreamConfig(checkpoint_ttl_seconds=math.inf)),
    ("StreamConfig.checkpoint_redis_url", lambda: StreamConfig(checkpoint_redis_url="not-a-url")),
    ("StreamConfig.on_progress", lambda: StreamConfig(on_progress="print")),  # type: ignore[arg-type]
    ("StreamConfig.resume", lambda: StreamConfig(resume="no")),  # type: ignore[arg-type]
    ("Config.limiter_scope", lambda: Config(limiter_scope="galaxy")),  # type: ignore[arg-type]
    ("Config.model_label_cap", lambda: Config(model_label_cap=0)),
    ("Config.streaming", lambda: Config(streaming={"resume": False})),  # type: ignore[arg-type]
    ("LimitConfig.max_wait_seconds", lambda: Config(limits=LimitConfig(max_wait_seconds=math.inf))),
    ("LimitConfig.redis_url", lambda: Config(limits=LimitConfig(redis_url="not-a-url"))),
    ("RetryConfig.max_attempts", lambda: Config(retry=RetryConfig(max_attempts=math.inf))),  # type: ignore[arg-type]
    ("RetryConfig.redis_url", lambda: Config(retry=RetryConfig(redis_url="localhost:6379"))),
    ("CostConfig.redis_url", lambda: Config(cost=CostConfig(redis_url="cache:6379"))),
    ("RedisConfig.url", lambda: RedisConfig(url="http://cache:6379")),
    ("RedisConfig.timeout_seconds", lambda: RedisConfig(timeout_seconds=0)),
    ("RedisConfig.connect_timeout_seconds", lambda: RedisConfig(connect_timeout_seconds=math.nan)),
    ("RedisConfig.backoff_initial_seconds", lambda: RedisConfig(backoff_initial_seconds=-1)),
    ("RedisConfig.backoff_max_seconds", lambda: RedisConfig(backoff_initial_seconds=5, backoff_max_seconds=1)),
    ("RedisConfig.fallback", lambda: RedisConfig(fallback="explode")),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("setting", "build"), BAD_OBJECTS, ids=[s for s, _ in BAD_OBJECTS])
def test_configs_built_in_code_are_validated_the_same_way(setting: str, build: Any) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert setting in str(info.value) and "expected" in str(info.value)
