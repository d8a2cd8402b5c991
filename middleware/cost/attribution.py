"""Attribution tags: who a call is for (team, feature, end user), bounded before they reach metrics.

A caller sets tags for a block of code with ``with tags(team="search"):`` (a context variable, so it
follows threads' and asyncio tasks' contexts; nested blocks add keys and the inner value wins) and per
call in the request body's ``metadata`` (which wins over the context). Only allow-listed keys are kept;
values are sanitised and truncated. :class:`TagFolder` bounds what reaches metric labels: per key, the
first ``value_cap`` distinct values keep their name and later ones fold into ``other``; distinct label
combinations are capped as well, so the number of series stays bounded whatever callers send.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from middleware.errors import ConfigError
from middleware.telemetry import names as n

_EMPTY: Mapping[str, str] = MappingProxyType({})
_CURRENT: ContextVar[Mapping[str, str]] = ContextVar("middleware_cost_tags", default=_EMPTY)
_KEY = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/@+\-]+")


@contextmanager
def tags(**values: Any) -> Iterator[Mapping[str, str]]:
    """Tag every protected call made inside the block; ``None`` removes a tag set by an outer block."""
    merged = dict(_CURRENT.get())
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    view: Mapping[str, str] = MappingProxyType(merged)
    token = _CURRENT.set(view)
    try:
        yield view
    finally:
        _CURRENT.reset(token)


def current_tags() -> Mapping[str, str]:
    """The tags set by the enclosing ``tags()`` blocks (unfiltered)."""
    return _CURRENT.get()


@dataclass(frozen=True)
class TagConfig:
    """Which tag keys are kept and how their values are bounded."""

    keys: tuple[str, ...] = ("team", "feature", "end_user")
    """Allow-list of tag keys; others are dropped. Only keys in ``names.TAG_LABELS`` become metric labels."""
    value_cap: int = 50
    """Distinct values per key kept on metrics (process-wide); later values fold into ``other``."""
    combination_cap: int = 250
    """Distinct combinations of metric label values (process-wide); later ones fold into ``other``."""
    max_value_length: int = 64
    from_metadata: bool = True
    """Read per-call tags from the request body's ``metadata``."""

    def __post_init__(self) -> None:
        for key in self.keys:
            if not _KEY.match(key):
                raise ConfigError(f"tag key {key!r} must match [a-z_][a-z0-9_]* (at most 64 characters)")
            if key == "api_key":
                raise ConfigError("tag key 'api_key' is reserved (budgets per API key use it)")
        if self.value_cap < 1 or self.combination_cap < 1 or self.max_value_length < 1:
            raise ConfigError("tag caps and max_value_length must be at least 1")


def sanitize(value: Any, max_length: int = 64) -> str | None:
    """A tag value safe for labels, spans and logs (characters outside ``A-Za-z0-9_.:/@+-`` become
    ``_``, truncated); None when nothing is left."""
    text = _UNSAFE.sub("_", str(value).strip())[:max_length].strip("_")
    return text or None


def select_tags(config: TagConfig, context: Mapping[str, Any], body: Mapping[str, Any] | None) -> dict[str, str]:
    """The allow-listed, sanitised tags of one call: the context's, overridden by ``body["metadata"]``."""
    out: dict[str, str] = {}
    metadata = body.get("metadata") if (body is not None and config.from_metadata) else None
    sources = (context, metadata) if isinstance(metadata, Mapping) else (context,)
    for source in sources:
        for key in config.keys:
            if key in source:
                clean = sanitize(source[key], config.max_value_length)
                if clean is not None:
                    out[key] = clean
    return out


class TagFolder:
    """Bounds tag values for metric labels; thread-safe. ``shared()`` gives the process-wide instance."""

    _shared: dict[tuple[int, int], TagFolder] = {}
    _shared_lock = threading.Lock()

    def __init__(self, value_cap: int = 50, combination_cap: int = 250) -> None:
        self.value_cap = value_cap
        self.combination_cap = combination_cap
        self._values: dict[str, set[str]] = {}
        self._combinations: set[tuple[str, ...]] = set()
        self._empty: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self.folded = 0

    @classmethod
    def shared(cls, value_cap: int = 50, combination_cap: int = 250) -> TagFolder:
        """One folder per process and caps: every client's labels share the same bound."""
        key = (value_cap, combination_cap)
        with cls._shared_lock:
            folder = cls._shared.get(key)
            if folder is None:
                folder = cls._shared[key] = cls(value_cap, combination_cap)
            return folder

    def fold(self, key: str, value: str, on_fold: Callable[[str], None] | None = None) -> str:
        """``value`` if it is (or can become) one of the ``value_cap`` values kept for ``key``, else ``other``."""
        if not value:
            return ""
        known = self._values.get(key)
        if known is not None and value in known:
            return value
        with self._lock:
            known = self._values.setdefault(key, set())
            if value in known:
                return value
            if len(known) < self.value_cap:
                known.add(value)
                return value
            self.folded += 1
        if on_fold is not None:
            on_fold(key)
        return n.OTHER_TAG

    def labels(
        self, tags: Mapping[str, str], keys: tuple[str, ...] = n.TAG_LABELS,
        on_fold: Callable[[str], None] | None = None,
    ) -> tuple[str, ...]:
        """Label values for ``keys`` ("" where a tag is absent), folded per key and per combination."""
        if not tags:  # the common untagged call
            return self._empty.get(keys) or self._empty.setdefault(keys, ("",) * len(keys))
        values = tuple(self.fold(k, tags.get(k, ""), on_fold) for k in keys)
        if values in self._combinations or not any(values):
            return values
        with self._lock:
            if values in self._combinations:
                return values
            if len(self._combinations) < self.combination_cap:
                self._combinations.add(values)
                return values
            self.folded += 1
        if on_fold is not None:
            for key, value in zip(keys, values):
                if value:
                    on_fold(key)
        return tuple(n.OTHER_TAG if v else "" for v in values)

    def size(self, key: str) -> int:
        """Distinct values kept for ``key``."""
        return len(self._values.get(key, ()))
