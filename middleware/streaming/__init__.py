"""Streaming: the stream observer, forced streaming, resumption, checkpoints and progress.

The guarded stream classes themselves live in the SDK adapter (``middleware.sdk.streams``): they
subclass the SDK's ``Stream`` / ``AsyncStream`` and are the only streaming code that touches it.
"""

from .checkpoint import Checkpoint, CheckpointStore, DirectoryStore, RedisStore, store_for
from .progress import Progress, RichProgress, progress
from .recover import Resumed, aresume, resume

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "DirectoryStore",
    "Progress",
    "RedisStore",
    "Resumed",
    "RichProgress",
    "aresume",
    "progress",
    "resume",
    "store_for",
]
