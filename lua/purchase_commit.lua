-- purchase_commit.lua: step 3 of a purchase, after PostgreSQL recorded it. Idempotent.
--
-- The hold leaves the live set, the sale is counted, the user's count stays (a purchase
-- counts toward the per-user limit), available stock does not change (the unit was held).
-- Called by the purchaser, by concurrent duplicate purchasers, and by the sweeper or the
-- reconciler when PostgreSQL says the purchase exists.
--
-- KEYS[1] drop        hash (sold, purchasing)
-- KEYS[2] holds       hash: live holds
-- KEYS[3] due         zset
-- KEYS[4] timer       the hold's TTL key
-- KEYS[5] user_holds  set: the owner's live holds
-- KEYS[6] closed      hash: ended holds
-- KEYS[7] closed_at   zset
-- KEYS[8] buyers      list: recent buyers, newest first, JSON each
-- KEYS[9] sizes       hash: a sized drop's per-size counters (s:<i> sold)
-- KEYS[10] hold_sizes hash: reservation id -> size index
-- ARGV[1] reservation id
-- ARGV[2] buyer JSON ({"displayName":..., "purchasedAt":...})
-- Returns {'COMMITTED'} or {'NOOP', closedState or ''} when it is no longer a live hold
local reservation_id = ARGV[1]
local buyer_json = ARGV[2]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local entry = redis.call('HGET', KEYS[2], reservation_id)
if not entry then
  local closed = redis.call('HGET', KEYS[6], reservation_id)
  if closed then
    return {'NOOP', string.match(closed, '^(%u+)|')}
  end
  return {'NOOP', ''}
end
local state, user, expires, created = string.match(entry, '^(%u+)|([^|]*)|(%d+)|(%d+)|')

redis.call('HDEL', KEYS[2], reservation_id)
redis.call('ZREM', KEYS[3], reservation_id)
redis.call('DEL', KEYS[4])
redis.call('SREM', KEYS[5], reservation_id)
redis.call('HINCRBY', KEYS[1], 'sold', 1)
local size_index = redis.call('HGET', KEYS[10], reservation_id)
if size_index then
  redis.call('HINCRBY', KEYS[9], 's:' .. size_index, 1)
  redis.call('HDEL', KEYS[10], reservation_id)
end
if state == 'PURCHASING' then
  redis.call('HINCRBY', KEYS[1], 'purchasing', -1)
end
redis.call('HSET', KEYS[6], reservation_id,
  'PURCHASED|' .. user .. '|' .. expires .. '|' .. created .. '|' .. now)
redis.call('ZADD', KEYS[7], now, reservation_id)
redis.call('LPUSH', KEYS[8], buyer_json)
redis.call('LTRIM', KEYS[8], 0, 4)
return {'COMMITTED'}
