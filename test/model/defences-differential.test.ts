/**
 * The defences of issue 12 in the two stores, compared: random sequences of checks (wrong
 * passwords from a small set, so that repeats happen; right ones; without a device token or with
 * one of three devices, two kept per user), admin locks and unlocks and
 * password changes run through one engine on a MemoryStore and one on a standalone Redis, with
 * temporary lockout and repeat-password forgiveness on. Every answer must be the same in both:
 * outcome, failedAttempts, locked, forgiven events, and lockedUntil − lockedAt (the lock's length,
 * which grows with consecutive locks). Locks last far longer than a run, so no time-dependent
 * expiry is involved (that is the contract suite's part, on an injected clock and on real time).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import type { Redis } from 'ioredis';
import { LockoutEngine, MemoryStore, RedisStore, type LockoutEvent } from '../../src';
import type { DefencesConfig } from '../../src/core/defences';
import { issueDeviceToken } from '../../src/core/device-token';
import { createTestRedis } from '../helpers/redis-clients';

type Op =
  | { kind: 'wrong'; user: number; password: number; device: number }
  | { kind: 'right'; user: number; device: number }
  | { kind: 'lock' | 'unlock' | 'changed'; user: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('wrong' as const),
      user: fc.nat(1),
      password: fc.nat(3),
      device: fc.nat(3),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('right' as const), user: fc.nat(1), device: fc.nat(3) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constantFrom('lock' as const, 'unlock' as const, 'changed' as const),
      user: fc.nat(1),
    }),
  },
);

const LOCK_MS = 3_600_000;

function defences(key: Buffer): DefencesConfig {
  return {
    values: {
      temporaryLockout: { enabled: true, durationMs: LOCK_MS, maxDurationMs: 4 * LOCK_MS },
      repeatPassword: { enabled: true, remember: 2 },
      deviceCookies: { enabled: true, maxDevices: 2 },
    },
    repeatPasswordKey: key,
    deviceTokens: TOKENS,
  };
}

/** Device cookies: the same keys in both engines; devices 1 to 3 of each user (0: no token). */
const TOKENS = { keys: [{ id: 'k', secret: randomBytes(32) }], maxAgeMs: 86_400_000 };
const DEVICE_IDS = ['', 'AAAAAAAAAAAAAAAAAAAAAA', 'BBBBBBBBBBBBBBBBBBBBBB', 'CCCCCCCCCCCCCCCCCCCCCC'];
function tokenOf(instance: string, user: string, device: number): string | undefined {
  if (device === 0) return undefined;
  return issueDeviceToken(TOKENS, { instance, org: 'o', user }, DEVICE_IDS[device]).token;
}

/** Runs `ops` on `engine`; the answers with times replaced by lengths. */
async function run(engine: LockoutEngine, events: LockoutEvent[], ops: readonly Op[]): Promise<unknown[]> {
  const instance = engine.instanceId;
  const out: unknown[] = [];
  for (const o of ops) {
    const user = `u${o.user}`;
    events.length = 0;
    try {
      switch (o.kind) {
        case 'wrong':
        case 'right': {
          const deviceToken = tokenOf(instance, user, o.device);
          const r = await engine.check('o', user, 'password', () => o.kind === 'right', {
            password: o.kind === 'wrong' ? `p${o.password}` : 'right',
            ...(deviceToken !== undefined ? { deviceToken } : {}),
          });
          out.push({
            outcome: r.outcome,
            ...(r.outcome === 'failure' ? { failedAttempts: r.failedAttempts, locked: r.locked } : {}),
            ...(r.outcome === 'locked' && r.lockedUntil !== undefined
              ? { length: r.lockedUntil - r.lockedAt }
              : {}),
          });
          break;
        }
        case 'lock':
          await engine.lockUser('o', user);
          out.push('locked');
          break;
        case 'unlock':
          await engine.unlockUser('o', user);
          out.push('unlocked');
          break;
        case 'changed':
          await engine.passwordChanged('o', user);
          out.push('changed');
          break;
      }
    } catch (error) {
      out.push({ error: (error as { code?: string }).code ?? String(error) });
    }
    out.push(
      events.map((e) =>
        e.type === 'lock'
          ? {
              type: e.type,
              reason: e.reason,
              scope: e.scope ?? null,
              length: e.lockedUntil !== undefined ? e.lockedUntil - e.lockedAt! : null,
            }
          : { type: e.type },
      ),
    );
    const s = await engine.getUserStatus('o', user);
    out.push({
      locked: s.locked,
      failed: s.failedAttempts.password,
      length: s.lockedUntil !== undefined ? s.lockedUntil - (s.lockedAt ?? 0) : null,
      scopes: (s.scopes ?? [])
        .map((sc) => ({
          scope: sc.scope,
          locked: sc.locked,
          failed: sc.failedAttempts.password,
          length: sc.lockedUntil !== undefined ? sc.lockedUntil - (sc.lockedAt ?? 0) : null,
        }))
        .sort((a, b) => (a.scope < b.scope ? -1 : 1)),
    });
  }
  return out;
}

describe('defences: MemoryStore and RedisStore give the same answers', () => {
  let client: Redis;
  const key = randomBytes(32);

  beforeAll(async () => {
    client = await createTestRedis();
  });
  afterAll(() => {
    client.disconnect();
  });

  it('for random sequences of checks, locks, unlocks and password changes', async () => {
    const redisStore = new RedisStore({ client });
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 40 }), async (ops) => {
          const instanceId = `diff-${randomUUID()}`;
          const memEvents: LockoutEvent[] = [];
          const redisEvents: LockoutEvent[] = [];
          const common = {
            instanceId,
            defaults: { maxPasswordAttempts: 6, maxOtpAttempts: 6 },
            defences: defences(key),
          };
          const memStore = new MemoryStore({ purgeIntervalMs: 0 });
          const mem = new LockoutEngine({ ...common, store: memStore, onEvent: (e) => memEvents.push(e) });
          const red = new LockoutEngine({
            ...common,
            store: redisStore,
            onEvent: (e) => redisEvents.push(e),
          });
          try {
            expect(await run(red, redisEvents, ops)).toEqual(await run(mem, memEvents, ops));
          } finally {
            mem.close();
            red.close();
            await memStore.close();
          }
        }),
        { numRuns: 200, seed: 20261202 },
      );
    } finally {
      await redisStore.close();
    }
  });
});
