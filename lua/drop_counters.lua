-- drop_counters.lua: a drop's counters and live holds, read in one step.
--
-- Read apart, a reserve landing between the two reads would show one unit too many
-- (available not yet lowered, hold already counted) and the reconciler would call a
-- healthy drop drifted; read here, the four values always belong to the same moment.
--
-- KEYS[1] drop  hash (total, avail, sold)
-- KEYS[2] holds hash: live holds
-- Returns {total, available, sold, live holds}, or {} when the drop is not mirrored
local fields = redis.call('HMGET', KEYS[1], 'total', 'avail', 'sold')
if not fields[1] then
  return {}
end
return {
  tonumber(fields[1]),
  tonumber(fields[2]),
  tonumber(fields[3] or 0),
  redis.call('HLEN', KEYS[2]),
}
