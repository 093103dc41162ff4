-- @include access_lib
-- draw_run.lua: draw the next entries of a draw drop, in the published order.
--
-- Called by the access leader from closesAt on, again and again until it answers 'DONE'.
-- Each call walks the ordered set from its cursor until it has done about ARGV[1] Redis
-- commands' worth of work (so no call runs long, however many entries there are): while
-- units are
-- left, it gives each entry the first of its sizes with a unit as an ACTIVE hold until
-- drawTime + claimSeconds (`won`); an entry that gets nothing is `standby`, with its
-- position. Once no unit is left, what remains is only marked standby. The standby lists
-- of each size are built afterwards (draw_standby.lua), after the order is recorded. A
-- cancelled drop gives nothing: every entry is `lost`. drawTime is fixed by the first
-- call; the cursor moves on in the same call as the entries it drew, so a repeat after a
-- failover carries on where the last call stopped.
--
-- KEYS[1] drop        hash (closes, claim, cancelled, avail, total, sold)
-- KEYS[2] holds       hash: live holds
-- KEYS[3] users       hash: user id -> live holds + purchases
-- KEYS[4] due         zset: live holds by deadline
-- KEYS[5] hold_sizes  hash: reservation id -> size index
-- KEYS[6] sizes       hash: per-size counters
-- KEYS[7] meta        hash e: cursor, drawn_at (ms), done ('1'), sb_cursor, standby_built
-- KEYS[8] ent         hash e:ent
-- KEYS[9] pre         zset e:pre
-- KEYS[10] changes    list e:changes: entry ids whose status changed (pushed, then recorded)
-- Also, inside the drop's hash tag: each winner's timer ({d:ID}:t:<reservation id>) and
-- live-hold set ({d:ID}:u:<user id>).
-- ARGV[1] work budget of this call, in units of about one Redis command (a winner costs
--         about twenty: its writes create keys; any other entry two to five)
-- ARGV[2] stock-dirty channel
-- ARGV[3] drop id
-- Returns {'NOT_YET'} before closesAt, or {'DRAWING' | 'DONE', drawn, entries, drawnAtMs}
local k = draw_keys(ARGV[3])
local budget = tonumber(ARGV[1])
local now = now_ms()
local d = redis.call('HMGET', k.drop, 'closes', 'claim', 'cancelled', 'avail')
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
local left = tonumber(d[4])
local size_left = {}  -- units left per size index, read once per call

local gave = false

-- Draw one entry; returns the work it did.
local function draw_one(entry_id, position)
  local user, _, sizes = split_entry(redis.call('HGET', k.ent, entry_id))
  local work = 2
  if cancelled then
    redis.call('HSET', k.ent, entry_id, join_entry(user, 'L', sizes, '', position))
    redis.call('RPUSH', k.changes, entry_id)
    return work
  end
  if left > 0 then
    for _, index in ipairs(entry_sizes(sizes)) do
      if size_left[index] == nil then
        size_left[index] = units_available(k, index)
        work = work + 1
      end
      if size_left[index] > 0 then
        work = work + 20  -- a hold's ten writes, two of them new keys
        local hold_id = give_hold(k, user, entry_id, index, expires, now)
        size_left[index] = size_left[index] - 1
        left = left - 1
        redis.call('HSET', k.ent, entry_id, join_entry(user, 'W', sizes, hold_id, position))
        redis.call('RPUSH', k.changes, entry_id)
        gave = true
        return work
      end
    end
  end
  redis.call('HSET', k.ent, entry_id, join_entry(user, 'S', sizes, '', position))
  return work
end

cursor = budgeted_walk(k, cursor, budget, draw_one)

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
