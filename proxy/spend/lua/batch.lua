-- Write a batch of usage records (all in one UTC hour) and add each to its rollups once: a record
-- counts only when it is not in KEYS[1] yet (ZMSCORE before the ZADD), so a batch re-sent from the
-- backlog (Redis ran it but the reply was lost), or a record twice in one batch, never counts twice.
-- The rollups get one HMGET and one HSET per hash for the whole batch (deltas summed per group),
-- the same fields and sums record.lua writes one record at a time.
-- KEYS: 1 the time index Prec:ts, 2-4 hour, day, month rollup hash, 5-7 the same for coarse
--       groups, 8-10 for people groups, 11..10+D department time indexes, then (single Redis
--       only, ARGV[3] > 0) one record key per record
-- ARGV: 1 index horizon (exclusive), 2 rollup TTL seconds, 3 record TTL seconds (0: the caller
--       wrote the records and department indexes, on a cluster), 4 prune the indexes (0/1),
--       5 expire the rollups (0/1), 6 R records, 7 D department indexes, 8-10 numbers of fine,
--       coarse and people groups, then the group names (fine, coarse, people), then per record:
--       id, ts, department index (1..D), fine, coarse and people group index (1-based within
--       its detail), sums "requests,input,cached,output,cost_nanos,saved_nanos", [JSON]
-- Returns the number of records counted now.
local recttl = tonumber(ARGV[3])
local R, D = tonumber(ARGV[6]), tonumber(ARGV[7])
local nf, nc, np = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local names = 10
local base = names + nf + nc + np
local width = 7
if recttl > 0 then width = 8 end
local ids, index = {}, {}
for r = 0, R - 1 do
  local o = base + r * width
  ids[r + 1] = ARGV[o + 1]
  index[#index + 1] = ARGV[o + 2]
  index[#index + 1] = ARGV[o + 1]
end
local scores = redis.call('ZMSCORE', KEYS[1], unpack(ids))
redis.call('ZADD', KEYS[1], unpack(index))
if ARGV[4] == '1' then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
if recttl > 0 then
  local by_dept = {}
  for r = 0, R - 1 do
    local o = base + r * width
    redis.call('SET', KEYS[10 + D + r + 1], ARGV[o + 8], 'EX', recttl)
    local d = tonumber(ARGV[o + 3])
    local list = by_dept[d]
    if not list then list = {}; by_dept[d] = list end
    list[#list + 1] = ARGV[o + 2]
    list[#list + 1] = ARGV[o + 1]
  end
  for d = 1, D do
    if by_dept[d] then redis.call('ZADD', KEYS[10 + d], unpack(by_dept[d])) end
    if ARGV[4] == '1' then redis.call('ZREMRANGEBYSCORE', KEYS[10 + d], '-inf', ARGV[1]) end
  end
end
-- sums per group of each detail, over the records counted now
local offsets = {names, names + nf, names + nf + nc}
local totals = {{}, {}, {}}
local seen, fresh = {}, 0
for r = 0, R - 1 do
  local o = base + r * width
  local id = ARGV[o + 1]
  if not scores[r + 1] and not seen[id] then
    seen[id] = true
    fresh = fresh + 1
    local add = {}
    for v in string.gmatch(ARGV[o + 7], '[^,]+') do add[#add + 1] = tonumber(v) end
    for level = 1, 3 do
      local g = tonumber(ARGV[o + 3 + level])
      local sums = totals[level][g]
      if not sums then
        totals[level][g] = add
      else
        local merged = {}
        for k = 1, #add do merged[k] = sums[k] + add[k] end
        totals[level][g] = merged
      end
    end
  end
end
if fresh == 0 then return 0 end
for level = 1, 3 do
  local fields, groups = {}, {}
  for g, _ in pairs(totals[level]) do
    groups[#groups + 1] = g
    fields[#fields + 1] = ARGV[offsets[level] + g]
  end
  for k = 1, 3 do
    local key = KEYS[1 + (level - 1) * 3 + k]
    local old = redis.call('HMGET', key, unpack(fields))
    local out = {}
    for i, g in ipairs(groups) do
      local add = totals[level][g]
      local sums, j = {}, 1
      if old[i] then
        for v in string.gmatch(old[i], '[^,]+') do
          sums[j] = string.format('%d', tonumber(v) + add[j])
          j = j + 1
        end
      else
        for m = 1, #add do sums[m] = string.format('%d', add[m]) end
      end
      out[#out + 1] = fields[i]
      out[#out + 1] = table.concat(sums, ',')
    end
    redis.call('HSET', key, unpack(out))
    if ARGV[5] == '1' then redis.call('EXPIRE', key, ARGV[2]) end
  end
end
return fresh
