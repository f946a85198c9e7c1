import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Request, type Response } from 'express';
import type { Redis } from 'ioredis';
import { createLockout, MemoryStore, RedisStore, type Lockout, type LockoutStore } from '../../src';
import { createTestRedis } from '../helpers/redis-clients';

/**
 * A client that goes away in the middle of the handler: the attempt is settled or released
 * exactly once, from whatever the handler does after the disconnect.
 */

interface Deferred<T = void> {
  promise: Promise<T>;
  resolve: (value: T) => void;
}
function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

async function until(condition: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the settlement');
    await new Promise((r) => setTimeout(r, 5));
  }
}

type Then = 'answer401' | 'answer200' | 'throw' | 'abandon';

interface Harness {
  lockout: Lockout;
  url: string;
  settle: jest.SpyInstance;
  /** Sends a login for `user`, aborts it once the handler runs, lets the handler go on with `then`. */
  abortMidHandler(user: string, then: Then): Promise<void>;
  close(): Promise<void>;
}

async function harness(store: LockoutStore, max: number, leaseMs?: number): Promise<Harness> {
  const lockout = createLockout({
    store,
    instanceId: `mw-abort-${randomUUID()}`,
    instance: { maxPasswordAttempts: max, maxOtpAttempts: max },
    ...(leaseMs ? { leaseMs } : {}),
    onError: () => undefined,
  });
  const settle = jest.spyOn(lockout.engine, 'settle');
  let step: {
    entered: Deferred;
    closed: Deferred;
    go: Deferred<Then>;
    done: Deferred;
  };
  const app = express();
  app.post(
    '/login',
    express.json(),
    lockout.guard('password', { user: (req) => req.body.userId }),
    async (req: Request, res: Response) => {
      const s = step;
      res.on('close', () => s.closed.resolve());
      s.entered.resolve();
      const then = await s.go.promise;
      try {
        if (then === 'throw') throw new Error('handler failed after the client left');
        if (then === 'answer401') res.status(401).json({ error: 'invalid_credentials' });
        if (then === 'answer200') res.status(200).json({ ok: true });
        // 'abandon': the handler sees the client is gone and answers nothing
      } finally {
        setImmediate(() => s.done.resolve());
      }
    },
  );
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    lockout,
    url: `http://127.0.0.1:${port}`,
    settle,
    async abortMidHandler(user, then) {
      step = { entered: deferred(), closed: deferred(), go: deferred(), done: deferred() };
      const body = JSON.stringify({ userId: user });
      const req = http.request({
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/login',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      });
      const clientGone = new Promise<void>((resolve) => req.on('error', () => resolve()));
      req.on('response', () => {
        throw new Error('the client got a response although it went away');
      });
      req.end(body);
      await step.entered.promise;
      req.destroy();
      await clientGone;
      await step.closed.promise; // the server saw the disconnect
      const before = settle.mock.calls.length;
      step.go.resolve(then);
      await step.done.promise;
      if (then !== 'abandon') await until(() => settle.mock.calls.length > before);
      await lockout.drain();
      // time for a second settlement, which must not come
      await new Promise((r) => setTimeout(r, 50));
      await lockout.drain();
    },
    async close() {
      await lockout.close();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

async function password(lockout: Lockout, user: string) {
  const s = await lockout.engine.getUserStatus('default', user);
  return { failed: s.failedAttempts.password, locked: s.locked };
}

describe.each([
  ['memory', async () => ({ store: new MemoryStore() as LockoutStore, done: async () => {} })],
  [
    'redis',
    async () => {
      const client: Redis = await createTestRedis({ enableOfflineQueue: false });
      return {
        store: new RedisStore({ client }) as LockoutStore,
        done: async () => void (await client.quit()),
      };
    },
  ],
])('client disconnect mid-handler (%s store)', (_name, makeStore) => {
  let h: Harness;
  let done: () => Promise<void>;
  beforeEach(async () => {
    const s = await makeStore();
    done = s.done;
    h = await harness(s.store, 1);
  });
  afterEach(async () => {
    await h.close();
    await done();
  });

  test('the handler answers 401 after the client left: one failure, counted once', async () => {
    await h.abortMidHandler('u1', 'answer401');
    expect(h.settle).toHaveBeenCalledTimes(1);
    expect(h.settle.mock.calls[0]![1]).toBe('failure');
    expect(await password(h.lockout, 'u1')).toEqual({ failed: 1, locked: true });
  });

  test('the handler answers 200 after the client left: success, counted once', async () => {
    await h.abortMidHandler('u1', 'answer200');
    expect(h.settle.mock.calls.map((c) => c[1])).toEqual(['success']);
    expect(await password(h.lockout, 'u1')).toEqual({ failed: 0, locked: false });
    // nothing left in flight: with a limit of 1 a new attempt is admitted
    const r = await h.lockout.engine.reserve('default', 'u1', 'password');
    expect(r.status).toBe('admitted');
  });

  test('the handler throws after the client left: released once, uncounted', async () => {
    await h.abortMidHandler('u1', 'throw');
    expect(h.settle.mock.calls.map((c) => c[1])).toEqual(['release']);
    expect(await password(h.lockout, 'u1')).toEqual({ failed: 0, locked: false });
    const r = await h.lockout.engine.reserve('default', 'u1', 'password');
    expect(r.status).toBe('admitted');
  });

  test('several aborted requests in a row: each settled exactly once', async () => {
    await h.abortMidHandler('u2', 'throw');
    await h.abortMidHandler('u2', 'answer200');
    await h.abortMidHandler('u2', 'answer401');
    expect(h.settle.mock.calls.map((c) => c[1])).toEqual(['release', 'success', 'failure']);
    expect(await password(h.lockout, 'u2')).toEqual({ failed: 1, locked: true });
  });
});

test('the handler answers nothing after the client left: the lease counts it as a failure, once', async () => {
  // The store's clock is the test's: the lease (1 s, the least allowed) ends when the test says.
  let now = Date.now();
  const h = await harness(new MemoryStore({ now: () => now }), 3, 1000);
  try {
    await h.abortMidHandler('u1', 'abandon');
    expect(h.settle).not.toHaveBeenCalled();
    now += 1001;
    expect(await password(h.lockout, 'u1')).toEqual({ failed: 1, locked: false });
    expect(await password(h.lockout, 'u1')).toEqual({ failed: 1, locked: false });
  } finally {
    await h.close();
  }
});
