"""The Redis Lua script: the algorithm of ``buckets.py`` as one atomic step per decision.

Fields of the per-key hash, per bucket ``i`` (1 requests, 2 tokens, 3 requests per day, 4 tokens
per day): ``l<i>`` level, ``t<i>`` last update, ``c<i>`` learned limit, ``k<i>`` credits given,
``q<i>`` admission time of the latest commit, ``g<i>`` GCRA chain; plus ``cool`` (cooldown end),
``ep`` (epoch: creation time of the hash; refunds across epochs are dropped) and ``w`` (the window
learned from headers, shared by every process).
Time is the server's (``TIME``) unless ARGV[8] overrides it (tests). ARGV: 1 op, 2-5 configured
limits ('' = unknown), 6 window seconds (``"W"``: fixed; ``"~W"``: W until a window is learned;
then ``":J"``, the jitter margin in seconds: capacities ``c * k`` and windows ``w * k`` with
``k = 1 - min(J, w / 2) / w``, as ``buckets.with_margin``),
7 TTL seconds, 8 time override, 9.. op arguments.
Numbers are returned as strings (Lua numbers would be truncated to integers). ``-1`` stands for
"never" in ``q``/``g`` (times are positive).
"""

LUA = r"""
local key, op = KEYS[1], ARGV[1]
local tilde, wtext, mtext = string.match(ARGV[6], '^(~?)([^:]+):?(.*)$')
local learnw = tilde == '~'
local win, margin = tonumber(wtext), tonumber(mtext) or 0
local ttl, now = tonumber(ARGV[7]), tonumber(ARGV[8])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local istok = {false, true, false, true}
local names = {}
for i = 1, 4 do
  for _, p in ipairs({'l', 't', 'c', 'k', 'q', 'g'}) do names[#names+1] = p..i end
end
names[25], names[26], names[27] = 'cool', 'ep', 'w'
local raw = redis.call('HMGET', key, unpack(names))
local lw = tonumber(raw[27])
local bw, wins, full = {win, win, 86400, 86400}, {}, {}
local function setwins() if learnw and lw then bw[1], bw[2] = lw, lw end end
setwins()
local level, upd, learned, cred, que, tat, cap = {}, {}, {}, {}, {}, {}, {}
for i = 1, 4 do
  local b = 6 * (i - 1)
  level[i], upd[i], learned[i] = tonumber(raw[b+1]), tonumber(raw[b+2]), tonumber(raw[b+3])
  cred[i], que[i], tat[i] = tonumber(raw[b+4]) or 0, tonumber(raw[b+5]) or -1, tonumber(raw[b+6]) or -1
end
local cool = tonumber(raw[25]) or -1
local function f(x) return string.format('%.17g', x) end
local ep = raw[26]
if not ep then ep = f(now) end
local function cost(i, req, tok) if istok[i] then return tok end return req end
local function refill()
  for i = 1, 4 do
    local c = tonumber(ARGV[1 + i])
    if learned[i] and (not c or learned[i] < c) then c = learned[i] end
    full[i] = c
    if c then
      local k = 1 - math.min(margin, bw[i] / 2) / bw[i]
      c, wins[i] = c * k, bw[i] * k
    end
    cap[i] = c
    if c then
      if not level[i] then level[i], upd[i] = c, now
      elseif now > upd[i] then level[i], upd[i] = level[i] + (now - upd[i]) * c / wins[i], now end
      if level[i] > c then level[i] = c end
    end
  end
end
local function save()
  local a = {'cool', f(cool), 'ep', ep}
  if lw then a[#a+1] = 'w'; a[#a+1] = f(lw) end
  for i = 1, 4 do
    if cap[i] then
      for _, kv in ipairs({{'l', level[i]}, {'t', upd[i]}, {'k', cred[i]}, {'q', que[i]}, {'g', tat[i]}}) do
        a[#a+1] = kv[1]..i; a[#a+1] = f(kv[2])
      end
    end
    if learned[i] then a[#a+1] = 'c'..i; a[#a+1] = f(learned[i]) end
  end
  redis.call('HSET', key, unpack(a))
  local keep = ttl
  if cool - now + 1 > keep then keep = cool - now + 1 end
  if learnw and lw and 2 * lw > keep then keep = 2 * lw end
  redis.call('EXPIRE', key, math.ceil(keep))
end

if op == 'reserve' then
  local tokens, maxw = tonumber(ARGV[9]), tonumber(ARGV[10])
  refill()
  for _, i in ipairs({2, 4}) do
    if full[i] and tokens > full[i] then save(); return {'too_large', '0', tostring(i), f(now), f(full[i]), ep} end
  end
  local wait, reason = 0, 'none'
  for i = 1, 4 do
    if cap[i] then
      if reason == 'none' then reason = 'within' end
      local after = level[i] - cost(i, 1, tokens)
      if after < 0 and -after * wins[i] / cap[i] > wait then wait, reason = -after * wins[i] / cap[i], tostring(i) end
    end
  end
  if cool - now > wait then wait, reason = cool - now, 'cooldown' end
  if wait > maxw then save(); return {'timeout', f(wait), reason, f(now), '0', ep} end
  local out = {'ok', f(wait), reason, f(now), '0', ep}
  for i = 1, 4 do
    if cap[i] then
      local amount, ceil = cost(i, 1, tokens), cap[i] - wait * cap[i] / wins[i]
      if level[i] > ceil then level[i] = ceil end
      level[i] = level[i] - amount
      local tb, qb = tat[i], que[i]
      que[i] = now + wait
      tat[i] = math.max(tat[i], now + wait) + amount * wins[i] / cap[i]
      for _, v in ipairs({i, amount, level[i], cred[i], tb, tat[i], qb}) do out[#out+1] = f(v) end
    end
  end
  save()
  return out
elseif op == 'adjust' then
  if raw[26] ~= ARGV[12] then return 'stale' end
  local req, tok, at, admit = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[13])
  refill()
  for j = 14, #ARGV, 7 do
    local i, dcost, lt, kt = tonumber(ARGV[j]), tonumber(ARGV[j+1]), tonumber(ARGV[j+2]), tonumber(ARGV[j+3])
    local tb, ta, qb = tonumber(ARGV[j+4]), tonumber(ARGV[j+5]), tonumber(ARGV[j+6])
    local amount = cost(i, req, tok)
    if cap[i] and amount < 0 then level[i] = level[i] + amount
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
  refill()
  local out = {}
  for j = 1, 2 do
    if cap[j] then
      local r = tonumber(ARGV[8 + 2*j])
      if r and r < level[j] then level[j] = r end
      out[#out+1] = tostring(j); out[#out+1] = f(cap[j]); out[#out+1] = f(level[j])
    end
  end
  save()
  return out
elseif op == 'cooldown' then
  refill()
  if now + tonumber(ARGV[9]) > cool then cool = now + tonumber(ARGV[9]) end
  for s in string.gmatch(ARGV[10], '%d') do
    local i = tonumber(s)
    if cap[i] and level[i] > 0 then level[i] = 0 end
  end
  save()
  return f(cool - now)
elseif op == 'snapshot' then
  refill()
  local out = {f(math.max(0, cool - now))}
  for i = 1, 4 do
    if cap[i] then out[#out+1] = tostring(i); out[#out+1] = f(cap[i]); out[#out+1] = f(level[i]) end
  end
  return out
end
return redis.error_reply('unknown op ' .. op)
"""
