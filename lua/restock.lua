-- restock.lua: add units to a mirrored drop (after PostgreSQL's total was raised).
--
-- KEYS[1] drop   hash (total, avail, dirty)
-- KEYS[2] sizes  hash: a sized drop's per-size counters (t:<i> total, a:<i> available)
-- ARGV[1] quantity added (positive integer)
-- ARGV[2] stock-dirty channel
-- ARGV[3] drop id
-- ARGV[4] size label ('' for a drop without sizes)
-- Returns {'RESTOCKED', availableAfter} or {'MISSING'} (not mirrored, or the size is not:
-- rebuild it instead, PostgreSQL's totals already include the new units)
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'MISSING'}
end
local quantity = tonumber(ARGV[1])
if ARGV[4] ~= '' then
  local index = redis.call('HGET', KEYS[2], 'i:' .. ARGV[4])
  if not index then
    return {'MISSING'}
  end
  redis.call('HINCRBY', KEYS[2], 't:' .. index, quantity)
  redis.call('HINCRBY', KEYS[2], 'a:' .. index, quantity)
end
redis.call('HINCRBY', KEYS[1], 'total', quantity)
local avail = redis.call('HINCRBY', KEYS[1], 'avail', quantity)
if redis.call('HSETNX', KEYS[1], 'dirty', '1') == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return {'RESTOCKED', avail}
