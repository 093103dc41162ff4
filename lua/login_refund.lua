-- login_refund.lua: take back the failure login_check.lua counted for an attempt that did
-- not fail (its password was right, or it was never checked), and remember the address of
-- a successful login as one the owner uses.
--
-- KEYS[1] pair     counter login_check.lua bumped (the same window's key)
-- KEYS[2] account  counter login_check.lua bumped (the same window's key)
-- KEYS[3] known    zset: client address -> time of its last successful login to this account (ms)
-- ARGV[1] client address to remember, or '' (the attempt did not sign in)
-- ARGV[2] now, in milliseconds since the epoch (the remembered address's score)
-- ARGV[3] how long the known set lives after its last successful login, in milliseconds
-- ARGV[4] the most addresses remembered per account (the least recent are forgotten)
-- Returns {'OK'}
local address = ARGV[1]
local now_ms = tonumber(ARGV[2])
local keep_ms = tonumber(ARGV[3])
local keep_addresses = tonumber(ARGV[4])

-- A counter whose window already ended has expired: it is not brought back as -1.
for i = 1, 2 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then
    redis.call('DECR', KEYS[i])
  end
end

if address ~= '' then
  redis.call('ZADD', KEYS[3], now_ms, address)
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(keep_addresses + 1))
  redis.call('PEXPIRE', KEYS[3], keep_ms)
end
return {'OK'}
