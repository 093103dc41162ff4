-- rate_limit.lua: one fixed-window counter. Shared by every API process.
--
-- KEYS[1] bucket key (one per limit, subject and window)
-- ARGV[1] limit: requests allowed per window
-- ARGV[2] window length, in milliseconds
-- Returns {'ALLOWED', remaining} or {'LIMITED', retryAfterMs}
local limit = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], window_ms)
end
if count > limit then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[1], window_ms)
    ttl = window_ms
  end
  return {'LIMITED', ttl}
end
return {'ALLOWED', limit - count}
