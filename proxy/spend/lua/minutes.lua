-- The alerts' department x minute cost hashes, without the ones the caller already holds.
-- Every write to such a hash (record.lua, batch.lua) adds 1 to its change count (field n of a
-- key of its own, so versions without counts read the hashes unchanged), in the same script: an
-- unchanged count means an unchanged hash, and a poll re-reads only the hours written since its
-- last read (the current one, or one a late batch reached), not two days of minutes.
-- KEYS: per hour its cost hash, then its change count key
-- ARGV[i]: the count the caller holds for hour i ('' = none)
-- Returns JSON: per hour 0 when its count equals ARGV[i], else {count, flat HGETALL list}
-- (count '' when the hour has no hash)
local out = {}
for i = 1, #ARGV do
  local costs, counts, known = KEYS[2 * i - 1], KEYS[2 * i], ARGV[i]
  local count = redis.call('HGET', counts, 'n')
  if not count then
    -- an hour written before the counts existed is counted from now on, expiring with its
    -- hash; an older replica adding to it during a rolling upgrade does not count, so callers
    -- hold an hour for a bounded time (proxy.spend.redis_reads.MINUTES_HELD_S)
    local ttl = redis.call('PTTL', costs)
    if ttl > 0 then
      redis.call('HSET', counts, 'n', '0')
      redis.call('PEXPIRE', counts, ttl)
      count = '0'
    end
  end
  if count and count == known then
    out[i] = 0
  else
    out[i] = {count or '', redis.call('HGETALL', costs)}
  end
end
return cjson.encode(out)
