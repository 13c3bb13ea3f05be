-- Add a batch of usage records (all in one UTC hour) to the time index Prec:ts and to their
-- rollups, each record once: the records are written by the caller (with their department index,
-- in the same MULTI on a single Redis; in a pipeline before this on a cluster, where they live in
-- other slots). The caller sums the batch per group, so each rollup hash gets one HMGET and one
-- HSET per batch: the same fields and sums record.lua writes one record at a time.
-- A record already in the index (a batch re-sent from the backlog after Redis ran it but the reply
-- was lost) must not count again: then nothing is written and the script returns their positions;
-- the caller sends the batch again without them.
-- KEYS: 1 the time index Prec:ts, 2-4 hour, day, month rollup hash, 5-7 the same for coarse
--       groups, 8-10 for people groups
-- ARGV: 1 index horizon (exclusive), 2 rollup TTL seconds, 3 prune the index (0/1), 4 expire the
--       rollups (0/1), 5 R records, 6-8 numbers of fine, coarse and people groups, then per group
--       (fine, coarse, people) its name and the batch's sums in it
--       "requests,input,cached,output,cost_nanos,saved_nanos", then per record: id, ts
-- Returns {R} when counted, or {0, {positions (1-based) of records already in the index}}.
local R = tonumber(ARGV[5])
local counts = {tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])}
local groups = 8
local base = groups + 2 * (counts[1] + counts[2] + counts[3])
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
if ARGV[3] == '1' then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
local offset = groups
for level = 1, 3 do
  local fields, adds = {}, {}
  for g = 1, counts[level] do
    fields[g] = ARGV[offset + 2 * g - 1]
    adds[g] = ARGV[offset + 2 * g]
  end
  offset = offset + 2 * counts[level]
  for k = 1, 3 do
    local key = KEYS[1 + (level - 1) * 3 + k]
    local old = redis.call('HMGET', key, unpack(fields))
    local out = {}
    for g = 1, #fields do
      local sums = {}
      if old[g] then
        local add, j = {}, 1
        for v in string.gmatch(adds[g], '[^,]+') do add[#add + 1] = tonumber(v) end
        for v in string.gmatch(old[g], '[^,]+') do
          sums[j] = string.format('%d', tonumber(v) + add[j])
          j = j + 1
        end
        out[2 * g] = table.concat(sums, ',')
      else
        out[2 * g] = adds[g]
      end
      out[2 * g - 1] = fields[g]
    end
    redis.call('HSET', key, unpack(out))
    if ARGV[4] == '1' then redis.call('EXPIRE', key, ARGV[2]) end
  end
end
return {R}
