-- Admit one request atomically: circuit breaker, rpm/tpm (sliding window), every budget window.
-- Mirrors proxy.spend.budgets.plan_admission / sliding_count and proxy.spend.memory.admit.
-- Money is integer nano-dollars.
-- KEYS: 1 reservations zset (id -> expires_at), 2 reservation amounts hash, 3 reserved total,
--       4 breaker hash (minute -> nanos), 5 rpm current, 6 rpm previous, 7 tpm current,
--       8 tpm previous, 9..8+n spent key per budget window (n = #ARGV - 15), then the
--       micro-dollar keys of older versions: reserved total, breaker hash, spent per window
-- ARGV: 1 id, 2 now, 3 expires_at, 4 fixed nanos, 5 nanos per output token, 6 max_tokens,
--       7 min capped tokens, 8 cap (0/1), 9 rpm (-1 = none), 10 tpm (-1 = none), 11 tokens,
--       12 elapsed fraction of the minute, 13 breaker minutes (0 = none), 14 breaker max nanos,
--       15 current minute, 16.. limit nanos per budget window
-- Returns {0, amount, capped_max_tokens or -1} | {1, 0, -1, {failing window indexes}}
--       | {2 or 3, current, previous} (rpm / tpm) | {4, 0, -1, first_minute, {buckets}}
-- fold / fold_hash / purge_expired: see fold.lua (prepended at registration)
local now = tonumber(ARGV[2])
local n = #ARGV - 15
for i = 1, n do fold(KEYS[10 + n + i], KEYS[8 + i]) end
if tonumber(ARGV[13]) > 0 then fold_hash(KEYS[10 + n], KEYS[4]) end

purge_expired(KEYS[1], KEYS[2], KEYS[3], now)
local reserved = tonumber(redis.call('GET', KEYS[3]) or '0')
if reserved < 0 then
  reserved = 0
  redis.call('SET', KEYS[3], '0')
end
-- holds an older replica still has open (they expire within the reservation TTL)
reserved = reserved + math.max(0, tonumber(redis.call('GET', KEYS[9 + n]) or '0')) * 1000

local cb_minutes = tonumber(ARGV[13])
if cb_minutes > 0 then
  local minute = tonumber(ARGV[15])
  local first = minute - cb_minutes + 1
  local fields = {}
  for m = first, minute do fields[#fields + 1] = string.format('%d', m) end
  local values = redis.call('HMGET', KEYS[4], unpack(fields))
  local buckets, total = {}, 0
  for i, v in ipairs(values) do
    buckets[i] = tonumber(v or '0') or 0
    total = total + buckets[i]
  end
  if total > tonumber(ARGV[14]) then return {4, 0, -1, first, buckets} end
end

local elapsed = tonumber(ARGV[12])
local function over(cur_key, prev_key, limit, cost)
  local cur = tonumber(redis.call('GET', cur_key) or '0')
  local prev = tonumber(redis.call('GET', prev_key) or '0')
  return prev * (1.0 - elapsed) + cur + cost > limit, cur, prev
end
local rpm, tpm, tokens = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
if rpm >= 0 then
  local bad, cur, prev = over(KEYS[5], KEYS[6], rpm, 1)
  if bad then return {2, cur, prev} end
end
if tpm >= 0 then
  local bad, cur, prev = over(KEYS[7], KEYS[8], tpm, tokens)
  if bad then return {3, cur, prev} end
end

local fixed, per, max_tokens = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local need = fixed + math.ceil(per * max_tokens)
local failing, room_min = {}, nil
for i = 1, n do
  local spent = tonumber(redis.call('GET', KEYS[8 + i]) or '0')
  local room = tonumber(ARGV[15 + i]) - spent - reserved
  if room < need then failing[#failing + 1] = i - 1 end
  if room_min == nil or room < room_min then room_min = room end
end
local amount, capped = need, -1
if #failing > 0 then
  local admitted = false
  if ARGV[8] == '1' and per > 0 and room_min > fixed then
    local t = math.floor((room_min - fixed) / per)
    while t > 0 and fixed + math.ceil(per * t) > room_min do t = t - 1 end
    if t >= tonumber(ARGV[7]) then
      amount, capped, admitted = fixed + math.ceil(per * t), t, true
    end
  end
  if not admitted then return {1, 0, -1, failing} end
end

redis.call('INCR', KEYS[5])
redis.call('EXPIRE', KEYS[5], 120)
redis.call('INCRBY', KEYS[7], ARGV[11])
redis.call('EXPIRE', KEYS[7], 120)
local amount_s = string.format('%d', amount)
local keep = math.ceil(tonumber(ARGV[3]) - now) + 60
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], amount_s)
redis.call('INCRBY', KEYS[3], amount_s)
for k = 1, 3 do redis.call('EXPIRE', KEYS[k], keep) end
return {0, amount_s, capped}
