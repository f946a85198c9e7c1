/**
 * A real Redis outage on each HTTP face (issue 10; G4): the middleware (createLockout on a
 * RedisStore: a guarded login route and the mounted check/attempt routers) and the sidecar each
 * run against a private redis-server that is then stopped. Checks answer 503 code 14 and nothing
 * passes unchecked (fail-closed); once the server is back they work again by themselves, with no
 * restart of the app. (The proxy has its own in proxy-redis.test.ts.)
 */
import { randomUUID } from 'node:crypto';
import express from 'express';
import { Redis } from 'ioredis';
import request from 'supertest';
import { createLockout, RedisStore, type Lockout } from '../../src';
import { parseConfig } from '../../src/sidecar/config';
import { createLogger } from '../../src/sidecar/logger';
import { startSidecar, type SidecarHandle } from '../../src/sidecar/server';
import { hashPassword } from '../../src/verify';
import { startStandalone, type RedisServerHandle } from '../helpers/redis-servers';

const TOKEN = 'outage-token-000000001';
const FAST_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 };
const STORE_UNAVAILABLE = { code: 14, message: 'Lockout store unavailable' };

/** Polls `fn` until it answers true (every 50 ms, up to 15 s): no fixed sleep. */
async function until(what: string, fn: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let hash: string;
beforeAll(async () => {
  hash = await hashPassword('right', FAST_ARGON2);
});

describe('middleware (createLockout on a RedisStore)', () => {
  let server: RedisServerHandle;
  let client: Redis;
  let lockout: Lockout;
  let app: express.Express;
  const handler = jest.fn((req: express.Request, res: express.Response) => {
    res.status(req.body.password === 'right' ? 200 : 401).json({ ok: req.body.password === 'right' });
  });

  beforeAll(async () => {
    server = await startStandalone();
    // As the README recommends: fail fast while Redis is away, reconnect for ever.
    client = new Redis(server.url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: () => 50,
    });
    client.on('error', () => undefined);
    await new Promise<void>((resolve) => client.once('ready', () => resolve()));
    lockout = createLockout({
      store: new RedisStore({ client, commandTimeoutMs: 500 }),
      instanceId: `outage-mw-${randomUUID()}`,
      instance: { maxPasswordAttempts: 3, maxOtpAttempts: 3 },
      password: FAST_ARGON2,
      tokens: [{ name: 'login', token: TOKEN, org: 'org-a', permissions: ['lockout.check'] }],
      onError: () => undefined,
    });
    app = express();
    app.post(
      '/login',
      express.json(),
      lockout.guard('password', { user: (req) => req.body.userId }),
      handler,
    );
    app.use('/lockgate', lockout.routers.checks());
  });
  afterAll(async () => {
    await lockout?.close();
    client?.disconnect();
    await server?.stop();
  });

  const login = (userId: string, password: string) => request(app).post('/login').send({ userId, password });
  const check = (userId: string, password: string) =>
    request(app)
      .post('/lockgate/v1/checks/password')
      .set('Authorization', `Bearer ${TOKEN}`)
      .send({ userId, password, encodedHash: hash });
  const reserve = (userId: string) =>
    request(app)
      .post('/lockgate/v1/attempts')
      .set('Authorization', `Bearer ${TOKEN}`)
      .send({ userId, factor: 'password' });

  it('fail-closed while the server is stopped, working again by itself once it is back', async () => {
    // Up: a wrong password counts, a reservation is made.
    expect((await login('alice', 'wrong')).status).toBe(401);
    expect((await check('bob', 'wrong')).status).toBe(401);
    const attempt = await reserve('carol');
    expect(attempt.status).toBe(201);
    handler.mockClear();

    await server.halt();
    for (const password of ['right', 'wrong']) {
      const guarded = await login('alice', password);
      expect(guarded.status).toBe(503);
      expect(guarded.body).toMatchObject(STORE_UNAVAILABLE);
      const checked = await check('bob', password);
      expect(checked.status).toBe(503);
      expect(checked.body).toMatchObject(STORE_UNAVAILABLE);
      expect(JSON.stringify(checked.body)).not.toMatch(/ECONNREFUSED|Stream|ioredis|closed/i);
    }
    expect(handler).not.toHaveBeenCalled();
    expect((await reserve('dave')).status).toBe(503);
    const settle = await request(app)
      .post(`/lockgate/v1/attempts/${attempt.body.attemptId as string}/failure`)
      .set('Authorization', `Bearer ${TOKEN}`);
    expect(settle.status).toBe(503);
    expect(settle.body.code).toBe(14);

    await server.restart();
    // No restart of the app: the client reconnects and the next checks work.
    await until(
      'the guarded route to answer again',
      async () => (await login('erin', 'right')).status === 200,
    );
    expect((await login('erin', 'wrong')).status).toBe(401);
    expect((await check('frank', 'right')).status).toBe(200);
    const wrong = await check('frank', 'wrong');
    expect(wrong.status).toBe(401);
    expect(wrong.body.details[1].failedAttempts).toBe('1');
    expect((await reserve('grace')).status).toBe(201);
    // The restarted server kept nothing (it runs without persistence): alice starts from zero.
    const status = await lockout.engine.getUserStatus('default', 'alice');
    expect(status.failedAttempts.password).toBe(0);
  });
});

describe('sidecar on a RedisStore', () => {
  let server: RedisServerHandle;
  let sidecar: SidecarHandle;

  beforeAll(async () => {
    server = await startStandalone();
    sidecar = await startSidecar(
      parseConfig({
        server: { port: 0 },
        instance: { id: `outage-sc-${randomUUID()}`, maxPasswordAttempts: 3 },
        store: { type: 'redis', redis: { url: server.url, commandTimeoutMs: 500 } },
        password: { argon2: FAST_ARGON2 },
        auth: {
          tokens: [
            {
              name: 'root',
              token: TOKEN,
              org: 'org-a',
              permissions: ['lockout.check', 'user.read', 'user.write'],
            },
          ],
        },
      }),
      { logger: createLogger('silent') },
    );
  });
  afterAll(async () => {
    await sidecar?.close();
    await server?.stop();
  });

  const post = async (path: string, body?: unknown) => {
    const res = await fetch(`${sidecar.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    return { status: res.status, body: (await res.json()) as any };
  };
  const check = (userId: string, password: string) =>
    post('/v1/checks/password', { userId, password, encodedHash: hash });

  it('fail-closed while the server is stopped, working again by itself once it is back', async () => {
    expect((await check('alice', 'wrong')).status).toBe(401);
    const attempt = await post('/v1/attempts', { userId: 'carol', factor: 'password' });
    expect(attempt.status).toBe(201);

    await server.halt();
    for (const password of ['right', 'wrong']) {
      const res = await check('alice', password);
      expect(res.status).toBe(503);
      expect(res.body).toMatchObject(STORE_UNAVAILABLE);
    }
    expect((await post('/v1/attempts', { userId: 'dave', factor: 'password' })).status).toBe(503);
    expect((await post(`/v1/attempts/${attempt.body.attemptId as string}/success`)).status).toBe(503);
    expect((await post('/v1/otp/sms', { userId: 'dave' })).status).toBe(503);
    expect((await fetch(`${sidecar.url}/readyz`)).status).toBe(503);

    await server.restart();
    await until('/readyz to answer 200', async () => (await fetch(`${sidecar.url}/readyz`)).status === 200);
    expect((await check('erin', 'right')).status).toBe(200);
    const wrong = await check('erin', 'wrong');
    expect(wrong.status).toBe(401);
    expect(wrong.body.details[1].failedAttempts).toBe('1');
    expect((await post('/v1/attempts', { userId: 'grace', factor: 'password' })).status).toBe(201);
  });
});
