-- stock_take.lua: the broadcaster reads a drop's available stock and clears its dirty flag.
--
-- Clearing and reading in one step means a change made after this read sets the flag
-- again and publishes again, so the last push of a burst always carries the final value.
--
-- KEYS[1] drop   hash (avail, dirty, sized)
-- KEYS[2] sizes  hash: a sized drop's per-size counters (n count, l:<i> label, a:<i> available)
-- Returns {available, label 1, available 1, label 2, ...} (no labels for a drop without
-- sizes), or {-1} when the drop is not mirrored
local fields = redis.call('HMGET', KEYS[1], 'avail', 'sized')
if not fields[1] then
  return {-1}
end
redis.call('HDEL', KEYS[1], 'dirty')
local reply = {tonumber(fields[1])}
if fields[2] == '1' then
  local count = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
  for i = 1, count do
    local size = redis.call('HMGET', KEYS[2], 'l:' .. i, 'a:' .. i)
    reply[#reply + 1] = size[1]
    reply[#reply + 1] = tonumber(size[2])
  end
end
return reply
