-- Shared by admit.lua, settle.lua and lease.lua (prepended when the scripts are registered).
-- Money keys of versions before nano-dollars held micro-dollars: fold them into the nano-dollar
-- keys (x 1000 by appending '000' to the integer string: exact at any size), keeping the TTL.
local function fold(legacy, key)
  local v = redis.call('GET', legacy)
  if not v then return end
  if v ~= '0' then redis.call('INCRBY', key, v .. '000') end
  local ttl = redis.call('PTTL', legacy)
  if ttl > 0 and redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ttl) end
  redis.call('DEL', legacy)
end
local function fold_hash(legacy, key)
  local flat = redis.call('HGETALL', legacy)
  if #flat == 0 then return end
  for i = 1, #flat, 2 do
    if flat[i + 1] ~= '0' then redis.call('HINCRBY', key, flat[i], flat[i + 1] .. '000') end
  end
  local ttl = redis.call('PTTL', legacy)
  if ttl > 0 and redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ttl) end
  redis.call('DEL', legacy)
end
-- Drop reservations that expired (at most 500 a call) from the set, the amounts hash and the
-- reserved total.
local function purge_expired(zset, amounts, total, now)
  local expired = redis.call('ZRANGEBYSCORE', zset, '-inf', now, 'LIMIT', 0, 500)
  for _, rid in ipairs(expired) do
    local amt = redis.call('HGET', amounts, rid)
    if amt then
      redis.call('DECRBY', total, amt)
      redis.call('HDEL', amounts, rid)
    end
    redis.call('ZREM', zset, rid)
  end
end
