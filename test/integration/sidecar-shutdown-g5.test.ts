/**
 * A graceful stop keeps G5 (the sidecar and the middleware): a store write whose outcome is unknown when the sidecar is told to
 * stop is still made before the store closes (within shutdownTimeoutMs). Before, close() stopped
 * the compensation queue at once: a reserve that timed out while Redis held writes stayed in
 * Redis unreleased and, at its lease end, counted a failure for a user who had typed the right
 * password (with max 1: a lock).
 *
 * Real parts: a redis-server this test starts, made to hold every write (CLIENT PAUSE WRITE:
 * reads such as the settings read still answer, so the reserve is what times out), the sidecar
 * called over HTTP.
 */
import { randomUUID } from 'node:crypto';
import express from 'express';
import { Redis } from 'ioredis';
import request from 'supertest';
import { createLockout, LockoutEngine } from '../../src';
import { parseConfig } from '../../src/sidecar/config';
import { createLogger } from '../../src/sidecar/logger';
import { startSidecar } from '../../src/sidecar/server';
import { RedisStore } from '../../src/store/redis/redis-store';
import { hashPassword } from '../../src/verify';
import { redisCommand, startStandalone, type RedisServerHandle } from '../helpers/redis-servers';

const TOKEN = 'shutdown-token-0000001';
const FAST_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 };
const LEASE = 2000;
const PAUSE = 1200;

/** Past the lease end, read through a clean connection: the user has no failure and no lock. */
async function expectNoFailureAfterLease(instanceId: string, org: string, user: string): Promise<void> {
  await new Promise((r) => setTimeout(r, LEASE + 200));
  const client = new Redis(server.url);
  const store = new RedisStore({ client });
  const engine = new LockoutEngine({
    store,
    instanceId,
    defaults: { maxPasswordAttempts: 1, maxOtpAttempts: 1 },
  });
  try {
    const status = await engine.getUserStatus(org, user);
    expect(status.locked).toBe(false);
    expect(status.failedAttempts.password).toBe(0);
  } finally {
    engine.close();
    await store.close();
    client.disconnect();
  }
}

let server: RedisServerHandle;
beforeAll(async () => {
  server = await startStandalone();
});
afterAll(async () => {
  await server?.stop();
});

test('close() makes the pending release of a timed-out reserve before closing the store: no failure is counted', async () => {
  const instanceId = `shutdown-${randomUUID()}`;
  const hash = await hashPassword('right', FAST_ARGON2);
  const sidecar = await startSidecar(
    parseConfig({
      server: { port: 0 },
      instance: { id: instanceId, maxPasswordAttempts: 1 },
      leaseMs: LEASE,
      shutdownTimeoutMs: 10_000,
      store: { type: 'redis', redis: { url: server.url, commandTimeoutMs: 200 } },
      password: { argon2: FAST_ARGON2 },
      auth: { tokens: [{ name: 'login', token: TOKEN, org: 'org-a', permissions: ['lockout.check'] }] },
    }),
    { logger: createLogger('silent') },
  );
  let closed = false;
  try {
    // The right password while Redis holds writes longer than the command timeout: 503, and
    // the reserve (which Redis runs once the pause ends) is queued for release.
    await redisCommand(server.port, ['CLIENT', 'PAUSE', String(PAUSE), 'WRITE']);
    const paused = Date.now();
    const res = await fetch(`${sidecar.url}/v1/checks/password`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ userId: 'ursula', password: 'right', encodedHash: hash }),
    });
    expect(res.status).toBe(503);
    expect(sidecar.engine.compensationStats().pending).toBe(1);

    // Told to stop while Redis still holds writes: close() waits for the release.
    expect(Date.now() - paused).toBeLessThan(PAUSE);
    await sidecar.close();
    closed = true;
    expect(Date.now() - paused).toBeGreaterThanOrEqual(PAUSE - 50);
    expect(sidecar.engine.compensationStats()).toMatchObject({ pending: 0, compensated: 1, abandoned: 0 });
  } finally {
    if (!closed) await sidecar.close();
  }

  await expectNoFailureAfterLease(instanceId, 'org-a', 'ursula');
});

test('the middleware: lockout.close() makes the pending release too', async () => {
  const instanceId = `shutdown-mw-${randomUUID()}`;
  const client = new Redis(server.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1 });
  client.on('error', () => undefined);
  await new Promise<void>((resolve) => client.once('ready', () => resolve()));
  const lockout = createLockout({
    store: new RedisStore({ client, commandTimeoutMs: 200 }),
    instanceId,
    leaseMs: LEASE,
    instance: { maxPasswordAttempts: 1, maxOtpAttempts: 1 },
    onError: () => undefined,
  });
  const app = express();
  app.post(
    '/login',
    express.json(),
    lockout.guard('password', { user: (req) => req.body.userId }),
    (req, res) => {
      res.status(req.body.password === 'right' ? 200 : 401).end();
    },
  );
  try {
    await redisCommand(server.port, ['CLIENT', 'PAUSE', String(PAUSE), 'WRITE']);
    const paused = Date.now();
    expect((await request(app).post('/login').send({ userId: 'una', password: 'right' })).status).toBe(503);
    expect(lockout.engine.compensationStats().pending).toBe(1);
    await lockout.close();
    expect(Date.now() - paused).toBeGreaterThanOrEqual(PAUSE - 50);
    expect(lockout.engine.compensationStats()).toMatchObject({ pending: 0, compensated: 1, abandoned: 0 });
    await expectNoFailureAfterLease(instanceId, 'default', 'una');
  } finally {
    await lockout.close();
    client.disconnect();
  }
});
