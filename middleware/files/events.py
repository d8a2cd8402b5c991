"""Telemetry hooks for file operations: a Protocol the Recorder implements, and a no-op default.

Events never carry file contents or paths: only sizes, token counts and closed reason codes.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

_log = logging.getLogger(__name__)


@runtime_checkable
class FileEvents(Protocol):
    """Receiver of file-operation events (implemented by the telemetry Recorder)."""

    def file_read(self, bytes_read: int, tokens: int) -> None:
        """A file was read completely: its size in bytes and its token count."""

    def file_refused(self, reason: str) -> None:
        """A file was refused; ``reason`` is one of :data:`middleware.files.REASONS`."""

    def chunks_produced(self, sizes_tokens: list[int], seconds: float) -> None:
        """A text was chunked into chunks of these token counts, taking ``seconds``."""


class NoopFileEvents:
    """The default receiver: ignores every event."""

    def file_read(self, bytes_read: int, tokens: int) -> None:
        """Ignore."""

    def file_refused(self, reason: str) -> None:
        """Ignore."""

    def chunks_produced(self, sizes_tokens: list[int], seconds: float) -> None:
        """Ignore."""


NOOP_EVENTS = NoopFileEvents()


class SafeEvents:
    """Wraps a receiver so that a failing receiver never breaks the file operation (logged once)."""

    def __init__(self, inner: FileEvents | None) -> None:
        self._inner: FileEvents = inner if inner is not None else NOOP_EVENTS
        self._logged = False

    def _failed(self) -> None:
        if not self._logged:
            self._logged = True
            _log.warning("file telemetry receiver failed; further failures are not logged", exc_info=True)

    def file_read(self, bytes_read: int, tokens: int) -> None:
        """Forward, swallowing receiver errors."""
        try:
            self._inner.file_read(bytes_read, tokens)
        except Exception:
            self._failed()

    def file_refused(self, reason: str) -> None:
        """Forward, swallowing receiver errors."""
        try:
            self._inner.file_refused(reason)
        except Exception:
            self._failed()

    def chunks_produced(self, sizes_tokens: list[int], seconds: float) -> None:
        """Forward, swallowing receiver errors."""
        try:
            self._inner.chunks_produced(list(sizes_tokens), seconds)
        except Exception:
            self._failed()
