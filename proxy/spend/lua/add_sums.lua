-- Add comma-separated integer sums to a rollup hash field (a missing field counts as zeros) and
-- refresh the hash's TTL. Lua numbers are doubles: every sum stays below 2**53 (squares are
-- split into limbs by the caller).
local function add_sums(key, field, add, ttl)
  local delta = {}
  for v in string.gmatch(add, '[^,]+') do delta[#delta + 1] = tonumber(v) end
  local old = redis.call('HGET', key, field)
  local out = {}
  local j = 1
  if old then
    for v in string.gmatch(old, '[^,]+') do
      out[j] = string.format('%d', tonumber(v) + (delta[j] or 0))
      j = j + 1
    end
  end
  for k = j, #delta do out[k] = string.format('%d', delta[k]) end
  redis.call('HSET', key, field, table.concat(out, ','))
  redis.call('EXPIRE', key, ttl)
end
