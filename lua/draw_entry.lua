-- @include access_lib
-- draw_entry.lua: the caller's draw entry.
--
-- KEYS[1] drop   hash (starts, access)
-- KEYS[2] sizes  hash: a sized drop's counters (l:<index> -> label)
-- KEYS[3] users  hash e:users: user id -> entry id
-- KEYS[4] ent    hash e:ent: entry id -> entry
-- KEYS[5] revoked optional: the caller's signed-out marker (as in reserve.lua)
-- ARGV[1] user id
-- Returns {'OK', entry reply...} (see entry_reply in access_lib.lua)
--      or {'REVOKED'} (the session signed out)
--      or {'DROP_NOT_FOUND'}, {'ACCESS_MODE_MISMATCH'}, {'NOT_ENTERED'}
local k = {ent = KEYS[4], sizes = KEYS[2]}
local _, refused = access_drop(KEYS[5], KEYS[1], 'draw')
if refused then
  return refused
end
local entry_id = redis.call('HGET', KEYS[3], ARGV[1])
if not entry_id then
  return {'NOT_ENTERED'}
end
return {'OK', unpack(entry_reply(k, entry_id))}
