-- Add one usage record to its hour, day and month rollups, once: the record counts only when its
-- ZADD into KEYS[1] adds it, so a record re-sent from the backlog (Redis ran the first send but
-- the reply was lost), a backfill run twice or by two replicas at once never counts twice.
-- KEYS: 1 the sorted set that says "already counted" (the time index Prec:ts for a new record; a
--       backfill's guard set for a record written before rollups existed), 2-4 hour, day, month
--       rollup hash, 5-7 the same for coarse groups, 8-10 for people groups, 11-13 for arms,
--       14 the hour's coarse minute rollups, 15 the hour's cost per department and minute,
--       16 the day's lean arm rollup (the daily series), 17 the change count of 15 (field n:
--       minutes.lua), 18 record key, 19 department time index (18-19 only on a single Redis: on
--       a cluster they live in other slots, and the caller writes them first)
-- ARGV: 1 request id, 2 ts, 3 index horizon (exclusive), 4 rollup field (the group),
--       5 sums "requests,input,cached,output,cost_nanos,saved_nanos", 6 rollup TTL seconds,
--       7 coarse rollup field, 8 people rollup field, 9 record JSON, 10 record TTL seconds,
--       11 arm rollup field, 12 arm sums (proxy.spend.rollups.arm_sums, comma-separated),
--       13 minute rollup field (coarse group + minute), 14 minute rollup TTL seconds,
--       15 department x minute field, 16 cost nano-dollars, 17 lean arm field, 18 lean sums
--       (proxy.spend.rollups.lean_key / lean_sums; written with the arms)
-- An empty field leaves that level alone (a backfill that adds only the arms).
local fresh = redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) == 1
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if #KEYS > 17 then
  redis.call('SET', KEYS[18], ARGV[9], 'EX', ARGV[10])
  redis.call('ZADD', KEYS[19], ARGV[2], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[19], '-inf', ARGV[3])
end
if not fresh then return 0 end
local usage = {ARGV[4], ARGV[7], ARGV[8], ARGV[11]}
local sums = {ARGV[5], ARGV[5], ARGV[5], ARGV[12]}
for level = 1, 4 do
  if usage[level] ~= '' then
    for i = 3 * level - 1, 3 * level + 1 do
      add_sums(KEYS[i], usage[level], sums[level], ARGV[6])
    end
  end
end
if ARGV[11] ~= '' then add_sums(KEYS[16], ARGV[17], ARGV[18], ARGV[6]) end
if ARGV[13] ~= '' then
  add_sums(KEYS[14], ARGV[13], ARGV[5], ARGV[14])
  if ARGV[16] ~= '0' then
    redis.call('HINCRBY', KEYS[15], ARGV[15], ARGV[16])
    redis.call('EXPIRE', KEYS[15], ARGV[14])
    redis.call('HINCRBY', KEYS[17], 'n', 1)  -- its change count (minutes.lua)
    redis.call('EXPIRE', KEYS[17], ARGV[14])
  end
end
return 1
