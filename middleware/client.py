"""The drop-in facade: ``protect(client)`` returns a client that *is* an ``OpenAI`` / ``AsyncOpenAI``.

The protected client is an instance of a subclass of the caller's client class, created with the
SDK's own ``copy()`` (sharing its HTTP connection pool). It overrides the one funnel every SDK
request goes through (``request``), so protection applies on every path to the routed operations
(``create``, ``with_raw_response``, ``with_streaming_response``, ``stream()``, ``parse()``) and on
clients derived with ``with_options()`` / ``copy()``. Everything else passes through untouched.
"""

from __future__ import annotations

import typing
from typing import Any, TypeVar

import openai
from openai import AsyncOpenAI, AsyncStream, OpenAI, Stream
from openai.types.chat import ChatCompletionChunk

from .config import Config
from .context import CallContext
from .pipeline import CURRENT_CALL, Pipeline, route_of
from .streaming.guard import OBSERVERS, GuardedAsyncStream, GuardedStream, StreamObserver
from .streaming.request import acollect, collect, force_stream, stream_update
from .streaming.resumption import RESUMING, send_resumption_async, send_resumption_sync
from .telemetry.recorder import Recorder

ClientT = TypeVar("ClientT", OpenAI, AsyncOpenAI)

PIPELINE_ATTR = "_middleware_pipeline"
_SUBCLASSES: dict[type, type] = {}
_ORIGINAL: dict[type, type] = {}


def _guarded_cls(stream_cls: Any, guarded: type) -> Any:
    """``Stream[X]`` -> ``GuardedStream[X]`` (the SDK reads the chunk type from the alias)."""
    if stream_cls is None:
        return None
    args = typing.get_args(stream_cls)
    origin = typing.get_origin(stream_cls) or stream_cls
    if origin not in (Stream, AsyncStream) or not args:
        return stream_cls  # a custom stream class of the caller's: leave it alone
    return typing.cast(Any, guarded)[args[0]]


def _prepare(pipeline: Pipeline, ctx: CallContext, options: Any, client_timeout: Any = None) -> Any:
    """Per-attempt options: SDK retries off (our loop owns them); streams: usage, idle timeout."""
    update: dict[str, Any] = {"max_retries": 0}
    if ctx.stream:
        update.update(stream_update(pipeline.config.streaming, ctx, options, client_timeout))
    return options.model_copy(update=update)


def _server(client: Any) -> tuple[str | None, int | None]:
    try:
        url = client.base_url
        return url.host, url.port
    except Exception:
        return None, None


class _ProtectedSync(OpenAI):
    """Mixin body for protected sync clients (see ``protect``)."""

    _middleware_pipeline: Pipeline

    def request(  # type: ignore[override]
        self, cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None
    ) -> Any:
        route = route_of(options)
        pipeline = getattr(self, PIPELINE_ATTR, None)
        slot = RESUMING.get()
        if slot is not None and pipeline is not None:  # a resumed request of a broken stream
            base = super().request
            return send_resumption_sync(pipeline, slot, self.api_key, options,
                                        lambda o: base(cast_to, o, stream=stream, stream_cls=stream_cls))
        if route is None or pipeline is None:
            return super().request(cast_to, options, stream=stream, stream_cls=stream_cls)
        body = options.json_data if isinstance(options.json_data, dict) else {}
        ctx = pipeline.begin(route, body, server=_server(self))
        try:
            forced = None if stream else force_stream(pipeline, ctx, cast_to, options)
            if forced is not None:
                options, stream, stream_cls = forced, True, Stream[ChatCompletionChunk]
            opts = _prepare(pipeline, ctx, options, self.timeout)
            key = pipeline.limiter_key(self.api_key, ctx.model)
            tokens = pipeline.estimate(ctx)
            guarded = _guarded_cls(stream_cls, GuardedStream)
            base_request = super().request

            def send(o: Any) -> Any:
                return base_request(cast_to, o, stream=stream, stream_cls=guarded)

            result = pipeline.run_sync(ctx, key, tokens, opts, send)
        except BaseException as exc:
            pipeline.fail(ctx, exc)
            raise
        if forced is not None:
            return collect(result, cast_to)
        if not stream:
            pipeline.complete(ctx, result)
        return result

    def _process_response(self, **kwargs: Any) -> Any:  # type: ignore[override]
        _observe_response(kwargs["response"], kwargs.get("stream", False))
        return super()._process_response(**kwargs)

    def copy(self, **kwargs: Any) -> Any:  # type: ignore[override]
        new = super().copy(**kwargs)
        setattr(new, PIPELINE_ATTR, getattr(self, PIPELINE_ATTR, None))
        return new

    with_options = copy  # type: ignore[assignment]


class _ProtectedAsync(AsyncOpenAI):
    """Mixin body for protected async clients (see ``protect``)."""

    _middleware_pipeline: Pipeline

    async def request(  # type: ignore[override]
        self, cast_to: Any, options: Any, *, stream: bool = False, stream_cls: Any = None
    ) -> Any:
        route = route_of(options)
        pipeline = getattr(self, PIPELINE_ATTR, None)
        slot = RESUMING.get()
        if slot is not None and pipeline is not None:  # a resumed request of a broken stream
            base = super().request

            async def resend(o: Any) -> Any:
                return await base(cast_to, o, stream=stream, stream_cls=stream_cls)

            return await send_resumption_async(pipeline, slot, self.api_key, options, resend)
        if route is None or pipeline is None:
            return await super().request(cast_to, options, stream=stream, stream_cls=stream_cls)
        body = options.json_data if isinstance(options.json_data, dict) else {}
        ctx = pipeline.begin(route, body, server=_server(self))
        try:
            forced = None if stream else force_stream(pipeline, ctx, cast_to, options)
            if forced is not None:
                options, stream, stream_cls = forced, True, AsyncStream[ChatCompletionChunk]
            opts = _prepare(pipeline, ctx, options, self.timeout)
            key = pipeline.limiter_key(self.api_key, ctx.model)
            tokens = pipeline.estimate(ctx)
            guarded = _guarded_cls(stream_cls, GuardedAsyncStream)
            base_request = super().request

            async def send(o: Any) -> Any:
                return await base_request(cast_to, o, stream=stream, stream_cls=guarded)

            result = await pipeline.run_async(ctx, key, tokens, opts, send)
        except BaseException as exc:
            pipeline.fail(ctx, exc)
            raise
        if forced is not None:
            return await acollect(result, cast_to)
        if not stream:
            pipeline.complete(ctx, result)
        return result

    async def _process_response(self, **kwargs: Any) -> Any:  # type: ignore[override]
        _observe_response(kwargs["response"], kwargs.get("stream", False))
        return await super()._process_response(**kwargs)

    def copy(self, **kwargs: Any) -> Any:  # type: ignore[override]
        new = super().copy(**kwargs)
        setattr(new, PIPELINE_ATTR, getattr(self, PIPELINE_ATTR, None))
        return new

    with_options = copy  # type: ignore[assignment]


def _observe_response(response: Any, stream: bool) -> None:
    """Response hook: hand the attempt's headers to the call; register the stream observer."""
    ctx = CURRENT_CALL.get()
    if ctx is None:
        return
    ctx.headers = response.headers
    ctx.status_code = response.status_code
    if stream and ctx.resumption_of is None:  # a resumed request feeds the original stream's observer
        pipeline = ctx.pipeline
        if pipeline is not None:
            OBSERVERS[response] = StreamObserver(pipeline, ctx)


def _protected_class(cls: type) -> type:
    """The protected subclass of a client class (created once per class)."""
    sub = _SUBCLASSES.get(cls)
    if sub is None:
        mixin = _ProtectedAsync if issubclass(cls, AsyncOpenAI) else _ProtectedSync
        sub = type(cls.__name__, (mixin, cls), {
            "__doc__": f"A protected {cls.__name__} (see middleware.protect).",
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
        })
        _SUBCLASSES[cls] = sub
        _ORIGINAL[sub] = cls
    return sub


def protect(
    client: ClientT,
    config: Config | None = None,
    *,
    recorder: Recorder | None = None,
    pipeline: Pipeline | None = None,
) -> ClientT:
    """Return a protected client that behaves like ``client`` for every attribute.

    ``isinstance(protect(c), type(c))`` holds. The original client is not modified; the protected
    one shares its HTTP connection pool. Pass one ``pipeline`` to several clients to share one
    limiter, retry budget and predictor between them.
    """
    if not isinstance(client, (OpenAI, AsyncOpenAI)):
        raise TypeError(f"protect() takes an openai.OpenAI or openai.AsyncOpenAI client, not {type(client).__name__}")
    if pipeline is None:
        cfg = config or Config()
        rec = recorder or Recorder(capture_content=cfg.capture_content, model_label_cap=cfg.model_label_cap)
        pipeline = Pipeline(cfg, rec)
    base_cls = _ORIGINAL.get(type(client), type(client))
    new = client.copy()
    new.__class__ = _protected_class(base_cls)
    setattr(new, PIPELINE_ATTR, pipeline)
    return new


def pipeline_of(client: Any) -> Pipeline:
    """The pipeline of a protected client (raises TypeError for an unprotected one)."""
    pipeline = getattr(client, PIPELINE_ATTR, None)
    if pipeline is None:
        raise TypeError("not a protected client: use middleware.protect(client)")
    return typing.cast(Pipeline, pipeline)


__all__ = ["pipeline_of", "protect"]
_ = openai  # the SDK module is part of this facade's contract
