"""Guarded stream classes: the SDK's ``Stream`` / ``AsyncStream`` (or a caller's subclass of them)
with every chunk reported to the call's stream observer, resumption when the stream breaks, and
the call ended exactly once.

For each stream class the SDK is asked to build (``Stream[X]``, ``AsyncStream[X]``, or a caller's
own subclass) a guarded subclass is made once and cached, so ``isinstance`` checks and the SDK's
``stream()`` helpers keep working. The observer reaches the stream through the HTTP response it
is built from: the adapter puts it in ``response.extensions`` before the SDK builds the stream, and
the guard takes it from there. The observer decides (once, for sync and async) what a break means
and how to resume; the guard only performs the resumed request and keeps iterating, so the caller
sees one uninterrupted stream. The call ends on completion, server error, early ``break``,
``close()``, context-manager exit, or garbage collection of an abandoned stream.
"""

from __future__ import annotations

import threading
import types
import weakref
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any, Protocol

from openai import AsyncStream, Stream
from openai._streaming import extract_stream_chunk_type

OBSERVER_EXTENSION = "llm_middleware.stream_observer"

# Stream end states (the names module's values, repeated here to keep the adapter free of telemetry imports).
_COMPLETED, _ERROR, _CLOSED, _ABANDONED = "completed", "error", "closed_early", "abandoned"


class StreamDriver(Protocol):
    """What a guarded stream asks of the call's stream observer (see ``middleware.streaming.observer``)."""

    done: bool

    def claim(self) -> None:
        """The stream that carries the call was built: the call now ends with it."""

    @property
    def hides_null_usage(self) -> bool:
        """True when the caller did not ask for usage on a chat stream and the middleware did: the
        ``"usage": null`` every chunk then carries is taken out before the SDK parses it."""

    def on_chunk(self, chunk: Any) -> bool:
        """Record a chunk; False hides it from the caller."""

    def on_break(self, exc: Exception) -> Any:
        """A break: a resume plan, or None to end with the partial result (raises otherwise)."""

    def on_resume_failed(self, exc: Exception) -> Any:
        """The resumed request failed: another plan, or None (raises otherwise)."""

    def resume(self, plan: Any) -> Any:
        """Issue the resumed request (sync): a plain SDK stream."""

    async def aresume(self, plan: Any) -> Any:
        """Issue the resumed request (async): a plain SDK stream."""

    def finish(self, state: str, error: BaseException | None = None) -> None:
        """End the call (idempotent)."""

    @property
    def checkpoint_id(self) -> str | None:
        """Checkpoint id of the stream, if checkpointing."""

    def snapshot_partial(self) -> Any:
        """Everything received so far."""


def put_observer(response: Any, observer: Any) -> None:
    """Hand ``observer`` to the stream the SDK will build from ``response``."""
    extensions = getattr(response, "extensions", None)
    if isinstance(extensions, MutableMapping):
        extensions[OBSERVER_EXTENSION] = observer
    else:
        response.extensions = {**(extensions or {}), OBSERVER_EXTENSION: observer}


# ``stream_options.include_usage`` makes every chat chunk carry ``"usage": null`` until the last one. When the
# middleware asked for usage and the caller did not, those bytes are taken out of the response before the SDK's
# SSE decoder sees them: the caller's chunks are then exactly what the raw SDK gives it (``usage`` not set, as
# ``model_dump(exclude_unset=True)`` and ``to_dict()`` show), and the SDK does not parse a field on every chunk.
# Only these exact spellings are removed: inside a JSON string quotes are escaped, so they can only be a key of an
# object, and a ``"usage": null`` key means what an absent one means to the SDK's models. A network read that ends
# inside one holds back those few bytes (never an event's end) until the next read completes them.
_NULL_USAGE = (b',"usage":null', b', "usage": null')
_KEY = b'"usage"'
_LAST_NULL_USAGE = b',"usage":null}\n\n'
_LAST_LEN = len(_LAST_NULL_USAGE)


def _held_tail(data: bytes) -> int:
    """How many bytes at the end of ``data`` begin one of the ``_NULL_USAGE`` spellings (0 if none)."""
    start = data.rfind(b",", max(0, len(data) - len(_NULL_USAGE[1]) + 1))
    if start < 0:
        return 0
    tail = data[start:]
    return len(tail) if _NULL_USAGE[0].startswith(tail) or _NULL_USAGE[1].startswith(tail) else 0


def _strip(data: bytes) -> bytes:
    for pattern in _NULL_USAGE:
        if pattern in data:
            data = data.replace(pattern, b"")
    return data


class _NullUsageFilter:
    """One response's bytes, read by read: the ``"usage": null`` members out, a cut one held to the next read."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = b""

    def feed(self, data: bytes) -> bytes:
        """What of ``data`` (after what was held) can be passed on now."""
        if self.held:
            data, self.held = self.held + data, b""
        elif data.endswith(_LAST_NULL_USAGE) and data.rfind(_KEY, 0, -_LAST_LEN) < 0:
            # the usual read (OpenAI's spelling): one event whose last member is the only "usage"
            return data[:-_LAST_LEN] + b"}\n\n"
        if _KEY in data:
            data = _strip(data)
        if data[-1:] != b"\n" and (keep := _held_tail(data)):  # a read that ends an event holds nothing back
            data, self.held = data[:-keep], data[-keep:]
        return data


def strip_null_usage(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The response bytes without the ``"usage": null`` members of chat chunks (see ``_NULL_USAGE``)."""
    cut = _NullUsageFilter()
    for data in chunks:
        if out := cut.feed(data):
            yield out
    if cut.held:
        yield cut.held


async def astrip_null_usage(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Async twin of :func:`strip_null_usage`."""
    cut = _NullUsageFilter()
    async for data in chunks:
        if out := cut.feed(data):
            yield out
    if cut.held:
        yield cut.held


class _NullUsageDecoder:
    """The SDK's SSE decoder, fed the response bytes through :func:`strip_null_usage`."""

    def __init__(self, decoder: Any) -> None:
        self._decoder = decoder

    def iter_bytes(self, iterator: Iterator[bytes]) -> Any:
        return self._decoder.iter_bytes(strip_null_usage(iterator))

    def aiter_bytes(self, iterator: AsyncIterator[bytes]) -> Any:
        return self._decoder.aiter_bytes(astrip_null_usage(iterator))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._decoder, name)


def hide_null_usage(stream: Any) -> None:
    """Have ``stream`` (an SDK ``Stream``/``AsyncStream`` not yet iterated) drop ``"usage": null`` members."""
    decoder = getattr(stream, "_decoder", None)
    if decoder is not None and not isinstance(decoder, _NullUsageDecoder):
        stream._decoder = _NullUsageDecoder(decoder)


def _take_observer(response: Any) -> Any:
    extensions = getattr(response, "extensions", None)
    if isinstance(extensions, MutableMapping):
        return extensions.pop(OBSERVER_EXTENSION, None)
    return None


class _Guard:
    """What both guarded stream kinds share: the observer, the current resumed stream, abandonment."""

    _mw: Any = None
    _mw_current: Any = None

    def _mw_attach(self, response: Any) -> None:
        observer = _take_observer(response)
        if observer is not None:
            self._mw = observer
            observer.claim()
            if observer.hides_null_usage:
                hide_null_usage(self)

    @property
    def checkpoint_id(self) -> str | None:
        """The id under which this stream writes checkpoints (None without a checkpoint store)."""
        return self._mw.checkpoint_id if self._mw is not None else None

    @property
    def partial(self) -> Any:
        """Everything received so far (a ``middleware.PartialResult``), None when unobserved."""
        return self._mw.snapshot_partial() if self._mw is not None else None

    def __del__(self) -> None:
        observer = self._mw
        if observer is not None and not observer.done:
            try:
                observer.finish(_ABANDONED)
            except Exception:
                pass


class SyncGuard(_Guard):
    """Mixin for ``Stream`` subclasses (first in the bases, so its methods win)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mw_attach(kwargs.get("response"))

    def __stream__(self) -> Iterator[Any]:
        inner: Iterator[Any] = super().__stream__()  # type: ignore[misc]
        obs = self._mw
        if obs is None:
            yield from inner
            return
        try:
            while True:
                try:
                    for item in inner:
                        if obs.on_chunk(item):
                            yield item
                    break
                except Exception as exc:  # a break: resume, end with the partial, or raise
                    plan = obs.on_break(exc)
                    nxt = self._mw_resume(obs, plan) if plan is not None else None
                    if nxt is None:
                        return
                    inner = nxt
        except GeneratorExit:
            obs.finish(_CLOSED)
            raise
        except BaseException as exc:
            obs.finish(_ERROR, exc)
            raise
        finally:
            self._mw_close_current()
        obs.finish(_COMPLETED)

    def _mw_resume(self, obs: Any, plan: Any) -> Iterator[Any] | None:
        while plan is not None:
            try:
                stream = obs.resume(plan)
            except Exception as exc:
                plan = obs.on_resume_failed(exc)
                continue
            self._mw_close_current()
            self._mw_current = stream
            if obs.hides_null_usage:
                hide_null_usage(stream)
            it: Iterator[Any] = iter(stream)
            return it
        return None

    def _mw_close_current(self) -> None:
        current, self._mw_current = self._mw_current, None
        if current is not None:
            current.close()

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._iterator  # type: ignore[attr-defined]
        except GeneratorExit:  # the caller left the loop early (break): the stream is over for it
            if self._mw is not None:
                self._mw.finish(_CLOSED)
            raise

    def close(self) -> None:
        """Close the response and end the call (closed early unless it already completed)."""
        if self._mw is not None:
            self._mw.finish(_CLOSED)
        self._mw_close_current()
        super().close()  # type: ignore[misc]


class AsyncGuard(_Guard):
    """Mixin for ``AsyncStream`` subclasses."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mw_attach(kwargs.get("response"))

    async def __stream__(self) -> AsyncIterator[Any]:
        inner: AsyncIterator[Any] = super().__stream__()  # type: ignore[misc]
        obs = self._mw
        if obs is None:
            async for item in inner:
                yield item
            return
        try:
            while True:
                try:
                    async for item in inner:
                        if obs.on_chunk(item):
                            yield item
                    break
                except Exception as exc:
                    plan = obs.on_break(exc)
                    nxt = await self._mw_resume(obs, plan) if plan is not None else None
                    if nxt is None:
                        return
                    inner = nxt
        except GeneratorExit:
            obs.finish(_CLOSED)
            raise
        except BaseException as exc:
            obs.finish(_ERROR, exc)
            raise
        finally:
            await self._mw_close_current()
        obs.finish(_COMPLETED)

    async def _mw_resume(self, obs: Any, plan: Any) -> AsyncIterator[Any] | None:
        while plan is not None:
            try:
                stream = await obs.aresume(plan)
            except Exception as exc:
                plan = obs.on_resume_failed(exc)
                continue
            await self._mw_close_current()
            self._mw_current = stream
            if obs.hides_null_usage:
                hide_null_usage(stream)
            ait: AsyncIterator[Any] = stream.__aiter__()
            return ait
        return None

    async def _mw_close_current(self) -> None:
        current, self._mw_current = self._mw_current, None
        if current is not None:
            await current.close()

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for item in self._iterator:  # type: ignore[attr-defined]
                yield item
        except GeneratorExit:
            if self._mw is not None:
                self._mw.finish(_CLOSED)
            raise

    async def close(self) -> None:
        """Close the response (awaited) and end the call."""
        if self._mw is not None:
            self._mw.finish(_CLOSED)
        await self._mw_close_current()
        await super().close()  # type: ignore[misc]


_GUARDED: dict[tuple[type, Any], type] = {}
_GUARDED_LOCK = threading.Lock()
_UNGUARDABLE: weakref.WeakSet[type] = weakref.WeakSet()


def _origin(stream_cls: Any) -> Any:
    return getattr(stream_cls, "__origin__", None) or stream_cls


def guarded_stream_class(stream_cls: Any, *, is_async: bool) -> type | None:
    """The guarded subclass for a stream class the SDK was asked to build; None when it cannot be guarded.

    ``Stream[X]`` becomes a guarded ``Stream`` whose chunk type is ``X``; a caller's subclass of
    ``Stream`` (generic or not) gets its own guarded subclass. Anything else (not a ``Stream``, or
    a chunk type the SDK cannot read) is left alone.
    """
    origin = _origin(stream_cls)
    base = AsyncStream if is_async else Stream
    if not isinstance(origin, type) or not issubclass(origin, base):
        return None
    if issubclass(origin, _Guard):
        return origin
    try:
        chunk = extract_stream_chunk_type(stream_cls)
    except Exception:
        return None
    key = (origin, chunk)
    found = _GUARDED.get(key)
    if found is not None:
        return found
    with _GUARDED_LOCK:
        found = _GUARDED.get(key)
        if found is None:
            mixin = AsyncGuard if is_async else SyncGuard
            found = types.new_class(origin.__name__, (mixin, origin))
            found.__qualname__ = origin.__qualname__
            found.__module__ = origin.__module__
            found.__doc__ = f"A guarded {origin.__name__} (see middleware.sdk.streams)."
            # The SDK reads the chunk type from the generic base (``extract_stream_chunk_type``).
            generic_base: Any = found
            generic_base.__orig_bases__ = (base[chunk],)
            _GUARDED[key] = found
    return found


def plain_stream_class(chunk_type: Any, *, is_async: bool) -> Any:
    """``Stream[chunk_type]`` (or ``AsyncStream[...]``): for resumed requests and forced streams."""
    base: Any = AsyncStream if is_async else Stream
    return base[chunk_type]


def is_guarded(obj: object) -> bool:
    """True for a stream built from a guarded class."""
    return isinstance(obj, _Guard)


def observer_of(obj: object) -> Any:
    """The observer of a guarded stream (None otherwise)."""
    return obj._mw if isinstance(obj, _Guard) else None
