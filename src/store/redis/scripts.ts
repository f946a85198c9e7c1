/**
 * The Lua scripts of the Redis store, one per operation. Each user script runs atomically on the
 * one key of its user, so it works on Redis Cluster too.
 *
 * One hash per user: S = <prefix>:{<instance>:<org>:<user>}:s with the fields
 *   L                    lockedAt (ms; present = locked)
 *   f:<factor>           failed count (absent = 0)
 *   r:<factor>|<nonce>   a reservation in flight: its lease end (ms)
 *   t:<nonce>            a tombstone: the nonce was settled, released or expired; until (ms)
 *   U                    temporary lockout (defences): when the current lock ends (ms; absent = permanent)
 *   k                    temporary lockout (defences): consecutive locks made by failures
 *   p                    repeat-password forgiveness (defences): keys of the latest wrong passwords,
 *                        oldest first, comma-separated (22 base64url characters each)
 * U, k and p are written only while defences are on; absent, every script is what it was before.
 * A factor's in-flight count is the number of its r: fields, so no separate counter can leak.
 * Every script reads the hash once (HGETALL: a user's hash is small), decides in Lua, and writes
 * its changes with at most one HSET and one HDEL, then sets the key's expiry (commit).
 *
 * Common ARGV of every user script (read once in the prelude):
 *   ARGV[1] maxPasswordAttempts, ARGV[2] maxOtpAttempts,
 *   ARGV[3] leaseMs (how long a tombstone made by this call lasts), ARGV[4] idleTtlMs (0 = never);
 *   ARGV[5…8] the script's own arguments;
 *   ARGV[9…12] the defences, only when some are on (absent: every one is off, and the script runs
 *   exactly as without them): ARGV[9] lockMs, ARGV[10] maxLockMs (temporary lockout, 0 = off),
 *   ARGV[11] remember (repeat-password forgiveness, 0 = off), ARGV[12] the settle's repeat key
 *   ('' = none), ARGV[13] maxDevices (device cookies), ARGV[14] the scope. The store pads the own
 *   arguments to four before them.
 *
 * Device cookies: a scope's state is a hash of its own, S = <user's hash>:<scope>, on the user's
 * slot (the same {…} tag). Its scripts get the user's hash as KEYS[2] (U) and, besides running on
 * S as above: RESERVE refuses `locked` while U is locked (an admin lock locks every scope); every
 * write records the scope in U's registry, field d:<scope> = "<use sequence>|<S's expiry>" (-1 =
 * never), and keeps U alive as long as its longest-lived scope; a RESERVE past maxDevices device
 * scopes deletes the least recently used device scope that is neither locked nor in flight (the
 * one write to a key not in KEYS: it is on the same slot, so Redis Cluster runs it).
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
 * and, only when the defences are on (ARGV[9] given), three more:
 *     ended        the lockedAt of a temporary lock this script ended (its time had passed), else 0
 *     lockedUntil  when the current lock ends, 0 when not locked or locked for good
 *     forgiven     1 = SETTLE did not count a failure that repeated a remembered wrong password
 *
 * Idle expiry (commit, after a write): a locked user's hash is PERSISTed. Otherwise it expires at
 * the latest of: now + idleTtlMs when something is counted; the latest lease end in flight +
 * idleTtlMs (an in-flight lease is applied before its user can expire); the latest tombstone end
 * (tombstones alone never keep a user longer). With idleTtlMs = 0, counted users and users with a
 * reservation in flight never expire. Expired tombstones are pruned at every write.
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
local S = KEYS[1]
local max_pw, max_otp = tonumber(ARGV[1]), tonumber(ARGV[2])
local lease, idle = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
-- defences: absent (nil) = all off
local def = ARGV[9] ~= nil
local lock_ms, max_lock_ms = tonumber(ARGV[9] or '0'), tonumber(ARGV[10] or '0')
local remember = tonumber(ARGV[11] or '0')
-- device cookies: the user's own hash when S is one of its scopes
local U = KEYS[2]
local max_dev, scope = tonumber(ARGV[13] or '0'), ARGV[14]
local scope_used = false -- set by RESERVE: the scope's last use is now (and the bound applies)

-- the user's state, read once
local locked = nil      -- lockedAt, nil when not locked
local failed = {}       -- factor -> count
local res = {}          -- reservations in flight: {field, factor, nonce, lease end}
local tombs = {}        -- nonce -> end, live tombstones only
local changes = {}      -- field -> new value, or false to delete
local wrote = false
local lock_change = 0
local lock_end = nil    -- U: when a temporary lock ends
local streak = 0        -- k: consecutive locks made by failures
local seen = nil        -- p: keys of the latest wrong passwords
local ended = 0         -- lockedAt of a temporary lock this script ended
local forgiven = 0
local scopes = {}       -- d:<scope>: the registry of the user's scopes (device cookies)
local reg_at, reg_forever = 0, false -- the longest-lived scope of the registry
do
  local h = redis.call('HGETALL', S)
  for i = 1, #h, 2 do
    local k, v = h[i], h[i + 1]
    local p = string.sub(k, 1, 2)
    if k == 'L' then
      locked = tonumber(v)
    elseif p == 'f:' then
      failed[string.sub(k, 3)] = tonumber(v)
    elseif p == 'r:' then
      local f, n = string.match(k, '^r:([^|]+)|(.*)$')
      res[#res + 1] = {k, f, n, tonumber(v)}
    elseif p == 't:' then
      local e = tonumber(v)
      if e > now then tombs[string.sub(k, 3)] = e else changes[k] = false end
    elseif p == 'n:' then
      changes[k] = false -- an in-flight counter of an earlier version: dropped at the next write
    elseif k == 'U' then
      lock_end = tonumber(v)
    elseif k == 'k' then
      streak = tonumber(v)
    elseif k == 'p' then
      seen = v
    elseif p == 'd:' then
      scopes[#scopes + 1] = string.sub(k, 3) -- device cookies: the user's scopes (registry)
      -- the registry outlives its scopes: the user's own writes keep it as long (see commit)
      local ex = tonumber(string.match(v, '|(%-?%d+)$') or '0')
      if ex == -1 then reg_forever = true elseif ex > reg_at then reg_at = ex end
    end
  end
end

local function change(k, v)
  changes[k] = v
  wrote = true
end

local function limit_of(f)
  if f == 'password' then return max_pw end
  return max_otp
end

-- temporary lockout: a lock whose end has passed ends now, with its counters and remembered
-- wrong passwords (in-flight reservations stay); its own end counts, whatever the policy now
if locked and lock_end and lock_end <= now then
  ended = locked
  locked = nil
  lock_end = nil
  change('L', false)
  change('U', false)
  for f in pairs(failed) do change('f:' .. f, false) end
  failed = {}
  if seen then
    seen = nil
    change('p', false)
  end
end

-- forgets the consecutive locks and (password) the remembered wrong passwords, when there are some
local function forget(password)
  if streak > 0 then
    streak = 0
    change('k', false)
  end
  if password and seen then
    seen = nil
    change('p', false)
  end
end

-- counts one failure of factor f and locks at the limit; 1 when this call locked the user
local function fail(f)
  local c = (failed[f] or 0) + 1
  failed[f] = c
  change('f:' .. f, c)
  local max = limit_of(f)
  if max > 0 and c >= max and not locked then
    locked = now
    change('L', now)
    lock_change = 1
    if lock_ms > 0 then
      streak = streak + 1
      change('k', streak)
      local len = lock_ms * math.pow(2, math.min(streak - 1, 52))
      if len > max_lock_ms then len = max_lock_ms end
      lock_end = now + len
      change('U', lock_end)
    end
    return 1
  end
  return 0
end

-- tombstones nonce n until now + ms (a later end wins)
local function tomb(n, ms)
  local e = now + ms
  if not tombs[n] or tombs[n] < e then
    tombs[n] = e
    change('t:' .. n, e)
  end
end

-- removes reservation i from flight (uncounted); tombstones its nonce unless tombstone is false
local function unreserve(i, tombstone)
  local r = res[i]
  res[i] = false
  change(r[1], false)
  if tombstone ~= false then tomb(r[3], lease) end
end

local function find(f, n)
  local k = 'r:' .. f .. '|' .. n
  for i = 1, #res do
    if res[i] and res[i][1] == k then return i end
  end
  return nil
end

-- expired leases count as failures, exactly once (their nonces are tombstoned)
local function sweep()
  for i = 1, #res do
    local r = res[i]
    if r and r[4] <= now then
      unreserve(i)
      fail(r[2])
    end
  end
end

-- device cookies: records the scope (last use, S's expiry) in U, bounds the device scopes, and
-- keeps U alive as long as its longest-lived scope (U's own state keeps its own expiry)
local function sync_user(exp)
  local h = redis.call('HGETALL', U)
  local mine = 'd:' .. scope
  local entries, own = {}, false
  local last, newest = 0, 0 -- the scope's use sequence (a reserve makes it the newest), the newest
  for i = 1, #h, 2 do
    local k, v = h[i], h[i + 1]
    if string.sub(k, 1, 2) == 'd:' then
      local lu, ex = string.match(v, '^(%-?%d+)|(%-?%d+)$')
      lu = tonumber(lu)
      if lu > newest then newest = lu end
      if k == mine then
        last = lu
      else
        entries[#entries + 1] = {k, string.sub(k, 3), lu, tonumber(ex)}
      end
    else
      own = true
    end
  end
  if scope_used or last == 0 then last = newest + 1 end
  entries[#entries + 1] = {mine, scope, last, exp}
  redis.call('HSET', U, mine, last .. '|' .. exp)
  if scope_used and max_dev > 0 then
    local devs = {}
    for i = 1, #entries do
      if string.sub(entries[i][2], 1, 1) == 'd' then devs[#devs + 1] = entries[i] end
    end
    table.sort(devs, function(a, b) return a[3] < b[3] end)
    local n = #devs
    for i = 1, #devs do
      if n <= max_dev then break end
      local e = devs[i]
      if e[2] ~= scope then
        local key = U .. ':' .. e[2]
        local vh = redis.call('HGETALL', key)
        local busy = false
        for j = 1, #vh, 2 do
          if vh[j] == 'L' or string.sub(vh[j], 1, 2) == 'r:' then busy = true end
        end
        if not busy then
          redis.call('DEL', key)
          redis.call('HDEL', U, e[1])
          e[4] = 0
          n = n - 1
        end
      end
    end
  end
  local at, forever = 0, false
  for i = 1, #entries do
    if entries[i][4] == -1 then forever = true elseif entries[i][4] > at then at = entries[i][4] end
  end
  if forever then
    redis.call('PERSIST', U)
  elseif not own then
    -- no scope holds state for longer: the registry alone is kept a lease's length
    redis.call('PEXPIREAT', U, math.max(at, now + lease))
  else
    -- U has state of its own, whose expiry its own scripts set: only ever extend it
    local ttl = redis.call('PTTL', U)
    if ttl >= 0 and now + ttl < at then redis.call('PEXPIREAT', U, at) end
  end
end

-- writes the changes and sets the key's expiry (see the file comment)
local function commit()
  if not wrote then return end
  local set, del = {}, {}
  for k, v in pairs(changes) do
    if v then
      set[#set + 1] = k
      set[#set + 1] = v
    else
      del[#del + 1] = k
    end
  end
  if #del > 0 then redis.call('HDEL', S, unpack(del)) end
  if #set > 0 then redis.call('HSET', S, unpack(set)) end
  local at, forever = 0, false
  if locked then
    -- a temporary lock's state expires idleTtlMs after its end (bounded state)
    if lock_end and idle > 0 then at = lock_end + idle else forever = true end
  else
    if next(failed) or streak > 0 then
      if idle == 0 then forever = true else at = now + idle end
    end
    for i = 1, #res do
      if res[i] then
        if idle == 0 then forever = true else at = math.max(at, res[i][4] + idle) end
      end
    end
    for _, e in pairs(tombs) do at = math.max(at, e) end
    -- device cookies: the user's own hash keeps its scopes' registry as long as they live
    if reg_forever then forever = true elseif reg_at > 0 then at = math.max(at, reg_at) end
  end
  if forever then
    redis.call('PERSIST', S)
  elseif at > 0 then
    redis.call('PEXPIREAT', S, at)
  end
  if U then
    if forever then sync_user(-1) else sync_user(at) end
  end
end

local function reply(status, value, flag, pending, counters)
  commit()
  if def then
    return {status, value, flag, locked or 0, lock_change, pending, counters, ended, lock_end or 0, forgiven}
  end
  return {status, value, flag, locked or 0, lock_change, pending, counters}
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
sweep()
if tombs[nonce] then return reply('gone', 0, 0, 0, {}) end
local mine = find(f, nonce)
if mine then return reply('admitted', res[mine][4], 0, 0, {}) end
if locked then return reply('locked', locked, 0, 0, {}) end
if U then
  -- device cookies: the user's own lock (an admin lock) locks every scope
  local own = redis.call('HMGET', U, 'L', 'U')
  if own[1] and not (own[2] and tonumber(own[2]) <= now) then
    return reply('locked', tonumber(own[1]), 0, 0, {})
  end
end
local max = limit_of(f)
local count, inflight, first = failed[f] or 0, 0, nil
for i = 1, #res do
  local r = res[i]
  if r and r[2] == f then
    inflight = inflight + 1
    if not first or r[4] < first then first = r[4] end
  end
end
if max > 0 then
  local slots = max - count
  if slots < 1 then slots = 1 end
  if inflight >= slots then
    local wait = 1000
    if first then wait = math.max(1, math.min(1000, first - now)) end
    return reply('busy', wait, 0, 0, {})
  end
end
local k = 'r:' .. f .. '|' .. nonce
res[#res + 1] = {k, f, nonce, now + lease}
change(k, now + lease)
scope_used = true
local pending = 0
if max > 0 and count + inflight + 1 >= max then pending = now + lease end
return reply('admitted', now + lease, 0, pending, {})
`;

/**
 * ARGV[5] factor, ARGV[6] nonce, ARGV[7] outcome (success|failure|release), ARGV[8] '1' to tombstone.
 * status/value/flag: 'settled'/failedAttempts/lockedNow (this settle's failure locked the user) |
 * 'unknown'/0/0 (not in flight: nothing counted, the nonce tombstoned for leaseMs: its reserve may
 * still arrive). A settled nonce is tombstoned only when asked (a compensated reserve).
 */
export const SETTLE = `${PRELUDE}
local f, nonce, outcome = ARGV[5], ARGV[6], ARGV[7]
sweep()
local i = find(f, nonce)
if not i then
  tomb(nonce, lease)
  return reply('unknown', 0, 0, 0, {})
end
unreserve(i, ARGV[8] == '1')
local locked_now = 0
if outcome == 'failure' then
  -- repeat-password forgiveness: a remembered wrong password is not counted again
  local key = ARGV[12]
  if remember > 0 and f == 'password' and key and key ~= '' then
    local list = {}
    if seen then
      for x in string.gmatch(seen, '[^,]+') do list[#list + 1] = x end
    end
    for j = 1, #list do
      if list[j] == key then forgiven = 1 end
    end
    if forgiven == 0 then
      locked_now = fail(f)
      list[#list + 1] = key
      while #list > remember do table.remove(list, 1) end
      seen = table.concat(list, ',')
      change('p', seen)
    end
  else
    locked_now = fail(f)
  end
elseif outcome == 'success' and not locked then
  if failed[f] then
    failed[f] = nil
    change('f:' .. f, false)
  end
  forget(f == 'password')
end
return reply('settled', failed[f] or 0, locked_now, 0, {})
`;

/**
 * No own ARGV. status 'user'; value = earliest lease end still in flight (0 when none);
 * counters = the f:* fields. Writes (and refreshes idle expiry) only when a lease expired.
 */
export const GET_USER = `${PRELUDE}
sweep()
local counters = {}
for f, c in pairs(failed) do
  counters[#counters + 1] = 'f:' .. f
  counters[#counters + 1] = c
end
for _, sc in ipairs(scopes) do
  counters[#counters + 1] = 'd:' .. sc
  counters[#counters + 1] = 0
end
local first = 0
for i = 1, #res do
  if res[i] and (first == 0 or res[i][4] < first) then first = res[i][4] end
end
return reply('user', first, 0, 0, counters)
`;

/** No own ARGV. status 'lock'; flag = changed (0 when it was locked, by an expired lease too). */
export const LOCK = `${PRELUDE}
sweep()
if locked and lock_end then
  -- an admin lock is permanent: it makes a temporary lock one
  lock_end = nil
  change('U', false)
  return reply('lock', 0, 1, 0, {})
end
if locked then return reply('lock', 0, 0, 0, {}) end
locked = now
change('L', now)
lock_change = 1
return reply('lock', 0, 1, 0, {})
`;

/**
 * No own ARGV. status 'unlock'; flag = changed (0 when it was not locked: nothing cleared).
 * Clears L, every f:* field and every reservation in flight (their nonces tombstoned).
 * On change lockChange is -1 and lockedAt holds the lockedAt that was cleared.
 */
export const UNLOCK = `${PRELUDE}
sweep()
-- ARGV[5] '1': force (device cookies: an admin unlock clears a scope that is not locked too)
local force = ARGV[5] == '1'
if not locked and not force then return reply('unlock', 0, 0, 0, {}) end
local at = locked
locked = nil
if at then change('L', false) end
for f in pairs(failed) do change('f:' .. f, false) end
failed = {}
if lock_end then
  lock_end = nil
  change('U', false)
end
forget(true)
for i = 1, #res do
  if res[i] then unreserve(i) end
end
if not at then return reply('unlock', 0, 0, 0, {}) end
commit()
return {'unlock', 0, 1, at, -1, 0, {}}
`;

/**
 * ARGV[5] factor. status 'reset'. Resets the factor's counter (the lock stays) and drops its
 * in-flight reservations uncounted (their nonces tombstoned).
 */
export const RESET = `${PRELUDE}
local f = ARGV[5]
sweep()
if failed[f] then
  failed[f] = nil
  change('f:' .. f, false)
end
forget(f == 'password')
for i = 1, #res do
  if res[i] and res[i][2] == f then unreserve(i) end
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
 * Answers ONE fixed shape (parsed by `parseSettingsReply` in redis-store.ts):
 *   {status, sequence, creationDate, changeDate}: status 'ok', or 'exists' / 'not_found' /
 *   'not_changed' with zeros.
 */
export const WRITE_SETTINGS = `${NOW_MS}
local function refused(status) return {status, 0, 0, 0, '', ''} end
local K = KEYS[1]
local op, pw, otp = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HMGET', K, 'on', 'pw', 'otp', 'cd')
local exists = cur[1] == '1'
if op == 'add' and exists then return refused('exists') end
if (op == 'update' or op == 'remove') and not exists then return refused('not_found') end
if op == 'update' and cur[2] == pw and cur[3] == otp then return refused('not_changed') end
if op == 'set' then
  local cpw, cotp = ARGV[4], ARGV[5]
  if exists then cpw, cotp = cur[2], cur[3] end
  if cpw == pw and cotp == otp then return refused('not_changed') end
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
-- the values replaced ('' when none were stored), for the change's event
local ppw, potp = '', ''
if exists then ppw, potp = cur[2], cur[3] end
return {'ok', seq, cd, now, ppw, potp}
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
