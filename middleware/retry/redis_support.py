"""Shared plumbing of the Redis-backed retry budget, circuit breaker and cost ledger: one script each, run
through the shared Redis policy (``middleware.redisconn``); a failure falls back to memory.

Timeouts, back-off and fallback are the one policy of ``RedisConfig``: an operation costs at most the connect and
command timeouts, and after a failure every operation on that Redis is answered by the in-memory fallback at once
until the back-off expires and one caller's probe finds Redis back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from middleware.redisconn import RedisConfig, RedisEvents, RedisHandle, RedisSkipped, handle_for


class ScriptRunner:
    """Runs one Lua script for ``feature`` through the shared Redis policy; None means "use the fallback".

    ``redis``: a ``RedisHandle``, a ``RedisLink``, a URL or a ``redis.Redis`` client (see ``redisconn.handle_for``).
    """

    def __init__(self, redis: Any, source: str, feature: str, *, events: RedisEvents | None = None,
                 config: RedisConfig | None = None) -> None:
        self.handle: RedisHandle = handle_for(redis, feature, events=events, config=config)
        self._call = self.handle.script(source)

    @property
    def available(self) -> bool:
        """False while the shared policy skips Redis (the back-off after a failure)."""
        return self.handle.ready()

    def run(self, keys: Sequence[str], args: Sequence[object], *, admission: bool = False) -> Any | None:
        """The script's result, or None when Redis failed or is being skipped (the caller falls back to memory).

        ``admission``: the answer admits a call (with ``RedisConfig.fallback="fail"`` a failure then raises
        ``RedisUnavailable`` instead of returning None)."""
        try:
            return self._call(keys, args, admission=admission)
        except RedisSkipped:
            return None


def now_arg(clock: Callable[[], float] | None) -> float:
    """The time sent to a script: the given wall clock, or -1 to make the script use Redis server TIME."""
    return -1.0 if clock is None else clock()


LUA_NOW = """
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""


def text(value: object) -> str:
    """A Redis reply (bytes or str) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)
