-- drop_rebuild.lua: (re)build a drop's counters from PostgreSQL's facts and Redis's live holds.
--
-- Mode 'init' builds a drop that Redis does not have (new drop, or Redis lost it: restart
-- without persistence, flush). Mode 'repair' overwrites drifted counters, but only when no
-- purchase is in flight and no sale was counted since the caller read `expectedSold`:
-- otherwise PostgreSQL's count may already be stale and the caller retries next round.
--
-- available = total - sold - live holds, for the drop and for each of its sizes; each
-- user's count = purchases + live holds.
--
-- KEYS[1] drop        hash
-- KEYS[2] users       hash: user id -> live holds + purchases
-- KEYS[3] holds       hash: live holds (kept: a hold that survived is still a hold)
-- KEYS[4] sizes       hash: per-size counters (rebuilt; see reserve.lua)
-- KEYS[5] hold_sizes  hash: reservation id -> size index (entries of ended holds dropped)
-- ARGV[1] mode: 'init' or 'repair'
-- ARGV[2] definition JSON (a queue or draw drop's `access` settings are copied into the
--         drop hash: access, rate, pass, closes, claim)
-- ARGV[3] total stock
-- ARGV[4] per-user limit
-- ARGV[5] startsAt (ms)
-- ARGV[6] endsAt (ms, 0 = none)
-- ARGV[7] cancelled ('1' or '0')
-- ARGV[8] sold: purchases recorded in PostgreSQL
-- ARGV[9] expectedSold: Redis's sold counter as the caller last read it ('' in init mode)
-- ARGV[10] stock-dirty channel
-- ARGV[11] drop id
-- ARGV[12] sizes JSON: [[label, total, sold], ...] in the admin's order ('[]': no sizes)
-- ARGV[13] epoch: this rebuild's, from PostgreSQL's drop_rebuild_epochs, taken under the
--          drop's exclusive lock; kept in the drop hash for purchase_claim.lua
-- ARGV[14..] pairs: user id, purchases of that user in this drop
-- Returns {'BUILT', available} | {'EXISTS'} (init, already there) | {'BUSY'} (repair, retry)
--      or {'OVERSOLD', available} (counters built, but sold + live exceed total: a drift
--         that must be reported; available is clamped at 0)
local mode = ARGV[1]
local total = tonumber(ARGV[3])
local sold = tonumber(ARGV[8])

local exists = redis.call('EXISTS', KEYS[1]) == 1
if mode == 'init' and exists then
  return {'EXISTS'}
end

local holds = redis.call('HGETALL', KEYS[3])
local live = 0
local purchasing = 0
local per_user = {}
for i = 2, #holds, 2 do
  local state, user = string.match(holds[i], '^(%u+)|([^|]*)|')
  live = live + 1
  if state == 'PURCHASING' then
    purchasing = purchasing + 1
  end
  per_user[user] = (per_user[user] or 0) + 1
end

if mode == 'repair' and exists then
  local current_sold = redis.call('HGET', KEYS[1], 'sold') or '0'
  if purchasing > 0 or current_sold ~= ARGV[9] then
    return {'BUSY'}
  end
end

for i = 14, #ARGV, 2 do
  per_user[ARGV[i]] = (per_user[ARGV[i]] or 0) + tonumber(ARGV[i + 1])
end

local avail = total - sold - live
local oversold = avail < 0
if oversold then
  avail = 0
end

local sizes = cjson.decode(ARGV[12])
local live_by_size = {}
local held = redis.call('HGETALL', KEYS[5])
for i = 1, #held, 2 do
  if redis.call('HEXISTS', KEYS[3], held[i]) == 1 then
    live_by_size[held[i + 1]] = (live_by_size[held[i + 1]] or 0) + 1
  else
    redis.call('HDEL', KEYS[5], held[i])
  end
end
redis.call('DEL', KEYS[4])
if #sizes > 0 then
  redis.call('HSET', KEYS[4], 'n', #sizes)
  for i, size in ipairs(sizes) do
    local size_avail = size[2] - size[3] - (live_by_size[tostring(i)] or 0)
    if size_avail < 0 then
      oversold = true
      size_avail = 0
    end
    redis.call('HSET', KEYS[4], 'i:' .. size[1], i, 'l:' .. i, size[1], 't:' .. i, size[2],
      'a:' .. i, size_avail, 's:' .. i, size[3])
  end
end

redis.call('DEL', KEYS[2])
for user, count in pairs(per_user) do
  redis.call('HSET', KEYS[2], user, count)
end
redis.call('HSET', KEYS[1], 'def', ARGV[2], 'total', total, 'avail', avail, 'sold', sold,
  'purchasing', purchasing, 'limit', ARGV[4], 'starts', ARGV[5], 'ends', ARGV[6],
  'cancelled', ARGV[7], 'epoch', ARGV[13])
if #sizes > 0 then
  redis.call('HSET', KEYS[1], 'sized', '1')
end
-- A queue or draw drop: what reserve.lua and the access scripts read (see lua/lib/access.lua).
local access = cjson.decode(ARGV[2]).access
if type(access) == 'table' then
  local function ms(value)
    if value == nil or value == cjson.null then
      return 0
    end
    return value
  end
  redis.call('HSET', KEYS[1], 'access', access.mode, 'rate', ms(access.rate),
    'pass', ms(access.pass_ms), 'closes', ms(access.closes), 'claim', ms(access.claim_ms))
end
-- Clients may hold a stale value: push the rebuilt one.
redis.call('HSET', KEYS[1], 'dirty', '1')
redis.call('PUBLISH', ARGV[10], ARGV[11])
if oversold then
  return {'OVERSOLD', avail}
end
return {'BUILT', avail}
