-- purchase_claim.lua: step 1 of a purchase. ACTIVE -> PURCHASING, timer stopped.
--
-- The deadline is compared with Redis time, so a hold past its expiresAt is expired even
-- if its timer key has not been evicted yet. While PURCHASING, no expiry layer releases
-- the hold; the due set carries the claim deadline instead, after which the sweeper asks
-- PostgreSQL whether the purchase was recorded (a crash between the steps).
--
-- KEYS[1] drop        hash (purchasing counter, rebuild epoch)
-- KEYS[2] holds       hash: live holds
-- KEYS[3] due         zset: live holds by deadline
-- KEYS[4] timer       the hold's TTL key
-- KEYS[5] closed      hash: ended holds
-- KEYS[6] sizes       hash: a sized drop's per-size counters (l:<i> label)
-- KEYS[7] hold_sizes  hash: reservation id -> size index
-- KEYS[8] revoked     optional: the caller's signed-out marker, as in reserve.lua (one
--                     server only; on a cluster the caller checks it apart)
-- ARGV[1] reservation id
-- ARGV[2] user id of the caller
-- ARGV[3] claim id (new, unique: only this claim's owner may abort it)
-- ARGV[4] claim timeout, in milliseconds
-- Returns {'CLAIMED', expiresAtMs, claimId, sizeLabel or '', epoch}   this call claimed it
--      or {'IN_PROGRESS', expiresAtMs, claimId, sizeLabel or '', epoch} already PURCHASING:
--                          a concurrent purchase, or a retry after its first attempt died.
--                          The caller continues that attempt (same claim id): PostgreSQL
--                          records it at most once
--                          epoch: the drop's rebuild epoch (drop_rebuild.lua). PostgreSQL
--                          refuses the sale if the drop was rebuilt since (record_sale)
--      or {'DUE'}           ACTIVE but past its deadline: the caller releases it and answers 410
--      or {'EXPIRED'}, {'CANCELLED'}, {'PURCHASED'}   the hold had ended
--      or {'NOT_FOUND'}     unknown id, or another user's hold
--      or {'REVOKED'}       the caller's session was signed out
local reservation_id = ARGV[1]
local user_id = ARGV[2]
local claim_id = ARGV[3]
local claim_timeout_ms = tonumber(ARGV[4])

if KEYS[8] and redis.call('EXISTS', KEYS[8]) == 1 then
  return {'REVOKED'}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local entry = redis.call('HGET', KEYS[2], reservation_id)
if not entry then
  local closed = redis.call('HGET', KEYS[5], reservation_id)
  if closed then
    local state, user = string.match(closed, '^(%u+)|([^|]*)|')
    if user == user_id then
      return {state}
    end
  end
  return {'NOT_FOUND'}
end
local state, user, expires, created, claim =
  string.match(entry, '^(%u+)|([^|]*)|(%d+)|(%d+)|(.*)$')
if user ~= user_id then
  return {'NOT_FOUND'}
end
local size_label = ''
local size_index = redis.call('HGET', KEYS[7], reservation_id)
if size_index then
  size_label = redis.call('HGET', KEYS[6], 'l:' .. size_index) or ''
end
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if state == 'PURCHASING' then
  return {'IN_PROGRESS', tonumber(expires), claim, size_label, epoch}
end
if now >= tonumber(expires) then
  return {'DUE'}
end

redis.call('HSET', KEYS[2], reservation_id,
  'PURCHASING|' .. user .. '|' .. expires .. '|' .. created .. '|' .. claim_id)
redis.call('DEL', KEYS[4])
redis.call('ZADD', KEYS[3], now + claim_timeout_ms, reservation_id)
redis.call('HINCRBY', KEYS[1], 'purchasing', 1)
return {'CLAIMED', tonumber(expires), claim_id, size_label, epoch}
