-- Read rollup hashes in one reply: a JSON array with, per key, the flat HGETALL list
-- [group, sums, group, sums, ...] ({} when the hash is empty: cjson's empty table). One bulk
-- string parsed by orjson instead of two RESP strings per group (redis-py parses those in
-- Python: 10,800 of them took ~110-190 ms for a 5,400-group month on a loaded machine).
-- KEYS: rollup hashes; ARGV[1] (optional): keep only the first N comma-separated sums of each
-- group (the daily series needs 6 of an arm group's 47: a quarter of the JSON to encode)
local head = tonumber(ARGV[1] or '0') or 0
local out = {}
for i = 1, #KEYS do
  local flat = redis.call('HGETALL', KEYS[i])
  if head > 0 then
    for j = 2, #flat, 2 do
      local pos = 0
      for _ = 1, head do
        pos = string.find(flat[j], ',', pos + 1, true)
        if not pos then break end
      end
      if pos then flat[j] = string.sub(flat[j], 1, pos - 1) end
    end
  end
  out[i] = flat
end
return cjson.encode(out)
