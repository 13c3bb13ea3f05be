-- One replica's budget and rate lease on one department, and its batched settlements, in one
-- atomic step (docs/scaling.md, "Leases"). A lease is a reservation named after the replica in
-- the department's reservation set (so older versions and other replicas count it like any
-- hold, and purge it when it expires): the replica admits requests against it locally.
-- This script, in order: adds the settled spend to every budget window, the breaker's minute
-- buckets and the tpm corrections / rate give-backs to the rate counters; reads the breaker sum;
-- grants rate slices and a budget slice (a request's own need whole or not at all, then at most a
-- quarter of what is left, so slices shrink as the budget runs low); sets the lease to `keep`
-- plus the grant. The lease is two reservations: `<id>` the free part, which expires with the lease
-- TTL, and `<id>:held` what the replica holds for requests in flight, which expires with the
-- latest of those requests' reservations (ARGV 28): a replica cut off from Redis longer than the
-- lease TTL loses its free part, never the holds of requests that will still settle.
-- An op is applied once: a re-sent one (reply lost) whose seq is not above the last is skipped.
-- The last seq lives in the lease's own key (KEYS 5), which expires: a day after the last call,
-- ten minutes after the lease is given back, so stopped replicas leave nothing behind.
-- Money is integer nano-dollars.
-- KEYS: 1 reservations zset, 2 reservation amounts hash, 3 reserved total, 4 breaker hash,
--       5 the lease's seq key, 6 rpm current, 7 rpm previous, 8 tpm current,
--       9 tpm previous, 10..9+n spent key per window, then the micro-dollar keys of older
--       versions: reserved total, breaker hash, spent per window
-- ARGV: 1 lease id, 2 now, 3 lease expires_at, 4 seq, 5 held, 6 keep, 7 budget need,
--       8 budget slice, 9 cap (1: a need that does not fit is granted as far as it fits),
--       10 check breaker and rates for an admission (0/1), 11 breaker minutes (0 = none),
--       12 breaker max nanos, 13 current minute, 14 breaker deltas "minute=nanos,..." ('' none),
--       15 rpm limit (-1 none), 16 tpm limit (-1 none), 17 elapsed fraction of the minute,
--       18-21 deltas for rpm current, rpm previous, tpm current, tpm previous,
--       22 rpm need, 23 rpm slice, 24 tpm need, 25 tpm slice, 26 reservation keys TTL (0: leave),
--       27 seq key TTL, 28 expiry of the holds (the latest request's reservation),
--       29.. per window: limit (-1: no room check), spent delta, key TTL (0: leave)
-- Returns {status (0 ok, 2 rpm, 3 tpm, 4 breaker, 5 already applied), lease amount, budget
--          granted, {spent per window}, {room per window beyond keep}, breaker sum (-1 none),
--          first breaker minute, {buckets}, rpm current, rpm previous, rpm granted,
--          tpm current, tpm previous, tpm granted}
-- fold / fold_hash / purge_expired: see fold.lua (prepended at registration)
local id, now, seq = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local n = (#ARGV - 28) / 3
local hid = id .. ':held'
local last = redis.call('GET', KEYS[5])
if last and tonumber(last) >= seq then
  local parts = redis.call('HMGET', KEYS[2], id, hid)
  return {5, string.format('%d', tonumber(parts[1] or '0') + tonumber(parts[2] or '0'))}
end
local legacy = {KEYS[10 + n], KEYS[11 + n]}
for i = 1, n do legacy[#legacy + 1] = KEYS[11 + n + i] end
if redis.call('EXISTS', unpack(legacy)) > 0 then
  for i = 1, n do fold(KEYS[11 + n + i], KEYS[9 + i]) end
  fold_hash(KEYS[11 + n], KEYS[4])
end

local spent = {}
for i = 1, n do
  local o = 28 + (i - 1) * 3
  if ARGV[o + 2] ~= '0' then
    spent[i] = redis.call('INCRBY', KEYS[9 + i], ARGV[o + 2])
  elseif tonumber(ARGV[o + 1]) >= 0 then
    spent[i] = tonumber(redis.call('GET', KEYS[9 + i]) or '0')
  else
    spent[i] = 0
  end
  if ARGV[o + 3] ~= '0' then redis.call('EXPIRE', KEYS[9 + i], ARGV[o + 3]) end
end

local status = 0
local check = ARGV[10] == '1'
local cb_minutes = tonumber(ARGV[11])
local cb_sum, first, buckets = -1, 0, {}
if ARGV[14] ~= '' then
  for m, v in string.gmatch(ARGV[14], '(%d+)=(%d+)') do redis.call('HINCRBY', KEYS[4], m, v) end
  if cb_minutes > 0 then redis.call('EXPIRE', KEYS[4], cb_minutes * 60 + 120) end
end
if cb_minutes > 0 then
  local minute = tonumber(ARGV[13])
  first = minute - cb_minutes + 1
  local fields = {}
  for m = first, minute do fields[#fields + 1] = string.format('%d', m) end
  cb_sum = 0
  for i, v in ipairs(redis.call('HMGET', KEYS[4], unpack(fields))) do
    buckets[i] = tonumber(v or '0') or 0
    cb_sum = cb_sum + buckets[i]
  end
  if ARGV[14] ~= '' and redis.call('HLEN', KEYS[4]) > cb_minutes + 5 then
    for _, f in ipairs(redis.call('HKEYS', KEYS[4])) do
      if tonumber(f) <= minute - cb_minutes then redis.call('HDEL', KEYS[4], f) end
    end
  end
  if check and cb_sum > tonumber(ARGV[12]) then status = 4 end
end
if status ~= 4 then buckets = {} end

local function bump(key, delta)
  if delta ~= '0' then
    redis.call('INCRBY', key, delta)
    redis.call('EXPIRE', key, 120)
  end
end
bump(KEYS[6], ARGV[18])
bump(KEYS[7], ARGV[19])
bump(KEYS[8], ARGV[20])
bump(KEYS[9], ARGV[21])
local elapsed = tonumber(ARGV[17])
-- a rate slice: the need whole (refused when it does not fit the sliding window), then at most a
-- quarter of the room left
local function rate(cur_key, prev_key, limit, need, slice)
  if limit < 0 or (need == 0 and slice == 0) or status ~= 0 then return false, 0, 0, 0 end
  local cur = tonumber(redis.call('GET', cur_key) or '0')
  local prev = tonumber(redis.call('GET', prev_key) or '0')
  local room = limit - (prev * (1.0 - elapsed) + cur)
  if need > room then
    if check and need > 0 then return true, cur, prev, 0 end
    need = 0
  end
  local extra = math.floor((room - need) / 4)
  if extra > slice then extra = slice end
  if extra < 0 then extra = 0 end
  local granted = need + extra
  if granted > 0 then
    redis.call('INCRBY', cur_key, granted)
    redis.call('EXPIRE', cur_key, 120)
  end
  return false, cur, prev, granted
end
local bad, rpm_cur, rpm_prev, rpm_got = rate(KEYS[6], KEYS[7], tonumber(ARGV[15]),
                                             tonumber(ARGV[22]), tonumber(ARGV[23]))
if bad then status = 2 end
local tpm_cur, tpm_prev, tpm_got = 0, 0, 0
bad, tpm_cur, tpm_prev, tpm_got = rate(KEYS[8], KEYS[9], tonumber(ARGV[16]),
                                       tonumber(ARGV[24]), tonumber(ARGV[25]))
if bad then status = 3 end

local need, slice = tonumber(ARGV[7]), tonumber(ARGV[8])
if status ~= 0 then need, slice = 0, 0 end
local keep = tonumber(ARGV[6])
if need > 0 or slice > 0 then
  purge_expired(KEYS[1], KEYS[2], KEYS[3], now)
end
local old = redis.call('HGET', KEYS[2], id)
local old_hold = redis.call('HGET', KEYS[2], hid)
local held_before = tonumber(old or '0') + tonumber(old_hold or '0')
local held = tonumber(ARGV[5])
if keep > held_before then
  -- part of the lease is gone (its free part expired and was purged: that room may be spent by
  -- now, or Redis lost it): what is still reserved stays, the holds of requests in flight come
  -- back as they are (they run already), the rest is granted like any slice, from the room
  keep = math.max(held, held_before)
end
local rooms, room = {}, nil
if need > 0 or slice > 0 then
  local reserved = tonumber(redis.call('GET', KEYS[3]) or '0')
  if reserved < 0 then
    reserved = 0
    redis.call('SET', KEYS[3], '0')
  end
  reserved = reserved + math.max(0, tonumber(redis.call('GET', KEYS[10 + n]) or '0')) * 1000
  local others = reserved - held_before
  for i = 1, n do
    local limit = tonumber(ARGV[28 + (i - 1) * 3 + 1])
    if limit >= 0 then
      rooms[i] = limit - spent[i] - others - keep
      if room == nil or rooms[i] < room then room = rooms[i] end
    else
      rooms[i] = 0
    end
  end
end
local granted = 0
if room ~= nil then
  local got = 0
  if need > 0 then
    if need <= room then got = need elseif ARGV[9] == '1' and room > 0 then got = room end
  end
  local extra = 0
  if got == need then
    extra = math.floor((room - got) / 4)
    if extra > slice then extra = slice end
    if extra < 0 then extra = 0 end
  end
  granted = got + extra
end
local amount = keep + granted
local function put(rid, value, before, expires)
  if value > 0 then
    redis.call('HSET', KEYS[2], rid, string.format('%d', value))
    redis.call('ZADD', KEYS[1], expires, rid)
  elseif before then
    redis.call('HDEL', KEYS[2], rid)
    redis.call('ZREM', KEYS[1], rid)
  end
end
local hold = math.min(held, amount)
put(id, amount - hold, old, ARGV[3])
put(hid, hold, old_hold, ARGV[28])
if amount ~= held_before then
  redis.call('INCRBY', KEYS[3], string.format('%d', amount - held_before))
end
if amount > 0 and ARGV[26] ~= '0' then  -- never shorter: a per-request replica's holds live longer
  for k = 1, 3 do
    if redis.call('TTL', KEYS[k]) < tonumber(ARGV[26]) then
      redis.call('EXPIRE', KEYS[k], ARGV[26])
    end
  end
end
redis.call('SET', KEYS[5], ARGV[4], 'EX', ARGV[27])
return {status, string.format('%d', amount), string.format('%d', granted), spent, rooms, cb_sum,
        first, buckets, rpm_cur, rpm_prev, rpm_got, tpm_cur, tpm_prev, tpm_got}
