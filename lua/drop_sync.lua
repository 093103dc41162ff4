-- drop_sync.lua: mirror a drop's definition from PostgreSQL into Redis.
--
-- Used when a drop is created or changed (name, times, cancelled). Never touches stock
-- counters of a drop that is already mirrored; a drop not yet mirrored is reported so
-- the caller runs drop_rebuild.lua instead.
--
-- KEYS[1] drop  hash
-- ARGV[1] definition JSON (what a drop view shows that Redis does not count)
-- ARGV[2] per-user limit
-- ARGV[3] startsAt (ms)
-- ARGV[4] endsAt (ms, 0 = none)
-- ARGV[5] cancelled ('1' or '0')
-- ARGV[6] stock-dirty channel
-- ARGV[7] drop id
-- Returns {'SYNCED'} or {'MISSING'}
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'MISSING'}
end
redis.call('HSET', KEYS[1], 'def', ARGV[1], 'limit', ARGV[2], 'starts', ARGV[3],
  'ends', ARGV[4], 'cancelled', ARGV[5])
-- A state change (cancel, reschedule) is worth a push too: status is derived from it.
if redis.call('HSETNX', KEYS[1], 'dirty', '1') == 1 then
  redis.call('PUBLISH', ARGV[6], ARGV[7])
end
return {'SYNCED'}
