"""A circuit breaker shared across processes through Redis; falls back to memory when Redis fails."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from middleware.telemetry import names as n

from .breaker import BreakerPermit, CircuitBreaker, Outcome
from .config import RetryConfig
from .redis_support import LUA_NOW, ScriptRunner, now_arg, text

_BUCKETS = 10
# KEYS[1] circuit hash. ARGV: now, op ("acquire"|"record"|"state"), outcome, probe (0|1), min_calls,
# failure ratio, window, buckets, open seconds, half-open probes. Fields: st (state), ou (open until),
# inf (probes in flight), suc (probe successes), pe (probes expire); "t:<slice>"/"f:<slice>" count calls
# and failures. Returns {allowed, state, retry_in, probe, transition}; mirrors breaker.CircuitBreaker.
_SCRIPT = LUA_NOW + """
local k, op, outcome, probe = KEYS[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local min_calls, ratio = tonumber(ARGV[5]), tonumber(ARGV[6])
local window, n = tonumber(ARGV[7]), tonumber(ARGV[8])
local open_s, probes = tonumber(ARGV[9]), tonumber(ARGV[10])
local v = redis.call('HMGET', k, 'st', 'ou', 'inf', 'suc', 'pe')
local st = v[1] or 'closed'
local ou, inf, suc, pe = tonumber(v[2] or '0'), tonumber(v[3] or '0'), tonumber(v[4] or '0'), tonumber(v[5] or '0')

local function clear_window()
  for _, f in ipairs(redis.call('HKEYS', k)) do
    if string.sub(f, 2, 2) == ':' then redis.call('HDEL', k, f) end
  end
end
local function open()
  clear_window()
  redis.call('HSET', k, 'st', 'open', 'ou', tostring(now + open_s), 'inf', 0, 'suc', 0)
  return 'open'
end

local result
if op == 'acquire' then
  local transition = ''
  if st == 'open' then
    if now < ou then
      result = {0, 'open', tostring(ou - now), 0, ''}
    else
      st, inf, suc, transition = 'half_open', 0, 0, 'half_open'
      redis.call('HSET', k, 'st', st, 'inf', 0, 'suc', 0)
    end
  end
  if not result and st == 'half_open' then
    if inf > 0 and now >= pe then inf = 0 end
    if inf + suc >= probes then
      result = {0, 'half_open', tostring(math.max(0, pe - now)), 0, transition}
    else
      redis.call('HSET', k, 'inf', inf + 1, 'pe', tostring(now + open_s))
      result = {1, 'half_open', '0', 1, transition}
    end
  end
  if not result then result = {1, 'closed', '0', 0, ''} end
elseif op == 'record' then
  local transition = ''
  if st == 'half_open' and probe then
    redis.call('HSET', k, 'inf', math.max(0, inf - 1))
    if outcome == 'failure' then
      transition = open()
    elseif outcome == 'success' then
      if suc + 1 >= probes then
        clear_window()
        redis.call('HSET', k, 'st', 'closed', 'suc', 0)
        transition = 'closed'
      else
        redis.call('HSET', k, 'suc', suc + 1)
      end
    end
  elseif st == 'closed' and outcome ~= 'neutral' then
    local cur = math.floor(now / (window / n))
    local total, failures = 1, 0
    local h = redis.call('HGETALL', k)
    for i = 1, #h, 2 do
      local f = h[i]
      if string.sub(f, 2, 2) == ':' then
        if tonumber(string.sub(f, 3)) <= cur - n then
          redis.call('HDEL', k, f)
        elseif string.sub(f, 1, 1) == 't' then
          total = total + tonumber(h[i + 1])
        else
          failures = failures + tonumber(h[i + 1])
        end
      end
    end
    local slice = string.format('%d', cur)
    redis.call('HINCRBY', k, 't:' .. slice, 1)
    if outcome == 'failure' then
      redis.call('HINCRBY', k, 'f:' .. slice, 1)
      failures = failures + 1
      if total >= min_calls and failures / total > ratio then transition = open() end
    end
  end
  result = {0, st, '0', 0, transition}
else
  local retry_in = 0
  if st == 'open' then retry_in = math.max(0, ou - now) end
  result = {0, st, tostring(retry_in), 0, ''}
end
redis.call('PEXPIRE', k, math.ceil((window + open_s) * 1000) + 60000)
return result
"""


class RedisCircuitBreaker(CircuitBreaker):
    """Breaker state shared by every process using the same Redis and prefix.

    ``redis``: a URL, a ``redis.Redis`` client or a ``middleware.redisconn`` handle or link. ``clock`` None uses
    Redis server time (recommended across hosts); pass a wall clock only for tests. While Redis fails (or is
    skipped during the shared policy's back-off), the inherited in-memory breaker of this process decides.
    """

    def __init__(self, config: RetryConfig, redis: Any, *, prefix: str = "llm_middleware",
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(config, clock if clock is not None else time.monotonic)
        self._wall = clock
        self._prefix = prefix
        self._runner = ScriptRunner(redis, _SCRIPT, n.REDIS_FEATURE_RETRY)

    def acquire(self, endpoint: str, model: str) -> BreakerPermit:
        """Ask to send one attempt (shared state)."""
        r = self._run(endpoint, model, "acquire", admission=True)
        if r is None:
            return super().acquire(endpoint, model)
        return BreakerPermit(bool(int(r[0])), text(r[1]), float(text(r[2])), bool(int(r[3])), text(r[4]) or None)

    def record(self, endpoint: str, model: str, outcome: Outcome, probe: bool = False) -> str | None:
        """Report an attempt's outcome; returns the state entered, if any."""
        r = self._run(endpoint, model, "record", outcome, probe)
        return super().record(endpoint, model, outcome, probe) if r is None else (text(r[4]) or None)

    def state(self, endpoint: str, model: str) -> str:
        """The shared circuit state."""
        r = self._run(endpoint, model, "state")
        return super().state(endpoint, model) if r is None else text(r[1])

    def retry_in(self, endpoint: str, model: str) -> float:
        """Seconds until the shared open circuit admits a probe (0 when not open)."""
        r = self._run(endpoint, model, "state")
        return super().retry_in(endpoint, model) if r is None else float(text(r[2]))

    def _run(self, endpoint: str, model: str, op: str, outcome: str = "neutral", probe: bool = False, *,
             admission: bool = False) -> Any | None:
        cfg = self.config
        return self._runner.run([f"{self._prefix}:breaker:{endpoint}:{model}"], [
            now_arg(self._wall), op, outcome, int(probe), cfg.breaker_min_calls, cfg.breaker_failure_ratio,
            cfg.breaker_window_seconds, _BUCKETS, cfg.breaker_open_seconds, cfg.breaker_half_open_probes],
            admission=admission)
