-- login_check.lua: may this login attempt check its password? If so, count it as a
-- failure now; login_refund.lua takes it back when the password turns out right.
--
-- Counting before the (slow) password check rather than after it keeps a burst honest:
-- guesses sent all at once cannot each pass a read that no failure has bumped yet.
--
-- KEYS[1] pair     counter: failed logins of this account from this client address, this window
-- KEYS[2] account  counter: failed logins of this account from every address, this window
-- KEYS[3] known    zset: client address -> time of its last successful login to this account (ms)
-- ARGV[1] pair limit: failures allowed per window (0 = off)
-- ARGV[2] pair window length, in milliseconds
-- ARGV[3] account limit: failures allowed per window (0 = off)
-- ARGV[4] account window length, in milliseconds
-- ARGV[5] client address
-- ARGV[6] oldest last success that still makes an address known, ms since the epoch
-- Returns {'ALLOWED'} (the enabled counters were bumped)
--      or {'LIMITED'} (nothing written): this address is at the pair limit, or the account
--         is at its limit and this address has not signed in to it successfully of late
local pair_limit = tonumber(ARGV[1])
local pair_window_ms = tonumber(ARGV[2])
local account_limit = tonumber(ARGV[3])
local account_window_ms = tonumber(ARGV[4])
local address = ARGV[5]
local known_since_ms = tonumber(ARGV[6])

local function count(key)
  return tonumber(redis.call('GET', key) or '0')
end

if pair_limit > 0 and count(KEYS[1]) >= pair_limit then
  return {'LIMITED'}
end
if account_limit > 0 and count(KEYS[2]) >= account_limit then
  -- Distributed guessing tripped the account's backstop: only an address the owner has
  -- signed in from before still gets a try (each one still under its own pair limit).
  local last = redis.call('ZSCORE', KEYS[3], address)
  if not last or tonumber(last) < known_since_ms then
    return {'LIMITED'}
  end
end

local function bump(key, window_ms)
  if redis.call('INCR', key) == 1 then
    redis.call('PEXPIRE', key, window_ms)
  end
end

if pair_limit > 0 then
  bump(KEYS[1], pair_window_ms)
end
if account_limit > 0 then
  bump(KEYS[2], account_window_ms)
end
return {'ALLOWED'}
