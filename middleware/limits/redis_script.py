"""The Redis Lua scripts: the algorithm of ``buckets.py`` as one atomic step per decision, and the peers set.

Fields of the per-key hash, per bucket ``i`` (1 requests, 2 tokens, 3 requests per day, 4 tokens
per day): ``l<i>`` level, ``t<i>`` last update, ``c<i>`` learned limit, ``k<i>`` credits given,
``q<i>`` admission time of the latest commit, ``g<i>`` GCRA chain, ``x<i>`` cumulative level changes
other than commits and refill (corrections, refunds), ``s<i>`` cumulative cost committed, ``r<i>`` the
same before the bias, ``o<i>`` cumulative estimates of released calls, ``n<i>`` commits, ``h<i>`` the
commit whose header was used last, ``m<i>`` the learned margin; plus ``cool`` (cooldown end), ``ep``
(epoch: creation time of the hash; refunds and corrections across epochs are dropped), ``w`` (the
window learned from headers), ``kb`` (the learned token bias) and ``b0s``/``b0e``/``b0o``/``b0x`` (the
counters when the bias was last measured), all shared by every process.
Time is the server's (``TIME``) unless ARGV[8] overrides it (tests). ARGV: 1 op, 2-5 configured
limits ('' = unknown), 6 window seconds (``"W"``: fixed; ``"~W"``: W until a window is learned;
then ``":J"``, the jitter margin in seconds, and ``":I"``, the initial margin: capacities ``c * k``
and windows ``w * k`` with ``k = 1 - min(J', w / 2) / w``, ``J' = max(J, m * w / c)``, ``m`` the
learned margin or ``I * c`` before one is learned, as ``buckets.shape``),
7 TTL seconds, 8 time override, 9.. op arguments.
Numbers are returned as strings (Lua numbers would be truncated to integers). ``-1`` stands for
"never" in ``q``/``g`` (times are positive).
"""

from middleware.limits import buckets

_CONSTANTS = (
    f"local DEADBAND, DECAY, MAXF = {buckets.DEADBAND!r}, {buckets.MARGIN_DECAY!r}, {buckets.MAX_MARGIN_FRACTION!r}\n"
    f"local PERIOD, KMAX, KSAMPLE = {buckets.BIAS_PERIOD!r}, {buckets.BIAS_MAX!r}, {buckets.BIAS_SAMPLE!r}\n"
    f"local REORDER, MINM, MFACTOR = {buckets.REORDER_SECONDS!r}, {buckets.MIN_MARGIN!r}, "
    f"{buckets.MARGIN_FACTOR!r}\n"
)

LUA = _CONSTANTS + r"""
local key, op = KEYS[1], ARGV[1]
local tilde, wtext, mtext, itext = string.match(ARGV[6], '^(~?)([^:]+):?([^:]*):?(.*)$')
local learnw = tilde == '~'
local win, margin, INITM = tonumber(wtext), tonumber(mtext) or 0, tonumber(itext) or 0
local ttl, now = tonumber(ARGV[7]), tonumber(ARGV[8])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local istok = {false, true, false, true}
local P = {'l', 't', 'c', 'k', 'q', 'g', 'x', 's', 'r', 'n', 'h', 'm', 'o'}
local NP = #P
local names = {}
for i = 1, 4 do
  for _, p in ipairs(P) do names[#names+1] = p..i end
end
local base = 4 * NP
names[base+1], names[base+2], names[base+3], names[base+4] = 'cool', 'ep', 'w', 'kb'
names[base+5], names[base+6], names[base+7], names[base+8] = 'b0s', 'b0e', 'b0x', 'b0o'
local raw = redis.call('HMGET', key, unpack(names))
local lw = tonumber(raw[base+3])
local bw, wins, full = {win, win, 86400, 86400}, {}, {}
local function setwins() if learnw and lw then bw[1], bw[2] = lw, lw end end
setwins()
local level, upd, learned, cred, que, tat, cap = {}, {}, {}, {}, {}, {}, {}
local corr, spent, rawsp, seq, seen, marg, drop = {}, {}, {}, {}, {}, {}, {}
for i = 1, 4 do
  local b = NP * (i - 1)
  level[i], upd[i], learned[i] = tonumber(raw[b+1]), tonumber(raw[b+2]), tonumber(raw[b+3])
  cred[i], que[i], tat[i] = tonumber(raw[b+4]) or 0, tonumber(raw[b+5]) or -1, tonumber(raw[b+6]) or -1
  corr[i], spent[i], rawsp[i] = tonumber(raw[b+7]) or 0, tonumber(raw[b+8]) or 0, tonumber(raw[b+9]) or 0
  seq[i], seen[i], marg[i] = tonumber(raw[b+10]) or 0, tonumber(raw[b+11]) or 0, tonumber(raw[b+12])
  drop[i] = tonumber(raw[b+13]) or 0
end
local cool = tonumber(raw[base+1]) or -1
local kb = tonumber(raw[base+4]) or 1.0
local b0s, b0e, b0x = tonumber(raw[base+5]) or 0, tonumber(raw[base+6]) or 0, tonumber(raw[base+7]) or 0
local b0o = tonumber(raw[base+8]) or 0
local function f(x) return string.format('%.17g', x) end
local ep = raw[base+2]
if not ep then ep = f(now) end
local function cost(i, req, tok) if istok[i] then return tok end return req end
local function shape()
  for i = 1, 4 do
    local c = tonumber(ARGV[1 + i])
    if learned[i] and (not c or learned[i] < c) then c = learned[i] end
    full[i] = c
    if c then
      local j = margin
      local mj = 0
      if marg[i] then mj = marg[i] * bw[i] / c elseif istok[i] then mj = c * INITM * bw[i] / c end
      if mj > j then j = mj end
      if j > 0 then
        local k = 1 - math.min(j, bw[i] / 2) / bw[i]
        c, wins[i] = c * k, bw[i] * k
      else
        wins[i] = bw[i]
      end
    end
    cap[i] = c
  end
end
local function refill()
  for i = 1, 4 do
    local c = cap[i]
    if c then
      if not level[i] then level[i], upd[i] = c, now
      elseif now > upd[i] then level[i], upd[i] = level[i] + (now - upd[i]) * c / wins[i], now end
      if level[i] > c then level[i] = c end
    end
  end
end
local function save()
  local a = {'cool', f(cool), 'ep', ep, 'kb', f(kb), 'b0s', f(b0s), 'b0e', f(b0e), 'b0x', f(b0x), 'b0o', f(b0o)}
  if lw then a[#a+1] = 'w'; a[#a+1] = f(lw) end
  for i = 1, 4 do
    if cap[i] then
      for _, kv in ipairs({{'l', level[i]}, {'t', upd[i]}, {'k', cred[i]}, {'q', que[i]}, {'g', tat[i]},
                           {'x', corr[i]}, {'s', spent[i]}, {'r', rawsp[i]}, {'n', seq[i]}, {'h', seen[i]},
                           {'o', drop[i]}}) do
        a[#a+1] = kv[1]..i; a[#a+1] = f(kv[2])
      end
    end
    if marg[i] then a[#a+1] = 'm'..i; a[#a+1] = f(marg[i]) end
    if learned[i] then a[#a+1] = 'c'..i; a[#a+1] = f(learned[i]) end
  end
  redis.call('HSET', key, unpack(a))
  local keep = ttl
  if cool - now + 1 > keep then keep = cool - now + 1 end
  if learnw and lw and 2 * lw > keep then keep = 2 * lw end
  redis.call('EXPIRE', key, math.ceil(keep))
end
local function state_of(i, used)
  local k = 1.0
  if istok[i] then k = kb end
  return {tostring(i), f(cap[i]), f(level[i]), f(k), f(marg[i] or full[i] - cap[i]), used and '1' or '0'}
end
-- buckets.correct: move the model to the upstream's remaining after the call of a debit
local function correct(i, exp, dcorr, dspent, draw, dseq, rem, exact)
  local rate = cap[i] / wins[i]
  local delta = exp - rem - (corr[i] - dcorr)
  seen[i] = dseq
  local applied = 0
  if delta > DEADBAND then
    applied = delta
  elseif delta < -DEADBAND and exact then
    applied = -math.max(0, math.min(-delta, cap[i] - level[i]))
  end
  level[i] = level[i] - applied
  corr[i] = corr[i] + applied
  tat[i] = tat[i] + applied / rate
  if exact then
    local m = math.max(MINM, (marg[i] or full[i] - cap[i]) * DECAY)
    if delta * MFACTOR > m then m = delta * MFACTOR end
    if m > full[i] * MAXF then m = full[i] * MAXF end
    if m > math.max(0, full[i] - 1) then m = math.max(0, full[i] - 1) end
    marg[i] = m
  end
  local estimated = draw - b0e - (drop[i] - b0o)
  local provisional = not exact and not marg[i]
  if i == 2 and (exact or provisional) and estimated >= math.max(full[i] * PERIOD, KSAMPLE) then
    local charged = dspent - b0s + corr[i] - b0x + math.min(0, delta - applied)
    local k = math.min(KMAX, math.max(1.0, charged / estimated))
    if provisional then
      if k > kb then kb = k end
    else
      kb = k
      b0s, b0e, b0o, b0x = dspent, draw, drop[i], corr[i]
    end
  end
end
shape()

if op == 'reserve' then
  local tokens, maxw = tonumber(ARGV[9]), tonumber(ARGV[10])
  refill()
  for _, i in ipairs({2, 4}) do
    if full[i] and tokens > full[i] then save(); return {'too_large', '0', tostring(i), f(now), f(full[i]), ep} end
  end
  local price = tokens
  if kb ~= 1.0 then price = math.ceil(tokens * kb) end
  for _, i in ipairs({2, 4}) do
    if full[i] then price = math.min(price, math.max(tokens, math.floor(full[i]))) end
  end
  local wait, reason = 0, 'none'
  for i = 1, 4 do
    if cap[i] then
      if reason == 'none' then reason = 'within' end
      local amount = cost(i, 1, price)
      local need = -(level[i] - amount) * wins[i] / cap[i]
      if que[i] > now then need = math.max(need, que[i] - now + math.min(REORDER, amount * wins[i] / cap[i])) end
      if need > 0 and need > wait then wait, reason = need, tostring(i) end
    end
  end
  if cool - now > wait then wait, reason = cool - now, 'cooldown' end
  if wait > maxw then save(); return {'timeout', f(wait), reason, f(now), '0', ep} end
  local out = {'ok', f(wait), reason, f(now), '0', ep}
  for i = 1, 4 do
    if cap[i] then
      local amount = cost(i, 1, price)
      local rate = cap[i] / wins[i]
      local ceil = cap[i] - wait * rate
      if level[i] > ceil then level[i] = ceil end
      level[i] = level[i] - amount
      local tb, qb = tat[i], que[i]
      que[i] = now + wait
      tat[i] = math.max(tat[i], now + wait) + amount / rate
      spent[i] = spent[i] + amount
      rawsp[i] = rawsp[i] + cost(i, 1, tokens)
      seq[i] = seq[i] + 1
      local expected = level[i] + wait * rate + (full[i] - cap[i])
      for _, v in ipairs({i, amount, level[i], cred[i], tb, tat[i], qb, expected, corr[i], spent[i], rawsp[i],
                          seq[i]}) do
        out[#out+1] = f(v)
      end
    end
  end
  save()
  return out
elseif op == 'adjust' then
  if raw[base+2] ~= ARGV[12] then return 'stale' end
  local req, tok, at, admit = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[13])
  local rawtok = tonumber(ARGV[14])
  refill()
  for j = 15, #ARGV, 12 do
    local i, dcost, lt, kt = tonumber(ARGV[j]), tonumber(ARGV[j+1]), tonumber(ARGV[j+2]), tonumber(ARGV[j+3])
    local tb, ta, qb = tonumber(ARGV[j+4]), tonumber(ARGV[j+5]), tonumber(ARGV[j+6])
    local amount, rawamt = cost(i, req, tok), cost(i, req, rawtok)
    local given = false
    if cap[i] and amount ~= 0 and req > 0 then
      drop[i] = drop[i] + rawamt
      given = tonumber(ARGV[j+11]) <= seen[i]
    end
    if given then
      -- a header of this call or a later one was compared: the correction gave it back already
    elseif cap[i] and amount < 0 then
      level[i] = level[i] + amount
      corr[i] = corr[i] - amount
    elseif cap[i] and amount > 0 then
      local rate = cap[i] / wins[i]
      local latest = tat[i] == ta
      local t_, q_ = tat[i], que[i]
      if latest then
        t_ = tb
        if amount >= dcost then q_ = qb end
      end
      local bound = lt + math.max(0, now - at) * rate + math.max(0, cred[i] - kt)
      local ceiling = cap[i]
      if q_ > now then ceiling = cap[i] - (t_ - now) * rate end
      local credit = math.min(amount, cap[i] - bound, ceiling - level[i])
      if credit > 0 then
        level[i], cred[i] = level[i] + credit, cred[i] + credit
        corr[i] = corr[i] - credit
        if latest then
          if dcost - credit > 0 then tat[i] = math.max(t_, admit) + (dcost - credit) / rate else tat[i] = t_ end
          que[i] = q_
        end
      end
    end
  end
  save()
  return 'ok'
elseif op == 'learn' then
  refill()
  local nw = tonumber(ARGV[13])
  if nw and nw > 0 then lw = nw; setwins() end
  for j = 1, 2 do
    local l = tonumber(ARGV[7 + 2*j])
    if l and l > 0 then learned[j] = l end
  end
  local nk = tonumber(ARGV[14])
  if nk and nk > 0 then kb = nk end
  shape()
  refill()
  local debit = {}
  local cat, admit, delay = tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18])
  if ARGV[15] ~= '' and ARGV[15] == ep then
    for j = 19, #ARGV, 12 do debit[tonumber(ARGV[j])] = j end
  end
  local out = {}
  for j = 1, 2 do
    if cap[j] then
      local r = tonumber(ARGV[8 + 2*j])
      local d = debit[j]
      local used = false
      if r and d then
        local paced = admit - cat > 0 or tonumber(ARGV[d+2]) + (admit - cat) * (cap[j] / wins[j]) <= DEADBAND
        if tonumber(ARGV[d+11]) > seen[j] then
          local exact = paced and admit - tonumber(ARGV[d+6]) >= REORDER
          correct(j, tonumber(ARGV[d+7]), tonumber(ARGV[d+8]), tonumber(ARGV[d+9]), tonumber(ARGV[d+10]),
                  tonumber(ARGV[d+11]), r - delay * (cap[j] / wins[j]), exact)
          used = true
          local held = full[j] - cap[j]
          shape()
          level[j] = level[j] - ((full[j] - cap[j]) - held)
          refill()
        end
      elseif r and r < level[j] then
        level[j] = r
      end
      for _, v in ipairs(state_of(j, used)) do out[#out+1] = v end
    end
  end
  save()
  return out
elseif op == 'cooldown' then
  refill()
  if now + tonumber(ARGV[9]) > cool then cool = now + tonumber(ARGV[9]) end
  for s in string.gmatch(ARGV[10], '%d') do
    local i = tonumber(s)
    if cap[i] and level[i] > 0 then
      corr[i] = corr[i] + level[i]
      level[i] = 0
    end
  end
  save()
  return f(cool - now)
elseif op == 'recheck' then
  refill()
  local out = 0
  if ARGV[10] and ARGV[10] == ep then
    local tokens, cat, admit = tonumber(ARGV[9]), tonumber(ARGV[11]), tonumber(ARGV[12])
    local price = tokens
    if kb ~= 1.0 then price = math.ceil(tokens * kb) end
    for _, i in ipairs({2, 4}) do
      if full[i] then price = math.min(price, math.max(tokens, math.floor(full[i]))) end
    end
    for j = 13, #ARGV, 12 do
      local i = tonumber(ARGV[j])
      if cap[i] and istok[i] and seen[i] < tonumber(ARGV[j+11]) then
        local owed = corr[i] - tonumber(ARGV[j+8]) + math.max(0, price - tonumber(ARGV[j+1]))
        if owed * wins[i] / cap[i] > out then out = owed * wins[i] / cap[i] end
      end
    end
  end
  return {f(math.max(0, cool - now)), f(out)}
elseif op == 'snapshot' then
  refill()
  local out = {f(math.max(0, cool - now))}
  for i = 1, 4 do
    if cap[i] then for _, v in ipairs(state_of(i, false)) do out[#out+1] = v end end
  end
  return out
end
return redis.error_reply('unknown op ' .. op)
"""

# KEYS[1] the peers sorted set; ARGV: 1 peer id, 2 ttl seconds, 3 '1' to register ('0' to leave).
# Scores are expiry times on the server's clock; returns the number of live peers.
PEERS_LUA = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 2))
return redis.call('ZCARD', KEYS[1])
"""
