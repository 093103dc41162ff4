-- access_lib.lua: functions shared by the queue and draw scripts. Not a script of its
-- own: a script that starts with the line `-- @include access_lib` gets this text in its
-- place when it is loaded (app/store/scripts.py), so each script still runs as one unit.
--
-- A queue ticket (hash q:tix, entry id -> value): "user|rank|latePosition|admittedMs"
--   rank: the entry's rank key (hex) for a pre-queue ticket, '' for one that joined after
--   startsAt; latePosition: such a ticket's position ('0' for the pre-queue);
--   admittedMs: when its pass began ('0' while waiting).
-- A draw entry (hash e:ent, entry id -> value): "user|status|sizes|reservationId|position"
--   status: E (entered), W (won), S (standby), L (lost); sizes: comma-separated size
--   indexes in the order asked ('' on a drop without sizes, which counts as size '0').

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Entries a draw call reads from the ordered set at a time; it stops as soon as its budget
-- is spent. (A budget counts work, not time: Redis shows a script one frozen clock.)
local BLOCK = 64

-- Walk the draw's ordered entries from `cursor` (how many are done), calling
-- visit(entry_id, position) on each in order; visit returns the work it did. Stops after
-- the entry that spends `budget`, or at the end. Returns the new cursor.
local function budgeted_walk(k, cursor, budget, visit)
  local work = 0
  repeat
    local members = redis.call('ZRANGE', k.pre, cursor, cursor + BLOCK - 1)
    for _, member in ipairs(members) do
      cursor = cursor + 1
      work = work + visit(string.sub(member, 65), cursor)
      if work >= budget then
        return cursor
      end
    end
  until #members < BLOCK
  return cursor
end

-- Whether a waiting ticket reads 'closed', from the drop's fields as HMGET gives them: the
-- drop was cancelled or has ended, or it has started with nothing available and no live
-- hold that could come back.
local function waiting_closed(holds_key, now, starts, avail, ends, cancelled)
  if cancelled == '1' then
    return true
  end
  ends = tonumber(ends or '0')
  if ends > 0 and now >= ends then
    return true
  end
  return now >= tonumber(starts) and tonumber(avail) <= 0 and redis.call('HLEN', holds_key) == 0
end

-- The drop's fields a queue or draw script needs (`starts` and `access` first), or the
-- refusal that comes before anything else: a signed-out caller (`revoked`, the caller's
-- marker key when given), a drop Redis lacks, a drop of another access mode.
local function access_drop(revoked, drop_key, mode, ...)
  if revoked and redis.call('EXISTS', revoked) == 1 then
    return nil, {'REVOKED'}
  end
  local d = redis.call('HMGET', drop_key, 'starts', 'access', ...)
  if not d[1] then
    return nil, {'DROP_NOT_FOUND'}
  end
  if d[2] ~= mode then
    return nil, {'ACCESS_MODE_MISMATCH'}
  end
  return d, nil
end

local function split_ticket(value)
  return string.match(value, '^([^|]*)|([^|]*)|(%d+)|(%d+)$')
end

-- A ticket's position: nil in the pre-queue before startsAt (not ordered yet), else its
-- rank in the ordered pre-queue, or the position it was given on arrival.
local function ticket_position(pre_key, entry_id, rank, late_position, now, starts)
  if rank ~= '' then
    if now < starts then
      return nil
    end
    return redis.call('ZRANK', pre_key, rank .. entry_id) + 1
  end
  return tonumber(late_position)
end

-- The drop's fields a ticket reply reads, after access_drop's `starts` and `access`: a
-- queue script passes them to access_drop, so one HMGET serves both.
local TICKET_FIELDS = {'pass', 'rate', 'avail', 'ends', 'cancelled'}

-- The reply for one ticket: {entryId, position or -1, servingPosition, admittedMs,
-- passMs, admitPerMinute, closed (0/1), nowMs}. `d`: access_drop's fields, TICKET_FIELDS
-- after `starts` and `access`.
local function ticket_reply(k, entry_id, now, d)
  local starts, pass, rate, avail, ends, cancelled = d[1], d[3], d[4], d[5], d[6], d[7]
  local user, rank, late_position, admitted = split_ticket(redis.call('HGET', k.tix, entry_id))
  local position = ticket_position(k.pre, entry_id, rank, late_position, now, tonumber(starts))
  local served = tonumber(redis.call('HGET', k.meta, 'served') or '0')
  local closed = 0
  if waiting_closed(k.holds, now, starts, avail, ends, cancelled) then
    closed = 1
  end
  return {entry_id, position or -1, served, tonumber(admitted), tonumber(pass), tonumber(rate),
    closed, now}
end

local function split_entry(value)
  return string.match(value, '^([^|]*)|(%u)|([^|]*)|([^|]*)|(%d+)$')
end

local function join_entry(user, status, sizes, hold, position)
  return user .. '|' .. status .. '|' .. sizes .. '|' .. hold .. '|' .. position
end

-- The size indexes an entry asked for, in order ('0' alone on a drop without sizes).
local function entry_sizes(sizes)
  local found = {}
  for index in string.gmatch(sizes, '[^,]+') do
    found[#found + 1] = index
  end
  if #found == 0 then
    found[1] = '0'
  end
  return found
end

-- The reply for one draw entry: {entryId, status, reservationId, position, label...}
local function entry_reply(k, entry_id)
  local _, status, sizes, hold, position = split_entry(redis.call('HGET', k.ent, entry_id))
  local reply = {entry_id, status, hold, tonumber(position)}
  for index in string.gmatch(sizes, '[^,]+') do
    reply[#reply + 1] = redis.call('HGET', k.sizes, 'l:' .. index)
  end
  return reply
end

-- Units of size `index` left to give ('0': the drop's own count).
local function units_available(k, index)
  if index == '0' then
    return tonumber(redis.call('HGET', k.drop, 'avail'))
  end
  return tonumber(redis.call('HGET', k.sizes, 'a:' .. index) or '0')
end

-- Whether a unit of size `index` can still come back: one available or held
-- (total - sold, by the invariant). A size that cannot is no use to a standby entry.
local function units_remaining(k, index)
  if index == '0' then
    local d = redis.call('HMGET', k.drop, 'total', 'sold')
    return tonumber(d[1]) - tonumber(d[2] or '0')
  end
  local s = redis.call('HMGET', k.sizes, 't:' .. index, 's:' .. index)
  return tonumber(s[1]) - tonumber(s[2] or '0')
end

-- Give one unit of size `index` to a draw entry as an ACTIVE hold until `expires`:
-- what reserve.lua writes for a hold. The reservation id ends in the entry id (an entry
-- gets at most one hold). Returns the reservation id.
local function give_hold(k, user, entry_id, index, expires, now)
  local hold_id = k.drop_id .. '.' .. user .. '.' .. entry_id
  redis.call('HINCRBY', k.drop, 'avail', -1)
  if index ~= '0' then
    redis.call('HINCRBY', k.sizes, 'a:' .. index, -1)
    redis.call('HSET', k.hold_sizes, hold_id, index)
  end
  redis.call('HINCRBY', k.users, user, 1)
  redis.call('HSET', k.holds, hold_id, 'ACTIVE|' .. user .. '|' .. expires .. '|' .. now .. '|')
  redis.call('ZADD', k.due, expires, hold_id)
  redis.call('SET', k.tag .. ':t:' .. hold_id, '1', 'PX', math.max(expires - now, 1))
  redis.call('SADD', k.tag .. ':u:' .. user, hold_id)
  return hold_id
end

-- Take an entry off every standby list it is on.
local function leave_standby(k, entry_id, sizes)
  for _, index in ipairs(entry_sizes(sizes)) do
    redis.call('ZREM', k.tag .. ':e:sb:' .. index, entry_id)
  end
end

-- The draw scripts' keys by name, from KEYS in the order they all take them.
local function draw_keys(drop_id)
  return {drop = KEYS[1], holds = KEYS[2], users = KEYS[3], due = KEYS[4],
    hold_sizes = KEYS[5], sizes = KEYS[6], meta = KEYS[7], ent = KEYS[8], pre = KEYS[9],
    changes = KEYS[10], drop_id = drop_id, tag = '{d:' .. drop_id .. '}'}
end

local function mark_dirty(k, channel)
  if redis.call('HSETNX', k.drop, 'dirty', '1') == 1 then
    redis.call('PUBLISH', channel, k.drop_id)
  end
end
