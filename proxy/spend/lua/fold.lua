-- Shared by admit.lua and settle.lua (prepended when the scripts are registered).
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
