/**
 * The Lua scripts of the Redis store, one per operation. Each runs atomically on the one slot of
 * its user (all keys of a user share a hash tag), so it works on Redis Cluster too.
 *
 * Per-user keys (KEYS):
 *   S = <prefix>:{<instance>:<org>:<user>}:s   hash: L = lockedAt (ms; present = locked),
 *                                              f:<factor> = failed count, n:<factor> = in flight
 *   R = <prefix>:{<instance>:<org>:<user>}:r   zset: "<factor>|<nonce>" scored by lease expiry (ms)
 * Fields at zero are deleted, so an idle user with no failures and no lock has no keys.
 * Time is Redis's own (TIME), so processes with skewed clocks agree on lease expiry.
 */

const PRELUDE = `
local S = KEYS[1] -- user state hash
local R = KEYS[2] -- user reservations zset

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function limit_of(f, max_pw, max_otp)
  if f == 'password' then return max_pw end
  return max_otp
end

-- counts one failure of factor f and locks at the limit; 1 when this call locked the user
local function fail(f, max, now)
  local c = redis.call('HINCRBY', S, 'f:' .. f, 1)
  if max > 0 and c >= max and redis.call('HSETNX', S, 'L', now) == 1 then return 1 end
  return 0
end

local function unreserve(f)
  if redis.call('HINCRBY', S, 'n:' .. f, -1) <= 0 then redis.call('HDEL', S, 'n:' .. f) end
end

-- expired leases count as failures, exactly once; 1 when one of them locked the user
local function sweep(now, max_pw, max_otp)
  local locked = 0
  local expired = redis.call('ZRANGEBYSCORE', R, '-inf', now)
  for i = 1, #expired do
    local f = string.match(expired[i], '^([^|]+)|')
    unreserve(f)
    if fail(f, limit_of(f, max_pw, max_otp), now) == 1 then locked = 1 end
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', R, '-inf', now) end
  return locked
end
`;

/**
 * ARGV: factor, maxPasswordAttempts, maxOtpAttempts, leaseMs, nonce
 * Returns {status, value, sweptLock}: {'admitted', expiresAt} | {'locked', lockedAt} | {'busy', retryAfterMs}
 * Admitted while failures + in-flight < limit. When a lowered limit is already reached by the
 * count, one check at a time is admitted, so that its failure locks (API.md: "at their next failure").
 */
export const RESERVE = `${PRELUDE}
local f, max_pw, max_otp = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local lease, nonce = tonumber(ARGV[4]), ARGV[5]
local now = now_ms()
local swept = sweep(now, max_pw, max_otp)
local st = redis.call('HMGET', S, 'L', 'f:' .. f, 'n:' .. f)
if st[1] then return {'locked', tonumber(st[1]), swept} end
local max = limit_of(f, max_pw, max_otp)
if max > 0 then
  local slots = max - tonumber(st[2] or '0')
  if slots < 1 then slots = 1 end
  if tonumber(st[3] or '0') >= slots then
    local first = redis.call('ZRANGE', R, 0, 0, 'WITHSCORES')
    local wait = 1000
    if first[2] then wait = math.max(1, math.min(1000, tonumber(first[2]) - now)) end
    return {'busy', wait, swept}
  end
end
redis.call('ZADD', R, now + lease, f .. '|' .. nonce)
redis.call('HINCRBY', S, 'n:' .. f, 1)
return {'admitted', now + lease, swept}
`;

/**
 * ARGV: factor, nonce, outcome (success|failure|release), maxPasswordAttempts, maxOtpAttempts
 * Returns {'unknown', 0, 0, 0, sweptLock} | {'settled', failedAttempts, locked, lockedNow, sweptLock}
 */
export const SETTLE = `${PRELUDE}
local f, nonce, outcome = ARGV[1], ARGV[2], ARGV[3]
local max_pw, max_otp = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
local swept = sweep(now, max_pw, max_otp)
if redis.call('ZREM', R, f .. '|' .. nonce) == 0 then return {'unknown', 0, 0, 0, swept} end
unreserve(f)
local locked_now = 0
if outcome == 'failure' then
  locked_now = fail(f, limit_of(f, max_pw, max_otp), now)
elseif outcome == 'success' and redis.call('HEXISTS', S, 'L') == 0 then
  redis.call('HDEL', S, 'f:' .. f)
end
local st = redis.call('HMGET', S, 'f:' .. f, 'L')
local locked = 0
if st[2] then locked = 1 end
return {'settled', tonumber(st[1] or '0'), locked, locked_now, swept}
`;

/**
 * ARGV: maxPasswordAttempts, maxOtpAttempts
 * Returns {sweptLock, field1, value1, field2, value2, ...} of the state hash.
 */
export const GET_USER = `${PRELUDE}
local swept = sweep(now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]))
local all = redis.call('HGETALL', S)
table.insert(all, 1, swept)
return all
`;

/** Returns {changed, lockedAt}. */
export const LOCK = `
local S = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HSETNX', S, 'L', now) == 1 then return {1, now} end
return {0, tonumber(redis.call('HGET', S, 'L'))}
`;

/** Clears the lock and every counter (in-flight reservations stay and settle as usual). Returns 1 if it was locked. */
export const UNLOCK = `
local S = KEYS[1]
if redis.call('HEXISTS', S, 'L') == 0 then return 0 end
redis.call('HDEL', S, 'L', 'f:password', 'f:totp', 'f:otp_sms', 'f:otp_email', 'f:recovery_code')
return 1
`;

/**
 * KEYS: settings hash of the owner. ARGV: op, maxPw, maxOtp, fallbackPw, fallbackOtp, channel, message
 * Hash fields: on = '1' while settings exist, pw, otp, cd (creation), ch (change), seq (survives remove).
 * Returns {'ok', sequence, creationDate, changeDate} | {'exists'} | {'not_found'} | {'not_changed'}
 */
export const WRITE_SETTINGS = `
local K = KEYS[1]
local op, pw, otp = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HMGET', K, 'on', 'pw', 'otp', 'cd')
local exists = cur[1] == '1'
if op == 'add' and exists then return {'exists'} end
if (op == 'update' or op == 'remove') and not exists then return {'not_found'} end
if op == 'update' and cur[2] == pw and cur[3] == otp then return {'not_changed'} end
if op == 'set' then
  local cpw, cotp = ARGV[4], ARGV[5]
  if exists then cpw, cotp = cur[2], cur[3] end
  if cpw == pw and cotp == otp then return {'not_changed'} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = redis.call('HINCRBY', K, 'seq', 1)
local cd = now
if exists and op ~= 'remove' then cd = tonumber(cur[4]) end
if op == 'remove' then
  redis.call('HDEL', K, 'on', 'pw', 'otp', 'cd', 'ch')
else
  redis.call('HSET', K, 'on', '1', 'pw', pw, 'otp', otp, 'cd', cd, 'ch', now)
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return {'ok', seq, cd, now}
`;

/** KEYS: code key. ARGV: hash. Returns 'match' (and deletes), 'mismatch' or 'missing'. */
export const TAKE_CODE = `
local v = redis.call('GET', KEYS[1])
if not v then return 'missing' end
if v ~= ARGV[1] then return 'mismatch' end
redis.call('DEL', KEYS[1])
return 'match'
`;

/** KEYS: step key. ARGV: step, ttlMs. Returns 1 (and records the step) when step > the recorded one, else 0. */
export const USE_STEP = `
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`;
