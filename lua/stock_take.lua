-- stock_take.lua: the broadcaster reads a drop's available stock and clears its dirty flag.
--
-- Clearing and reading in one step means a change made after this read sets the flag
-- again and publishes again, so the last push of a burst always carries the final value.
--
-- KEYS[1] drop  hash (avail, dirty)
-- Returns available stock, or -1 when the drop is not mirrored
local avail = redis.call('HGET', KEYS[1], 'avail')
if not avail then
  return -1
end
redis.call('HDEL', KEYS[1], 'dirty')
return tonumber(avail)
