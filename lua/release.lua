-- release.lua: end a live ACTIVE hold (expiry or cancel) and return its unit, exactly once.
--
-- Every expiry layer (keyspace event, sweeper, reconciler) and every cancel path calls this;
-- it changes nothing unless the hold is still ACTIVE, so they may overlap freely.
--
-- KEYS[1] drop        hash (avail, dirty)
-- KEYS[2] users       hash: user id -> live holds + purchases
-- KEYS[3] holds       hash: live holds
-- KEYS[4] due         zset: live holds by deadline
-- KEYS[5] timer       the hold's TTL key
-- KEYS[6] user_holds  set: the owner's live holds in this drop
-- KEYS[7] closed      hash: reservation id -> "STATE|user|expiresMs|createdMs|closedMs"
-- KEYS[8] closed_at   zset: reservation id -> closedMs (for pruning)
-- KEYS[9] cooldown    string: the owner's reserve cooldown in this drop (read by reserve.lua)
-- KEYS[10] sizes      hash: a sized drop's per-size counters (a:<i> available)
-- KEYS[11] hold_sizes hash: reservation id -> size index
-- ARGV[1] reservation id
-- ARGV[2] reason: 'EXPIRED' (only once the deadline has passed), 'CANCELLED', or 'VOIDED'
--         (the sweeper fenced out a stale purchase claim: ends now, recorded as EXPIRED)
-- ARGV[3] owner user id, or '' when the system acts (expiry, drop cancelled)
-- ARGV[4] stock-dirty channel
-- ARGV[5] drop id
-- ARGV[6] reserve cooldown, in milliseconds (0 = off), armed from this release when the
--         hold EXPIRED or its owner CANCELLED it; not when the system cancels (the drop
--         was cancelled: owner '') nor for VOIDED (a purchase the server failed to finish
--         is not the user's doing)
-- Returns {'RELEASED', lagMs, availableAfter}  (lagMs = now - expiresAt, for expiry metrics)
--      or {'ALREADY', closedState}  the hold had ended before (EXPIRED, CANCELLED, PURCHASED)
--      or {'PURCHASING'}            a purchase holds it; the sweeper resolves those
--      or {'NOT_DUE', expiresAtMs}  an expiry that came early (a stale event)
--      or {'NOT_FOUND'}             unknown id, or another user's hold
local reservation_id = ARGV[1]
local reason = ARGV[2]
local owner = ARGV[3]
local channel = ARGV[4]
local drop_id = ARGV[5]
local cooldown_ms = tonumber(ARGV[6])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local entry = redis.call('HGET', KEYS[3], reservation_id)
if not entry then
  local closed = redis.call('HGET', KEYS[7], reservation_id)
  if closed then
    local state, user = string.match(closed, '^(%u+)|([^|]*)|')
    if owner ~= '' and owner ~= user then
      return {'NOT_FOUND'}
    end
    return {'ALREADY', state}
  end
  return {'NOT_FOUND'}
end
local state, user, expires, created = string.match(entry, '^(%u+)|([^|]*)|(%d+)|(%d+)|')
expires = tonumber(expires)
if owner ~= '' and owner ~= user then
  return {'NOT_FOUND'}
end
if state ~= 'ACTIVE' then
  return {'PURCHASING'}
end
if reason == 'EXPIRED' and now < expires then
  return {'NOT_DUE', expires}
end

-- Checks done; writes only.
local closed_state = reason
if reason == 'VOIDED' then
  closed_state = 'EXPIRED'
end
redis.call('HDEL', KEYS[3], reservation_id)
redis.call('ZREM', KEYS[4], reservation_id)
redis.call('DEL', KEYS[5])
redis.call('SREM', KEYS[6], reservation_id)
local avail = redis.call('HINCRBY', KEYS[1], 'avail', 1)
local size_index = redis.call('HGET', KEYS[11], reservation_id)
if size_index then
  redis.call('HINCRBY', KEYS[10], 'a:' .. size_index, 1)
  redis.call('HDEL', KEYS[11], reservation_id)
end
if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
  redis.call('HDEL', KEYS[2], user)
end
redis.call('HSET', KEYS[7], reservation_id,
  closed_state .. '|' .. user .. '|' .. expires .. '|' .. created .. '|' .. now)
redis.call('ZADD', KEYS[8], now, reservation_id)
-- The unit goes to someone else first: its holder waits before reserving here again,
-- so a cancel and re-reserve loop cannot keep it (OWASP OAT-021, denial of inventory).
if cooldown_ms > 0 and (reason == 'EXPIRED' or (reason == 'CANCELLED' and owner ~= '')) then
  redis.call('SET', KEYS[9], '1', 'PX', cooldown_ms)
end
if redis.call('HSETNX', KEYS[1], 'dirty', '1') == 1 then
  redis.call('PUBLISH', channel, drop_id)
end
return {'RELEASED', now - expires, avail}
