/**
 * The Lua scripts of the Redis store, one per operation. Each user script runs atomically on the
 * one slot of its user (all keys of a user share a hash tag), so it works on Redis Cluster too.
 *
 * Per-user keys (KEYS of every user script):
 *   S = <prefix>:{<instance>:<org>:<user>}:s   hash: L = lockedAt (ms; present = locked),
 *                                              f:<factor> = failed count, n:<factor> = in flight
 *   R = <prefix>:{<instance>:<org>:<user>}:r   zset: "<factor>|<nonce>" scored by lease end (ms)
 *   T = <prefix>:{<instance>:<org>:<user>}:t   zset: tombstoned nonces scored by tombstone end (ms)
 * Fields at zero are deleted, so an idle user with no failures and no lock has no S; R and T
 * vanish with their last member.
 *
 * Common ARGV of every user script (read once in the prelude):
 *   ARGV[1] maxPasswordAttempts, ARGV[2] maxOtpAttempts,
 *   ARGV[3] leaseMs (how long a tombstone made by this call lasts), ARGV[4] idleTtlMs (0 = never);
 *   ARGV[5…] the script's own arguments.
 *
 * Every user script answers ONE fixed shape (parsed by `parseUserReply` in redis-store.ts):
 *   { status, value, flag, lockedAt, lockChange, pendingUntil, counters }
 *     status       string, per script (below)
 *     value        number, per script (below)
 *     flag         0|1, per script (below)
 *     lockedAt     lockedAt after the script, 0 when not locked
 *     lockChange   1 = this script locked the user (an expired lease, a failure or LOCK),
 *                  -1 = this script unlocked the user (lockedAt then holds the cleared lockedAt), 0 = neither
 *     pendingUntil a lease end > 0 when RESERVE admitted a reservation whose failure could lock the
 *                  user (failures + in flight >= limit): the store records it in the org's pending set
 *     counters     {field, value, …} of the f:* counters (GET_USER only; empty otherwise)
 *
 * Idle expiry (finish): after a write, an unlocked user's S and R expire idleTtlMs after the later
 * of now and the latest lease end in flight (so an in-flight lease is always applied first);
 * a locked user's S and R are PERSISTed; T expires at its latest tombstone end.
 * Time is Redis's own (TIME), so processes with skewed clocks agree on lease expiry.
 */

/** Redis's clock in ms; the one place where the time arithmetic lives. */
const NOW_MS = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

const PRELUDE = `${NOW_MS}
local S, R, T = KEYS[1], KEYS[2], KEYS[3]
local max_pw, max_otp = tonumber(ARGV[1]), tonumber(ARGV[2])
local lease, idle = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local lock_change = 0
local wrote = false

local function limit_of(f)
  if f == 'password' then return max_pw end
  return max_otp
end

local function locked_at()
  return tonumber(redis.call('HGET', S, 'L') or '0')
end

-- counts one failure of factor f and locks at the limit; 1 when this call locked the user
local function fail(f)
  wrote = true
  local c = redis.call('HINCRBY', S, 'f:' .. f, 1)
  local max = limit_of(f)
  if max > 0 and c >= max and redis.call('HSETNX', S, 'L', now) == 1 then
    lock_change = 1
    return 1
  end
  return 0
end

local function unreserve(f)
  if redis.call('HINCRBY', S, 'n:' .. f, -1) <= 0 then redis.call('HDEL', S, 'n:' .. f) end
end

-- tombstones nonce n until now + ms (a later end wins); T expires with its latest tombstone
local function tomb(n, ms)
  wrote = true
  redis.call('ZREMRANGEBYSCORE', T, '-inf', now)
  redis.call('ZADD', T, 'GT', now + ms, n)
  local last = redis.call('ZRANGE', T, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', T, tonumber(last[2]))
end

local function is_gone(n)
  local e = redis.call('ZSCORE', T, n)
  return e and tonumber(e) > now
end

local function split(m)
  return string.match(m, '^([^|]+)|(.*)$')
end

-- removes reservation m (member of R) uncounted and tombstones its nonce
local function drop(m)
  local f, n = split(m)
  redis.call('ZREM', R, m)
  unreserve(f)
  tomb(n, lease)
end

-- expired leases count as failures, exactly once (their nonces are tombstoned)
local function sweep()
  local expired = redis.call('ZRANGEBYSCORE', R, '-inf', now)
  for i = 1, #expired do
    local f, n = split(expired[i])
    unreserve(f)
    fail(f)
    tomb(n, lease)
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', R, '-inf', now) end
end

-- idle expiry after a write (see the file comment)
local function finish()
  if not wrote then return end
  if redis.call('HEXISTS', S, 'L') == 1 or idle == 0 then
    redis.call('PERSIST', S)
    redis.call('PERSIST', R)
    return
  end
  local at = now + idle
  local last = redis.call('ZRANGE', R, -1, -1, 'WITHSCORES')
  if last[2] then at = math.max(at, tonumber(last[2]) + idle) end
  redis.call('PEXPIREAT', S, at)
  redis.call('PEXPIREAT', R, at)
end

local function reply(status, value, flag, pending, counters)
  finish()
  return {status, value, flag, locked_at(), lock_change, pending, counters}
end
`;

/**
 * ARGV[5] factor, ARGV[6] nonce.
 * status/value: 'admitted'/expiresAt | 'gone'/0 | 'locked'/lockedAt | 'busy'/retryAfterMs; flag 0.
 * Order (shared semantics 1): sweep; tombstoned → gone; in flight → admitted (same expiry);
 * locked; busy (failures + in flight >= limit; one at a time once a lowered limit is reached;
 * retry = earliest lease end of the same factor − now, in [1, 1000]); else admit.
 */
export const RESERVE = `${PRELUDE}
local f, nonce = ARGV[5], ARGV[6]
local member = f .. '|' .. nonce
sweep()
if is_gone(nonce) then return reply('gone', 0, 0, 0, {}) end
local mine = redis.call('ZSCORE', R, member)
if mine then return reply('admitted', tonumber(mine), 0, 0, {}) end
local st = redis.call('HMGET', S, 'L', 'f:' .. f, 'n:' .. f)
if st[1] then return reply('locked', tonumber(st[1]), 0, 0, {}) end
local max = limit_of(f)
local failed, inflight = tonumber(st[2] or '0'), tonumber(st[3] or '0')
if max > 0 then
  local slots = max - failed
  if slots < 1 then slots = 1 end
  if inflight >= slots then
    local wait = 1000
    local all = redis.call('ZRANGE', R, 0, -1, 'WITHSCORES')
    for i = 1, #all, 2 do
      if split(all[i]) == f then
        wait = math.max(1, math.min(1000, tonumber(all[i + 1]) - now))
        break
      end
    end
    return reply('busy', wait, 0, 0, {})
  end
end
wrote = true
redis.call('ZADD', R, now + lease, member)
redis.call('HINCRBY', S, 'n:' .. f, 1)
local pending = 0
if max > 0 and failed + inflight + 1 >= max then pending = now + lease end
return reply('admitted', now + lease, 0, pending, {})
`;

/**
 * ARGV[5] factor, ARGV[6] nonce, ARGV[7] outcome (success|failure|release).
 * status/value/flag: 'settled'/failedAttempts/lockedNow (this settle's failure locked the user) |
 * 'unknown'/0/0 (not in flight: nothing counted). Either way the nonce is tombstoned for leaseMs.
 */
export const SETTLE = `${PRELUDE}
local f, nonce, outcome = ARGV[5], ARGV[6], ARGV[7]
sweep()
if redis.call('ZREM', R, f .. '|' .. nonce) == 0 then
  tomb(nonce, lease)
  return reply('unknown', 0, 0, 0, {})
end
unreserve(f)
tomb(nonce, lease)
local locked_now = 0
if outcome == 'failure' then
  locked_now = fail(f)
elseif outcome == 'success' and redis.call('HEXISTS', S, 'L') == 0 then
  redis.call('HDEL', S, 'f:' .. f)
end
return reply('settled', tonumber(redis.call('HGET', S, 'f:' .. f) or '0'), locked_now, 0, {})
`;

/**
 * No own ARGV. status 'user'; value = earliest lease end still in flight (0 when none);
 * counters = the f:* fields. Writes (and refreshes idle expiry) only when a lease expired.
 */
export const GET_USER = `${PRELUDE}
sweep()
local counters = {}
local all = redis.call('HGETALL', S)
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'f:' then
    counters[#counters + 1] = all[i]
    counters[#counters + 1] = all[i + 1]
  end
end
local first = redis.call('ZRANGE', R, 0, 0, 'WITHSCORES')
return reply('user', tonumber(first[2] or '0'), 0, 0, counters)
`;

/** No own ARGV. status 'lock'; flag = changed (0 when it was locked, by an expired lease too). */
export const LOCK = `${PRELUDE}
sweep()
local changed = 0
if lock_change == 0 and redis.call('HSETNX', S, 'L', now) == 1 then
  wrote = true
  changed = 1
  lock_change = 1
end
return reply('lock', 0, changed, 0, {})
`;

/**
 * No own ARGV. status 'unlock'; flag = changed (0 when it was not locked: nothing cleared).
 * Clears L, every f:* and n:* field and every in-flight reservation (their nonces tombstoned).
 * On change lockChange is -1 and lockedAt holds the lockedAt that was cleared.
 */
export const UNLOCK = `${PRELUDE}
sweep()
local at = locked_at()
if at == 0 then return reply('unlock', 0, 0, 0, {}) end
wrote = true
local fields = redis.call('HKEYS', S)
for i = 1, #fields do
  local p = string.sub(fields[i], 1, 2)
  if fields[i] == 'L' or p == 'f:' or p == 'n:' then redis.call('HDEL', S, fields[i]) end
end
local inflight = redis.call('ZRANGE', R, 0, -1)
for i = 1, #inflight do
  local _, n = split(inflight[i])
  tomb(n, lease)
end
redis.call('DEL', R)
finish()
return {'unlock', 0, 1, at, -1, 0, {}}
`;

/**
 * ARGV[5] factor. status 'reset'. Resets the factor's counter (the lock stays) and drops its
 * in-flight reservations uncounted (their nonces tombstoned).
 */
export const RESET = `${PRELUDE}
local f = ARGV[5]
sweep()
wrote = true
redis.call('HDEL', S, 'f:' .. f)
local inflight = redis.call('ZRANGE', R, 0, -1)
for i = 1, #inflight do
  if split(inflight[i]) == f then drop(inflight[i]) end
end
return reply('reset', 0, 0, 0, {})
`;

/*
 * Org scripts: the locked-users index and the pending set live on the org's slot
 * (<prefix>:{<instance>:<org>}:…), so they are written after the user's script, never inside it.
 *   I = …:locked    zset, every score 0: user ids in lexicographic (UTF-8 byte) order
 *   H = …:lockedat  hash: user → the lockedAt its entry in I stands for
 *   P = …:pending   zset: user → latest lease end that could lock the user (see RESERVE)
 * Entries are conditional on lockedAt (times of the user's own slot), so the writes of several
 * processes converge in any order: an add never lowers H, and a removal only removes an entry
 * whose lockedAt is not newer than the lock it saw cleared.
 */

/** KEYS: I, H. ARGV: user, lockedAt. Returns 1. */
export const INDEX_ADD = `
local I, H, user, at = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local cur = tonumber(redis.call('HGET', H, user) or '0')
if at > cur then redis.call('HSET', H, user, at) end
redis.call('ZADD', I, 0, user)
return 1
`;

/** KEYS: I, H. ARGV: user, lockedAt. Removes the entry when its lockedAt <= ARGV lockedAt; returns 1 if removed. */
export const INDEX_REMOVE = `
local I, H, user, at = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local cur = tonumber(redis.call('HGET', H, user) or '0')
if cur > at then return 0 end
redis.call('HDEL', H, user)
redis.call('ZREM', I, user)
return 1
`;

/**
 * KEYS: P. ARGV: user, leaseEnd, idleTtlMs. Records (a later end wins). With idleTtlMs > 0, entries
 * older than idleTtlMs (whose users' keys have expired) are pruned and P expires after its last.
 */
export const PENDING_ADD = `${NOW_MS}
local P, user, at, idle = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZADD', P, 'GT', at, user)
if idle > 0 then
  redis.call('ZREMRANGEBYSCORE', P, '-inf', now_ms() - idle)
  local last = redis.call('ZRANGE', P, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', P, tonumber(last[2]) + idle) end
end
return 1
`;

/** KEYS: P. ARGV: count. Returns {user, leaseEnd, …} of at most count entries whose lease has ended. */
export const PENDING_DUE = `${NOW_MS}
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
`;

/** KEYS: P. ARGV: user, leaseEnd. Removes the entry if its score is still leaseEnd (not a newer one). */
export const PENDING_DONE = `
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
`;

/**
 * KEYS: settings hash of the owner. ARGV: op, maxPw, maxOtp, fallbackPw, fallbackOtp, channel, message
 * Hash fields: on = '1' while settings exist, pw, otp, cd (creation), ch (change), seq (survives remove).
 * Returns {'ok', sequence, creationDate, changeDate} | {'exists'} | {'not_found'} | {'not_changed'}
 */
export const WRITE_SETTINGS = `${NOW_MS}
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
local now = now_ms()
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
