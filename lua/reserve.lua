-- reserve.lua: take one unit of a drop as a timed hold, or say why not.
--
-- A sized drop takes the unit from the first size asked for that has one left (the size,
-- then its fallbacks, in order), in this one step.
--
-- KEYS[1] drop        hash: avail, total, sold, limit, starts (ms), ends (ms, 0 = none), cancelled,
--                     dirty, def, sized ('1' for a drop with sizes)
-- KEYS[2] users       hash: user id -> live holds + purchases of that user in this drop
-- KEYS[3] holds       hash: reservation id -> "STATE|user|expiresMs|createdMs|claimId" (live holds only)
-- KEYS[4] due         zset: reservation id -> deadline (ms)
-- KEYS[5] timer       string whose TTL is the hold's life (its expiry event is the fast path)
-- KEYS[6] user_holds  set: this user's live reservation ids in this drop
-- KEYS[7] cooldown    string: this user's reserve cooldown in this drop (release.lua sets it
--                     with a PX TTL when the user's hold was cancelled by them or expired)
-- KEYS[8] sizes       hash of a sized drop: i:<label> -> index, l:<i> label, t:<i> total,
--                     a:<i> available, s:<i> sold (absent for a drop without sizes)
-- KEYS[9] hold_sizes  hash: reservation id -> size index (holds of a sized drop)
-- KEYS[10] q_users   hash of a queue drop: user id -> entry id (lua/queue_join.lua)
-- KEYS[11] q_tix     hash of a queue drop: entry id -> ticket, whose last field is when its
--                     pass began (0 while waiting)
-- KEYS[12] revoked    optional: the caller's signed-out marker (sneakerdrop:revoked:<sid>);
--                     given when Redis is one server, so the session check costs no round
--                     trip of its own (on a cluster it lives in another slot: checked apart)
-- ARGV[1] user id
-- ARGV[2] reservation id (new, unique)
-- ARGV[3] hold time to live, in milliseconds
-- ARGV[4] stock-dirty channel
-- ARGV[5] drop id
-- ARGV[6] reserve cooldown, in milliseconds (0 = off: KEYS[7] is not read)
-- ARGV[7..] size labels to try, in order (none for a drop without sizes)
-- Returns {'OK', expiresAtMs, nowMs, availableAfter, sizeLabel or ''}
--      or {'REVOKED'} (the session signed out), {'DROP_NOT_FOUND'} (not mirrored in Redis),
--         {'SIZE_REQUIRED'}, {'UNKNOWN_SIZE'}, {'NOT_ADMITTED'} (a draw drop, or a queue
--         drop without a live pass), {'DROP_NOT_LIVE'}, {'LIMIT_REACHED'},
--         {'COOLDOWN', retryAfterMs}, {'SOLD_OUT'} (the drop has nothing left),
--         {'SIZE_SOLD_OUT'} (none of the asked sizes has a unit; others do)
-- Refusals in that order: what was asked, the caller's access, the drop's state, then what the user may hold,
-- then the user's cooldown, then stock (a user in cooldown could not take a unit that
-- comes back either).
-- Time comes from Redis TIME, one clock for every API host.
local user_id = ARGV[1]
local reservation_id = ARGV[2]
local ttl_ms = tonumber(ARGV[3])
local channel = ARGV[4]
local drop_id = ARGV[5]
local cooldown_ms = tonumber(ARGV[6])

if KEYS[12] and redis.call('EXISTS', KEYS[12]) == 1 then
  return {'REVOKED'}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local d = redis.call('HMGET', KEYS[1], 'avail', 'limit', 'starts', 'ends', 'cancelled', 'sized',
  'access', 'pass')
if not d[1] then
  return {'DROP_NOT_FOUND'}
end
local asked = {}
if #ARGV > 6 then
  if d[6] ~= '1' then
    return {'UNKNOWN_SIZE'}
  end
  for i = 7, #ARGV do
    local index = redis.call('HGET', KEYS[8], 'i:' .. ARGV[i])
    if not index then
      return {'UNKNOWN_SIZE'}
    end
    asked[#asked + 1] = index
  end
elseif d[6] == '1' then
  return {'SIZE_REQUIRED'}
end
if d[7] then
  -- A queue or draw drop: only a queue ticket whose pass is live may reserve.
  if d[7] ~= 'queue' then
    return {'NOT_ADMITTED'}
  end
  local entry = redis.call('HGET', KEYS[10], user_id)
  local ticket = entry and redis.call('HGET', KEYS[11], entry)
  local admitted = ticket and tonumber(string.match(ticket, '|(%d+)$'))
  if not admitted or admitted == 0 or now >= admitted + tonumber(d[8]) then
    return {'NOT_ADMITTED'}
  end
end
local avail = tonumber(d[1])
local limit = tonumber(d[2])
local starts = tonumber(d[3])
local ends = tonumber(d[4])
if d[5] == '1' or now < starts or (ends > 0 and now >= ends) then
  return {'DROP_NOT_LIVE'}
end
local held = tonumber(redis.call('HGET', KEYS[2], user_id) or '0')
if held >= limit then
  return {'LIMIT_REACHED'}
end
if cooldown_ms > 0 then
  local wait = redis.call('PTTL', KEYS[7])
  if wait > 0 then
    return {'COOLDOWN', wait}
  end
end
if avail <= 0 then
  return {'SOLD_OUT'}
end
local size_index, size_label = nil, ''
for _, index in ipairs(asked) do
  if tonumber(redis.call('HGET', KEYS[8], 'a:' .. index) or '0') > 0 then
    size_index = index
    break
  end
end
if #asked > 0 and not size_index then
  return {'SIZE_SOLD_OUT'}
end

-- All checks passed; from here on only writes (Lua has no rollback).
local expires = now + ttl_ms
redis.call('HINCRBY', KEYS[1], 'avail', -1)
if size_index then
  redis.call('HINCRBY', KEYS[8], 'a:' .. size_index, -1)
  redis.call('HSET', KEYS[9], reservation_id, size_index)
  size_label = redis.call('HGET', KEYS[8], 'l:' .. size_index)
end
redis.call('HINCRBY', KEYS[2], user_id, 1)
redis.call('HSET', KEYS[3], reservation_id,
  'ACTIVE|' .. user_id .. '|' .. expires .. '|' .. now .. '|')
redis.call('ZADD', KEYS[4], expires, reservation_id)
redis.call('SET', KEYS[5], '1', 'PX', ttl_ms)
redis.call('SADD', KEYS[6], reservation_id)
-- Wake the broadcaster once per burst: only the first change after a push publishes.
if redis.call('HSETNX', KEYS[1], 'dirty', '1') == 1 then
  redis.call('PUBLISH', channel, drop_id)
end
return {'OK', expires, now, avail - 1, size_label}
