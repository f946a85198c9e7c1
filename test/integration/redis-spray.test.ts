/**
 * Issue 10 "resource exhaustion" on Redis: a spray of 200,000 user names with one wrong password
 * each leaves one key per name (no index key per name, tombstones end with their lease), and all
 * of them disappear idleTtlMs after the spray. Runs on a Redis of its own, so DBSIZE is exact.
 */
import { Redis } from 'ioredis';
import { RedisStore } from '../../src';
import type { Limits } from '../../src/core/subjects';
import { startStandalone, type RedisServerHandle } from '../helpers/redis-servers';

const NAMES = 200_000;
const IN_FLIGHT = 200;
const LEASE_MS = 500;
const limits: Limits = { maxPasswordAttempts: 5, maxOtpAttempts: 5 };

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function usedMemory(info: string): number {
  const m = /^used_memory:(\d+)/m.exec(info);
  if (!m?.[1]) throw new Error('INFO memory has no used_memory');
  return Number(m[1]);
}

describe('RedisStore under a username spray (issue 10)', () => {
  let server: RedisServerHandle;
  let client: Redis;
  beforeAll(async () => {
    server = await startStandalone();
    client = new Redis(server.url);
  });
  afterAll(async () => {
    client?.disconnect();
    await server?.stop();
  });

  it('200,000 names with one failure each: one key per name (no index key per name), all gone idleTtlMs later', async () => {
    const idleTtlMs = 5_000;
    const store = new RedisStore({ client, idleTtlMs });
    await client.config('RESETSTAT');
    const before = usedMemory(await client.info('memory'));
    const start = Date.now();
    let next = 0;
    const worker = async () => {
      while (next < NAMES) {
        const i = next++;
        const subject = { instance: 'spray', org: 'org', user: `name-${i}` };
        const id = `nonce-${i}`.padEnd(22, 'x');
        const r = await store.reserve(subject, 'password', limits, LEASE_MS, id);
        if (r.status !== 'admitted') throw new Error(`name-${i}: ${r.status}`);
        await store.settle(subject, 'password', id, 'failure', limits, LEASE_MS);
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    const sprayMs = Date.now() - start;
    const keys = await client.dbsize();
    const bytes = usedMemory(await client.info('memory')) - before;
    // on a loaded machine the first names may expire before the spray ends: count them too
    const expired = await expiredKeys(client);
    console.log(
      `spray: ${NAMES} names in ${sprayMs} ms; ${keys} keys (+${expired} expired already); ` +
        `${(bytes / Math.max(1, keys)).toFixed(1)} B per name (INFO used_memory)`,
    );
    expect(keys + expired).toBe(NAMES);
    expect(await client.exists('lg:{spray:org}:locked', 'lg:{spray:org}:pending')).toBe(0);
    await until('every key expired', async () => (await client.dbsize()) === 0, idleTtlMs + 15_000);
    expect(await expiredKeys(client)).toBe(NAMES);
    await store.close();
  }, 180_000); // about 8 s on a quiet 2-core machine, 30–60 s when it is loaded
});

async function expiredKeys(client: Redis): Promise<number> {
  const m = /^expired_keys:(\d+)/m.exec(await client.info('stats'));
  if (!m?.[1]) throw new Error('INFO stats has no expired_keys');
  return Number(m[1]);
}
