"""Per-pipeline streaming state: the config, the adaptive threshold and the checkpoint store."""

from __future__ import annotations

from typing import Any

from ..config import StreamConfig
from .checkpoint import CheckpointStore, store_for
from .forced import AdaptiveThreshold


class StreamingServices:
    """What every stream of one pipeline shares.

    ``redis``: the checkpoint Redis as a ``middleware.redisconn`` handle (the pipeline's, under ``Config.redis``);
    default: ``config.checkpoint_redis_url`` under the default policy.
    """

    def __init__(self, config: StreamConfig, recorder: Any, *, redis: Any = None) -> None:
        self.config = config
        self.adaptive = AdaptiveThreshold(config.adaptive_target_seconds, recorder)
        self.store: CheckpointStore | None = store_for(config.checkpoint_dir, config.checkpoint_redis_url,
                                                       redis=redis)
