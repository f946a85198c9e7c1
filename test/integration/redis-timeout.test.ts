/**
 * Issue 8 #1 at the store: a reserve that timed out (commandTimeoutMs) has an unknown outcome —
 * Redis still runs it. Its compensation (a release of the same nonce) and any resend of it are
 * harmless: nothing stays in flight, nothing is counted, a late reserve answers gone.
 * Runs on a Redis of its own, because CLIENT PAUSE stalls every client of the server.
 */
import { Redis } from 'ioredis';
import { RedisStore, StoreUnavailableError } from '../../src';
import type { Limits } from '../../src/core/subjects';
import { startStandalone, type RedisServerHandle } from '../helpers/redis-servers';

const limits: Limits = { maxPasswordAttempts: 2, maxOtpAttempts: 2 };
const LEASE_MS = 30_000;

describe('RedisStore: a timed-out reserve is an unknown outcome that compensation makes harmless', () => {
  let server: RedisServerHandle;
  let client: Redis;
  let admin: Redis;
  beforeAll(async () => {
    server = await startStandalone();
    client = new Redis(server.url);
    admin = new Redis(server.url);
  });
  afterAll(async () => {
    client?.disconnect();
    admin?.disconnect();
    await server?.stop();
  });

  it('stalled Redis: the reserve times out, runs later, is released by nonce; resend answers gone; nothing counted', async () => {
    const store = new RedisStore({ client, commandTimeoutMs: 100 });
    const who = { instance: 'timeout', org: 'org', user: 'u' };
    const id = 'timed-out-nonce-000001';
    await admin.call('CLIENT', 'PAUSE', '400', 'ALL');
    await expect(store.reserve(who, 'password', limits, LEASE_MS, id)).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    // the engine's compensation: a release of the same nonce, retried until Redis answers (each
    // try that times out is itself unknown, and may run later too)
    let released: Awaited<ReturnType<typeof store.settle>> | undefined;
    let tries = 0;
    while (released === undefined) {
      tries++;
      released = await store.settle(who, 'password', id, 'release', limits, LEASE_MS).catch((e: unknown) => {
        if (!(e instanceof StoreUnavailableError) || tries > 100) throw e;
        return undefined;
      });
    }
    // the first release that ran found the reservation (settled, nothing counted); a later one
    // answers unknown: either way nothing is counted
    expect(['settled', 'unknown']).toContain(released.status);
    // ioredis's blind resend of the reserve after a reconnect, or a second compensation
    expect(await store.reserve(who, 'password', limits, LEASE_MS, id)).toEqual({ status: 'gone' });
    expect(await store.settle(who, 'password', id, 'release', limits, LEASE_MS)).toEqual({
      status: 'unknown',
    });
    const fields = Object.keys(await client.hgetall(store.userKeys(who)[0]));
    expect(fields).toEqual([`t:${id}`]); // only the tombstone: nothing in flight, nothing counted
    expect(await store.getUser(who, limits)).toEqual({
      locked: false,
      failed: { password: 0, totp: 0, otp_sms: 0, otp_email: 0, recovery_code: 0 },
    });
    // and the user is not busy: two checks may be in flight at once again (max 2)
    expect((await store.reserve(who, 'password', limits, LEASE_MS, 'next-nonce-0000000001')).status).toBe(
      'admitted',
    );
    expect((await store.reserve(who, 'password', limits, LEASE_MS, 'next-nonce-0000000002')).status).toBe(
      'admitted',
    );
    await store.close();
  });
});
