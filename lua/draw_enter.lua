-- @include access_lib
-- draw_enter.lua: enter the caller in a draw drop, or answer the entry they have (one per
-- account; the first entry's sizes stand).
--
-- An entry goes into the draw's set, ordered by its rank key (the published rule,
-- docs/FAIRNESS.md); the draw at closesAt walks it in that order (draw_run.lua).
--
-- KEYS[1] drop   hash (access, starts, closes, cancelled, sized)
-- KEYS[2] sizes  hash: a sized drop's counters (i:<label> -> index, l:<index> -> label)
-- KEYS[3] users  hash e:users: user id -> entry id
-- KEYS[4] ent    hash e:ent: entry id -> entry (see access_lib.lua)
-- KEYS[5] pre    zset e:pre: rankKey .. entryId, all scores 0
-- KEYS[6] revoked optional: the caller's signed-out marker (as in reserve.lua)
-- ARGV[1] user id
-- ARGV[2] a new entry id (used only for a first entry)
-- ARGV[3] its rank key
-- ARGV[4..] size labels, in the order wanted (none on a drop without sizes)
-- Returns {'CREATED' | 'EXISTS', entry reply...} (see entry_reply in access_lib.lua)
--      or {'REVOKED'} (the session signed out)
--      or {'DROP_NOT_FOUND'}, {'ACCESS_MODE_MISMATCH'}, {'SIZE_REQUIRED'},
--         {'UNKNOWN_SIZE'}, {'ENTRIES_CLOSED'}
local k = {ent = KEYS[4], sizes = KEYS[2]}
local user, entry_id, rank = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()

local d, refused = access_drop(KEYS[6], KEYS[1], 'draw', 'closes', 'cancelled', 'sized')
if refused then
  return refused
end
local existing = redis.call('HGET', KEYS[3], user)
if existing then
  return {'EXISTS', unpack(entry_reply(k, existing))}
end
local indexes = {}
if #ARGV > 3 then
  if d[5] ~= '1' then
    return {'UNKNOWN_SIZE'}
  end
  for i = 4, #ARGV do
    local index = redis.call('HGET', KEYS[2], 'i:' .. ARGV[i])
    if not index then
      return {'UNKNOWN_SIZE'}
    end
    indexes[#indexes + 1] = index
  end
elseif d[5] == '1' then
  return {'SIZE_REQUIRED'}
end
if d[4] == '1' or now < tonumber(d[1]) or now >= tonumber(d[3]) then
  return {'ENTRIES_CLOSED'}
end

redis.call('ZADD', KEYS[5], 0, rank .. entry_id)
redis.call('HSET', KEYS[4], entry_id, join_entry(user, 'E', table.concat(indexes, ','), '', 0))
redis.call('HSET', KEYS[3], user, entry_id)
return {'CREATED', unpack(entry_reply(k, entry_id))}
