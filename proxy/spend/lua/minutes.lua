-- The alerts' department x minute cost hashes, without the ones the caller already holds.
-- Every write to such a hash (record.lua, batch.lua) also adds 1 to its field '#', in the same
-- script, so an unchanged '#' means an unchanged hash: a poll re-reads only the hours written
-- since its last read (the current one, or one a late batch reached), not two days of minutes.
-- KEYS: the hashes; ARGV[i]: the '#' the caller holds for KEYS[i] ('' = none)
-- Returns JSON: per key, 0 when its '#' equals ARGV[i], else its flat HGETALL list ({} if empty)
local out = {}
for i = 1, #KEYS do
  local known = ARGV[i]
  if known ~= '' and (redis.call('HGET', KEYS[i], '#') or '') == known then
    out[i] = 0
  else
    -- a hash written before the counts existed is counted from now on; an older replica still
    -- adding to it during a rolling upgrade does not count, so callers hold an hour for a
    -- bounded time (proxy.spend.redis_reads.MINUTES_HELD_S)
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('HSETNX', KEYS[i], '#', '0') end
    out[i] = redis.call('HGETALL', KEYS[i])
  end
end
return cjson.encode(out)
