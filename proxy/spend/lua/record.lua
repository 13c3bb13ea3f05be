-- Add one usage record to its hour, day and month rollups, once: the record counts only when its
-- ZADD into KEYS[1] adds it, so a record re-sent from the backlog (Redis ran the first send but
-- the reply was lost), a backfill run twice or by two replicas at once never counts twice.
-- KEYS: 1 the sorted set that says "already counted" (the time index Prec:ts for a new record; the
--       backfilled set for a record written before rollups existed), 2-4 hour, day, month rollup
--       hash, 5-7 the same for coarse groups, 8-10 for people groups,
--       11 record key, 12 department time index (11-12 only on a single Redis: on a cluster they
--       live in other slots, and the caller writes them first)
-- ARGV: 1 request id, 2 ts, 3 index horizon (exclusive), 4 rollup field (the group),
--       5 sums "requests,input,cached,output,cost_nanos,saved_nanos", 6 rollup TTL seconds,
--       7 coarse rollup field, 8 people rollup field, 9 record JSON, 10 record TTL seconds
local fresh = redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) == 1
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if #KEYS > 10 then
  redis.call('SET', KEYS[11], ARGV[9], 'EX', ARGV[10])
  redis.call('ZADD', KEYS[12], ARGV[2], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[12], '-inf', ARGV[3])
end
if not fresh then return 0 end
local add = {}
for v in string.gmatch(ARGV[5], '[^,]+') do add[#add + 1] = tonumber(v) end
for i = 2, 10 do
  local field = ARGV[4]
  if i > 7 then field = ARGV[8] elseif i > 4 then field = ARGV[7] end
  local old = redis.call('HGET', KEYS[i], field)
  local sums = {}
  local j = 1
  if old then
    for v in string.gmatch(old, '[^,]+') do
      sums[j] = string.format('%d', tonumber(v) + add[j])
      j = j + 1
    end
  else
    for k = 1, #add do sums[k] = string.format('%d', add[k]) end
  end
  redis.call('HSET', KEYS[i], field, table.concat(sums, ','))
  redis.call('EXPIRE', KEYS[i], ARGV[6])
end
return 1
