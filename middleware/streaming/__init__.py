"""Streaming: the stream guard, forced streaming, resumption, checkpoints and progress."""

from .checkpoint import Checkpoint, CheckpointStore, DirectoryStore, RedisStore, store_for
from .guard import GuardedAsyncStream, GuardedStream
from .progress import Progress, RichProgress, progress
from .recover import Resumed, aresume, resume

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "DirectoryStore",
    "GuardedAsyncStream",
    "GuardedStream",
    "Progress",
    "RedisStore",
    "Resumed",
    "RichProgress",
    "aresume",
    "progress",
    "resume",
    "store_for",
]
