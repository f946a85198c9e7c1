import { randomUUID } from 'node:crypto';
import express from 'express';
import { Redis } from 'ioredis';
import request from 'supertest';
import {
  createLockout,
  RedisStore,
  StoreUnavailableError,
  type Lockout,
  type LockoutErrorContext,
  type LockoutOptions,
} from '../../src';
import { startStandalone, type RedisServerHandle } from '../helpers/redis-servers';

/**
 * G4 through the guard and the checks: a real redis-server of this test is stopped (an outage)
 * and started again. Fail-closed answers 503 and lets nothing through; fail-open lets requests
 * through unguarded and reports each one; both recover by themselves.
 */

let server: RedisServerHandle;
let client: Redis;

beforeAll(async () => {
  server = await startStandalone();
});
afterAll(async () => {
  await server.stop();
});

beforeEach(async () => {
  client = new Redis(server.url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => 50,
  });
  client.on('error', () => undefined);
  await new Promise<void>((resolve) => client.once('ready', () => resolve()));
});
afterEach(() => {
  client.disconnect();
});

function setup(options: LockoutOptions) {
  const reports: LockoutErrorContext[] = [];
  const lockout = createLockout({
    store: new RedisStore({ client, commandTimeoutMs: 500 }),
    instanceId: `mw-outage-${randomUUID()}`,
    instance: { maxPasswordAttempts: 3, maxOtpAttempts: 3 },
    onError: (_error, context) => reports.push(context),
    ...options,
  });
  const handler = jest.fn((req: express.Request, res: express.Response) => {
    const ok = req.body.password === 'right';
    res.status(ok ? 200 : 401).json({ ok, guarded: req.lockout?.guarded });
  });
  const app = express();
  app.post('/login', express.json(), lockout.guard('password', { user: (req) => req.body.userId }), handler);
  return { lockout, reports, handler, app };
}

async function outage(): Promise<void> {
  await server.halt();
}

async function recover(): Promise<void> {
  await server.restart();
  const deadline = Date.now() + 10_000;
  while (client.status !== 'ready') {
    if (Date.now() > deadline) throw new Error('the client did not reconnect');
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function closeAll(lockout: Lockout): Promise<void> {
  await lockout.close();
}

test('fail-closed (default): 503 while Redis is down, nothing reaches the handler; recovers alone', async () => {
  const { lockout, reports, handler, app } = setup({});
  try {
    await request(app).post('/login').send({ userId: 'u1', password: 'wrong' }).expect(401);
    await outage();
    for (const password of ['wrong', 'right']) {
      const res = await request(app).post('/login').send({ userId: 'u1', password }).expect(503);
      expect(res.body).toMatchObject({ code: 14, details: [{ id: 'Errors.Store.Unavailable' }] });
    }
    expect(handler).toHaveBeenCalledTimes(1);
    expect(reports).toEqual([
      expect.objectContaining({ operation: 'reserve', outcome: 'refused' }),
      expect.objectContaining({ operation: 'reserve', outcome: 'refused' }),
    ]);
    await expect(lockout.checks.check('default', 'u1', 'password', async () => true)).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );

    await recover();
    const res = await request(app).post('/login').send({ userId: 'u1', password: 'right' }).expect(200);
    expect(res.body).toEqual({ ok: true, guarded: true });
  } finally {
    await closeAll(lockout);
  }
});

test('fail-open: requests pass unguarded while Redis is down (reported); guarded again after', async () => {
  const { lockout, reports, handler, app } = setup({ onStoreError: 'fail-open' });
  try {
    await outage();
    // more wrong passwords than the limit: nothing can be counted, so nothing locks
    for (let i = 0; i < 4; i++) {
      const res = await request(app).post('/login').send({ userId: 'u1', password: 'wrong' }).expect(401);
      expect(res.body).toEqual({ ok: false, guarded: false });
    }
    const ok = await request(app).post('/login').send({ userId: 'u1', password: 'right' }).expect(200);
    expect(ok.body).toEqual({ ok: true, guarded: false });
    expect(handler).toHaveBeenCalledTimes(5);
    expect(reports).toHaveLength(5);
    expect(reports.every((r) => r.operation === 'reserve' && r.outcome === 'unguarded')).toBe(true);

    // checks evaluate without counting
    await expect(lockout.checks.check('default', 'u1', 'password', async () => false)).resolves.toEqual({
      ok: false,
      failedAttempts: 0,
      locked: false,
    });

    await recover();
    const res = await request(app).post('/login').send({ userId: 'u1', password: 'wrong' }).expect(401);
    expect(res.body).toEqual({ ok: false, guarded: true });
    expect((await lockout.engine.getUserStatus('default', 'u1')).failedAttempts.password).toBe(1);
  } finally {
    await closeAll(lockout);
  }
});
