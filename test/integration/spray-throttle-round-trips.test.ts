/**
 * Issue 12: what spray throttling costs in Redis commands per check, read from a MONITOR
 * connection on the shared test Redis (every command of this test's instance, settings reads
 * left out: they depend on the settings cache, not on the check). With the defence off a check
 * sends exactly what it sends without the defence; on, it adds one command before the check
 * (the point taken) and, only when the check did not fail, one more beside the settle (the point
 * given back). A throttled check sends that one command and nothing else.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { createLockout, RedisStore, ThrottledError, type Lockout } from '../../src';
import { createTestRedis } from '../helpers/redis-clients';

const ORG = 'org-a';
let client: Redis;
let monitor: Redis;
const seen: string[][] = [];
const lockouts: Lockout[] = [];

beforeAll(async () => {
  client = await createTestRedis({ enableOfflineQueue: false });
  const watcher = await createTestRedis();
  monitor = await watcher.monitor();
  await watcher.quit();
  // Commands a script runs are shown too (source "lua"): only what the client sent is counted.
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    if (source !== 'lua') seen.push(args);
  });
});

afterAll(async () => {
  await Promise.all(lockouts.map((l) => l.close()));
  monitor.disconnect();
  await client.quit();
});

/** The commands `action` sends that name `instance` (settings reads excluded), once MONITOR has shown them all. */
async function commandsOf(instance: string, action: () => Promise<unknown>): Promise<string[]> {
  seen.length = 0;
  await action();
  const marker = `marker-${randomUUID()}`;
  await client.echo(marker);
  while (!seen.some((args) => args.includes(marker))) await new Promise((r) => setImmediate(r));
  return seen
    .filter((args) => args.some((a) => a.includes(instance)) && !args.some((a) => a.endsWith(':settings')))
    .map(
      (args) => `${args[0]!.toLowerCase()} ${args.find((a) => a.includes(instance))!.replace(instance, 'I')}`,
    );
}

function make(sprayThrottle: boolean): { lockout: Lockout; instance: string } {
  const instance = `rt-${randomUUID()}`;
  const lockout = createLockout({
    store: new RedisStore({ client }),
    instanceId: instance,
    instance: { maxPasswordAttempts: 100, maxOtpAttempts: 100 },
    ...(sprayThrottle ? { defences: { sprayThrottle: { failures: 3 } } } : {}),
  });
  lockouts.push(lockout);
  return { lockout, instance };
}

const check = (lockout: Lockout, user: string, ok: boolean) =>
  lockout.checks.check(ORG, user, 'password', () => ok, { clientIp: '203.0.113.9' });

test('commands per check: off = as without the defence; on = +1 (failure), +2 (success: the point is given back); throttled = 1 and no reserve', async () => {
  const off = make(false);
  const on = make(true);
  // Warm up: the scripts are loaded (EVALSHA thereafter) and the settings cached.
  await check(off.lockout, 'warm', true);
  await check(on.lockout, 'warm', true);

  const offFailure = await commandsOf(off.instance, () => check(off.lockout, 'u1', false));
  const offSuccess = await commandsOf(off.instance, () => check(off.lockout, 'u2', true));
  const onFailure = await commandsOf(on.instance, () => check(on.lockout, 'u1', false));
  const onSuccess = await commandsOf(on.instance, () => check(on.lockout, 'u2', true));

  const spray = (cmds: string[]) => cmds.filter((c) => c.includes(':spray:'));
  const lockoutOnly = (cmds: string[]) => cmds.filter((c) => !c.includes(':spray:'));
  // Off: nothing of the throttle.
  expect(spray(offFailure)).toEqual([]);
  expect(spray(offSuccess)).toEqual([]);
  // On: the lockout's own commands are the same as off, plus the throttle's.
  expect(lockoutOnly(onFailure)).toEqual(lockoutOnly(offFailure));
  expect(lockoutOnly(onSuccess)).toEqual(lockoutOnly(offSuccess));
  expect(spray(onFailure)).toHaveLength(1);
  expect(spray(onSuccess)).toHaveLength(2);
  // The point is taken before the reservation.
  expect(onFailure[0]).toContain(':spray:');

  // Two more failures reach the limit (3): the last one throttles the address — one more round
  // trip, once per block: rate-limiter-flexible's set, a MULTI/EXEC of SET and PTTL.
  const limit = await commandsOf(on.instance, async () => {
    await check(on.lockout, 'u3', false);
    await check(on.lockout, 'u4', false);
  });
  expect(spray(limit).map((c) => c.split(' ')[0])).toEqual(['evalsha', 'evalsha', 'set', 'pttl']);
  // Throttled: one command (the refused take), no reservation, no settle.
  const throttled = await commandsOf(on.instance, () =>
    expect(check(on.lockout, 'u5', false)).rejects.toBeInstanceOf(ThrottledError),
  );
  expect(throttled).toHaveLength(1);
  expect(throttled[0]).toContain(':spray:');
});
