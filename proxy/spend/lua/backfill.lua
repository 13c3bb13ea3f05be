-- Add one record written before rollups existed to its hour, day and month rollups, once: records carry
-- "rollup":1 once counted (record.lua writes it with new records), so replicas running the
-- backfill at the same time, or a backfill run twice, never count a record twice.
-- KEYS: 1 record key, 2-4 hour, day, month rollup hash, 5-7 the same for coarse groups,
--       8-10 for people groups
-- ARGV: 1 rollup field (the group), 2 sums (as record.lua), 3 rollup TTL seconds,
--       4 coarse rollup field, 5 people rollup field
local raw = redis.call('GET', KEYS[1])
if not raw or string.find(raw, '"rollup":1', 1, true) then return 0 end
local add = {}
for v in string.gmatch(ARGV[2], '[^,]+') do add[#add + 1] = tonumber(v) end
for i = 2, 10 do
  local field = ARGV[1]
  if i > 7 then field = ARGV[5] elseif i > 4 then field = ARGV[4] end
  local old = redis.call('HGET', KEYS[i], field)
  local sums = {}
  if old then
    local j = 1
    for v in string.gmatch(old, '[^,]+') do
      sums[j] = string.format('%d', tonumber(v) + add[j])
      j = j + 1
    end
  else
    for k = 1, #add do sums[k] = string.format('%d', add[k]) end
  end
  redis.call('HSET', KEYS[i], field, table.concat(sums, ','))
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
redis.call('SET', KEYS[1], string.sub(raw, 1, -2) .. ',"rollup":1}', 'KEEPTTL')
return 1
