-- Settle one reservation: free its hold, add the actual cost to every budget window and to the
-- circuit breaker's minute bucket, correct the tpm counter. Mirrors proxy.spend.memory.commit.
-- Money is integer nano-dollars.
-- KEYS: 1 reservations zset, 2 reservation amounts hash, 3 reserved total, 4 breaker hash,
--       5 tpm current, 6..5+n spent key per budget window (n = #ARGV - 7), then the micro-dollar
--       keys of older versions: breaker hash, spent per window
-- ARGV: 1 id, 2 actual nanos, 3 breaker minutes (0 = none), 4 current minute, 5 token delta,
--       6 hold expiry for a re-sent settlement (0 = first send or nothing held), 7 now,
--       8.. TTL seconds per budget window key
-- A re-sent settlement (queued because Redis's reply was lost) whose hold is gone before the hold
-- could have expired was already run by Redis: it is not counted twice.
-- Returns {breaker sum or -1, {spent after, per window}, 1 if settled now, 0 if already settled}
-- fold / fold_hash: see fold.lua (prepended at registration)
local n = #ARGV - 7
for i = 1, n do fold(KEYS[6 + n + i], KEYS[5 + i]) end
if tonumber(ARGV[3]) > 0 then fold_hash(KEYS[6 + n], KEYS[4]) end

local amt = redis.call('HGET', KEYS[2], ARGV[1])
local held_until = tonumber(ARGV[6])
if not amt and held_until > 0 and tonumber(ARGV[7]) < held_until then
  local current = {}
  for i = 6, 5 + n do current[#current + 1] = tonumber(redis.call('GET', KEYS[i]) or '0') end
  return {-1, current, 0}
end
if amt then
  redis.call('DECRBY', KEYS[3], amt)
  redis.call('HDEL', KEYS[2], ARGV[1])
end
redis.call('ZREM', KEYS[1], ARGV[1])

local spent = {}
for i = 6, 5 + n do
  spent[#spent + 1] = redis.call('INCRBY', KEYS[i], ARGV[2])
  redis.call('EXPIRE', KEYS[i], ARGV[i + 2])
end

if tonumber(ARGV[5]) ~= 0 then
  redis.call('INCRBY', KEYS[5], ARGV[5])
  redis.call('EXPIRE', KEYS[5], 120)
end

local breaker = -1
local minutes = tonumber(ARGV[3])
if minutes > 0 then
  local minute = tonumber(ARGV[4])
  redis.call('HINCRBY', KEYS[4], ARGV[4], ARGV[2])
  redis.call('EXPIRE', KEYS[4], minutes * 60 + 120)
  local fields = {}
  for m = minute - minutes + 1, minute do fields[#fields + 1] = string.format('%d', m) end
  breaker = 0
  for _, v in ipairs(redis.call('HMGET', KEYS[4], unpack(fields))) do
    breaker = breaker + (tonumber(v or '0') or 0)
  end
  if redis.call('HLEN', KEYS[4]) > minutes + 5 then
    for _, f in ipairs(redis.call('HKEYS', KEYS[4])) do
      if tonumber(f) <= minute - minutes then redis.call('HDEL', KEYS[4], f) end
    end
  end
end
return {breaker, spent, 1}
