"""The stream guard: observes every chunk of a protected stream, resumes it when it breaks, and
ends its call exactly once.

``GuardedStream`` / ``GuardedAsyncStream`` subclass the SDK's ``Stream`` / ``AsyncStream`` (so
``isinstance`` checks and the SDK's ``stream()`` helpers keep working); the protected client hands
them to the SDK in place of the stream class it asked for. When the stream breaks (connection cut,
stall past the idle timeout, ``error`` event, malformed event) the observer decides (once, for sync
and async) whether and how to resume; the stream here only performs the resumed request and keeps
iterating, so the caller sees one uninterrupted stream. The call ends on completion, server
error, early ``break``, ``close()``, context-manager exit or garbage collection of an abandoned
stream.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

from openai import AsyncStream, Stream

from ..telemetry import names as n
from .observer import StreamObserver

__all__ = ["OBSERVERS", "GuardedAsyncStream", "GuardedStream", "StreamObserver"]
from .resumption import RESUMING, ResumeSlot

T = TypeVar("T")

# httpx2 response -> observer, registered by the protected client when the response arrives.
OBSERVERS: weakref.WeakKeyDictionary[Any, StreamObserver] = weakref.WeakKeyDictionary()


def _observer_for(response: Any) -> StreamObserver | None:
    try:
        return OBSERVERS.pop(response, None)
    except TypeError:
        return None


class _Guard:
    """What both guarded stream classes share: the observer, checkpoint id, partial, abandonment."""

    _mw: StreamObserver | None = None
    _current: Any = None

    def _attach(self, response: Any, options: Any) -> None:
        self._mw = obs = _observer_for(response)
        if obs is not None:
            obs.options = options

    @property
    def checkpoint_id(self) -> str | None:
        """The id under which this stream writes checkpoints (None without a checkpoint store)."""
        return self._mw.checkpoint_id if self._mw is not None else None

    @property
    def partial(self) -> Any:
        """Everything received so far (a ``PartialResult``)."""
        return self._mw.snapshot_partial() if self._mw is not None else None

    def __del__(self) -> None:
        obs = self._mw
        if obs is not None and not obs.done:
            try:
                obs.finish(n.STREAM_END_ABANDONED)
            except Exception:
                pass


class GuardedStream(Stream[T], _Guard):
    """A ``Stream`` that reports every chunk, resumes when it breaks and ends its call exactly once."""

    def __init__(self, *, cast_to: type[T], response: Any, client: Any, options: Any = None) -> None:
        super().__init__(cast_to=cast_to, response=response, client=client, options=options)
        self._attach(response, options)


    def __stream__(self) -> Iterator[T]:
        inner: Iterator[Any] = super().__stream__()
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
                    nxt = self._resume(obs, plan) if plan is not None else None
                    if nxt is None:
                        return
                    inner = nxt
        except GeneratorExit:
            obs.finish(n.STREAM_END_CLOSED)
            raise
        except BaseException as exc:
            obs.finish(n.STREAM_END_ERROR, exc)
            raise
        finally:
            self._close_current()
        obs.finish(n.STREAM_END_COMPLETED)

    def _resume(self, obs: StreamObserver, plan: Any) -> Iterator[Any] | None:
        while plan is not None:
            slot = ResumeSlot(obs.ctx)
            token = RESUMING.set(slot)
            try:
                stream = obs.resume_request(self._client, plan)
            except Exception as exc:
                plan = obs.on_resume_failed(exc)
                continue
            finally:
                RESUMING.reset(token)
            obs.adopt(slot)
            self._close_current()
            self._current = stream
            it: Iterator[Any] = iter(stream)
            return it
        return None

    def _close_current(self) -> None:
        current, self._current = self._current, None
        if current is not None:
            current.close()

    def __iter__(self) -> Iterator[T]:
        try:
            yield from self._iterator
        except GeneratorExit:  # the caller left the loop early (break): the stream is over for it
            if self._mw is not None:
                self._mw.finish(n.STREAM_END_CLOSED)
            raise

    def close(self) -> None:
        """Close the response and end the call (closed early unless it already completed)."""
        if self._mw is not None:
            self._mw.finish(n.STREAM_END_CLOSED)
        self._close_current()
        super().close()



class GuardedAsyncStream(AsyncStream[T], _Guard):
    """An ``AsyncStream`` that reports every chunk, resumes when it breaks and ends its call once."""

    def __init__(self, *, cast_to: type[T], response: Any, client: Any, options: Any = None) -> None:
        super().__init__(cast_to=cast_to, response=response, client=client, options=options)
        self._attach(response, options)


    async def __stream__(self) -> AsyncIterator[T]:
        inner: AsyncIterator[Any] = super().__stream__()
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
                    nxt = await self._resume(obs, plan) if plan is not None else None
                    if nxt is None:
                        return
                    inner = nxt
        except GeneratorExit:
            obs.finish(n.STREAM_END_CLOSED)
            raise
        except BaseException as exc:
            obs.finish(n.STREAM_END_ERROR, exc)
            raise
        finally:
            await self._close_current()
        obs.finish(n.STREAM_END_COMPLETED)

    async def _resume(self, obs: StreamObserver, plan: Any) -> AsyncIterator[Any] | None:
        while plan is not None:
            slot = ResumeSlot(obs.ctx)
            token = RESUMING.set(slot)
            try:
                stream = await obs.resume_request(self._client, plan)
            except Exception as exc:
                plan = obs.on_resume_failed(exc)
                continue
            finally:
                RESUMING.reset(token)
            obs.adopt(slot)
            await self._close_current()
            self._current = stream
            ait: AsyncIterator[Any] = stream.__aiter__()
            return ait
        return None

    async def _close_current(self) -> None:
        current, self._current = self._current, None
        if current is not None:
            await current.close()

    async def __aiter__(self) -> AsyncIterator[T]:
        try:
            async for item in self._iterator:
                yield item
        except GeneratorExit:
            if self._mw is not None:
                self._mw.finish(n.STREAM_END_CLOSED)
            raise

    async def close(self) -> None:
        """Close the response (awaited) and end the call."""
        if self._mw is not None:
            self._mw.finish(n.STREAM_END_CLOSED)
        await self._close_current()
        await super().close()

