-- @include access_lib
-- draw_standby.lua: after the draw, put each standby entry on the standby list of each of
-- its sizes (scored by position, so the first is the next in the published order) and
-- on the change list (its `standby` status is pushed and recorded).
--
-- Called by the access leader once the draw is done and its order recorded, again and
-- again until it answers 'BUILT'; each call does about ARGV[1] Redis commands' worth of
-- work and moves its cursor (`sb_cursor`) in the same call. Hand-overs
-- (draw_settle.lua) wait until the lists are built.
--
-- KEYS[1] drop        hash (claim, cancelled, ends, sized, avail, total, sold)
-- KEYS[2] holds       hash: live holds
-- KEYS[3] users       hash: user id -> live holds + purchases
-- KEYS[4] due         zset: live holds by deadline
-- KEYS[5] hold_sizes  hash: reservation id -> size index
-- KEYS[6] sizes       hash: per-size counters
-- KEYS[7] meta        hash e: done, standby_built, sb_cursor
-- KEYS[8] ent         hash e:ent
-- KEYS[9] pre         zset e:pre
-- KEYS[10] changes    list e:changes
-- Also the standby lists {d:ID}:e:sb:<size index>, inside the drop's hash tag.
-- ARGV[1] work budget of this call, in Redis commands
-- ARGV[2] drop id
-- Returns {'NOT_DRAWN'} or {'BUILDING' | 'BUILT', done, entries}
local k = draw_keys(ARGV[2])
local budget = tonumber(ARGV[1])
local m = redis.call('HMGET', k.meta, 'done', 'sb_cursor', 'standby_built')
local count = redis.call('ZCARD', k.pre)
if m[1] ~= '1' then
  return {'NOT_DRAWN'}
end
local cursor = tonumber(m[2] or '0')
if m[3] == '1' then
  return {'BUILT', cursor, count}
end

-- Put one entry, if standby, on its sizes' lists; returns the work it did.
local function list_one(entry_id, position)
  local _, status, sizes = split_entry(redis.call('HGET', k.ent, entry_id))
  local work = 1
  if status == 'S' then
    work = work + 2
    for _, index in ipairs(entry_sizes(sizes)) do
      redis.call('ZADD', k.tag .. ':e:sb:' .. index, position, entry_id)
      work = work + 1
    end
    redis.call('RPUSH', k.changes, entry_id)
  end
  return work
end

cursor = budgeted_walk(k, cursor, budget, list_one)

local state = 'BUILDING'
if cursor >= count then
  state = 'BUILT'
  redis.call('HSET', k.meta, 'standby_built', '1')
end
redis.call('HSET', k.meta, 'sb_cursor', cursor)
return {state, cursor, count}
