-- restock.lua: add units to a mirrored drop (after PostgreSQL's total was raised).
--
-- KEYS[1] drop  hash (total, avail, dirty)
-- ARGV[1] quantity added (positive integer)
-- ARGV[2] stock-dirty channel
-- ARGV[3] drop id
-- Returns {'RESTOCKED', availableAfter} or {'MISSING'} (not mirrored: rebuild it instead,
-- PostgreSQL's total already includes the new units)
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'MISSING'}
end
local quantity = tonumber(ARGV[1])
redis.call('HINCRBY', KEYS[1], 'total', quantity)
local avail = redis.call('HINCRBY', KEYS[1], 'avail', quantity)
if redis.call('HSETNX', KEYS[1], 'dirty', '1') == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return {'RESTOCKED', avail}
