/**
 * Issue 12, defence 2: spray throttling across users, through createLockout's checks, on every
 * store (memory, standalone Redis, Redis Cluster). The figures the issue asks for:
 * - one IP spraying 1,000 accounts (one wrong password each) → throttled after the limit,
 *   0 accounts locked;
 * - N concurrent failures from one IP → exactly `failures` evaluated, the rest 429 unevaluated;
 * - G1 still holds per user with the throttle on.
 */
import { randomUUID } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import {
  createLockout,
  hashPassword,
  MemoryStore,
  RedisStore,
  ThrottledError,
  type Lockout,
  type LockoutEvent,
  type LockoutOptions,
} from '../../src';
import { createTestCluster, createTestRedis } from '../helpers/redis-clients';

const FAST_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 };
const ORG = 'org-a';
const IP = '203.0.113.7';

type Client = Redis | Cluster;

interface StoreCase {
  readonly name: string;
  readonly store: () => Promise<LockoutOptions['store']>;
}

const clients: Client[] = [];
const lockouts: Lockout[] = [];

afterAll(async () => {
  await Promise.all(lockouts.map((l) => l.close()));
  await Promise.all(clients.map((c) => c.quit()));
});

const STORES: StoreCase[] = [
  { name: 'memory', store: async () => new MemoryStore() },
  {
    name: 'Redis',
    store: async () => {
      const client = await createTestRedis({ enableOfflineQueue: false });
      clients.push(client);
      return new RedisStore({ client });
    },
  },
  {
    name: 'Redis Cluster',
    store: async () => {
      const client = await createTestCluster({ enableOfflineQueue: false });
      clients.push(client);
      return new RedisStore({ client });
    },
  },
];

let hash: string;
beforeAll(async () => {
  hash = await hashPassword('right password', FAST_ARGON2);
});

/** A lockout of its own instance (a fresh counter) with spray throttling as given, and its events. */
async function make(
  storeCase: StoreCase,
  sprayThrottle: Record<string, unknown> | undefined,
  maxPasswordAttempts = 3,
): Promise<{ lockout: Lockout; events: LockoutEvent[] }> {
  const events: LockoutEvent[] = [];
  const lockout = createLockout({
    store: await storeCase.store(),
    instanceId: `spray-${randomUUID()}`,
    instance: { maxPasswordAttempts, maxOtpAttempts: 3 },
    password: FAST_ARGON2,
    onEvent: (e) => events.push(e),
    ...(sprayThrottle ? { defences: { sprayThrottle } } : {}),
  });
  lockouts.push(lockout);
  return { lockout, events };
}

/** Runs `n` checks (all at once when `parallel`), tallying what each answered. */
async function run(
  n: number,
  parallel: boolean,
  check: (i: number) => Promise<{ ok: boolean }>,
): Promise<{ failures: number; successes: number; throttled: number; retryAfterMs: number[] }> {
  const tally = { failures: 0, successes: 0, throttled: 0, retryAfterMs: [] as number[] };
  const one = async (i: number): Promise<void> => {
    try {
      const r = await check(i);
      if (r.ok) tally.successes += 1;
      else tally.failures += 1;
    } catch (error) {
      if (!(error instanceof ThrottledError)) throw error;
      tally.throttled += 1;
      tally.retryAfterMs.push(error.retryAfterMs);
    }
  };
  if (parallel) await Promise.all(Array.from({ length: n }, (_, i) => one(i)));
  else for (let i = 0; i < n; i += 1) await one(i);
  return tally;
}

async function lockedUsers(lockout: Lockout, users: string[]): Promise<number> {
  let locked = 0;
  for (const user of users) if ((await lockout.engine.getUserStatus(ORG, user)).locked) locked += 1;
  return locked;
}

describe.each(STORES)('spray throttling on $name', (storeCase) => {
  test('one IP spraying 1,000 accounts with one wrong password each: 20 evaluated, 980 throttled (429), 0 accounts locked, one throttle event', async () => {
    const { lockout, events } = await make(storeCase, {
      failures: 20,
      windowSeconds: 900,
      blockSeconds: 600,
    });
    const users = Array.from({ length: 1000 }, (_, i) => `victim-${i}`);
    const before = Date.now();
    const tally = await run(1000, false, (i) =>
      lockout.checks.password(ORG, users[i]!, hash, 'Winter2026!', { clientIp: IP }),
    );
    expect(tally).toMatchObject({ failures: 20, successes: 0, throttled: 980 });
    // Retry-After: the block's remaining time (600 s), never more.
    expect(Math.max(...tally.retryAfterMs)).toBeLessThanOrEqual(600_000);
    expect(Math.min(...tally.retryAfterMs)).toBeGreaterThan(590_000);
    expect(await lockedUsers(lockout, users)).toBe(0);
    const throttles = events.filter((e) => e.type === 'throttle');
    expect(throttles).toHaveLength(1);
    expect(throttles[0]).toMatchObject({ type: 'throttle', ip: `${IP}/32`, failures: 20 });
    expect((throttles[0] as { until: number }).until).toBeGreaterThanOrEqual(before + 600_000);
    // Another address is not throttled by it; the throttled one is, even with the right password.
    await expect(
      lockout.checks.password(ORG, 'victim-0', hash, 'right password', { clientIp: '198.51.100.1' }),
    ).resolves.toMatchObject({ ok: true });
    await expect(
      lockout.checks.password(ORG, 'victim-1', hash, 'right password', { clientIp: IP }),
    ).rejects.toBeInstanceOf(ThrottledError);
  });

  test('the same spray with the defence off: all 1,000 evaluated (the baseline), nothing throttled', async () => {
    const { lockout, events } = await make(storeCase, undefined);
    expect(lockout.throttle).toBeUndefined();
    const users = Array.from({ length: 1000 }, (_, i) => `victim-${i}`);
    const tally = await run(1000, false, (i) =>
      lockout.checks.check(ORG, users[i]!, 'password', () => false, { clientIp: IP }),
    );
    expect(tally).toMatchObject({ failures: 1000, throttled: 0 });
    expect(events.some((e) => e.type === 'throttle')).toBe(false);
  });

  test('200 concurrent wrong checks from one IP across 200 users: exactly `failures` (10) evaluated, 190 answered 429 unevaluated', async () => {
    const { lockout, events } = await make(storeCase, { failures: 10 });
    let evaluated = 0;
    const tally = await run(200, true, (i) =>
      lockout.checks.check(
        ORG,
        `user-${i}`,
        'password',
        async () => {
          evaluated += 1;
          await new Promise((r) => setTimeout(r, 5));
          return false;
        },
        { clientIp: IP },
      ),
    );
    expect(evaluated).toBe(10);
    expect(tally).toMatchObject({ failures: 10, throttled: 190 });
    expect(events.filter((e) => e.type === 'throttle')).toHaveLength(1);
  });

  test('G1 with the throttle on: 200 concurrent wrong checks of one user from 200 addresses evaluate exactly maxPasswordAttempts (5)', async () => {
    const { lockout } = await make(storeCase, { failures: 10 }, 5);
    let evaluated = 0;
    const outcomes = await Promise.allSettled(
      Array.from({ length: 200 }, (_, i) =>
        lockout.checks.check(
          ORG,
          'alice',
          'password',
          async () => {
            evaluated += 1;
            await new Promise((r) => setTimeout(r, 5));
            return false;
          },
          { clientIp: `198.51.100.${i}` },
        ),
      ),
    );
    expect(evaluated).toBe(5);
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(5);
    expect((await lockout.engine.getUserStatus(ORG, 'alice')).locked).toBe(true);
    // No address reached its own limit: none was throttled.
    expect(outcomes.some((o) => o.status === 'rejected' && o.reason instanceof ThrottledError)).toBe(false);
  });

  test('successes do not count and do not reset: 4 failures, 20 successes, 1 failure → throttled', async () => {
    const { lockout } = await make(storeCase, { failures: 5 });
    const opts = { clientIp: IP };
    for (let i = 0; i < 4; i += 1) {
      await expect(lockout.checks.password(ORG, `u${i}`, hash, 'wrong', opts)).resolves.toMatchObject({
        ok: false,
      });
    }
    for (let i = 0; i < 20; i += 1) {
      await expect(
        lockout.checks.password(ORG, `good-${i}`, hash, 'right password', opts),
      ).resolves.toMatchObject({ ok: true });
    }
    await expect(lockout.checks.password(ORG, 'u4', hash, 'wrong', opts)).resolves.toMatchObject({
      ok: false,
    });
    await expect(lockout.checks.password(ORG, 'good-0', hash, 'right password', opts)).rejects.toBeInstanceOf(
      ThrottledError,
    );
  });

  test('IPv6 is counted per /64 (and an IPv4-mapped address as its IPv4 address); refusals of a locked user give their points back', async () => {
    const { lockout, events } = await make(storeCase, { failures: 2 });
    const wrong = (user: string, clientIp: string) =>
      lockout.checks.check(ORG, user, 'password', () => false, { clientIp });
    await wrong('a', '2001:db8:1:2::1');
    await wrong('b', '2001:db8:1:2:ffff:ffff:ffff:fffe');
    await expect(wrong('c', '2001:db8:1:2::99')).rejects.toBeInstanceOf(ThrottledError);
    // Another /64 of the same /48 is another block.
    await expect(wrong('c', '2001:db8:1:3::1')).resolves.toMatchObject({ ok: false });
    expect(events.filter((e) => e.type === 'throttle').map((e) => (e as { ip: string }).ip)).toEqual([
      '2001:db8:1:2::/64',
    ]);

    await wrong('d', '::ffff:192.0.2.1');
    // A locked user's check is not a failure of the address: lock one with an admin lock.
    await lockout.engine.lockUser(ORG, 'locked-user');
    for (let i = 0; i < 5; i += 1) {
      await expect(
        lockout.checks.check(ORG, 'locked-user', 'password', () => false, { clientIp: '192.0.2.1' }),
      ).rejects.toMatchObject({ code: 'Errors.User.Locked' });
    }
    await wrong('e', '192.0.2.1');
    await expect(wrong('f', '192.0.2.1')).rejects.toBeInstanceOf(ThrottledError);
  });
});

test('createLockout refuses bad spray throttling options, naming the field', () => {
  expect(() => createLockout({ defences: { sprayThrottle: { failures: 0 } } })).toThrow(
    /defences\.sprayThrottle\.failures must be an integer from 1/,
  );
  expect(() => createLockout({ defences: { sprayThrottle: { window: 5 } as never } })).toThrow(
    /defences\.sprayThrottle\.window is not an option/,
  );
  expect(() => createLockout({ defences: { nope: {} } as never })).toThrow(/defences\.nope is not a defence/);
  expect(createLockout({ defences: { sprayThrottle: { enabled: false } } }).throttle).toBeUndefined();
  expect(createLockout({ defences: { sprayThrottle: {} } }).throttle?.config).toEqual({
    enabled: true,
    failures: 100,
    windowSeconds: 900,
    blockSeconds: 900,
    ipv6Prefix: 64,
  });
});
