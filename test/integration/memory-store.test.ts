/**
 * What only the MemoryStore has (issue 10): idle expiry on its injected clock, the maxUsers bound
 * with LRU eviction of unlocked users without checks in flight, onWarning, stats().
 * The rules every store shares are in test/contract/.
 */
import { InvalidArgumentError, MemoryStore, StoreUnavailableError } from '../../src';

const limits = (n: number) => ({ maxPasswordAttempts: n, maxOtpAttempts: n });
const user = (u: string) => ({ instance: 'i', org: 'o', user: u });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function clockedStore(options: ConstructorParameters<typeof MemoryStore>[0] = {}) {
  const clock = { t: 1_700_000_000_000 };
  const warnings: string[] = [];
  const store = new MemoryStore({
    now: () => clock.t,
    purgeIntervalMs: 0,
    onWarning: (m) => warnings.push(m),
    ...options,
  });
  return { store, clock, warnings };
}

async function fail(store: MemoryStore, u: string, id: string, max = 10): Promise<void> {
  const r = await store.reserve(user(u), 'password', limits(max), 30_000, id);
  if (r.status !== 'admitted') throw new Error(`expected admitted, got ${r.status}`);
  await store.settle(user(u), 'password', id, 'failure', limits(max), 30_000);
}

describe('MemoryStore idle expiry (idleTtlMs)', () => {
  test('an unlocked user is forgotten idleTtlMs after its last write, not before', async () => {
    const { store, clock } = clockedStore({ idleTtlMs: 60_000 });
    await fail(store, 'a', 'n1');
    clock.t += 59_999;
    expect((await store.getUser(user('a'), limits(10))).failed.password).toBe(1);
    await fail(store, 'a', 'n2'); // a write: the idle period starts again
    clock.t += 59_999;
    expect((await store.getUser(user('a'), limits(10))).failed.password).toBe(2);
    clock.t += 1;
    expect((await store.getUser(user('a'), limits(10))).failed.password).toBe(0);
    expect(store.hasState(user('a'))).toBe(false);
    expect(store.stats().users).toBe(0);
  });

  test('locked users never expire; idleTtlMs 0 never forgets anyone', async () => {
    const { store, clock } = clockedStore({ idleTtlMs: 1000 });
    await fail(store, 'locked', 'n1', 1);
    clock.t += 365 * 86_400_000;
    expect(await store.getUser(user('locked'), limits(1))).toMatchObject({ locked: true });

    const strict = clockedStore({ idleTtlMs: 0 });
    await fail(strict.store, 'b', 'n1');
    strict.clock.t += 10 * 365 * 86_400_000;
    expect((await strict.store.getUser(user('b'), limits(10))).failed.password).toBe(1);
  });

  test('a reservation in flight keeps the user until its lease is applied: no failure that locks is lost', async () => {
    const { store, clock } = clockedStore({ idleTtlMs: 1000, purgeIntervalMs: 0 });
    await fail(store, 'c', 'n1', 2);
    await store.reserve(user('c'), 'password', limits(2), 60_000, 'n2');
    clock.t += 59_999; // long past idleTtlMs, but the lease runs
    expect((await store.getUser(user('c'), limits(2))).failed.password).toBe(1);
    clock.t += 1;
    expect(await store.getUser(user('c'), limits(2))).toMatchObject({
      locked: true,
      failed: { password: 2 },
    });
  });

  test('the purge timer forgets idle users and ended tombstones, and applies ended leases', async () => {
    const { store, clock } = clockedStore({ idleTtlMs: 5000, purgeIntervalMs: 10 });
    try {
      for (let i = 0; i < 50; i++) await fail(store, `u${i}`, `n${i}`);
      await store.reserve(user('leased'), 'otp_sms', limits(1), 1000, 'lease');
      expect(store.stats().users).toBe(51);
      // every idle period, tombstone (30 s) and the lease end; nobody reads any of these users
      clock.t += 31_000;
      const deadline = Date.now() + 10_000;
      while (store.stats().users > 1 && Date.now() < deadline) await sleep(10);
      expect(store.stats().users).toBe(1);
      // the pass that dropped the idle users applied the lease under the limit it was reserved
      // with (1: it locks); applied only now, under these limits (0), it would not lock
      const page = await store.listLocked('i', 'o', limits(0), 10);
      expect(page.users).toEqual([{ userId: 'leased', lockedAt: clock.t }]);
    } finally {
      await store.close();
    }
  });

  test('a lease longer than idleTtlMs that the purge applies is counted, not forgotten as idle', async () => {
    const { store, clock } = clockedStore({ idleTtlMs: 1000, purgeIntervalMs: 10 });
    try {
      await fail(store, 'c', 'n1', 3);
      await store.reserve(user('c'), 'password', limits(3), 60_000, 'n2');
      await fail(store, 'idle', 'n3');
      clock.t += 60_000;
      // the idle user going away shows that a whole purge pass ran at the new time
      const deadline = Date.now() + 10_000;
      while (store.stats().users > 1 && Date.now() < deadline) await sleep(10);
      expect(store.stats().users).toBe(1);
      expect((await store.getUser(user('c'), limits(3))).failed.password).toBe(2);
    } finally {
      await store.close();
    }
  });
});

describe('MemoryStore bound (maxUsers)', () => {
  test('past maxUsers the least recently used unlocked user is evicted, counted and warned about once a minute', async () => {
    const { store, clock, warnings } = clockedStore({ maxUsers: 3 });
    await fail(store, 'a', 'n1');
    await fail(store, 'b', 'n2');
    await fail(store, 'c', 'n3');
    await store.getUser(user('a'), limits(10)); // a is now more recently used than b
    await fail(store, 'd', 'n4');
    expect(store.stats()).toEqual({ users: 3, maxUsers: 3, evictions: 1 });
    expect(store.hasState(user('b'))).toBe(false);
    expect((await store.getUser(user('a'), limits(10))).failed.password).toBe(1);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/maxUsers/);
    await fail(store, 'e', 'n5');
    expect(store.stats().evictions).toBe(2);
    expect(warnings).toHaveLength(1); // rate-limited
    clock.t += 60_000;
    await fail(store, 'f', 'n6');
    expect(store.stats()).toEqual({ users: 3, maxUsers: 3, evictions: 3 });
    expect(warnings).toHaveLength(2);
  });

  test('locked users and users with a check in flight are never evicted; when only they remain, new users get 503', async () => {
    const { store, warnings } = clockedStore({ maxUsers: 3 });
    await store.lock(user('locked'), limits(5));
    await store.reserve(user('busy'), 'password', limits(5), 30_000, 'n1');
    await fail(store, 'plain', 'n2');
    await fail(store, 'newcomer', 'n3'); // evicts plain, the only one that can go
    expect(store.hasState(user('plain'))).toBe(false);
    await store.lock(user('newcomer'), limits(5));
    await expect(store.reserve(user('x'), 'password', limits(5), 30_000, 'n4')).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    await expect(store.lock(user('y'), limits(5))).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(store.stats()).toEqual({ users: 3, maxUsers: 3, evictions: 1 });
    expect(warnings).toHaveLength(1); // one a minute, eviction and refusal alike
    // tracked users keep working, and reads of unknown users add nothing
    expect((await store.settle(user('busy'), 'password', 'n1', 'success', limits(5), 30_000)).status).toBe(
      'settled',
    );
    expect(await store.getUser(user('z'), limits(5))).toMatchObject({ locked: false });
    expect((await store.listLocked('i', 'o', limits(5), 10)).users.map((u) => u.userId)).toEqual([
      'locked',
      'newcomer',
    ]);
  });

  test('options are validated', () => {
    expect(() => new MemoryStore({ maxUsers: 0 })).toThrow(InvalidArgumentError);
    expect(() => new MemoryStore({ maxUsers: 1.5 })).toThrow(InvalidArgumentError);
    expect(() => new MemoryStore({ idleTtlMs: -1 })).toThrow(InvalidArgumentError);
    expect(() => new MemoryStore({ purgeIntervalMs: Number.NaN })).toThrow(InvalidArgumentError);
  });
});
