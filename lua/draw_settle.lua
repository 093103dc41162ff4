-- @include access_lib
-- draw_settle.lua: after the draw, pass units that came back to standby entries, and mark
-- `lost` the standby entries that can no longer get one.
--
-- Called by the access leader, and by every path that ends a hold of a draw drop, right
-- after it (app/services/access.py): a unit whose winner's hold expired or was cancelled
-- goes, in the same order, to the first standby entry that asked for its size, as a new
-- hold for claimSeconds. A standby entry is lost once none of its sizes has a unit
-- available or held (none can come back), or once the drop has ended or was cancelled.
-- Each call touches at most ARGV[1] entries.
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
-- Also the standby lists {d:ID}:e:sb:<size index>, and a new winner's timer and
-- live-hold set, inside the drop's hash tag.
-- ARGV[1] most entries to change in this call
-- ARGV[2] stock-dirty channel
-- ARGV[3] drop id
-- Returns {'NOT_DRAWN'} (the draw or its standby lists are not done yet)
--      or {'SETTLED', changed, more (1 when work is left)}
local k = draw_keys(ARGV[3])
local most = tonumber(ARGV[1])
if redis.call('HGET', k.meta, 'standby_built') ~= '1' then
  return {'NOT_DRAWN'}  -- the draw, or its standby lists (draw_standby.lua), not done yet
end
local now = now_ms()
local d = redis.call('HMGET', k.drop, 'claim', 'cancelled', 'ends', 'sized')
local ends = tonumber(d[3])
local over = d[2] == '1' or (ends > 0 and now >= ends)
local indexes = {'0'}
if d[4] == '1' then
  indexes = {}
  for index = 1, tonumber(redis.call('HGET', k.sizes, 'n')) do
    indexes[#indexes + 1] = tostring(index)
  end
end

local work, changed = 0, 0
local gave = false

for _, index in ipairs(indexes) do
  local standby = k.tag .. ':e:sb:' .. index
  if over or units_remaining(k, index) <= 0 then
    -- Nothing of this size can come back: whoever waits for it alone has lost; whoever
    -- also asked for another size waits for that one only.
    for _, entry_id in ipairs(redis.call('ZRANGE', standby, 0, most - work - 1)) do
      local user, _, sizes, _, position = split_entry(redis.call('HGET', k.ent, entry_id))
      local hope = false
      if not over then
        for _, other in ipairs(entry_sizes(sizes)) do
          hope = hope or units_remaining(k, other) > 0
        end
      end
      if hope then
        redis.call('ZREM', standby, entry_id)
      else
        leave_standby(k, entry_id, sizes)
        redis.call('HSET', k.ent, entry_id, join_entry(user, 'L', sizes, '', position))
        redis.call('RPUSH', k.changes, entry_id)
        changed = changed + 1
      end
      work = work + 1
    end
  else
    while work < most and units_available(k, index) > 0 do
      local first = redis.call('ZRANGE', standby, 0, 0)[1]
      if not first then
        break
      end
      local user, _, sizes, _, position = split_entry(redis.call('HGET', k.ent, first))
      leave_standby(k, first, sizes)
      local hold_id = give_hold(k, user, first, index, now + tonumber(d[1]), now)
      redis.call('HSET', k.ent, first, join_entry(user, 'W', sizes, hold_id, position))
      redis.call('RPUSH', k.changes, first)
      changed = changed + 1
      work = work + 1
      gave = true
    end
  end
  if work >= most then
    break
  end
end
if gave then
  mark_dirty(k, ARGV[2])
end
local more = 0
if work >= most then
  more = 1
end
return {'SETTLED', changed, more}
