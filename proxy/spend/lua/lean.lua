-- Build a day's lean arm rollup (the daily series' groups, proxy.spend.rollups.lean_key) from
-- the day's arm rollup, replacing what it held: every record in the lean hash is in the arm hash
-- too (record.lua and batch.lua write both in one script), so the result is exact whatever was
-- written before; later records add to both. Used once per Redis, for days written before the
-- lean rollups existed.
-- KEYS: 1 the day's arm rollup, 2 its lean rollup; ARGV: 1 TTL seconds, 2 sums kept (ARM_HEAD)
local head = tonumber(ARGV[2])
local flat = redis.call('HGETALL', KEYS[1])
local sep = '\31'
local totals, order = {}, {}
for i = 1, #flat, 2 do
  local parts = {}
  for part in string.gmatch(flat[i] .. sep, '([^' .. sep .. ']*)' .. sep) do
    parts[#parts + 1] = part
  end
  local field = table.concat({parts[1], '', '', parts[4], parts[5], parts[6], ''}, sep)
  local sums = totals[field]
  if not sums then
    sums = {}
    for k = 1, head do sums[k] = 0 end
    totals[field] = sums
    order[#order + 1] = field
  end
  local k = 1
  for v in string.gmatch(flat[i + 1], '[^,]+') do
    if k > head then break end
    sums[k] = sums[k] + tonumber(v)
    k = k + 1
  end
end
redis.call('DEL', KEYS[2])
for _, field in ipairs(order) do
  local out = {}
  for k = 1, head do out[k] = string.format('%d', totals[field][k]) end
  redis.call('HSET', KEYS[2], field, table.concat(out, ','))
end
if #order > 0 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return #order
