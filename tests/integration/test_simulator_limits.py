"""Rate limits: headers, 429 bodies, refill, request too large, quota, charge modes, Go durations."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from middleware.simulator import Simulator, format_go_duration

USER = [{"role": "user", "content": "hi"}]
_GO = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def parse_go(text: str) -> float:
    match = _GO.match(text)
    assert match and text, f"not a Go duration: {text!r}"
    hours, minutes, seconds, millis = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0) + int(millis or 0) / 1000


@given(st.floats(min_value=0, max_value=400_000, allow_nan=False))
def test_go_duration_round_trips_at_millisecond_precision(seconds: float) -> None:
    text = format_go_duration(seconds)
    assert abs(parse_go(text) - seconds) <= 0.001 + 1e-9
    if seconds >= 1:
        assert "ms" not in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.02, "20ms"), (1, "1s"), (1.5, "1.5s"), (90.5, "1m30.5s"), (360, "6m0s"), (3723, "1h2m3s")],
)
def test_go_duration_examples(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


def client(sim: Simulator, key: str = "sk-a", **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key=key, max_retries=0, default_headers=headers or None)


def test_headers_on_success_and_request_refusal(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(rpm=2, tpm=10_000, window_s=2.0)
    sdk = client(sim)
    raw = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER, max_tokens=10)
    h = raw.headers
    assert h["x-ratelimit-limit-requests"] == "2" and h["x-ratelimit-remaining-requests"] == "1"
    assert h["x-ratelimit-limit-tokens"] == "10000"
    usage = raw.parse().usage
    assert usage is not None
    assert int(h["x-ratelimit-remaining-tokens"]) == 10_000 - usage.prompt_tokens - 10
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        assert 0 < parse_go(h[name]) <= 2.0
    sdk.chat.completions.create(model="gpt-4o", messages=USER)
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="gpt-4o", messages=USER)
    err = info.value
    body = err.body
    assert isinstance(body, dict)
    assert body["type"] == "requests" and body["code"] == "rate_limit_exceeded"
    assert "requests per min (RPM): Limit 2, Used 2, Requested 1" in body["message"]
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    wait = float(err.response.headers["retry-after-ms"]) / 1000
    assert 0 < wait <= 1.0 and err.response.headers["retry-after"] == "1"
    assert re.search(r"Please try again in \d+ms\.", body["message"])
    client(sim, key="sk-b").chat.completions.create(model="gpt-4o", messages=USER)  # other key, own budget
    sdk.chat.completions.create(model="gpt-4o-mini", messages=USER)  # other model, own budget
    time.sleep(wait + 0.02)
    sdk.chat.completions.create(model="gpt-4o", messages=USER)  # refilled
    stats = sim.stats()["models"]["gpt-4o"]
    assert stats["refused"] == {"requests": 1} and stats["admitted"] == 4


def test_token_refusal_and_refill(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(tpm=1000, window_s=2.0)
    sdk = client(sim)
    sdk.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=700)
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=700)
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "tokens" and "tokens per min (TPM): Limit 1000" in body["message"]
    retry_ms = int(info.value.response.headers["retry-after-ms"])
    assert 500 < retry_ms <= 1500  # ~ (708 - remaining) / 500 tokens per second
    time.sleep(retry_ms / 1000 + 0.02)
    sdk.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=700)


def test_request_too_large_and_shared_scope(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(tpm=100, window_s=2.0, limit_scope="shared")
    sdk = client(sim)
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=500)
    body = info.value.body
    assert isinstance(body, dict) and "Request too large" in body["message"]
    assert body["type"] == "tokens" and body["code"] == "rate_limit_exceeded"
    sdk.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=80)
    with pytest.raises(openai.RateLimitError):  # shared budget: another model is refused too
        sdk.chat.completions.create(model="gpt-4o-mini", messages=USER, max_tokens=80)
    assert sim.stats()["total"]["refused"] == {"too_large": 1, "tokens": 1}


def test_default_max_output_and_usage_charge_mode(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(tpm=10_000, window_s=60_000.0, default_max_output_tokens=1000, charge_mode="usage")
    sdk = client(sim, **{"x-sim-output-tokens": "5"})
    result = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    prompt = result.parse().usage.prompt_tokens  # type: ignore[union-attr]
    assert int(result.headers["x-ratelimit-remaining-tokens"]) == 10_000 - prompt - 1000
    after = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER, max_tokens=1)
    assert int(after.headers["x-ratelimit-remaining-tokens"]) == 10_000 - (prompt + 5) - (prompt + 1)
    stats = sim.stats()["total"]
    assert stats["tokens_charged"] == 2 * prompt + 6  # both corrected to prompt + actual completion
    assert stats["tokens_used"] == {"prompt": 2 * prompt, "completion": 6, "total": 2 * prompt + 6}


def test_admission_mode_never_refunds(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(tpm=10_000, window_s=60_000.0)
    sdk = client(sim, **{"x-sim-output-tokens": "5"})
    first = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER, max_tokens=900)
    prompt = first.parse().usage.prompt_tokens  # type: ignore[union-attr]
    second = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER, max_tokens=1)
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 10_000 - (prompt + 900) - (prompt + 1)
    assert sim.stats()["total"]["tokens_charged"] == 2 * prompt + 901


def test_insufficient_quota_from_config_and_runtime(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(quota_exhausted=True)
    with pytest.raises(openai.RateLimitError) as info:
        client(sim).chat.completions.create(model="gpt-4o", messages=USER)
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == body["code"] == "insufficient_quota"
    assert "retry-after" not in info.value.response.headers
    assert sim.stats()["total"]["refused"] == {"insufficient_quota": 1}
    sim.set_faults(quota_exhausted=False)
    with pytest.raises(openai.RateLimitError):  # the config flag keeps it exhausted
        client(sim).chat.completions.create(model="gpt-4o", messages=USER)


# ---------------------------------------------------------------- an accounting that disagrees with ours

def test_factor_offset_and_n_times_max_tokens_charged_up_front(make_simulator: Callable[..., Simulator]) -> None:
    from middleware.simulator.counting import rate_limit_charge

    sim = make_simulator(tpm=100_000, window_s=60_000.0, charge_factor=1.5, charge_offset=11, charge_per_choice=True)
    sdk = client(sim, **{"x-sim-output-tokens": "3"})
    reply = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER, max_tokens=40)
    prompt = reply.parse().usage.prompt_tokens  # type: ignore[union-attr]
    charged = -(-3 * prompt // 2) + 11 + 40  # ceil(1.5 * prompt) + offset + max_tokens, no refund of the 37 unused
    assert sim.stats()["total"]["tokens_charged"] == charged
    assert int(reply.headers["x-ratelimit-remaining-tokens"]) == 100_000 - charged
    # n choices are charged n * max_tokens (the simulator itself serves n=1 only)
    body = {"model": "gpt-4o", "messages": USER, "n": 3}
    assert rate_limit_charge("chat", body, 10, 40, per_choice=True) == 10 + 3 * 40
    assert rate_limit_charge("chat", body, 10, 40) == 10 + 40


def test_chars_accounting_counts_characters_not_tokens(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(tpm=100_000, window_s=60_000.0, accounting="chars")
    text = "antidisestablishmentarianism " * 8  # 232 characters
    client(sim).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}], max_tokens=1)
    assert sim.stats()["total"]["tokens_charged"] == -(-(len(text) + len("user")) // 4) + 4 + 1


def test_headers_rounded_another_way(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(rpm=3, tpm=100_000, window_s=7.0, remaining_rounding="nearest", reset_resolution_s=0.1,
                         reset_rounding="nearest")
    reply = client(sim).chat.completions.with_raw_response.create(model="gpt-4o", messages=USER, max_tokens=7)
    reset = reply.headers["x-ratelimit-reset-requests"]  # one of 3 requests over 7 s: 2.333 s, to 0.1 s
    assert reset == "2.3s"
    assert parse_go(reply.headers["x-ratelimit-reset-tokens"]) * 10 == pytest.approx(
        round(parse_go(reply.headers["x-ratelimit-reset-tokens"]) * 10))
    assert reply.headers["x-ratelimit-remaining-requests"] == "2"


def test_cli_options_reach_the_config() -> None:
    from middleware.simulator import SimulatorConfig

    cfg = SimulatorConfig.from_args(["--accounting", "legacy", "--charge-factor", "1.2", "--charge-offset", "15",
                                     "--charge-per-choice", "--remaining-rounding", "nearest",
                                     "--reset-resolution", "0.1", "--reset-rounding", "down", "--window", "7"])
    assert (cfg.accounting, cfg.charge_factor, cfg.charge_offset, cfg.charge_per_choice) == ("legacy", 1.2, 15, True)
    assert (cfg.remaining_rounding, cfg.reset_resolution_s, cfg.reset_rounding, cfg.window_s) == (
        "nearest", 0.1, "down", 7.0)
    assert SimulatorConfig.from_json(cfg.to_json()) == cfg
