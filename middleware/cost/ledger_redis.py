"""Redis budget backend: one atomic Lua script call per decision, on Redis server time.

Every process and host using the same Redis and prefix shares the budgets. Each budget and period kind
is one hash ``{<prefix>:budget}:<scope>=<value>:<day|month>`` (one hash tag, so a call's budgets sit in
one slot and one script can check them all) with the current period (``p``, spend ``s``, reserved ``r``),
the previous one (``q``, ``qs``, ``qr``) and one field ``h:<reservation id>`` per hold in flight, so that a
settlement subtracts only a hold Redis still has (after a restart without data it adds the spend only).
The script computes the UTC period from the server clock, rolls it over, and lets the hash expire a full
period after its period ends. Failures return None (the
ledger falls back to memory); timeouts, back-off and fallback are the shared Redis policy
(``middleware.redisconn``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from middleware.redisconn import RedisEvents
from middleware.retry.redis_support import LUA_NOW, ScriptRunner, now_arg, text
from middleware.telemetry import names as n

from .budgets import Budget, BudgetCharge, BudgetStatus
from .ledger_memory import BackendReply

# ARGV[1] now (-1: server TIME), ARGV[2] op, then per op:
#   reserve:  ARGV[3] amount, ARGV[4] commit anyway (1|0), ARGV[5] hold id,
#             per key i: ARGV[4+2i] period kind, ARGV[5+2i] limit
#   settle:   ARGV[3] hold id ('' = spend only), per key i (j = 3i + 1): ARGV[j] kind, ARGV[j+1] period id,
#             ARGV[j+2] actual
#   snapshot: per key i: ARGV[2+i] kind
# Returns {committed (1|0), n blocked, blocked indices..., per key: period id, spent, reserved, ends in}.
LUA = LUA_NOW + r"""
local op = ARGV[2]
local function f(x) return string.format('%.17g', x) end
local function civil(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp + 3
  if mp >= 10 then m = mp - 9 end
  if m <= 2 then y = y + 1 end
  return y, m, d
end
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m - 3
  if m <= 2 then mp = m + 9 end
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
local function period(kind)
  local days = math.floor(now / 86400)
  local y, m, d = civil(days)
  if kind == 'day' then return string.format('%04d-%02d-%02d', y, m, d), (days + 1) * 86400, 86400 end
  local ny, nm = y, m + 1
  if nm > 12 then ny, nm = y + 1, 1 end
  return string.format('%04d-%02d', y, m), days_from_civil(ny, nm, 1) * 86400, 31 * 86400
end
local function load(key, kind)
  local pid, ends, span = period(kind)
  local h = redis.call('HMGET', key, 'p', 's', 'r', 'q', 'qs', 'qr')
  local st = {key = key, pid = pid, ends = ends, span = span, s = tonumber(h[2]) or 0, r = tonumber(h[3]) or 0,
              q = h[4] or '', qs = tonumber(h[5]) or 0, qr = tonumber(h[6]) or 0}
  if h[1] and h[1] ~= pid then
    st.q, st.qs, st.qr, st.s, st.r = h[1], st.s, st.r, 0, 0
  end
  return st
end
local function save(st)
  redis.call('HSET', st.key, 'p', st.pid, 's', f(st.s), 'r', f(st.r), 'q', st.q, 'qs', f(st.qs), 'qr', f(st.qr))
  redis.call('EXPIRE', st.key, math.ceil(st.ends - now + st.span))
end
local sts, blocked, committed = {}, {}, 1
if op == 'reserve' then
  local amount, anyway, hold = tonumber(ARGV[3]), ARGV[4] == '1', 'h:' .. ARGV[5]
  for i = 1, #KEYS do
    local st, limit = load(KEYS[i], ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i])
    sts[i] = st
    if st.s + st.r + amount > limit + 1e-9 * math.max(1, limit) then blocked[#blocked + 1] = i - 1 end
  end
  if #blocked > 0 and not anyway then committed = 0 end
  for i = 1, #KEYS do
    if committed == 1 then
      sts[i].r = sts[i].r + amount
      redis.call('HSET', KEYS[i], hold, f(amount))
    end
    save(sts[i])
  end
elseif op == 'settle' then
  local hold = 'h:' .. ARGV[3]
  for i = 1, #KEYS do
    local j = 3 * i + 1
    local st = load(KEYS[i], ARGV[j])
    local pid, actual = ARGV[j + 1], tonumber(ARGV[j + 2])
    local held = 0
    if ARGV[3] ~= '' then
      held = tonumber(redis.call('HGET', KEYS[i], hold)) or 0
      redis.call('HDEL', KEYS[i], hold)
    end
    if pid == st.pid then st.r, st.s = math.max(0, st.r - held), st.s + actual
    elseif pid == st.q then st.qr, st.qs = math.max(0, st.qr - held), st.qs + actual end
    save(st)
    sts[i] = st
  end
elseif op == 'snapshot' then
  for i = 1, #KEYS do sts[i] = load(KEYS[i], ARGV[2 + i]) end
else
  return redis.error_reply('unknown op ' .. op)
end
local out = {tostring(committed), tostring(#blocked)}
for _, i in ipairs(blocked) do out[#out + 1] = tostring(i) end
for i = 1, #KEYS do
  local st = sts[i]
  out[#out + 1] = st.pid; out[#out + 1] = f(st.s); out[#out + 1] = f(st.r); out[#out + 1] = f(st.ends - now)
end
return out
"""


class RedisLedgerBackend:
    """Shared budgets in Redis; every method returns None when Redis failed (the caller falls back).

    ``clock`` replaces Redis server time (tests only: wall-clock Unix seconds).
    """

    name = "redis"

    def __init__(self, redis: Any, *, prefix: str = "llm_middleware", clock: Callable[[], float] | None = None,
                 events: RedisEvents | None = None) -> None:
        self._runner = ScriptRunner(redis, LUA, n.REDIS_FEATURE_BUDGET, events=events)
        self._tag = "{" + prefix + ":budget}"
        self._clock = clock

    @property
    def available(self) -> bool:
        """False while pausing after a Redis failure."""
        return self._runner.available

    def _key(self, budget: Budget) -> str:
        return f"{self._tag}:{budget.key}"

    def _run(self, budgets: Sequence[Budget], args: list[object], admission: bool = False) -> tuple[
            tuple[int, ...], bool, tuple[BudgetStatus, ...]] | None:
        reply = self._runner.run([self._key(b) for b in budgets], [now_arg(self._clock), *args], admission=admission)
        if reply is None:
            return None
        out = [text(v) for v in reply]
        committed, nblocked = out[0] == "1", int(out[1])
        blocked = tuple(int(v) for v in out[2:2 + nblocked])
        rest = out[2 + nblocked:]
        statuses = tuple(
            BudgetStatus(b, pid, float(spent), float(held), max(0.0, float(ends)))
            for b, (pid, spent, held, ends) in zip(budgets, zip(*[iter(rest)] * 4))
        )
        return blocked, committed, statuses

    def reserve(
        self, budgets: Sequence[Budget], amount: float, commit_anyway: bool, hold_id: str,
    ) -> BackendReply | None:
        """Hold ``amount`` on every budget if all have room (or ``commit_anyway``): one script call."""
        args: list[object] = ["reserve", repr(float(amount)), "1" if commit_anyway else "0", hold_id]
        for b in budgets:
            args += [b.period, repr(float(b.limit_usd))]
        result = self._run(budgets, args, admission=True)
        if result is None:
            return None
        blocked, committed, statuses = result
        return BackendReply(committed, statuses, blocked)

    def settle(
        self, charges: Sequence[BudgetCharge], actual: float, hold_id: str,
    ) -> tuple[BudgetStatus, ...] | None:
        """Replace the hold ``hold_id`` (if Redis still has it) by ``actual`` spend in the period each charge
        was made in; ``hold_id=""`` adds spend only (written back after an outage)."""
        args: list[object] = ["settle", hold_id]
        for c in charges:
            args += [c.budget.period, c.period_id, repr(float(actual))]
        result = self._run([c.budget for c in charges], args)
        return None if result is None else result[2]

    def snapshot(self, budgets: Sequence[Budget]) -> tuple[BudgetStatus, ...] | None:
        """Each budget's current status (read only)."""
        result = self._run(budgets, ["snapshot", *(b.period for b in budgets)])
        return None if result is None else result[2]
