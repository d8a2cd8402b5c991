"""A real third-party library that builds its own openai clients from parameters is protected by ``install()`` alone.

LangChain's ``ChatOpenAI(base_url=..., api_key=...)`` constructs an ``openai.OpenAI`` and an
``openai.AsyncOpenAI`` inside itself. After ``middleware.install()`` (and no other change), its calls, sync
and async, streamed and not, run through the middleware: each is a call span of ours, and a 500 injected once
by the simulator is retried by the middleware's loop (``max_retries=0`` keeps the SDK's own retries off, so
without protection the same call fails).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest

import middleware
from middleware import Config, pipeline_of
from middleware.pipeline import Pipeline
from middleware.telemetry import names as n
from tests.fixtures.telemetry import TelemetryKit

langchain_openai = pytest.importorskip("langchain_openai")

MODEL = "gpt-4o-mini"
CALL_SPAN = n.SPAN_CALL.format(operation="chat", model=MODEL)


@pytest.fixture(autouse=True)
def _always_uninstalled() -> Iterator[None]:
    middleware.uninstall()
    yield
    middleware.uninstall()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the module: ChatOpenAI shares a cached async HTTP client between instances, and a
    connection pooled under an earlier ``asyncio.run`` loop fails once that loop is closed (LangChain's
    behaviour, with or without the middleware)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def fault_once() -> dict[str, str]:
    return {"x-sim-fault": "status=500", "x-sim-fault-once": uuid.uuid4().hex}


def chat_model(simulator: Any) -> Any:
    return langchain_openai.ChatOpenAI(model=MODEL, base_url=simulator.base_url, api_key="sk-langchain",
                                       max_retries=0, max_tokens=16)


def test_without_install_the_library_client_is_plain_and_a_fault_fails_the_call(simulator: Any) -> None:
    llm = chat_model(simulator)
    assert type(llm.root_client) is openai.OpenAI
    with pytest.raises(openai.InternalServerError):
        llm.invoke("hello", extra_headers=fault_once())


@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke", "astream"])
def test_after_install_the_library_client_is_protected(simulator: Any, telemetry: TelemetryKit, mode: str,
                                                       loop: asyncio.AbstractEventLoop) -> None:
    pipeline = middleware.install(pipeline=Pipeline(Config(), telemetry.recorder))
    llm = chat_model(simulator)  # the library builds its clients from parameters
    assert pipeline_of(llm.root_client) is pipeline and pipeline_of(llm.root_async_client) is pipeline

    async def run_async() -> str:
        if mode == "ainvoke":
            return str((await llm.ainvoke("hello", extra_headers=fault_once())).content)
        return "".join([str(c.content) async for c in llm.astream("hello", extra_headers=fault_once())])

    if mode == "invoke":
        text = str(llm.invoke("hello", extra_headers=fault_once()).content)
    elif mode == "stream":
        text = "".join(str(c.content) for c in llm.stream("hello", extra_headers=fault_once()))
    else:
        text = loop.run_until_complete(run_async())
    assert text  # the call succeeded although its first attempt got a 500

    stats = simulator.stats()["total"]
    assert stats["faults_total"] == 1 and stats["served"] == 1
    calls = telemetry.spans(CALL_SPAN)
    assert len(calls) == 1
    call = calls[0]
    assert call.attributes[n.A_REQUEST_STREAM] is mode.endswith("stream")
    assert any(e.name == n.E_BACKOFF for e in call.events)
    attempts = [s for s in telemetry.spans() if s.parent is not None and s.parent.span_id == call.context.span_id]
    assert [a.attributes.get(n.A_HTTP_STATUS) for a in attempts] == [500, 200]
    if mode.endswith("stream"):
        assert call.attributes[n.A_STREAM_END] == n.STREAM_END_COMPLETED
        assert call.attributes[n.A_CHUNKS] >= 1
