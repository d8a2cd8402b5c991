"""Config.from_env: MIDDLEWARE_* variables map onto the one Config object; bad values are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from middleware import Config, ConfigError


def test_defaults_without_variables() -> None:
    config = Config.from_env({})
    assert config == Config.from_env({"UNRELATED": "1"})
    assert config.limits.requests_per_window is None and config.limits.tokens_per_window is None
    assert config.limits.window_seconds is None  # learned from the headers (60 s until then)
    assert config.streaming.force_stream_above_tokens == 4096
    assert config.limiter_scope == "model" and config.reserve_output == "max"


def test_variables_map_to_fields() -> None:
    config = Config.from_env({
        "MIDDLEWARE_RPM": "500", "MIDDLEWARE_TPM": "200000", "MIDDLEWARE_WINDOW_SECONDS": "60",
        "MIDDLEWARE_MAX_WAIT_SECONDS": "5", "MIDDLEWARE_REDIS_URL": "redis://127.0.0.1:6379/0",
        "MIDDLEWARE_MAX_ATTEMPTS": "6", "MIDDLEWARE_MAX_RETRY_AFTER": "0", "MIDDLEWARE_BREAKER_MAX_WAIT": "0",
        "MIDDLEWARE_FORCE_STREAM_ABOVE": "off", "MIDDLEWARE_ADAPTIVE_STREAMING": "true",
        "MIDDLEWARE_STREAM_IDLE_TIMEOUT": "30", "MIDDLEWARE_CHECKPOINT_DIR": "/tmp/ckpt",
        "MIDDLEWARE_LIMITER_SCOPE": "shared", "MIDDLEWARE_RESERVE_OUTPUT": "predicted",
    })
    assert config.limits.requests_per_window == 500 and config.limits.tokens_per_window == 200000
    assert config.limits.window_seconds == 60 and config.limits.max_wait_seconds == 5
    assert config.limits.redis_url == config.retry.redis_url == "redis://127.0.0.1:6379/0"
    assert config.retry.max_attempts == 6
    assert config.retry.max_retry_after == 0  # zero is a value, not "unset"
    assert config.retry.breaker_max_wait_seconds == 0
    assert config.streaming.force_stream_above_tokens is None and config.streaming.adaptive_threshold
    assert config.streaming.idle_timeout_seconds == 30
    assert config.streaming.checkpoint_dir == Path("/tmp/ckpt")
    assert config.limiter_scope == "shared" and config.reserve_output == "predicted"


@pytest.mark.parametrize(("name", "value"), [
    ("MIDDLEWARE_RPM", "lots"), ("MIDDLEWARE_LIMITER_SCOPE", "galaxy"), ("MIDDLEWARE_RESERVE_OUTPUT", "some"),
])
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})
