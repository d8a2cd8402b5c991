"""Fault injection (every kind), outages at runtime, tagged arrival times, /stats, the subprocess handle."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from middleware.simulator import Simulator, SimulatorConfig, parse_fault, start_subprocess
from tests.http import http as httpx2

USER = [{"role": "user", "content": "hi"}]
CHAT = {"model": "gpt-4o", "messages": USER}


def client(sim: Simulator, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0, default_headers=headers or None)


def post(sim: Simulator, body: dict[str, Any], **headers: str) -> httpx2.Response:
    with httpx2.Client(timeout=10) as http:
        return http.post(sim.base_url + "/chat/completions", json=body, headers=headers)


def read_stream(sim: Simulator, fault: str, tokens: int = 20) -> tuple[list[str], BaseException | None]:
    lines: list[str] = []
    body = {**CHAT, "stream": True}
    headers = {"x-sim-fault": fault, "x-sim-output-tokens": str(tokens)}
    try:
        with httpx2.Client(timeout=10) as http, http.stream(
            "POST", sim.base_url + "/chat/completions", json=body, headers=headers
        ) as resp:
            lines.extend(line[6:] for line in resp.iter_lines() if line.startswith("data: "))
    except httpx2.HTTPError as exc:
        return lines, exc
    return lines, None


@pytest.mark.parametrize(
    ("spec", "error", "kind"),
    [
        ("status=500", openai.InternalServerError, "server_error"),
        ("status=503", openai.InternalServerError, "server_error"),
        ("status=400;message=nope", openai.BadRequestError, "invalid_request_error"),
        ("insufficient_quota", openai.RateLimitError, "insufficient_quota"),
        ("too_large", openai.RateLimitError, "tokens"),
        ("status=429;type=requests;retry_after=1.5", openai.RateLimitError, "requests"),
    ],
)
def test_error_faults(simulator: Simulator, spec: str, error: type[Exception], kind: str) -> None:
    with pytest.raises(error) as info:
        client(simulator, **{"x-sim-fault": spec}).chat.completions.create(model="gpt-4o", messages=USER)
    assert isinstance(info.value, openai.APIStatusError)
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == kind
    assert info.value.response.headers["x-request-id"]
    if spec == "too_large":
        assert "Request too large" in body["message"] and body["code"] == "rate_limit_exceeded"
    if "retry_after" in spec:
        assert info.value.response.headers["retry-after"] == "2"
        assert info.value.response.headers["retry-after-ms"] == "1500"
        assert body["code"] == "rate_limit_exceeded"
    assert simulator.stats()["total"]["faults_total"] == 1


def test_should_retry_header(simulator: Simulator) -> None:
    no = post(simulator, CHAT, **{"x-sim-fault": "status=503;should_retry=false"})
    yes = post(simulator, CHAT, **{"x-sim-fault": "status=502;should_retry=true"})
    assert (no.status_code, no.headers["x-should-retry"]) == (503, "false")
    assert (yes.status_code, yes.headers["x-should-retry"]) == (502, "true")


def test_reset_closes_before_headers(simulator: Simulator) -> None:
    with pytest.raises(openai.APIConnectionError):
        client(simulator, **{"x-sim-fault": "reset"}).chat.completions.create(model="gpt-4o", messages=USER)
    assert simulator.stats()["total"]["faults"] == {"reset": 1}


def test_truncated_json(simulator: Simulator) -> None:
    with pytest.raises(httpx2.RemoteProtocolError):
        post(simulator, CHAT, **{"x-sim-fault": "truncated_json"})
    with pytest.raises(openai.APIConnectionError):
        client(simulator, **{"x-sim-fault": "truncated_json"}).chat.completions.create(model="gpt-4o", messages=USER)


def test_cut_after_n_chunks(simulator: Simulator) -> None:
    lines, error = read_stream(simulator, "cut_after=5")
    assert isinstance(error, httpx2.RemoteProtocolError)
    assert len(lines) == 6 and "[DONE]" not in lines  # role chunk + 5 content chunks
    assert simulator.stats()["total"]["served"] == 0


def test_stall_after_n_chunks_then_continues(simulator: Simulator) -> None:
    body = {**CHAT, "stream": True}
    headers = {"x-sim-fault": "stall_after=3;stall_s=0.4", "x-sim-output-tokens": "10"}
    stamps: list[float] = []
    with httpx2.Client(timeout=10) as http, http.stream(
        "POST", simulator.base_url + "/chat/completions", json=body, headers=headers
    ) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                stamps.append(time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(stamps) == 13  # role + 10 content + finish + [DONE]
    assert gaps.index(max(gaps)) == 3 and max(gaps) >= 0.35


def test_malformed_sse(simulator: Simulator) -> None:
    lines, error = read_stream(simulator, "malformed_sse=4")
    assert error is None and lines[-1] == "[DONE]"
    bad = [i for i, line in enumerate(lines[:-1]) if not _is_json(line)]
    assert bad == [5]
    with pytest.raises(Exception):  # noqa: B017 - the SDK fails to decode the garbage line
        list(client(simulator, **{"x-sim-fault": "malformed_sse"}).chat.completions.create(
            model="gpt-4o", messages=USER, stream=True))


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_delay_and_syntax_error(simulator: Simulator) -> None:
    start = time.monotonic()
    assert post(simulator, CHAT, **{"x-sim-fault": "delay=0.2"}).status_code == 200
    assert time.monotonic() - start >= 0.2
    bad = post(simulator, CHAT, **{"x-sim-fault": "explode=1"})
    assert bad.status_code == 400 and "explode" in bad.json()["error"]["message"]
    with pytest.raises(ValueError):
        parse_fault("cut_after=")


def test_fault_once(simulator: Simulator) -> None:
    headers = {"x-sim-fault": "status=500", "x-sim-fault-once": "k1"}
    assert [post(simulator, CHAT, **headers).status_code for _ in range(3)] == [500, 200, 200]


def test_fault_once_then(simulator: Simulator) -> None:
    headers = {"x-sim-fault": "status=500", "x-sim-fault-once": "k2", "x-sim-fault-then": "status=400"}
    assert [post(simulator, CHAT, **headers).status_code for _ in range(3)] == [500, 400, 400]


def test_fault_times_header_counts_per_key(simulator: Simulator) -> None:
    """``x-sim-fault-key`` + ``x-sim-fault-times``: the fault for the first N requests with the key, then none
    (or ``x-sim-fault-then``); keys count apart; no clock involved."""
    counted = {"x-sim-fault": "status=503", "x-sim-fault-key": "t1", "x-sim-fault-times": "2"}
    assert [post(simulator, CHAT, **counted).status_code for _ in range(4)] == [503, 503, 200, 200]
    other = {**counted, "x-sim-fault-key": "t2", "x-sim-fault-then": "status=400"}
    assert [post(simulator, CHAT, **other).status_code for _ in range(4)] == [503, 503, 400, 400]
    once_by_key = {"x-sim-fault": "status=500", "x-sim-fault-key": "t3"}  # no count: once
    assert [post(simulator, CHAT, **once_by_key).status_code for _ in range(2)] == [500, 200]
    assert simulator.stats()["total"]["faults"] == {"status_503": 4, "status_400": 2, "status_500": 1}


@pytest.mark.parametrize(("headers", "needle"), [
    ({"x-sim-fault": "status=503", "x-sim-fault-key": "k", "x-sim-fault-times": "0"}, "x-sim-fault-times='0'"),
    ({"x-sim-fault": "status=503", "x-sim-fault-key": "k", "x-sim-fault-times": "two"}, "x-sim-fault-times='two'"),
    ({"x-sim-fault": "status=503", "x-sim-fault-key": "k", "x-sim-fault-times": "9999999"}, "<= 1000000"),
    ({"x-sim-fault": "status=503", "x-sim-fault-times": "2"}, "needs a non-empty x-sim-fault-key"),
    ({"x-sim-fault-key": "k", "x-sim-fault-times": "2"}, "need x-sim-fault"),
    ({"x-sim-fault": "status=503", "x-sim-fault-once": "k", "x-sim-fault-times": "2"}, "not x-sim-fault-once"),
    ({"x-sim-fault": "status=503", "x-sim-fault-once": "k", "x-sim-fault-key": "k"}, "exclusive"),
    ({"x-sim-fault": "status=503", "x-sim-fault-key": "k", "x-sim-fault-then": "nope"}, "nope"),
])
def test_bad_fault_times_headers_are_400s_naming_the_header(
    simulator: Simulator, headers: dict[str, str], needle: str
) -> None:
    for _ in range(2):  # refused every time, and nothing counted: the key is not used up by bad requests
        resp = post(simulator, CHAT, **headers)
        assert resp.status_code == 400 and needle in resp.json()["error"]["message"], resp.text
    assert simulator.stats()["total"]["faults_total"] == 0


def test_fault_times_queue_at_runtime(simulator: Simulator) -> None:
    """``fault_times``: the next N requests (without a fault header) get SPEC, then the next entry's, in order;
    before outages and rates; a header fault neither uses nor skips an entry."""
    state = simulator.set_faults(fault_times=[("status=502", 2), ("status=429;type=requests;retry_after=1", 1)])
    assert state["fault_times"] == [["status=502", 2], ["status=429;type=requests;retry_after=1", 1]]
    assert post(simulator, CHAT).status_code == 502
    assert post(simulator, CHAT, **{"x-sim-fault": "status=418"}).status_code == 418
    assert simulator.faults()["fault_times"] == [["status=502", 1], ["status=429;type=requests;retry_after=1", 1]]
    assert [post(simulator, CHAT).status_code for _ in range(3)] == [502, 429, 200]
    assert simulator.faults()["fault_times"] == []
    simulator.set_faults(outage=True, fault_times=[("status=500", 1)])  # counted first, then the outage
    assert [post(simulator, CHAT).status_code for _ in range(2)] == [500, 503]
    simulator.set_faults(outage=False, fault_times=[("status=500", 3)])
    simulator.set_faults(fault_times=[])  # emptied
    assert post(simulator, CHAT).status_code == 200


@pytest.mark.parametrize(("fault_times", "needle"), [
    ([["bogus", 1]], "bogus"), ([["status=500", 0]], "'status=500'=0"), ([["status=500", 1.5]], "1.5"),
    ([["status=500", True]], "True"), ([["status=500"]], "expected [SPEC, N]"), ("status=500", "list of [SPEC, N]"),
    ([["status=500", "2"]], "'2'"),
])
def test_bad_fault_times_at_runtime_are_400s_and_change_nothing(
    simulator: Simulator, fault_times: Any, needle: str
) -> None:
    simulator.set_faults(fault_times=[("status=502", 1)])
    with httpx2.Client(timeout=10) as http:
        resp = http.post(simulator.root_url + "/admin/faults", json={"fault_times": fault_times,
                                                                      "fault_rates": {"status=500": 1.0}})
    assert resp.status_code == 400 and "fault_times" in resp.text and needle in resp.text, resp.text
    assert simulator.faults()["fault_times"] == [["status=502", 1]] and simulator.faults()["fault_rates"] == {}


def test_fault_times_from_config(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(fault_times=(("status=503", 2), ("reset", 1)))
    codes: list[int | str] = []
    for _ in range(4):
        try:
            codes.append(post(sim, CHAT).status_code)
        except httpx2.HTTPError as exc:
            codes.append(type(exc).__name__)
    assert codes == [503, 503, "RemoteProtocolError", 200]


def test_runtime_outage_and_rates(simulator: Simulator) -> None:
    simulator.set_faults(outage=True)
    assert post(simulator, CHAT).status_code == 503
    simulator.set_faults(outage=False)
    assert post(simulator, CHAT).status_code == 200
    # A timed outage: the window is long next to one request (so the first answer is surely inside it) and
    # its end is waited for (polled), not slept through.
    set_at = time.monotonic()
    simulator.set_faults(outage_for_s=2.0, outage_fault="status=502")
    assert post(simulator, CHAT).status_code == 502
    wait_for_200(simulator)
    assert time.monotonic() - set_at >= 2.0  # not over before its time
    simulator.set_faults(fault_rates={"status=500": 0.5})
    with httpx2.Client() as http:
        codes = [http.post(simulator.base_url + "/chat/completions", json=CHAT).status_code for _ in range(40)]
    assert 5 <= codes.count(500) <= 35 and codes.count(200) + codes.count(500) == 40
    simulator.set_faults(fault_rates={})
    assert simulator.stats()["total"]["faults"]["status_503"] == 1


def test_scheduled_outage_from_config(make_simulator: Callable[..., Simulator]) -> None:
    started = time.monotonic()
    sim = make_simulator(outages=((0.0, 2.0),))
    assert post(sim, CHAT).status_code == 503
    wait_for_200(sim)
    assert time.monotonic() - started >= 2.0


def wait_for_200(sim: Simulator, timeout: float = 30.0) -> None:
    """Poll until a request succeeds (an outage has ended); the timeout only catches one that never ends."""
    deadline = time.monotonic() + timeout
    while post(sim, CHAT).status_code != 200:
        assert time.monotonic() < deadline, "the outage did not end"
        time.sleep(0.05)


def test_tagged_arrival_times_and_stats(make_simulator: Callable[..., Simulator]) -> None:
    # A server of its own: on the shared one, a stream an earlier test abandoned mid-stall can still finish (and
    # be counted as served) while this test runs, and these totals are exact.
    simulator = make_simulator()
    for _ in range(3):
        post(simulator, CHAT, **{"x-sim-tag": "retry-a"})
        time.sleep(0.05)
    post(simulator, {"model": "gpt-4o-mini", "messages": USER}, **{"x-sim-fault": "status=500"})
    times = simulator.request_times("retry-a")
    assert len(times) == 3 and all(b - a >= 0.05 for a, b in itertools.pairwise(times))
    assert simulator.request_times("other") == []
    stats = simulator.stats()
    assert stats["models"]["gpt-4o"]["served"] == 3 and stats["models"]["gpt-4o-mini"]["faults"] == {"status_500": 1}
    assert stats["total"]["received"] == 4 and stats["total"]["tokens_used"]["completion"] > 0
    simulator.reset_stats()
    assert simulator.stats()["total"]["received"] == 0


def test_subprocess_handle() -> None:
    with start_subprocess(SimulatorConfig(rpm=5)) as proc:
        raw = openai.OpenAI(base_url=proc.base_url, api_key="k", max_retries=0).chat.completions.with_raw_response
        resp = raw.create(model="gpt-4o", messages=USER)
        assert resp.headers["x-ratelimit-limit-requests"] == "5"
        assert proc.stats()["total"]["served"] == 1
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(proc.base_url + "/models")


def test_cli_arguments_build_the_config() -> None:
    config = SimulatorConfig.from_args(
        ["--port", "0", "--rpm", "10", "--fault", "status=503;should_retry=false@0.25", "--outage", "1,2.5"]
    )
    assert config.rpm == 10 and config.tpm is None and config.host == "127.0.0.1"
    assert config.fault_rates == {"status=503;should_retry=false": 0.25} and config.outages == ((1.0, 2.5),)
    assert SimulatorConfig.from_json(config.to_json()) == config
    counted = SimulatorConfig.from_args(["--fault-times", "status=503@2", "--fault-times", "cut_after=3@1"])
    assert counted.fault_times == (("status=503", 2), ("cut_after=3", 1))
    assert SimulatorConfig.from_json(counted.to_json()) == counted


@pytest.mark.parametrize("limited", [True, False])
def test_bad_ratelimit_headers(make_simulator: Callable[..., Simulator], limited: bool) -> None:
    from middleware.limits.headers import parse_ratelimit_headers

    sim = make_simulator(rpm=100, tpm=100_000) if limited else make_simulator()
    resp = post(sim, CHAT, **{"x-sim-fault": "bad_ratelimit_headers"})
    assert resp.status_code == 200 and resp.json()["choices"]
    values = {k: v for k, v in resp.headers.items() if k.startswith("x-ratelimit-")}
    assert len(values) == 6
    parsed = parse_ratelimit_headers(resp.headers)
    assert sorted(parsed.errors) == sorted(f"invalid_{kind}_{res}" for kind in ("limit", "remaining", "reset")
                                           for res in ("requests", "tokens"))
    assert sim.stats()["total"]["faults"] == {"bad_ratelimit_headers": 1}
    if limited:  # the next request without the fault gets the real, parseable headers again
        assert not parse_ratelimit_headers(post(sim, CHAT).headers).errors
