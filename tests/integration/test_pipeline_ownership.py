"""One pipeline owns each call: custom stream classes end, one settle rule, no module-level in-flight state."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import openai
import pytest
from openai import AsyncStream, Stream
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from middleware import Config, StreamConfig, pipeline_of
from middleware.limits import Limiter, LimiterKey, Reservation
from middleware.pipeline import Pipeline
from middleware.telemetry import names as n
from middleware.tokens import TokenEstimator

pytestmark = pytest.mark.sdk  # SDK-facing: run against every supported openai release

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Tell me about token buckets."}]
BODY = {"model": MODEL, "messages": MESSAGES, "max_tokens": 60, "stream": True}


class MyStream(Stream[ChatCompletionChunk]):
    """A caller's own stream class (non-generic subclass)."""

    seen = 0

    def __stream__(self) -> Any:
        for chunk in super().__stream__():
            MyStream.seen += 1
            yield chunk


T = TypeVar("T")


class MyGenericStream(Stream[T], Generic[T]):
    """A caller's own generic stream class, parametrised at the call."""


class MyAsyncStream(AsyncStream[ChatCompletionChunk]):
    """A caller's own async stream class."""


class NotAStream:
    """A stream class the SDK can build but that is no Stream: the middleware cannot observe it."""

    def __init__(self, *, cast_to: Any, response: Any, client: Any, options: Any = None) -> None:
        self.response = response

    def close(self) -> None:
        self.response.close()


def _inflight(telemetry: Any) -> float:
    return telemetry.sample(n.INFLIGHT.prom_name, operation="chat")


@pytest.mark.parametrize("stream_cls", [MyStream, MyGenericStream[ChatCompletionChunk]])
def test_a_custom_stream_class_gives_a_call_that_ends_by_reading(
    simulator: Any, protect_with: Callable[..., Any], telemetry: Any, stream_cls: Any
) -> None:
    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="k"))
    MyStream.seen = 0
    stream = client.post("/chat/completions", body=BODY, cast_to=ChatCompletion, stream=True, stream_cls=stream_cls)
    origin = getattr(stream_cls, "__origin__", stream_cls)
    assert isinstance(stream, origin)
    assert _inflight(telemetry) == 1
    chunks = list(stream)
    assert chunks and all(isinstance(c, ChatCompletionChunk) for c in chunks)
    if stream_cls is MyStream:
        assert MyStream.seen >= len(chunks)  # the caller's own __stream__ still ran
    assert _inflight(telemetry) == 0
    (span,) = telemetry.spans(f"chat {MODEL}")
    assert span.attributes[n.A_STREAM_END] == n.STREAM_END_COMPLETED
    assert span.attributes[n.A_USAGE_OUTPUT] > 0


def test_a_custom_async_stream_class_ends_by_reading(
    simulator: Any, protect_with: Callable[..., Any], telemetry: Any
) -> None:
    async def run() -> int:
        client = protect_with(openai.AsyncOpenAI(base_url=simulator.base_url, api_key="k"))
        stream = await client.post("/chat/completions", body=BODY, cast_to=ChatCompletion, stream=True,
                                   stream_cls=MyAsyncStream)
        assert isinstance(stream, MyAsyncStream)
        return len([c async for c in stream])

    assert asyncio.run(run()) > 0
    assert _inflight(telemetry) == 0
    (span,) = telemetry.spans(f"chat {MODEL}")
    assert span.attributes[n.A_STREAM_END] == n.STREAM_END_COMPLETED


def test_a_stream_class_the_sdk_cannot_build_fails_as_without_protect(
    simulator: Any, protect_with: Callable[..., Any], telemetry: Any
) -> None:
    raw = openai.OpenAI(base_url=simulator.base_url, api_key="k")
    with pytest.raises(Exception) as unprotected:
        raw.post("/chat/completions", body=BODY, cast_to=ChatCompletion, stream=True, stream_cls=NotAStream)
    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="k"))
    with pytest.raises(type(unprotected.value)):
        client.post("/chat/completions", body=BODY, cast_to=ChatCompletion, stream=True, stream_cls=NotAStream)
    assert _inflight(telemetry) == 0
    (span,) = telemetry.spans(f"chat {MODEL}")
    assert span.attributes[n.A_ERROR_TYPE] == type(unprotected.value).__name__


def test_a_raw_stream_never_parsed_ends_as_abandoned(
    simulator: Any, protect_with: Callable[..., Any], telemetry: Any
) -> None:
    client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="k"))
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, stream=True)
    assert raw.headers.get("x-request-id")
    assert _inflight(telemetry) == 1
    raw.http_response.close()
    del raw
    gc.collect()
    assert _inflight(telemetry) == 0
    (span,) = telemetry.spans(f"chat {MODEL}")
    assert span.attributes[n.A_STREAM_END] == n.STREAM_END_ABANDONED


class RecordingLimiter(Limiter):
    """A real limiter that also keeps what was reserved and settled (the rule under test)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reserved: list[int] = []
        self.settled: list[tuple[int, int]] = []

    def reserve(self, key: LimiterKey, tokens: int) -> Reservation:
        self.reserved.append(tokens)
        return super().reserve(key, tokens)

    def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        self.settled.append((reservation.tokens, actual_tokens))
        super().settle(reservation, actual_tokens)


class RecordingEstimator(TokenEstimator):
    """The real estimator, keeping each estimate with the body it was made for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.made: list[tuple[dict[str, Any], Any]] = []

    def estimate(self, operation: str, model: str, body: Any, **kwargs: Any) -> Any:
        est = super().estimate(operation, model, body, **kwargs)
        self.made.append((body, est))
        return est


def _pipeline(telemetry: Any, reserve_output: str) -> tuple[Pipeline, RecordingLimiter, RecordingEstimator]:
    cfg = Config(reserve_output=reserve_output, streaming=StreamConfig(force_stream_above_tokens=None))  # type: ignore[arg-type]
    limiter = RecordingLimiter(cfg.limits, events=telemetry.recorder)
    estimator = RecordingEstimator(events=telemetry.recorder)
    return Pipeline(cfg, telemetry.recorder, limiter=limiter, estimator=estimator), limiter, estimator


@pytest.mark.parametrize("reserve_output", ["predicted", "max"])
def test_one_settle_rule_for_plain_calls_streams_and_resumptions(
    simulator: Any, telemetry: Any, reserve_output: str
) -> None:
    from middleware import protect

    pipeline, limiter, estimator = _pipeline(telemetry, reserve_output)
    client = protect(openai.OpenAI(base_url=simulator.base_url, api_key="k"), pipeline=pipeline)
    kw: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": 400,
                          "extra_headers": {"x-sim-output-tokens": "120"}}
    for _ in range(22):  # history for the predictor (it predicts after 20 calls)
        client.chat.completions.create(**kw)
    assert (pipeline.predictor.predict(MODEL, "chat", 400) or 400) < 400
    limiter.reserved.clear()
    limiter.settled.clear()
    estimator.made.clear()

    plain = client.chat.completions.create(**kw)
    stream = client.chat.completions.create(**kw, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    cut = client.chat.completions.create(
        **{**kw, "extra_headers": {"x-sim-output-tokens": "120", "x-sim-fault": "cut_after=40",
                                   "x-sim-fault-once": f"settle-{reserve_output}"}}, stream=True)
    resumed_text = "".join(c.choices[0].delta.content or "" for c in cut if c.choices)
    assert len(resumed_text) == len(text)  # one continuation put the stream back together

    # Reservations: one rule on every path (plain, stream, cut stream, its continuation).
    assert len(limiter.reserved) == len(estimator.made) == 4
    continuation_body, _ = estimator.made[3]
    assert continuation_body["messages"][-1]["role"] == "assistant"
    for reserved, (_, est) in zip(limiter.reserved, estimator.made):
        if reserve_output == "predicted":
            assert est.predicted_output_tokens is not None and est.predicted_output_tokens < est.max_output_tokens
            assert reserved == est.prompt_tokens + est.predicted_output_tokens
        else:
            assert reserved == est.prompt_tokens + est.max_output_tokens
    # Settlements: the usage the upstream reported (the simulator's own count), charged by the same rule;
    # the broken request's reservation stays charged, the continuation's is settled.
    assert len(limiter.settled) == 3
    usage = plain.usage
    expected = usage.prompt_tokens + (usage.completion_tokens if reserve_output == "predicted"
                                      else max(usage.completion_tokens, 400))
    assert limiter.settled[0] == (limiter.reserved[0], expected)
    assert limiter.settled[2][0] == limiter.reserved[3]


def _module_containers() -> dict[str, int]:
    """Sizes of every module-level container in the middleware package (dicts, lists, sets, weak maps)."""
    sizes: dict[str, int] = {}
    for name, module in list(sys.modules.items()):
        if not name.startswith("middleware") or module is None:
            continue
        for attr, value in vars(module).items():
            if isinstance(value, (dict, list, set, weakref.WeakKeyDictionary, weakref.WeakValueDictionary,
                                  weakref.WeakSet)) and not attr.startswith("__"):
                sizes[f"{name}.{attr}"] = len(value)
    return sizes


def test_no_module_level_state_grows_with_calls(
    simulator: Any, protect_with: Callable[..., Any], tmp_path: Any
) -> None:
    cfg = Config(streaming=StreamConfig(checkpoint_dir=tmp_path, checkpoint_every_chunks=10))

    rounds = iter(range(100))

    def workload() -> None:
        once = f"state-{next(rounds)}-{tmp_path.name}"
        client = protect_with(openai.OpenAI(base_url=simulator.base_url, api_key="k"), cfg)
        aclient = protect_with(openai.AsyncOpenAI(base_url=simulator.base_url, api_key="k"), cfg)
        kw: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": 30}
        client.chat.completions.create(**kw)
        list(client.chat.completions.create(**kw, stream=True))
        abandoned = client.chat.completions.create(**kw, stream=True)
        next(iter(abandoned))
        del abandoned
        list(client.chat.completions.create(**kw, stream=True,
                                            extra_headers={"x-sim-fault": "cut_after=5", "x-sim-fault-once": once}))
        client.responses.create(model=MODEL, input="hi", max_output_tokens=20)
        client.embeddings.create(model="text-embedding-3-small", input=["a"])

        async def run() -> None:
            await aclient.chat.completions.create(**kw)
            stream = await aclient.chat.completions.create(**kw, stream=True)
            async for _ in stream:
                pass

        asyncio.run(run())
        gc.collect()

    workload()  # warm-up: class caches fill once
    before = _module_containers()
    for _ in range(3):
        workload()
    after = _module_containers()
    grown = {k: (before.get(k, 0), v) for k, v in after.items() if v > before.get(k, 0)}
    assert grown == {}
    assert pipeline_of  # the facade module was scanned too
