-- @include access_lib
-- queue_ticket.lua: the caller's ticket, with its position and what is ahead, in one step.
--
-- KEYS[1] drop   hash (starts, access, pass, rate, avail, ends, cancelled)
-- KEYS[2] holds  hash: live holds (for 'closed')
-- KEYS[3] meta   hash q: served
-- KEYS[4] users  hash q:users: user id -> entry id
-- KEYS[5] tix    hash q:tix: entry id -> ticket
-- KEYS[6] pre    zset q:pre (a pre-queue ticket's position is its rank here)
-- KEYS[7] revoked optional: the caller's signed-out marker (as in reserve.lua)
-- ARGV[1] user id
-- Returns {'OK', ticket reply...} (see ticket_reply in access_lib.lua)
--      or {'REVOKED'} (the session signed out)
--      or {'DROP_NOT_FOUND'}, {'ACCESS_MODE_MISMATCH'}, {'NOT_IN_QUEUE'}
local k = {holds = KEYS[2], meta = KEYS[3], tix = KEYS[5], pre = KEYS[6]}
local d, refused = access_drop(KEYS[7], KEYS[1], 'queue', unpack(TICKET_FIELDS))
if refused then
  return refused
end
local entry_id = redis.call('HGET', KEYS[4], ARGV[1])
if not entry_id then
  return {'NOT_IN_QUEUE'}
end
return {'OK', unpack(ticket_reply(k, entry_id, now_ms(), d))}
