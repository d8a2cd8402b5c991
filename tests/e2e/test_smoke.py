"""One protected call end to end (real SDK, real HTTP to the simulator, real OTel SDK): the check run on
every supported Python and every supported openai release."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import openai
import pytest

from middleware import protect
from middleware.pipeline import Pipeline
from middleware.telemetry import names as n

pytestmark = [pytest.mark.smoke, pytest.mark.sdk]

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello."}]


def test_one_call_and_one_stream_end_to_end(simulator: Any, telemetry: Any) -> None:
    from middleware import Config

    pipeline = Pipeline(Config(), telemetry.recorder)
    client = protect(openai.OpenAI(base_url=simulator.base_url, api_key="k"), pipeline=pipeline)
    reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20)
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in
                   client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20, stream=True)
                   if c.choices)
    assert text

    async def run() -> str:
        aclient = protect(openai.AsyncOpenAI(base_url=simulator.base_url, api_key="k"), pipeline=pipeline)
        answer = await aclient.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=20)
        return answer.choices[0].message.content or ""

    assert asyncio.run(run())
    calls = telemetry.spans(f"chat {MODEL}")
    assert len(calls) == 3 and all(s.attributes[n.A_USAGE_OUTPUT] > 0 for s in calls)
    assert telemetry.sample(n.REQUESTS.prom_name, outcome=n.OUTCOME_SUCCESS) == 3
    print(f"python {sys.version.split()[0]}, openai {openai.__version__}: 3 calls observed")
