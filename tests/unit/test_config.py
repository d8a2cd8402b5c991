"""Config.from_env: MIDDLEWARE_* variables map onto the one Config object; bad values are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from middleware import Config, ConfigError, LimitConfig, RedisConfig


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
    assert config.redis.url == "redis://127.0.0.1:6379/0"  # shared; the features' own URLs stay unset
    assert config.limits.redis_url is None and config.retry.redis_url is None and config.cost.redis_url is None
    assert {f: config.redis_for(f) for f in ("limiter", "retry", "budget", "checkpoint")} == {
        "limiter": config.redis, "retry": config.redis, "budget": config.redis, "checkpoint": None}
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


# --- the table of variables and docs/configuration.md ----------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def documented_variables() -> dict[str, tuple[str, str]]:
    """``{name: (default cell, sets cell)}`` from the variables table of docs/configuration.md."""
    rows: dict[str, tuple[str, str]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`MIDDLEWARE_"):
            name = cells[0].strip("`")
            assert name not in rows, f"{name} documented twice"
            rows[name] = (cells[1].strip("`"), cells[2])
    return rows


def test_documented_variables_are_exactly_the_table() -> None:
    from middleware.config import ENV_VARS

    documented = documented_variables()
    in_code = {row.name for row in ENV_VARS}
    assert set(documented) - in_code == set(), "documented but not read by Config.from_env"
    assert in_code - set(documented) == set(), "read by Config.from_env but not documented"
    for row in ENV_VARS:
        default, sets = documented[row.name]
        assert default == row.default_text, row.name
        assert [t.strip("`") for t in sets.split(", ")] == list(row.targets) or not row.targets, row.name


def test_every_variable_in_the_code_base_is_in_the_table() -> None:
    """No MIDDLEWARE_* name is read anywhere in the package without a row (found by scanning the sources)."""
    import re

    from middleware.config import ENV_VARS

    package = Path(__file__).resolve().parents[2] / "middleware"
    used = {m for p in package.rglob("*.py") for m in re.findall(r"MIDDLEWARE_[A-Z_]+[A-Z]", p.read_text())}
    assert used - {row.name for row in ENV_VARS} == set()


def test_table_defaults_are_the_dataclass_defaults() -> None:
    from middleware.config import ENV_VARS

    base = Config()
    for row in ENV_VARS:
        for target in row.targets:
            value: object = base
            for part in target.split("."):
                value = getattr(value, part)
            assert value == row.default, (row.name, target)
    assert Config.from_env({}) == base


def test_zero_is_a_value_not_the_default() -> None:
    config = Config.from_env({"MIDDLEWARE_MAX_WAIT_SECONDS": "0", "MIDDLEWARE_FORCE_STREAM_ABOVE": "0",
                              "MIDDLEWARE_MAX_RETRY_AFTER": "0"})
    assert config.limits.max_wait_seconds == 0
    assert config.streaming.force_stream_above_tokens == 0
    assert config.retry.max_retry_after == 0


def test_empty_and_blank_values_mean_unset_and_whitespace_is_ignored() -> None:
    assert Config.from_env({"MIDDLEWARE_RPM": "", "MIDDLEWARE_MAX_ATTEMPTS": "   "}) == Config()
    config = Config.from_env({"MIDDLEWARE_RPM": " 500\n", "MIDDLEWARE_LIMITER_SCOPE": "\tShared "})
    assert config.limits.requests_per_window == 500 and config.limiter_scope == "shared"


def test_unix_and_tls_redis_urls_are_accepted() -> None:
    for url in ("redis://localhost", "rediss://user:pw@cache.example:6380/2", "unix:///run/redis.sock"):
        assert Config.from_env({"MIDDLEWARE_REDIS_URL": url}).redis.url == url


def test_one_redis_policy_with_per_feature_urls() -> None:
    """One policy (timeouts, back-off, fallback) for every feature; a feature's own URL only changes where."""
    config = Config.from_env({
        "MIDDLEWARE_REDIS_URL": "redis://shared:6379/0", "MIDDLEWARE_BUDGET_REDIS_URL": "redis://budgets:6379/1",
        "MIDDLEWARE_CHECKPOINT_REDIS_URL": "redis://ckpt:6379/2", "MIDDLEWARE_REDIS_TIMEOUT": "0.1",
        "MIDDLEWARE_REDIS_CONNECT_TIMEOUT": "0.05", "MIDDLEWARE_REDIS_BACKOFF_INITIAL": "0.5",
        "MIDDLEWARE_REDIS_BACKOFF_MAX": "30", "MIDDLEWARE_REDIS_FALLBACK": "FAIL",
    })
    policy = RedisConfig(None, 0.05, 0.1, 0.5, 30.0, "fail")
    urls = {"limiter": "redis://shared:6379/0", "retry": "redis://shared:6379/0", "budget": "redis://budgets:6379/1",
            "checkpoint": "redis://ckpt:6379/2"}
    for feature, url in urls.items():
        assert config.redis_for(feature) == policy.with_url(url), feature
    own = Config(limits=LimitConfig(redis_url="redis://limits:6379/0"), redis=RedisConfig(url="redis://shared/0"))
    assert own.redis_for("limiter") == RedisConfig(url="redis://limits:6379/0")  # the feature's URL wins
    assert own.redis_for("retry") == RedisConfig(url="redis://shared/0")
    assert Config().redis_for("limiter") is None  # no Redis anywhere: in-process state


def test_a_backoff_rule_across_two_variables_names_both() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env({"MIDDLEWARE_REDIS_BACKOFF_INITIAL": "20", "MIDDLEWARE_REDIS_BACKOFF_MAX": "5"})
    message = str(info.value)
    assert message.startswith("MIDDLEWARE_REDIS_BACKOFF_INITIAL / MIDDLEWARE_REDIS_BACKOFF_MAX:"), message
    assert "MIDDLEWARE_REDIS_TIMEOUT" not in message


def test_metrics_addr_is_read_through_the_table() -> None:
    from middleware.config import read_env

    assert read_env("MIDDLEWARE_METRICS_ADDR", {}) == ("127.0.0.1", 9464)
    assert read_env("MIDDLEWARE_METRICS_ADDR", {"MIDDLEWARE_METRICS_ADDR": "[::1]:0"}) == ("::1", 0)
    with pytest.raises(ConfigError, match="MIDDLEWARE_METRICS_ADDR"):
        read_env("MIDDLEWARE_METRICS_ADDR", {"MIDDLEWARE_METRICS_ADDR": "localhost:99999"})


def test_unknown_variable_is_logged_with_a_suggestion(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="middleware.config"):
        assert Config.from_env({"MIDDLEWARE_RMP": "5"}) == Config()
    assert "MIDDLEWARE_RMP" in caplog.text and "MIDDLEWARE_RPM" in caplog.text
