"""Responses API background mode: resume with starting_after, disconnects, cancel."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai

from middleware.simulator import Simulator
from tests.http import http as httpx2


def client(sim: Simulator, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0, default_headers=headers or None)


def events_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(block.split("data: ", 1)[1]) for block in text.split("\n\n") if "data: " in block]


def test_background_stream_resumes_after_sequence_number(simulator: Simulator) -> None:
    sdk = client(simulator, **{"x-sim-output-tokens": "60"})
    full_events = list(sdk.responses.create(model="gpt-4o", input="resume me", background=True, stream=True))
    response_id = full_events[0].response.id  # type: ignore[union-attr]
    full_text = "".join(e.delta for e in full_events if e.type == "response.output_text.delta")
    for n in (0, 3, 20, len(full_events) - 2):
        resumed = list(sdk.responses.retrieve(response_id, stream=True, starting_after=n))
        assert [e.sequence_number for e in resumed] == list(range(n + 1, len(full_events)))
        before = [e for e in full_events[: n + 1] if e.type == "response.output_text.delta"]
        after = [e for e in resumed if e.type == "response.output_text.delta"]
        assert "".join(e.delta for e in before + after) == full_text
    final = sdk.responses.retrieve(response_id)
    assert final.status == "completed" and final.output_text == full_text and final.background


def test_background_generation_continues_after_client_cut(simulator: Simulator) -> None:
    headers = {"x-sim-output-tokens": "50", "x-sim-fault": "cut_after=10"}
    body = {"model": "gpt-4o", "input": "go on", "background": True, "stream": True}
    with httpx2.Client(timeout=10) as http:
        received = []
        try:
            with http.stream("POST", simulator.base_url + "/responses", json=body, headers=headers) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data: "):
                        received.append(json.loads(line[6:]))
        except httpx2.RemoteProtocolError:
            pass
        deltas = [e for e in received if e["type"] == "response.output_text.delta"]
        assert len(deltas) == 10 and received[-1]["type"] == "response.output_text.delta"
        last = received[-1]["sequence_number"]
        rid = received[0]["response"]["id"]
        url = f"{simulator.base_url}/responses/{rid}"
        rest = events_of(http.get(url, params={"stream": "true", "starting_after": last}).text)
    assert rest[0]["sequence_number"] == last + 1 and rest[-1]["type"] == "response.completed"
    text = "".join(e["delta"] for e in deltas + rest if e["type"] == "response.output_text.delta")
    assert text == rest[-1]["response"]["output"][0]["content"][0]["text"]


def test_background_non_stream_then_poll_and_cancel(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(tokens_per_s=200.0)
    sdk = client(sim, **{"x-sim-output-tokens": "2000"})
    queued = sdk.responses.create(model="gpt-4o", input="slow", background=True)
    assert queued.status == "queued"
    assert sdk.responses.retrieve(queued.id).status == "in_progress"
    cancelled = sdk.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    assert sdk.responses.retrieve(queued.id).status == "cancelled"
    done = client(sim, **{"x-sim-output-tokens": "5"}).responses.create(model="gpt-4o", input="x", background=True)
    events = list(sdk.responses.retrieve(done.id, stream=True))
    assert events[-1].type == "response.completed"


def test_cancel_and_retrieve_errors(simulator: Simulator) -> None:
    sdk = client(simulator)
    foreground = sdk.responses.create(model="gpt-4o", input="x")
    try:
        sdk.responses.cancel(foreground.id)
        raise AssertionError("cancel of a foreground response must fail")
    except openai.BadRequestError:
        pass
    try:
        sdk.responses.retrieve("resp_missing")
        raise AssertionError("unknown id must be 404")
    except openai.NotFoundError:
        pass
