"""The protected client classes: the SDK's ``request()`` funnel routed through the pipeline.

``protected_copy(client, pipeline)`` copies a client with the SDK's own ``copy()`` (sharing its
connection pool) and switches the copy's class to a subclass of the caller's class (made once per
class), so ``isinstance`` holds. The subclass overrides the one funnel every SDK request goes
through (``request``) and the response hook (``_process_response``) that hands an attempt's raw
response back to the adapter (see ``requests.Capture``); ``copy()``/``with_options()`` keep the
pipeline. Routed operations (``POST /chat/completions``, ``/responses``, ``/embeddings``) go to
the pipeline; everything else passes through untouched.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, Protocol

from openai import AsyncOpenAI, OpenAI

from .requests import Capture, SdkRequest, route_of

PIPELINE_ATTR = "_middleware_pipeline"


class CallRunner(Protocol):
    """What the funnel hands a routed request to (the pipeline)."""

    def call_sync(self, request: SdkRequest) -> Any:
        """Run a call to its result (sync)."""

    async def call_async(self, request: SdkRequest) -> Any:
        """Run a call to its result (async)."""


class _ProtectedSync(OpenAI):
    """Body of protected sync client classes (see ``protected_class``)."""

    _middleware_pipeline: Any = None

    def request(  # type: ignore[override]
        self, cast_to: Any, options: Any, *args: Any, stream: bool = False, stream_cls: Any = None, **kwargs: Any
    ) -> Any:
        pipeline = self._middleware_pipeline
        route = route_of(options) if pipeline is not None and not args and not kwargs else None
        if route is None or isinstance(cast_to, Capture):
            return super().request(cast_to, options, *args, stream=stream, stream_cls=stream_cls, **kwargs)
        cast_to = self._maybe_override_cast_to(cast_to, options)
        request = SdkRequest(self, super().request, super()._process_response, cast_to, options, stream=stream,
                             stream_cls=stream_cls, route=route, is_async=False)
        return pipeline.call_sync(request)

    def _process_response(self, *, cast_to: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if isinstance(cast_to, Capture):
            return cast_to.take(**kwargs)
        return super()._process_response(cast_to=cast_to, **kwargs)

    def copy(self, **kwargs: Any) -> Any:  # type: ignore[override]
        new = super().copy(**kwargs)
        setattr(new, PIPELINE_ATTR, self._middleware_pipeline)
        return new

    with_options = copy  # type: ignore[assignment]


class _ProtectedAsync(AsyncOpenAI):
    """Body of protected async client classes (see ``protected_class``)."""

    _middleware_pipeline: Any = None

    async def request(  # type: ignore[override]
        self, cast_to: Any, options: Any, *args: Any, stream: bool = False, stream_cls: Any = None, **kwargs: Any
    ) -> Any:
        pipeline = self._middleware_pipeline
        route = route_of(options) if pipeline is not None and not args and not kwargs else None
        if route is None or isinstance(cast_to, Capture):
            return await super().request(cast_to, options, *args, stream=stream, stream_cls=stream_cls, **kwargs)
        cast_to = self._maybe_override_cast_to(cast_to, options)
        request = SdkRequest(self, super().request, super()._process_response, cast_to, options, stream=stream,
                             stream_cls=stream_cls, route=route, is_async=True)
        return await pipeline.call_async(request)

    async def _process_response(self, *, cast_to: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if isinstance(cast_to, Capture):
            return cast_to.take(**kwargs)
        return await super()._process_response(cast_to=cast_to, **kwargs)

    def copy(self, **kwargs: Any) -> Any:  # type: ignore[override]
        new = super().copy(**kwargs)
        setattr(new, PIPELINE_ATTR, self._middleware_pipeline)
        return new

    with_options = copy  # type: ignore[assignment]


_SUBCLASSES: dict[type, type] = {}
_ORIGINAL: dict[type, type] = {}
_LOCK = threading.Lock()


def is_client(obj: object) -> bool:
    """True for an ``openai.OpenAI`` / ``openai.AsyncOpenAI`` (or a subclass such as the Azure clients)."""
    return isinstance(obj, (OpenAI, AsyncOpenAI))


def is_async_client(obj: object) -> bool:
    """True for an ``openai.AsyncOpenAI`` (or subclass)."""
    return isinstance(obj, AsyncOpenAI)


def unprotected_class(cls: type) -> type:
    """The caller's class behind a protected class (itself for an unprotected one)."""
    return _ORIGINAL.get(cls, cls)


def protected_class(cls: type) -> type:
    """The protected subclass of a client class (created once per class)."""
    cls = unprotected_class(cls)
    sub = _SUBCLASSES.get(cls)
    if sub is not None:
        return sub
    with _LOCK:
        sub = _SUBCLASSES.get(cls)
        if sub is None:
            body = _ProtectedAsync if issubclass(cls, AsyncOpenAI) else _ProtectedSync
            sub = type(cls.__name__, (body, cls), {
                "__doc__": f"A protected {cls.__name__} (see middleware.protect).",
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
            })
            _SUBCLASSES[cls] = sub
            _ORIGINAL[sub] = cls
    return sub


def protected_copy(client: Any, pipeline: CallRunner) -> Any:
    """A copy of ``client`` (same connection pool) whose routed requests run through ``pipeline``."""
    new = client.copy()
    new.__class__ = protected_class(type(client))
    setattr(new, PIPELINE_ATTR, pipeline)
    return new


def pipeline_attached(client: Any) -> Any:
    """The pipeline of a protected client, None for any other object."""
    return getattr(client, PIPELINE_ATTR, None) if is_client(client) else None


# --- install(): every client constructed from then on is protected ------------------------------------------------
#
# ``OpenAI.__init__`` and ``AsyncOpenAI.__init__`` (both in their class dicts, so every subclass such as the Azure
# clients reaches them through ``super().__init__``) are replaced by a wrapper that runs the original and then
# switches the new instance to its protected class with the installed pipeline, exactly as ``protected_copy``
# does. Not ``__new__``: CPython cannot take an assigned ``__new__`` back (after ``del OpenAI.__new__`` the
# class keeps a slot that calls ``object.__new__`` with the constructor's arguments, and construction fails),
# whereas ``__init__`` is restored by putting the original function object back: the class dicts are then
# exactly what they were.

_HOOKS: dict[type, tuple[Any, Any]] = {}  # hooked class -> (its original __init__, our wrapper)
_installed: Any = None  # the pipeline given to clients constructed while installed; None: not installed


def _hook(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        pipeline = _installed
        if pipeline is not None and PIPELINE_ATTR not in vars(self):
            self.__class__ = protected_class(type(self))
            setattr(self, PIPELINE_ATTR, pipeline)

    return __init__


def install_protection(pipeline: CallRunner) -> None:
    """From now on every ``OpenAI``/``AsyncOpenAI`` (subclasses included) constructed is protected by ``pipeline``.

    Idempotent and thread-safe; a second call only changes the pipeline given to clients constructed later.
    Clients that exist already are not touched (their ``copy()``/``with_options()`` build new, protected ones).
    """
    global _installed
    with _LOCK:
        for cls in (OpenAI, AsyncOpenAI):
            if cls not in _HOOKS:
                original = cls.__dict__["__init__"]
                wrapper = _hook(original)
                _HOOKS[cls] = (original, wrapper)
                type.__setattr__(cls, "__init__", wrapper)
        _installed = pipeline


def uninstall_protection() -> bool:
    """Undo :func:`install_protection`: the client classes get their own ``__init__`` back (idempotent).

    Clients constructed while installed stay protected. Should another library have wrapped a client's
    ``__init__`` on top of ours since, ours is left in its chain, inert, so that theirs keeps working; the
    result is then False (and a later install reuses it).
    """
    global _installed
    exact = True
    with _LOCK:
        _installed = None
        for cls, (original, wrapper) in list(_HOOKS.items()):
            if cls.__dict__.get("__init__") is wrapper:
                type.__setattr__(cls, "__init__", original)
                del _HOOKS[cls]
            else:
                exact = False
    return exact


def installed_pipeline() -> Any:
    """The pipeline ``install_protection`` gives new clients, None when not installed."""
    return _installed


def new_request(
    client: Any,
    *,
    method: str,
    url: str,
    route: str,
    cast_to: Any,
    body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    stream_chunk: Any = None,
    observe: bool = True,
) -> SdkRequest:
    """A request built from scratch (as ``client.post``/``client.get`` would) on a protected client.

    Used to continue a stream from a checkpoint in a new process: the request runs through the
    pipeline like a caller's, with no funnel call to start it.
    """
    from openai._models import FinalRequestOptions

    from .streams import plain_stream_class

    is_async = isinstance(client, AsyncOpenAI)
    body_cls: type = _ProtectedAsync if is_async else _ProtectedSync
    if not isinstance(client, body_cls):
        raise TypeError("not a protected client: use middleware.protect(client)")
    options = FinalRequestOptions.construct(method=method, url=url, json_data=body, params=params or {},
                                            headers=headers or {})
    base: Any = super(body_cls, client)
    stream = stream_chunk is not None
    stream_cls = plain_stream_class(stream_chunk, is_async=is_async) if stream else None
    return SdkRequest(client, base.request, base._process_response, cast_to, options, stream=stream,
                      stream_cls=stream_cls, route=route, is_async=is_async, observe=observe)
