-- drop_counters.lua: a drop's counters and live holds, read in one step.
--
-- Read apart, a reserve landing between the two reads would show one unit too many
-- (available not yet lowered, hold already counted) and the reconciler would call a
-- healthy drop drifted; read here, the values always belong to the same moment.
--
-- KEYS[1] drop        hash (total, avail, sold, sized)
-- KEYS[2] holds       hash: live holds
-- KEYS[3] sizes       hash: a sized drop's per-size counters
-- KEYS[4] hold_sizes  hash: reservation id -> size index
-- Returns {total, available, sold, live holds, then per size: label, total, available,
-- sold, live holds}, or {} when the drop is not mirrored
local fields = redis.call('HMGET', KEYS[1], 'total', 'avail', 'sold', 'sized')
if not fields[1] then
  return {}
end
local reply = {
  tonumber(fields[1]),
  tonumber(fields[2]),
  tonumber(fields[3] or 0),
  redis.call('HLEN', KEYS[2]),
}
if fields[4] == '1' then
  local count = tonumber(redis.call('HGET', KEYS[3], 'n') or '0')
  local live = {}
  local held = redis.call('HGETALL', KEYS[4])
  for i = 1, #held, 2 do
    if redis.call('HEXISTS', KEYS[2], held[i]) == 1 then
      live[held[i + 1]] = (live[held[i + 1]] or 0) + 1
    end
  end
  for i = 1, count do
    local size = redis.call('HMGET', KEYS[3], 'l:' .. i, 't:' .. i, 'a:' .. i, 's:' .. i)
    reply[#reply + 1] = size[1]
    reply[#reply + 1] = tonumber(size[2])
    reply[#reply + 1] = tonumber(size[3])
    reply[#reply + 1] = tonumber(size[4] or 0)
    reply[#reply + 1] = live[tostring(i)] or 0
  end
end
return reply
