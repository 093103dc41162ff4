-- @include access_lib
-- queue_admit.lua: admit the waiting tickets that are due, in position order, at the
-- drop's admitPerMinute, and end the passes that ran out. Run by the one access leader
-- (app/background/access_leader.py); safe to run twice or after a failover: every
-- admission moves `served` on in the same step, so no position is skipped or repeated.
--
-- Admissions accrue from startsAt (or the last call) at `rate` per minute, spread evenly:
-- `carry` keeps the fraction (in admissions x 60000) between calls. Nothing accrues while
-- the drop is closed (sold out, ended, cancelled) or while nobody waits.
--
-- KEYS[1] drop    hash (starts, rate, pass, avail, ends, cancelled)
-- KEYS[2] holds   hash: live holds
-- KEYS[3] meta    hash q: served, late, clock (ms accounted up to), carry
-- KEYS[4] tix     hash q:tix
-- KEYS[5] pre     zset q:pre
-- KEYS[6] late    hash q:late
-- KEYS[7] passes  zset q:passes: entry id -> pass end (ms), passes not yet reported ended
-- KEYS[8] changes list q:changes: entry ids admitted or whose pass ended, kept until the
--                 leader has pushed them (so a leader that dies first loses no push)
-- ARGV[1] most tickets to admit (and passes to end) in this call
-- Returns {state, nowMs, served, admittedCount, entryId, userId, ..., endedCount,
--          entryId, userId, ...}; state 'NOT_STARTED', 'CLOSED' or 'OPEN'
local most = tonumber(ARGV[1])
local now = now_ms()
local d = redis.call('HMGET', KEYS[1], 'starts', 'rate', 'pass', 'avail', 'ends', 'cancelled')
local starts, rate, pass_ms = tonumber(d[1]), tonumber(d[2]), tonumber(d[3])
if now < starts then
  return {'NOT_STARTED', now, 0, 0, 0}
end
local m = redis.call('HMGET', KEYS[3], 'served', 'late', 'clock', 'carry')
local served = tonumber(m[1] or '0')
local late = tonumber(m[2] or '0')
local clock = tonumber(m[3] or starts)
local carry = tonumber(m[4] or '0')

local ended = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now, 'LIMIT', 0, most)
local ended_reply = {#ended}
for _, entry_id in ipairs(ended) do
  redis.call('ZREM', KEYS[7], entry_id)
  redis.call('RPUSH', KEYS[8], entry_id)
  local user = split_ticket(redis.call('HGET', KEYS[4], entry_id))
  ended_reply[#ended_reply + 1] = entry_id
  ended_reply[#ended_reply + 1] = user
end

local function reply(state, admitted)
  local out = {state, now, served, #admitted / 2}
  for _, v in ipairs(admitted) do
    out[#out + 1] = v
  end
  for _, v in ipairs(ended_reply) do
    out[#out + 1] = v
  end
  return out
end

if waiting_closed(KEYS[2], now, d[1], d[4], d[5], d[6]) then
  redis.call('HSET', KEYS[3], 'clock', now, 'carry', 0)
  return reply('CLOSED', {})
end

local budget = carry + (now - clock) * rate
local count = math.floor(budget / 60000)
carry = budget - count * 60000
local pre = redis.call('ZCARD', KEYS[5])
local waiting = pre + late - served
if count >= waiting then
  count = waiting
  carry = 0
end
if count > most then
  carry = carry + (count - most) * 60000
  count = most
end

local admitted = {}
local from_pre = {}
if served < pre and count > 0 then
  from_pre = redis.call('ZRANGE', KEYS[5], served, math.min(served + count, pre) - 1)
end
for i = 1, count do
  local position = served + i
  local entry_id
  if position <= pre then
    entry_id = string.sub(from_pre[i], 65)
  else
    entry_id = redis.call('HGET', KEYS[6], position)
  end
  local user, rank, late_position = split_ticket(redis.call('HGET', KEYS[4], entry_id))
  redis.call('HSET', KEYS[4], entry_id,
    user .. '|' .. rank .. '|' .. late_position .. '|' .. now)
  redis.call('ZADD', KEYS[7], now + pass_ms, entry_id)
  redis.call('RPUSH', KEYS[8], entry_id)
  admitted[#admitted + 1] = entry_id
  admitted[#admitted + 1] = user
end
served = served + count
redis.call('HSET', KEYS[3], 'served', served, 'clock', now, 'carry', carry)
return reply('OPEN', admitted)
