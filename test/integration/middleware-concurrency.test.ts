import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type RequestHandler } from 'express';
import type { Redis } from 'ioredis';
import request from 'supertest';
import { createLockout, RedisStore, type Lockout } from '../../src';
import { createTestRedis } from '../helpers/redis-clients';

/**
 * G1 and G2 through the guard, on the shared test Redis: 100 requests of one user at once.
 */

const PARALLEL = 100;
const MAX = 5;

let clients: Redis[] = [];
let servers: http.Server[] = [];
let lockouts: Lockout[] = [];

afterEach(async () => {
  await Promise.all(lockouts.map((l) => l.close()));
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  await Promise.all(clients.map((c) => c.quit()));
  clients = [];
  servers = [];
  lockouts = [];
});

/** A lockout on its own ioredis client (as another process would have), for `instanceId`. */
async function redisLockout(instanceId: string): Promise<Lockout> {
  const client = await createTestRedis({ enableOfflineQueue: false });
  clients.push(client);
  const lockout = createLockout({
    store: new RedisStore({ client }),
    instanceId,
    instance: { maxPasswordAttempts: MAX, maxOtpAttempts: MAX },
  });
  lockouts.push(lockout);
  return lockout;
}

/** Starts an app with a guarded `POST /login`, answering from `handler` after `delayMs`. */
async function serve(lockout: Lockout, handler: RequestHandler): Promise<string> {
  const app = express();
  app.post('/login', express.json(), lockout.guard('password', { user: (req) => req.body.userId }), handler);
  const server = http.createServer(app);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tally(statuses: number[]): Record<number, number> {
  const counts: Record<number, number> = {};
  for (const s of statuses) counts[s] = (counts[s] ?? 0) + 1;
  return counts;
}

test('G1: 100 parallel wrong logins of one user run the handler exactly 5 times, then the user is locked', async () => {
  const lockout = await redisLockout(`mw-g1-${randomUUID()}`);
  let executions = 0;
  const url = await serve(lockout, async (_req, res) => {
    executions++;
    await delay(20);
    res.status(401).json({ error: 'invalid_credentials' });
  });

  const responses = await Promise.all(
    Array.from({ length: PARALLEL }, () => request(url).post('/login').send({ userId: 'victim' })),
  );
  const counts = tally(responses.map((r) => r.status));
  expect(executions).toBe(MAX);
  expect(counts[401]).toBe(MAX);
  expect((counts[429] ?? 0) + (counts[423] ?? 0)).toBe(PARALLEL - MAX);
  for (const r of responses.filter((x) => x.status === 429)) {
    expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
  }
  const status = await lockout.engine.getUserStatus('default', 'victim');
  expect(status.locked).toBe(true);
  expect(status.failedAttempts.password).toBe(MAX);
  // and stays locked: nothing more is evaluated
  await request(url).post('/login').send({ userId: 'victim' }).expect(423);
  expect(executions).toBe(MAX);
});

test('G1 across two processes sharing Redis: still exactly 5 evaluations', async () => {
  const instanceId = `mw-g1x-${randomUUID()}`;
  let executions = 0;
  const handler: RequestHandler = async (_req, res) => {
    executions++;
    await delay(20);
    res.status(401).json({});
  };
  const urls = [
    await serve(await redisLockout(instanceId), handler),
    await serve(await redisLockout(instanceId), handler),
  ];
  const responses = await Promise.all(
    Array.from({ length: PARALLEL }, (_, i) =>
      request(urls[i % 2]!)
        .post('/login')
        .send({ userId: 'victim' }),
    ),
  );
  expect(executions).toBe(MAX);
  expect(tally(responses.map((r) => r.status))[401]).toBe(MAX);
  expect((await lockouts[0]!.engine.getUserStatus('default', 'victim')).locked).toBe(true);
});

test('G2: 100 parallel correct logins never lock; the surplus is 429 with Retry-After', async () => {
  const lockout = await redisLockout(`mw-g2-${randomUUID()}`);
  let executions = 0;
  const url = await serve(lockout, async (_req, res) => {
    executions++;
    await delay(20);
    res.status(200).json({ ok: true });
  });
  // the user has failed before: 4 of 5 attempts used, so only one check may be in flight
  for (let i = 0; i < MAX - 1; i++) {
    const r = await lockout.engine.reserve('default', 'alice', 'password');
    if (r.status !== 'admitted') throw new Error('setup: not admitted');
    await lockout.engine.settle(r.reservation, 'failure');
  }

  const responses = await Promise.all(
    Array.from({ length: PARALLEL }, () => request(url).post('/login').send({ userId: 'alice' })),
  );
  const counts = tally(responses.map((r) => r.status));
  expect(Object.keys(counts).sort()).toEqual(['200', '429']);
  expect(counts[200]).toBe(executions);
  expect(executions).toBeGreaterThanOrEqual(1);
  for (const r of responses.filter((x) => x.status === 429)) {
    expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(r.body).toMatchObject({ code: 8, details: [{ id: 'Errors.Lockout.Busy' }] });
  }
  const status = await lockout.engine.getUserStatus('default', 'alice');
  expect(status.locked).toBe(false);
  expect(status.failedAttempts.password).toBe(0);

  // and with a fresh counter, 100 at once: at most 5 in flight, never locked
  const again = await Promise.all(
    Array.from({ length: PARALLEL }, () => request(url).post('/login').send({ userId: 'bob' })),
  );
  const counts2 = tally(again.map((r) => r.status));
  expect(counts2[423]).toBeUndefined();
  expect(counts2[200]).toBeGreaterThanOrEqual(MAX);
  expect((counts2[200] ?? 0) + (counts2[429] ?? 0)).toBe(PARALLEL);
  expect((await lockout.engine.getUserStatus('default', 'bob')).locked).toBe(false);
});
