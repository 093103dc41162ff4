-- purchase_abort.lua: undo step 1 when PostgreSQL did not record the purchase.
--
-- The hold goes back to ACTIVE with what is left of its time. If nothing is left it is
-- put back ACTIVE with its past deadline in the due set, and the caller releases it at
-- once with release.lua (so only release.lua ever returns a unit).
--
-- KEYS[1] drop        hash (purchasing counter)
-- KEYS[2] holds       hash: live holds
-- KEYS[3] due         zset
-- KEYS[4] timer       the hold's TTL key
-- ARGV[1] reservation id
-- ARGV[2] claim id that must match, or '' (the sweeper, after fencing the claim in PostgreSQL)
-- Returns {'RESTORED', remainingMs}  ACTIVE again, timer re-armed
--      or {'RESTORED_DUE'}            ACTIVE again but past its deadline: release it now
--      or {'NOOP'}                    not PURCHASING, or another claim's
local reservation_id = ARGV[1]
local claim_arg = ARGV[2]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local entry = redis.call('HGET', KEYS[2], reservation_id)
if not entry then
  return {'NOOP'}
end
local state, user, expires, created, claim =
  string.match(entry, '^(%u+)|([^|]*)|(%d+)|(%d+)|(.*)$')
if state ~= 'PURCHASING' or (claim_arg ~= '' and claim_arg ~= claim) then
  return {'NOOP'}
end

local remaining = tonumber(expires) - now
redis.call('HSET', KEYS[2], reservation_id,
  'ACTIVE|' .. user .. '|' .. expires .. '|' .. created .. '|')
redis.call('ZADD', KEYS[3], tonumber(expires), reservation_id)
redis.call('HINCRBY', KEYS[1], 'purchasing', -1)
if remaining <= 0 then
  return {'RESTORED_DUE'}
end
redis.call('SET', KEYS[4], '1', 'PX', remaining)
return {'RESTORED', remaining}
