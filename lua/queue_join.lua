-- @include access_lib
-- queue_join.lua: give the caller a ticket in a queue drop's waiting room, or answer the
-- one they have (one ticket per account).
--
-- Before startsAt a ticket goes into the pre-queue, a sorted set ordered by the entry's
-- rank key (the published rule, docs/FAIRNESS.md): when one joined does not matter.
-- From startsAt on the pre-queue is frozen and a ticket gets the next position after it,
-- in arrival order.
--
-- KEYS[1] drop   hash (access, starts, ends, cancelled, avail, pass, rate)
-- KEYS[2] holds  hash: live holds (for 'closed')
-- KEYS[3] meta   hash q: served (highest position admitted), late (tickets after startsAt)
-- KEYS[4] users  hash q:users: user id -> entry id
-- KEYS[5] tix    hash q:tix: entry id -> ticket (see access_lib.lua)
-- KEYS[6] pre    zset q:pre: rankKey .. entryId, all scores 0 (ordered by member)
-- KEYS[7] late   hash q:late: position -> entry id (tickets after startsAt)
-- KEYS[8] revoked optional: the caller's signed-out marker (as in reserve.lua)
-- ARGV[1] user id
-- ARGV[2] a new entry id (used only for a first join)
-- ARGV[3] its rank key
-- Returns {'CREATED' | 'EXISTS', ticket reply...} (see ticket_reply in access_lib.lua)
--      or {'REVOKED'} (the session signed out)
--      or {'DROP_NOT_FOUND'}, {'ACCESS_MODE_MISMATCH'}, {'DROP_NOT_LIVE'}
local k = {holds = KEYS[2], meta = KEYS[3], tix = KEYS[5], pre = KEYS[6]}
local user, entry_id, rank = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()

local d, refused = access_drop(KEYS[8], KEYS[1], 'queue', unpack(TICKET_FIELDS))
if refused then
  return refused
end
local existing = redis.call('HGET', KEYS[4], user)
if existing then
  return {'EXISTS', unpack(ticket_reply(k, existing, now, d))}
end
local ends = tonumber(d[6])  -- d: starts, access, then TICKET_FIELDS (access_lib.lua)
if d[7] == '1' or (ends > 0 and now >= ends) then
  return {'DROP_NOT_LIVE'}
end

if now < tonumber(d[1]) then
  redis.call('ZADD', KEYS[6], 0, rank .. entry_id)
  redis.call('HSET', KEYS[5], entry_id, user .. '|' .. rank .. '|0|0')
else
  local position = redis.call('ZCARD', KEYS[6]) + redis.call('HINCRBY', KEYS[3], 'late', 1)
  redis.call('HSET', KEYS[7], position, entry_id)
  redis.call('HSET', KEYS[5], entry_id, user .. '||' .. position .. '|0')
end
redis.call('HSET', KEYS[4], user, entry_id)
return {'CREATED', unpack(ticket_reply(k, entry_id, now, d))}
