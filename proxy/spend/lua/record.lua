-- Store one usage record and add it to its hour, day and month rollups, once: a record re-sent from the
-- backlog (Redis ran the first send but the reply was lost) is stored again, never counted twice.
-- KEYS: 1 record key, 2 time index, 3 department time index, 4-6 hour, day, month rollup hash,
--       7-9 the same for coarse groups, 10-12 for people groups
-- ARGV: 1 record JSON, 2 record TTL seconds, 3 request id, 4 ts, 5 index horizon (exclusive),
--       6 rollup field (the group), 7 sums "requests,input,cached,output,cost_nanos,saved_nanos",
--       8 rollup TTL seconds, 9 coarse rollup field, 10 people rollup field
local fresh = redis.call('EXISTS', KEYS[1]) == 0
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
for i = 2, 3 do
  redis.call('ZADD', KEYS[i], ARGV[4], ARGV[3])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[5])
end
if not fresh then return 0 end
local add = {}
for v in string.gmatch(ARGV[7], '[^,]+') do add[#add + 1] = tonumber(v) end
for i = 4, 12 do
  local field = ARGV[6]
  if i > 9 then field = ARGV[10] elseif i > 6 then field = ARGV[9] end
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
  redis.call('EXPIRE', KEYS[i], ARGV[8])
end
return 1
