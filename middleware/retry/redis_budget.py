"""A retry budget shared across processes through Redis; falls back to memory when Redis fails."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from middleware.telemetry import names as n

from .budget import RetryBudget
from .config import RetryConfig
from .redis_support import LUA_NOW, ScriptRunner, now_arg, text

_BUCKETS = 10
# KEYS[1] budget hash; ARGV: now, op ("deposit"|"withdraw"|"balance"), ratio, floor, window, buckets.
# Fields "d:<slice>" and "w:<slice>" count deposits and withdrawals per time slice. Returns {ok, balance}.
_SCRIPT = LUA_NOW + """
local op, ratio, floor = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local window, n = tonumber(ARGV[5]), tonumber(ARGV[6])
local cur = math.floor(now / (window / n))
local h = redis.call('HGETALL', KEYS[1])
local dep, wd = 0, 0
for i = 1, #h, 2 do
  local f = h[i]
  if tonumber(string.sub(f, 3)) <= cur - n then
    redis.call('HDEL', KEYS[1], f)
  elseif string.sub(f, 1, 1) == 'd' then
    dep = dep + tonumber(h[i + 1])
  else
    wd = wd + tonumber(h[i + 1])
  end
end
local balance = floor + ratio * dep - wd
local ok = 1
if op == 'deposit' then
  redis.call('HINCRBY', KEYS[1], 'd:' .. string.format('%d', cur), 1)
elseif op == 'withdraw' then
  if balance >= 1 then
    redis.call('HINCRBY', KEYS[1], 'w:' .. string.format('%d', cur), 1)
    balance = balance - 1
  else
    ok = 0
  end
end
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
return {ok, tostring(balance)}
"""


class RedisRetryBudget(RetryBudget):
    """Retry budget shared by every process using the same Redis and prefix.

    ``redis``: a URL, a ``redis.Redis`` client or a ``middleware.redisconn`` handle or link. ``clock`` None uses
    Redis server time (recommended across hosts); pass a wall clock only for tests. While Redis fails (or is
    skipped during the shared policy's back-off), the inherited in-memory budget of this process decides.
    """

    def __init__(self, config: RetryConfig, redis: Any, *, prefix: str = "llm_middleware",
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(config, clock if clock is not None else time.monotonic)
        self._wall = clock
        self._prefix = prefix
        self._runner = ScriptRunner(redis, _SCRIPT, n.REDIS_FEATURE_RETRY)

    def deposit(self, key: str) -> None:
        """Record one original request for ``key`` (shared)."""
        if self._run(key, "deposit") is None:
            super().deposit(key)

    def try_withdraw(self, key: str) -> bool:
        """Spend one shared retry token for ``key``."""
        result = self._run(key, "withdraw")
        return super().try_withdraw(key) if result is None else bool(int(result[0]))

    def balance(self, key: str) -> float:
        """Shared retry tokens available for ``key``."""
        result = self._run(key, "balance")
        return super().balance(key) if result is None else float(text(result[1]))

    def _run(self, key: str, op: str) -> Any | None:
        cfg = self.config
        return self._runner.run([f"{self._prefix}:retry_budget:{key}"], [
            now_arg(self._wall), op, cfg.budget_ratio, self.floor, cfg.budget_window_seconds, _BUCKETS])
