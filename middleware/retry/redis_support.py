"""Shared plumbing of the Redis-backed budget and breaker: one script, failures fall back to memory.

Blocking on the async path (known, accepted): the budget and the breaker are called synchronously from the
pipeline's decision code, which both the sync and the async drivers share, so with Redis configured each
decision is one blocking ``EVALSHA`` round trip *on the event loop*: ``start`` (deposit), ``before_attempt``
(breaker acquire), ``on_success``/``on_failure`` (breaker record) and a retry (budget withdraw, breaker
``retry_in``) -- two or three round trips per successful call. On localhost or a same-zone Redis that is
sub-millisecond (~0.1-0.3 ms each), small next to an LLM call. The worst case is bounded: sockets time out
after ``_SOCKET_TIMEOUT`` (0.25 s), with no client-side retries, and after a failure the in-memory fallback
decides for ``REDIS_RETRY_AFTER_SECONDS`` without touching Redis, so a Redis outage stalls the loop at most
once per 5 s. Use a nearby Redis for async workloads; a fully async variant (redis.asyncio with its own
effects in the pipeline) is possible but would duplicate the decision code this design keeps single.
"""

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
