"""Progress reporting for long streams: a callback API and a ``rich`` display helper."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Progress:
    """A snapshot of one stream's progress (tokens are counted as content deltas, ~1 token each)."""

    tokens: int
    tokens_per_second: float
    elapsed_seconds: float
    expected_tokens: int | None
    """Predicted output tokens when known, else the request's max output tokens."""
    estimated_remaining_seconds: float | None
    chunks: int
    done: bool = False

    @property
    def fraction(self) -> float | None:
        """Share of the expected tokens received (None when no expectation)."""
        if not self.expected_tokens:
            return None
        return min(1.0, self.tokens / self.expected_tokens)


ProgressCallback = Callable[[Progress], None]

PROGRESS_CALLBACK: ContextVar[ProgressCallback | None] = ContextVar("middleware_progress", default=None)


@contextlib.contextmanager
def progress(callback: ProgressCallback) -> Iterator[None]:
    """Report progress of streams *opened* inside this block to ``callback`` (overrides the config's)."""
    token = PROGRESS_CALLBACK.set(callback)
    try:
        yield
    finally:
        PROGRESS_CALLBACK.reset(token)


def snapshot(tokens: int, chunks: int, elapsed: float, generating: float, expected: int | None,
             done: bool = False) -> Progress:
    """Build a Progress: the rate over the generation time, the remaining time from the expectation."""
    rate = tokens / generating if generating > 0 else 0.0
    remaining: float | None = None
    if done:
        remaining = 0.0
    elif expected is not None and rate > 0:
        remaining = max(0, expected - tokens) / rate
    return Progress(tokens, rate, elapsed, expected, remaining, chunks, done)


class RichProgress:
    """A progress callback drawing a ``rich`` progress bar; use as a context manager."""

    def __init__(self, description: str = "streaming", console: Any = None) -> None:
        """Needs ``rich`` (the ``cli`` extra); raises ``MissingExtraError`` naming it otherwise."""
        from .._extras import CLI, require

        require("RichProgress", {"rich": "rich"}, (CLI,))
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total} tokens"),
            TextColumn("{task.fields[rate]:.1f} tok/s"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self._task = self._bar.add_task(description, total=None, rate=0.0)
        self.last: Progress | None = None

    def __call__(self, p: Progress) -> None:
        self.last = p
        self._bar.update(self._task, completed=p.tokens, total=p.expected_tokens, rate=p.tokens_per_second)

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()
