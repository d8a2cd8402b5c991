"""Shared plumbing of the Redis-backed budget and breaker: one script, failures fall back to memory."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

REDIS_RETRY_AFTER_SECONDS = 5.0  # after a Redis failure, use the in-memory fallback this long
_SOCKET_TIMEOUT = 0.25


def make_client(redis_or_url: Any) -> Any:
    """A redis client: the one given, or a new one for a ``redis://`` URL with short socket timeouts."""
    if isinstance(redis_or_url, str):
        import redis  # optional dependency: only the Redis variants need it
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No client-side retries: a failure switches to the in-memory fallback at once.
        return redis.Redis.from_url(redis_or_url, socket_timeout=_SOCKET_TIMEOUT,
                                    socket_connect_timeout=_SOCKET_TIMEOUT, retry=Retry(NoBackoff(), 0),
                                    health_check_interval=0)
    return redis_or_url


class ScriptRunner:
    """Runs one Lua script; after a failure it reports unavailability for a while instead of retrying Redis."""

    def __init__(self, client: Any, source: str, what: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._script = client.register_script(source)
        self._what = what
        self._monotonic = monotonic
        self._down_until = 0.0
        self._logged = False

    @property
    def available(self) -> bool:
        """False while recovering from a recent Redis failure."""
        return self._monotonic() >= self._down_until

    def run(self, keys: Sequence[str], args: Sequence[object]) -> Any | None:
        """The script's result, or None when Redis failed (the caller falls back to memory)."""
        if not self.available:
            return None
        try:
            result = self._script(keys=list(keys), args=list(args), client=self._client)
        except Exception:
            self._down_until = self._monotonic() + REDIS_RETRY_AFTER_SECONDS
            if not self._logged:
                self._logged = True
                log.warning("Redis %s unavailable; using the in-memory fallback", self._what, exc_info=True)
            return None
        if self._logged:
            self._logged = False
            log.warning("Redis %s available again", self._what)
        return result


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
