-- Add a batch of usage records (all in one UTC hour) to the time index Prec:ts and to their
-- rollups, each record once: the records are written by the caller (with their department index,
-- in the same MULTI on a single Redis; in a pipeline before this on a cluster, where they live in
-- other slots). The caller sums the batch per rollup hash and field
-- (proxy.spend.redis_backend.RedisSpendBackend.rollup_parts: the same hashes, fields and sums
-- record.lua writes one record at a time), so each hash gets one HMGET and one HSET per batch.
-- A record already in the index (a batch re-sent from the backlog after Redis ran it but the reply
-- was lost) must not count again: then nothing is written and the script returns their positions;
-- the caller sends the batch again without them.
-- KEYS: 1 the time index Prec:ts, then the K rollup hashes
-- ARGV: 1 index horizon (exclusive), 2 prune the index (0/1), 3 expire the rollups (0/1),
--       4 R records, 5 K, then per hash its TTL seconds and its number of fields, then per hash
--       its fields, each as name and the batch's comma-separated integer sums, then per record:
--       id, ts
-- Returns {R} when counted, or {0, {positions (1-based) of records already in the index}}.
-- Lua numbers are doubles: every sum stays below 2**53 (squares are split into limbs by the
-- caller), as in add_sums.lua.
local R, K = tonumber(ARGV[4]), tonumber(ARGV[5])
local ttls, counts = {}, {}
local pairs_at = 5 + 2 * K
local fields_total = 0
for k = 1, K do
  ttls[k] = ARGV[5 + 2 * k - 1]
  counts[k] = tonumber(ARGV[5 + 2 * k])
  fields_total = fields_total + counts[k]
end
local base = pairs_at + 2 * fields_total
local ids, index = {}, {}
for r = 1, R do
  local o = base + (r - 1) * 2
  ids[r] = ARGV[o + 1]
  index[2 * r - 1] = ARGV[o + 2]
  index[2 * r] = ARGV[o + 1]
end
local counted = {}
for r, score in ipairs(redis.call('ZMSCORE', KEYS[1], unpack(ids))) do
  if score then counted[#counted + 1] = r end
end
if #counted > 0 then return {0, counted} end
redis.call('ZADD', KEYS[1], unpack(index))
if ARGV[2] == '1' then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
local offset = pairs_at
for k = 1, K do
  local n = counts[k]
  if n > 0 then
    local key = KEYS[1 + k]
    local fields, adds = {}, {}
    for g = 1, n do
      fields[g] = ARGV[offset + 2 * g - 1]
      adds[g] = ARGV[offset + 2 * g]
    end
    local old = redis.call('HMGET', key, unpack(fields))
    local out = {}
    for g = 1, n do
      out[2 * g - 1] = fields[g]
      if old[g] then
        local add = {}
        for v in string.gmatch(adds[g], '[^,]+') do add[#add + 1] = tonumber(v) end
        local sums, j = {}, 1
        for v in string.gmatch(old[g], '[^,]+') do
          sums[j] = string.format('%d', tonumber(v) + (add[j] or 0))
          j = j + 1
        end
        for m = j, #add do sums[m] = string.format('%d', add[m]) end
        out[2 * g] = table.concat(sums, ',')
      else
        out[2 * g] = adds[g]
      end
    end
    redis.call('HSET', key, unpack(out))
    if ARGV[3] == '1' then redis.call('EXPIRE', key, ttls[k]) end
    offset = offset + 2 * n
  end
end
return {R}
