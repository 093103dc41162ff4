-- change_log.lua: one reader's step through a drop's change log (q:changes or e:changes):
-- move its place on past what it has dealt with, trim what every reader has passed, and
-- read its next page, all in one step.
--
-- The queue and draw scripts append entry ids to the log. Places are absolute indexes:
-- `log_base` (in the meta hash) is the index of the list's head, `log_<reader>` the index
-- up to which that reader has dealt with every entry. A place only moves forward, to an
-- index the caller names (not by a count), so two leaders that overlap (a lease
-- hand-over) and both deal with the same page move it once: the next page is not
-- skipped. The trim reads the places in the same step, so it never drops an entry a
-- reader has yet to read, nor what another trim dropped already.
--
-- KEYS[1] meta  hash q or e: log_base, log_<reader> for each reader (absent: 0)
-- KEYS[2] log   list q:changes or e:changes: entry ids, oldest first
-- ARGV[1] the reader moving ('pushed' or 'recorded')
-- ARGV[2] absolute index before which it has dealt with every entry (0: nothing new)
-- ARGV[3] most entries to read from its place (0: none)
-- ARGV[4] ... every reader of this log (the list keeps what any of them has yet to read)
-- Returns {place, entryId...}: the reader's place (the absolute index of the first entry
--         returned) and up to ARGV[3] entries from there
local reader, dealt, most = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local fields = {'log_base'}
for i = 4, #ARGV do
  fields[#fields + 1] = 'log_' .. ARGV[i]
end
local m = redis.call('HMGET', KEYS[1], unpack(fields))
local base = tonumber(m[1] or '0')
local place, slowest
for i = 4, #ARGV do
  local at = tonumber(m[i - 2] or '0')
  if ARGV[i] == reader then
    if dealt > at then
      at = dealt
      redis.call('HSET', KEYS[1], 'log_' .. reader, at)
    end
    place = at
  end
  if slowest == nil or at < slowest then
    slowest = at
  end
end
if slowest > base then
  redis.call('LTRIM', KEYS[2], slowest - base, -1)
  redis.call('HSET', KEYS[1], 'log_base', slowest)
  base = slowest
end

local reply = {place}
if most > 0 then
  local first = place - base
  for _, entry_id in ipairs(redis.call('LRANGE', KEYS[2], first, first + most - 1)) do
    reply[#reply + 1] = entry_id
  end
end
return reply
