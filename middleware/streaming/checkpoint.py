"""Stream checkpoints: what a crashed process needs to continue a stream, in a directory or Redis.

A checkpoint is one JSON document (format version 1)::

    {"version": 1, "id": "...", "operation": "chat" | "responses", "model": "...",
     "body": {...original request body...}, "text": "...partial output...", "chars": 1234,
     "tokens": 300, "sequence_number": 57 | null, "response_id": "..." | null, "headers": {...},
     "created_at": 1700000000.0, "updated_at": ..., "expires_at": ...}

Directory store: ``<dir>/<id>.json`` replaced atomically (write to a temporary file, rename), so
concurrent writers and a ``kill -9`` mid-write never leave a torn file; expired files are skipped on
load and swept on write. A checkpoint holds a prompt and its partial answer: files are created 0600 and
the folders the store creates 0700, whatever the umask. Only allow-listed request headers are stored
(``StreamConfig.checkpoint_replay_headers``; the observer filters them), never credentials.

Redis store: ``SET key value EX ttl``, through the shared Redis policy (``middleware.redisconn``): connect
and command timeouts, no client-side retries, and after a failure Redis is skipped for the policy's back-off
(saves and deletes raise :class:`CheckpointUnavailable` at once, counted by the observer and as a Redis
fallback; the stream goes on, its previous checkpoint expires by its TTL). A Redis that accepts connections and
never answers costs one timeout per back-off, not one per checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import CheckpointNotFound, MiddlewareError
from ..files import atomic_write
from ..redisconn import RedisConfig, RedisEvents, RedisHandle, RedisSkipped, handle_for
from ..telemetry import names as n

FORMAT_VERSION = 1
REDIS_PREFIX = "llm_middleware:checkpoint:"
FILE_MODE = 0o600
DIR_MODE = 0o700
log = logging.getLogger(__name__)


class CheckpointUnavailable(MiddlewareError):
    """The checkpoint Redis failed, or failed moments ago and is skipped during the back-off (nothing written)."""


@dataclass
class Checkpoint:
    """The state of one stream at a chunk boundary."""

    id: str
    operation: str
    model: str
    body: dict[str, Any]
    text: str = ""
    tokens: int = 0
    sequence_number: int | None = None
    response_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    """Request headers to replay (extra headers; never credentials)."""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    expires_at: float = 0.0
    version: int = FORMAT_VERSION

    @property
    def chars(self) -> int:
        """The character cursor: length of the partial text."""
        return len(self.text)

    def to_json(self) -> str:
        """Serialise (with the ``chars`` cursor)."""
        return json.dumps({**asdict(self), "chars": self.chars}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Checkpoint:
        """Parse a serialised checkpoint."""
        data = json.loads(raw)
        data.pop("chars", None)
        return cls(**data)


def new_checkpoint_id() -> str:
    """A fresh random checkpoint id (hex, safe as a file name)."""
    return uuid.uuid4().hex


class CheckpointStore(Protocol):
    """Where checkpoints live."""

    backend: str

    def save(self, checkpoint: Checkpoint, ttl_seconds: float) -> None:
        """Write (replace) a checkpoint."""

    def load(self, checkpoint_id: str) -> Checkpoint:
        """Read a checkpoint; raises CheckpointNotFound when missing or expired."""

    def delete(self, checkpoint_id: str) -> None:
        """Remove a checkpoint (no error when missing)."""


def _valid_id(checkpoint_id: str) -> str:
    if not checkpoint_id or not all(c.isalnum() or c in "-_" for c in checkpoint_id):
        raise CheckpointNotFound(f"invalid checkpoint id {checkpoint_id!r}")
    return checkpoint_id


class DirectoryStore:
    """Checkpoints as ``<dir>/<id>.json``, written atomically."""

    backend = "directory"
    SWEEP_EVERY_SECONDS = 60.0

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._last_sweep = 0.0

    def _path(self, checkpoint_id: str) -> Path:
        return self.directory / f"{_valid_id(checkpoint_id)}.json"

    def save(self, checkpoint: Checkpoint, ttl_seconds: float) -> None:
        """Atomically replace the checkpoint file (no fsync: it must survive the process, not the host)."""
        now = time.time()
        checkpoint.updated_at = now
        checkpoint.expires_at = now + ttl_seconds
        atomic_write(self._path(checkpoint.id), checkpoint.to_json(), mode=FILE_MODE, make_parents=True, fsync=False,
                     dir_mode=DIR_MODE)
        if now - self._last_sweep > self.SWEEP_EVERY_SECONDS:
            self._last_sweep = now
            self.sweep(now)

    def load(self, checkpoint_id: str) -> Checkpoint:
        """Read a checkpoint; expired ones count as missing."""
        try:
            checkpoint = Checkpoint.from_json(self._path(checkpoint_id).read_bytes())
        except (FileNotFoundError, ValueError, TypeError) as exc:
            raise CheckpointNotFound(f"no checkpoint {checkpoint_id!r} in {self.directory}") from exc
        if checkpoint.expires_at and checkpoint.expires_at < time.time():
            raise CheckpointNotFound(f"checkpoint {checkpoint_id!r} expired")
        return checkpoint

    def delete(self, checkpoint_id: str) -> None:
        """Remove the file."""
        try:
            self._path(checkpoint_id).unlink()
        except FileNotFoundError:
            pass

    def ids(self) -> list[str]:
        """Ids of the (unexpired or not yet swept) checkpoints."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json"))

    def sweep(self, now: float | None = None) -> int:
        """Delete expired checkpoint files; returns how many."""
        now = time.time() if now is None else now
        removed = 0
        for path in self.directory.glob("*.json"):
            try:
                if Checkpoint.from_json(path.read_bytes()).expires_at < now:
                    path.unlink()
                    removed += 1
            except (OSError, ValueError, TypeError):
                continue
        return removed


class RedisStore:
    """Checkpoints as Redis strings with a TTL (``SET ... EX``), under the shared Redis policy.

    ``redis``: a ``redisconn`` handle or link (the pipeline's), else ``client`` (a ``redis.Redis``), else ``url``
    under ``policy`` (default ``RedisConfig()``). While the policy skips Redis (the back-off after a failure),
    every operation raises :class:`CheckpointUnavailable` at once.
    """

    backend = "redis"

    def __init__(self, url: str | None = None, client: Any = None, *, redis: Any = None,
                 policy: RedisConfig | None = None, events: RedisEvents | None = None) -> None:
        target = redis if redis is not None else client if client is not None else url
        if target is None:
            raise ValueError("RedisStore needs a URL, a client or a redisconn handle")
        self.handle: RedisHandle = handle_for(target, n.REDIS_FEATURE_CHECKPOINT, events=events, config=policy)

    def _run(self, op: Callable[[Any], Any]) -> Any:
        try:
            return self.handle.run(op)
        except RedisSkipped as exc:
            cause = exc.__cause__
            detail = f": {type(cause).__name__}: {cause}" if cause is not None else " (it failed moments ago)"
            raise CheckpointUnavailable(f"checkpoint Redis {self.handle.link.url} unavailable{detail}") from cause

    def save(self, checkpoint: Checkpoint, ttl_seconds: float) -> None:
        """SET with expiry (raises :class:`CheckpointUnavailable` when Redis fails or is being skipped)."""
        now = time.time()
        checkpoint.updated_at = now
        checkpoint.expires_at = now + ttl_seconds
        key, value = REDIS_PREFIX + _valid_id(checkpoint.id), checkpoint.to_json()
        self._run(lambda client: client.set(key, value, ex=max(1, int(ttl_seconds))))

    def load(self, checkpoint_id: str) -> Checkpoint:
        """GET; missing (or expired by Redis) raises CheckpointNotFound, Redis down CheckpointUnavailable."""
        key = REDIS_PREFIX + _valid_id(checkpoint_id)
        raw = self._run(lambda client: client.get(key))
        if raw is None:
            raise CheckpointNotFound(f"no checkpoint {checkpoint_id!r} in Redis")
        return Checkpoint.from_json(raw)

    def delete(self, checkpoint_id: str) -> None:
        """DEL (raises :class:`CheckpointUnavailable` while Redis is skipped: the checkpoint then expires by its
        TTL)."""
        key = REDIS_PREFIX + _valid_id(checkpoint_id)
        self._run(lambda client: client.delete(key))


def store_for(checkpoint_dir: str | os.PathLike[str] | None, redis_url: str | None, *,
              redis: Any = None) -> CheckpointStore | None:
    """The configured store: Redis when a URL (or a ``redisconn`` handle) is given, else the directory, else None
    (no checkpoints)."""
    if redis is not None or redis_url:
        return RedisStore(redis_url, redis=redis)
    if checkpoint_dir is not None:
        return DirectoryStore(checkpoint_dir)
    return None
