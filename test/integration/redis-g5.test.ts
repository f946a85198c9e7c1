/**
 * G5 on the Redis store (issue 8 #2, #5, #6 and issue 10): idempotent reserve/settle with
 * tombstones, leases applied by every operation, the locked-users index that converges and never
 * fails a committed operation, listing users locked by leases nobody read, idle expiry and useStep.
 * Every test runs against the shared standalone Redis and the shared 3-node cluster.
 */
import { randomUUID } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { RedisStore, StoreUnavailableError } from '../../src';
import type { Limits, Subject } from '../../src/core/subjects';
import { createTestCluster, createTestRedis } from '../helpers/redis-clients';

type Client = Redis | Cluster;

const limits = (maxPasswordAttempts: number, maxOtpAttempts = maxPasswordAttempts): Limits => ({
  maxPasswordAttempts,
  maxOtpAttempts,
});
const LEASE = 30_000;
const nonce = () => randomUUID().replace(/-/g, '').slice(0, 22);

/** The fields of a user's state hash whose names start with `prefix` (r: in flight, f: counted, t: tombstones). */
async function fields(client: Client, key: string, prefix: string): Promise<string[]> {
  return Object.keys(await client.hgetall(key)).filter((k) => k.startsWith(prefix));
}

/** Redis's own clock (the store's), in ms. */
async function redisNow(client: Client): Promise<number> {
  const [s, us] = await client.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

/** Polls `check` every 20 ms until it is true; fails after `timeoutMs`. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits until Redis's clock has passed `t` (a lease end). */
const redisTimePast = (client: Client, t: number) =>
  until(`Redis time past ${t}`, async () => (await redisNow(client)) > t);

/** The org's index keys as the store names them (prefix "lg"). */
function indexKey(subject: Subject): string {
  return `lg:{${encodeURIComponent(subject.instance)}:${encodeURIComponent(subject.org)}}:locked`;
}

describe.each([
  ['standalone', () => createTestRedis()],
  ['3-node cluster', () => createTestCluster()],
] as Array<[string, () => Promise<Client>]>)('RedisStore G5 on %s', (_name, connect) => {
  let client: Client;
  let client2: Client;
  const stores: RedisStore[] = [];
  const store = (options: { idleTtlMs?: number; on?: Client } = {}) => {
    const s = new RedisStore({ client: options.on ?? client, idleTtlMs: options.idleTtlMs });
    stores.push(s);
    return s;
  };
  const subject = (user = 'u1'): Subject => ({ instance: `inst-${randomUUID()}`, org: 'org', user });

  beforeAll(async () => {
    client = await connect();
    client2 = await connect();
  });
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close()));
    client.disconnect();
    client2.disconnect();
  });

  it('issue 8 #2: a reserve run twice then settled leaves nothing in flight, never busy forever', async () => {
    const s = store();
    const who = subject();
    const id = nonce();
    const first = await s.reserve(who, 'password', limits(2), LEASE, id);
    const again = await s.reserve(who, 'password', limits(2), LEASE, id); // a resent command
    expect(first.status).toBe('admitted');
    expect(again).toEqual(first); // same expiry, counted once
    const [state] = s.userKeys(who);
    expect(await fields(client, state, 'r:')).toEqual([`r:password|${id}`]);
    expect(await s.settle(who, 'password', id, 'success', limits(2), LEASE)).toMatchObject({
      status: 'settled',
    });
    expect(await fields(client, state, 'r:')).toEqual([]);
    // a wrong password, then the next attempt is admitted (on the old code the leaked n:password made it busy forever)
    const wrong = nonce();
    await s.reserve(who, 'password', limits(2), LEASE, wrong);
    await s.settle(who, 'password', wrong, 'failure', limits(2), LEASE);
    expect((await s.reserve(who, 'password', limits(2), LEASE, nonce())).status).toBe('admitted');
  });

  it('settling twice is settling once: the second answers unknown and counts nothing', async () => {
    const s = store();
    const who = subject();
    const id = nonce();
    await s.reserve(who, 'password', limits(5), LEASE, id);
    expect(await s.settle(who, 'password', id, 'failure', limits(5), LEASE)).toEqual({
      status: 'settled',
      failedAttempts: 1,
      locked: false,
      lockedNow: false,
    });
    expect(await s.settle(who, 'password', id, 'failure', limits(5), LEASE)).toEqual({ status: 'unknown' });
    expect((await s.getUser(who, limits(5))).failed.password).toBe(1);
  });

  it('a late reserve of a released, settled, compensated or expired id answers gone and reserves nothing', async () => {
    const s = store();
    const who = subject();
    const released = nonce();
    await s.reserve(who, 'password', limits(5), LEASE, released);
    await s.settle(who, 'password', released, 'release', limits(5), LEASE, true);
    expect(await s.reserve(who, 'password', limits(5), LEASE, released)).toEqual({ status: 'gone' });

    // a reserve whose outcome the engine could not learn is compensated by a release first
    const compensated = nonce();
    expect(await s.settle(who, 'password', compensated, 'release', limits(5), LEASE)).toEqual({
      status: 'unknown',
    });
    expect(await s.reserve(who, 'password', limits(5), LEASE, compensated)).toEqual({ status: 'gone' });

    const expired = nonce();
    const r = await s.reserve(who, 'password', limits(5), 50, expired);
    if (r.status !== 'admitted') throw new Error('expected admitted');
    await redisTimePast(client, r.expiresAt);
    expect(await s.reserve(who, 'password', limits(5), LEASE, expired)).toEqual({ status: 'gone' });
    const state = await s.getUser(who, limits(5));
    expect(state.failed.password).toBe(1); // the expired lease, once
    expect(await fields(client, s.userKeys(who)[0], 'r:')).toEqual([]);
  });

  it('issue 8 #5: unlock applies expired leases first and clears in-flight reservations and every counter', async () => {
    const s = store();
    const who = subject();
    // abandoned reservation, admin lock, lease expires, admin unlock → active, nothing counted
    const abandoned = await s.reserve(who, 'password', limits(1), 100, nonce());
    if (abandoned.status !== 'admitted') throw new Error('expected admitted');
    const inflight = nonce();
    await s.reserve(who, 'otp_sms', limits(1, 3), LEASE, inflight);
    expect((await s.lock(who, limits(1))).changed).toBe(true);
    await redisTimePast(client, abandoned.expiresAt);
    expect(await s.unlock(who, limits(1, 3), LEASE)).toEqual({ changed: true });
    expect(await s.getUser(who, limits(1, 3))).toEqual({
      locked: false,
      failed: { password: 0, totp: 0, otp_sms: 0, otp_email: 0, recovery_code: 0 },
    });
    const [state] = s.userKeys(who);
    const left = Object.keys(await client.hgetall(state));
    expect(left.filter((k) => !k.startsWith('t:'))).toEqual([]); // only tombstones: no lock, count or reservation
    expect(await s.settle(who, 'otp_sms', inflight, 'failure', limits(1, 3), LEASE)).toEqual({
      status: 'unknown',
    });
    expect(await s.unlock(who, limits(1, 3), LEASE)).toEqual({ changed: false });
  });

  it('resetFactor applies leases, resets the factor and drops its in-flight reservations uncounted; the lock stays', async () => {
    const s = store();
    const who = subject();
    const pw = await s.reserve(who, 'password', limits(5), 100, nonce());
    const otp = await s.reserve(who, 'totp', limits(5), 100, nonce());
    if (pw.status !== 'admitted' || otp.status !== 'admitted') throw new Error('expected admitted');
    await s.lock(who, limits(5));
    await s.resetFactor(who, 'password', limits(5), LEASE);
    await redisTimePast(client, Math.max(pw.expiresAt, otp.expiresAt));
    const state = await s.getUser(who, limits(5));
    expect(state.locked).toBe(true);
    expect(state.failed.password).toBe(0); // dropped uncounted
    expect(state.failed.totp).toBe(1); // the other factor's lease still counts
  });

  it('issue 8 #6: a failed index write does not fail the lock, and the index converges on the next listing', async () => {
    const s = store();
    const who = subject();
    await client.set(indexKey(who), 'not a zset'); // every index write now fails (WRONGTYPE)
    const locked = await s.lock(who, limits(5));
    expect(locked.changed).toBe(true);
    expect(s.pendingOrgWrites()).toBeGreaterThan(0);
    await client.del(indexKey(who));
    const page = await s.listLocked(who.instance, who.org, limits(5), 10);
    expect(page.users).toEqual([{ userId: who.user, lockedAt: locked.lockedAt }]);
    expect(s.pendingOrgWrites()).toBe(0);
  });

  it("issue 8 #6: process A's late index removal does not drop process B's newer lock", async () => {
    const a = store();
    const b = store({ on: client2 });
    const who = subject();
    const first = await a.lock(who, limits(5));
    await client.del(indexKey(who));
    await client.set(indexKey(who), 'not a zset');
    expect(await a.unlock(who, limits(5), LEASE)).toEqual({ changed: true }); // its removal is queued
    expect(a.pendingOrgWrites()).toBeGreaterThan(0);
    await client.del(indexKey(who));
    await redisTimePast(client, first.lockedAt);
    const second = await b.lock(who, limits(5));
    expect(second.changed).toBe(true);
    await until('A retried its removal', async () => a.pendingOrgWrites() === 0);
    const page = await b.listLocked(who.instance, who.org, limits(5), 10);
    expect(page.users).toEqual([{ userId: who.user, lockedAt: second.lockedAt }]);
    // and an unlock is not listed
    await b.unlock(who, limits(5), LEASE);
    expect((await a.listLocked(who.instance, who.org, limits(5), 10)).users).toEqual([]);
  });

  it('issue 10: listLocked lists a user locked by an expired lease that nobody read', async () => {
    const s = store();
    const other = store({ on: client2 });
    const who = subject('🦊-late');
    const first = nonce();
    await s.reserve(who, 'password', limits(2), LEASE, first);
    await s.settle(who, 'password', first, 'failure', limits(2), LEASE);
    const r = await s.reserve(who, 'password', limits(2), 100, nonce()); // abandoned: its failure locks
    if (r.status !== 'admitted') throw new Error('expected admitted');
    await s.reserve({ ...who, user: 'calm' }, 'password', limits(2), 100, nonce()); // could not lock
    await redisTimePast(client, r.expiresAt);
    const page = await other.listLocked(who.instance, who.org, limits(2), 10);
    expect(page.users.map((u) => u.userId)).toEqual([who.user]);
    expect((await s.getUser(who, limits(2))).failed.password).toBe(2); // applied once, not twice
  });

  it('listLocked pages in UTF-8 byte order (ids outside the BMP too), with a cursor', async () => {
    const s = store();
    const org = subject();
    const ids = ['\u{1F600}', '\uFFFD', 'z', '\u00E9', 'A', '\u{10000}', '\uE000'];
    for (const user of ids) await s.lock({ ...org, user }, limits(5));
    const listed: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await s.listLocked(org.instance, org.org, limits(5), 3, cursor);
      listed.push(...page.users.map((u) => u.userId));
      cursor = page.nextCursor;
    } while (cursor !== undefined);
    expect(listed).toEqual([...ids].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
  });

  it('keeps a reservation that cannot lock off the org slot (no pending entry: one round trip)', async () => {
    const s = store();
    const who = subject();
    await s.reserve(who, 'password', limits(5), LEASE, nonce());
    const pending = `lg:{${encodeURIComponent(who.instance)}:org}:pending`;
    expect(await client.exists(pending)).toBe(0);
    await s.reserve(who, 'password', limits(2), LEASE, nonce()); // 2 in flight = limit: could lock
    expect(await client.exists(pending)).toBe(1);
  });

  it('idle expiry: an unlocked user’s keys vanish idleTtlMs after the last write, a locked user keeps them', async () => {
    const s = store({ idleTtlMs: 300 });
    const idle = subject('idle');
    const locked = { ...idle, user: 'locked' };
    const inflight = { ...idle, user: 'inflight' };
    for (const who of [idle, locked]) {
      const id = nonce();
      await s.reserve(who, 'password', limits(5), 200, id);
      await s.settle(who, 'password', id, 'failure', limits(5), 200);
    }
    await s.lock(locked, limits(5));
    const r = await s.reserve(inflight, 'password', limits(5), 1000, nonce());
    if (r.status !== 'admitted') throw new Error('expected admitted');
    const [is] = s.userKeys(inflight);
    // an in-flight lease is applied before its user can expire
    expect(Number(await client.pexpiretime(is))).toBeGreaterThanOrEqual(r.expiresAt + 300);
    await until('the idle user has no keys', async () => (await client.exists(...s.userKeys(idle))) === 0);
    const [ls] = s.userKeys(locked);
    expect(await client.pttl(ls)).toBe(-1); // persisted
    expect((await s.getUser(locked, limits(5))).locked).toBe(true);
    await until('the lease is past', async () => (await redisNow(client)) > r.expiresAt);
    expect((await s.getUser(inflight, limits(5))).failed.password).toBe(1);
    await until(
      'the expired-lease user has no keys after idleTtlMs',
      async () => (await client.exists(...s.userKeys(inflight))) === 0,
    );
  });

  it('idle expiry 0 keeps counters, while a user with only tombstones vanishes when they end', async () => {
    const s = store({ idleTtlMs: 0 });
    const counted = subject();
    const released = { ...counted, user: 'released' };
    const a = nonce();
    await s.reserve(counted, 'password', limits(5), 100, a);
    await s.settle(counted, 'password', a, 'failure', limits(5), 100);
    const b = nonce();
    await s.reserve(released, 'password', limits(5), 100, b);
    await s.settle(released, 'password', b, 'release', limits(5), 100);
    expect(await client.pttl(s.userKeys(counted)[0])).toBe(-1);
    await until(
      'the released user has no key',
      async () => (await client.exists(...s.userKeys(released))) === 0,
    );
    expect((await s.getUser(counted, limits(5))).failed.password).toBe(1);
    expect(await client.pttl(s.userKeys(counted)[0])).toBe(-1);
  });

  it('a bug is not an outage: a Lua error or a foreign key is not reported as StoreUnavailableError', async () => {
    const s = store();
    const who = subject();
    await client.set(s.userKeys(who)[0], 'not a hash'); // data that is not ours: WRONGTYPE in the script
    const error = await s.reserve(who, 'password', limits(5), LEASE, nonce()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(StoreUnavailableError);
    expect(String(error)).toContain('WRONGTYPE');
  });

  it('useStep (RFC 6238 §5.2): only a step later than every used one is accepted, per key', async () => {
    const s = store();
    const who = subject();
    expect(await s.useStep(who, 'totp', 100, 60_000)).toBe(true);
    expect(await s.useStep(who, 'totp', 100, 60_000)).toBe(false);
    expect(await s.useStep(who, 'totp', 99, 60_000)).toBe(false);
    expect(await s.useStep(who, 'totp', 101, 60_000)).toBe(true);
    expect(await s.useStep(who, 'totp', 100, 60_000)).toBe(false);
    expect(await s.useStep(who, 'other', 50, 60_000)).toBe(true);
    expect(await s.useStep({ ...who, user: 'u2' }, 'totp', 100, 60_000)).toBe(true);
  });
});
