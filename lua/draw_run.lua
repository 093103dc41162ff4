-- @include access_lib
-- draw_run.lua: draw the next chunk of a draw drop's entries, in the published order.
--
-- Called by the access leader from closesAt on, again and again until it answers 'DONE':
-- each call takes the next ARGV[1] entries of the ordered set (a chunk keeps every call
-- short), gives each the first of its sizes with a unit left as an ACTIVE hold until
-- drawTime + claimSeconds (`won`), and puts the others on the standby list of each of
-- their sizes, scored by position (`standby`). drawTime is fixed by the first call. A
-- cancelled drop gives nothing: every entry is `lost`. Safe to repeat: a cursor in `meta`
-- moves on in the same step as the entries it drew.
--
-- KEYS[1] drop        hash (closes, claim, cancelled, avail, total, sold)
-- KEYS[2] holds       hash: live holds
-- KEYS[3] users       hash: user id -> live holds + purchases
-- KEYS[4] due         zset: live holds by deadline
-- KEYS[5] hold_sizes  hash: reservation id -> size index
-- KEYS[6] sizes       hash: per-size counters
-- KEYS[7] meta        hash e: cursor, drawn_at (ms), done ('1')
-- KEYS[8] ent         hash e:ent
-- KEYS[9] pre         zset e:pre
-- KEYS[10] changes    list e:changes: entry ids whose status changed (pushed, then recorded)
-- Also, inside the drop's hash tag: each winner's timer ({d:ID}:t:<reservation id>) and
-- live-hold set ({d:ID}:u:<user id>), and the standby lists {d:ID}:e:sb:<size index>.
-- ARGV[1] entries per call
-- ARGV[2] stock-dirty channel
-- ARGV[3] drop id
-- Returns {'NOT_YET'} before closesAt, or {'DRAWING' | 'DONE', drawn, entries, drawnAtMs}
local k = draw_keys(ARGV[3])
local chunk = tonumber(ARGV[1])
local now = now_ms()
local d = redis.call('HMGET', k.drop, 'closes', 'claim', 'cancelled')
if now < tonumber(d[1]) then
  return {'NOT_YET'}
end
local m = redis.call('HMGET', k.meta, 'cursor', 'drawn_at', 'done')
local count = redis.call('ZCARD', k.pre)
local cursor = tonumber(m[1] or '0')
local drawn_at = tonumber(m[2] or now)
if m[3] == '1' then
  return {'DONE', cursor, count, drawn_at}
end
local expires = drawn_at + tonumber(d[2])
local cancelled = d[3] == '1'

local gave = false
local members = redis.call('ZRANGE', k.pre, cursor, cursor + chunk - 1)
for i, member in ipairs(members) do
  local entry_id = string.sub(member, 65)
  local user, _, sizes = split_entry(redis.call('HGET', k.ent, entry_id))
  local position = cursor + i
  local value = join_entry(user, 'E', sizes, '', position)
  if cancelled then
    redis.call('HSET', k.ent, entry_id, join_entry(user, 'L', sizes, '', position))
    redis.call('RPUSH', k.changes, entry_id)
  elseif try_give(k, entry_id, value, expires, now) then
    gave = true
  else
    for _, index in ipairs(entry_sizes(sizes)) do
      redis.call('ZADD', k.tag .. ':e:sb:' .. index, position, entry_id)
    end
    redis.call('HSET', k.ent, entry_id, join_entry(user, 'S', sizes, '', position))
    redis.call('RPUSH', k.changes, entry_id)
  end
end
cursor = cursor + #members
local state = 'DRAWING'
if cursor >= count then
  state = 'DONE'
  redis.call('HSET', k.meta, 'done', '1')
end
redis.call('HSET', k.meta, 'cursor', cursor, 'drawn_at', drawn_at)
if gave then
  mark_dirty(k, ARGV[2])
end
return {state, cursor, count, drawn_at}
