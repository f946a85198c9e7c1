import express, { type Request, type RequestHandler, type Response } from 'express';
import request from 'supertest';
import {
  createLockout,
  InvalidArgumentError,
  MemoryStore,
  type Lockout,
  type LockoutErrorContext,
  type LockoutOptions,
  type Settlement,
} from '../../src';
import { createSwitchableStore } from '../fixtures/switchable-store';

const ERROR_DETAIL = 'type.googleapis.com/zitadel.v1.ErrorDetail';
const ORG = 'default';

const lockouts: Lockout[] = [];
afterAll(async () => {
  await Promise.all(lockouts.map((l) => l.close()));
});

function makeLockout(options: LockoutOptions = {}): Lockout {
  const lockout = createLockout({
    instance: { maxPasswordAttempts: 3, maxOtpAttempts: 3 },
    onError: () => undefined,
    ...options,
  });
  lockouts.push(lockout);
  return lockout;
}

/** An app with `POST /login` guarded for the password of `req.body.userId`, answering with `handler`. */
function loginApp(lockout: Lockout, handler: RequestHandler, guardOptions = {}) {
  const app = express();
  app.post(
    '/login',
    express.json(),
    lockout.guard('password', { user: (req) => req.body.userId, ...guardOptions }),
    handler,
  );
  return app;
}

const answer =
  (status: number): RequestHandler =>
  (_req, res) => {
    res.status(status).json({ status });
  };

async function failures(lockout: Lockout, user: string, org = ORG) {
  const s = await lockout.engine.getUserStatus(org, user);
  return { password: s.failedAttempts.password, locked: s.locked };
}

describe('guard: settling from the response status', () => {
  test('401 and 403 count as failures; the limit locks; a locked user gets 423 without the handler', async () => {
    const lockout = makeLockout();
    const handler = jest.fn(answer(401));
    const app = loginApp(lockout, handler);

    await request(app).post('/login').send({ userId: 'u1' }).expect(401);
    expect(await failures(lockout, 'u1')).toEqual({ password: 1, locked: false });
    handler.mockImplementation(answer(403));
    await request(app).post('/login').send({ userId: 'u1' }).expect(403);
    await request(app).post('/login').send({ userId: 'u1' }).expect(403);
    expect(await failures(lockout, 'u1')).toEqual({ password: 3, locked: true });

    const locked = await request(app).post('/login').send({ userId: 'u1' }).expect(423);
    expect(locked.body).toEqual({
      code: 9,
      message: 'User is locked',
      details: [{ '@type': ERROR_DETAIL, id: 'Errors.User.Locked', message: 'User is locked' }],
    });
    expect(handler).toHaveBeenCalledTimes(3);
  });

  test('2xx resets the counter; other users are not touched', async () => {
    const lockout = makeLockout();
    const handler = jest.fn(answer(401));
    const app = loginApp(lockout, handler);
    await request(app).post('/login').send({ userId: 'u1' }).expect(401);
    await request(app).post('/login').send({ userId: 'u1' }).expect(401);
    await request(app).post('/login').send({ userId: 'u2' }).expect(401);
    handler.mockImplementation(answer(204));
    await request(app).post('/login').send({ userId: 'u1' }).expect(204);
    expect(await failures(lockout, 'u1')).toEqual({ password: 0, locked: false });
    expect(await failures(lockout, 'u2')).toEqual({ password: 1, locked: false });
  });

  test('a 500, a 400 or a 404 releases the attempt uncounted', async () => {
    const lockout = makeLockout({ instance: { maxPasswordAttempts: 1, maxOtpAttempts: 1 } });
    const settle = jest.spyOn(lockout.engine, 'settle');
    let status = 500;
    const app = loginApp(lockout, (_req, res) => {
      res.status(status).json({});
    });
    for (const s of [500, 400, 404, 302]) {
      status = s;
      await request(app).post('/login').send({ userId: 'u1' }).expect(s);
    }
    expect(settle.mock.calls.map((c) => c[1])).toEqual(['release', 'release', 'release', 'release']);
    expect(await failures(lockout, 'u1')).toEqual({ password: 0, locked: false });
  });

  test('a handler that throws (sync or async) releases the attempt exactly once', async () => {
    const lockout = makeLockout({ instance: { maxPasswordAttempts: 1, maxOtpAttempts: 1 } });
    const settle = jest.spyOn(lockout.engine, 'settle');
    const app = express();
    app.use(express.json());
    const guard = lockout.guard('password', { user: (req) => req.body.userId });
    app.post('/sync', guard, () => {
      throw new Error('boom');
    });
    app.post('/async', guard, async () => {
      await new Promise((r) => setTimeout(r, 5));
      throw new Error('boom');
    });
    const errors: unknown[] = [];
    app.use((error: unknown, _req: Request, res: Response, _next: unknown) => {
      errors.push(error);
      res.status(500).json({ error: 'internal' });
    });

    await request(app).post('/sync').send({ userId: 'u1' }).expect(500);
    await request(app).post('/async').send({ userId: 'u1' }).expect(500);
    // with a limit of 1, an attempt left in flight would make the next one busy (429)
    await request(app).post('/sync').send({ userId: 'u1' }).expect(500);
    expect(errors).toHaveLength(3);
    expect(settle).toHaveBeenCalledTimes(3);
    expect(settle.mock.calls.map((c) => c[1])).toEqual(['release', 'release', 'release']);
    expect(await failures(lockout, 'u1')).toEqual({ password: 0, locked: false });
  });

  test("express's own error answer (no error handler) also releases", async () => {
    const lockout = makeLockout();
    const settle = jest.spyOn(lockout.engine, 'settle');
    const app = loginApp(lockout, async () => {
      throw new Error('boom');
    });
    await request(app).post('/login').send({ userId: 'u1' }).expect(500);
    expect(settle.mock.calls.map((c) => c[1])).toEqual(['release']);
  });

  test('the settlement is written before the response leaves', async () => {
    const lockout = makeLockout();
    const app = loginApp(lockout, answer(401));
    for (let i = 1; i <= 3; i++) {
      const res = await request(app).post('/login').send({ userId: 'u1' });
      expect(res.status).toBe(401);
      // no waiting: the counter is already up to date
      expect(await failures(lockout, 'u1')).toEqual({ password: i, locked: i === 3 });
    }
    await request(app).post('/login').send({ userId: 'u1' }).expect(423);
  });

  test('a custom outcome function classifies the status', async () => {
    const lockout = makeLockout();
    const app = loginApp(lockout, answer(422), {
      outcome: (status: number) => (status === 422 ? 'failure' : 'release'),
    });
    await request(app).post('/login').send({ userId: 'u1' }).expect(422);
    expect(await failures(lockout, 'u1')).toEqual({ password: 1, locked: false });
  });
});

describe('guard: explicit settlement with req.lockout', () => {
  test('failure() answers the settlement, and wins over the response status', async () => {
    const lockout = makeLockout();
    const settle = jest.spyOn(lockout.engine, 'settle');
    const results: Settlement[] = [];
    const app = loginApp(lockout, async (req, res) => {
      const lockoutAttempt = req.lockout!;
      expect(lockoutAttempt).toMatchObject({ factor: 'password', orgId: ORG, userId: 'u1', guarded: true });
      expect(typeof lockoutAttempt.attemptId).toBe('string');
      results.push(await lockoutAttempt.failure());
      expect(lockoutAttempt.outcome).toBe('failure');
      // a later call answers the first settlement; nothing more is counted
      results.push(await lockoutAttempt.success());
      res.status(200).json({ ok: false, failedAttempts: results[0]!.failedAttempts });
    });
    const res = await request(app).post('/login').send({ userId: 'u1' }).expect(200);
    expect(res.body).toEqual({ ok: false, failedAttempts: 1 });
    expect(results).toEqual([
      { failedAttempts: 1, locked: false },
      { failedAttempts: 1, locked: false },
    ]);
    expect(settle).toHaveBeenCalledTimes(1);
    expect(await failures(lockout, 'u1')).toEqual({ password: 1, locked: false });
  });

  test('a settle called without await, just after the answer, still wins and is done before it leaves', async () => {
    const lockout = makeLockout();
    const app = loginApp(lockout, (req, res) => {
      res.status(200).json({});
      void req.lockout!.failure();
    });
    await request(app).post('/login').send({ userId: 'u1' }).expect(200);
    expect(await failures(lockout, 'u1')).toEqual({ password: 1, locked: false });
  });

  test('release() before a 401 answer: nothing is counted', async () => {
    const lockout = makeLockout();
    const settle = jest.spyOn(lockout.engine, 'settle');
    const app = loginApp(lockout, async (req, res) => {
      await req.lockout!.release();
      res.status(401).json({});
    });
    await request(app).post('/login').send({ userId: 'u1' }).expect(401);
    expect(settle.mock.calls.map((c) => c[1])).toEqual(['release']);
    expect(await failures(lockout, 'u1')).toEqual({ password: 0, locked: false });
  });

  test('the failure that reaches the limit reports locked: true', async () => {
    const lockout = makeLockout({ instance: { maxPasswordAttempts: 2, maxOtpAttempts: 2 } });
    const app = loginApp(lockout, async (req, res) => {
      const s = await req.lockout!.failure();
      res.status(401).json(s);
    });
    expect((await request(app).post('/login').send({ userId: 'u1' })).body).toEqual({
      failedAttempts: 1,
      locked: false,
    });
    expect((await request(app).post('/login').send({ userId: 'u1' })).body).toEqual({
      failedAttempts: 2,
      locked: true,
    });
    await request(app).post('/login').send({ userId: 'u1' }).expect(423);
  });
});

describe('guard: the subject', () => {
  test('an extractor that throws, or returns no or a bad id, answers 400 in the error body', async () => {
    const lockout = makeLockout();
    const handler = jest.fn(answer(200));
    const app = express();
    app.use(express.json());
    app.post(
      '/throws',
      lockout.guard('password', {
        user: () => {
          throw new Error('secret internal text');
        },
      }),
      handler,
    );
    app.post(
      '/rejects',
      lockout.guard('password', { user: async () => Promise.reject(new Error('x')) }),
      handler,
    );
    app.post('/body', lockout.guard('password', { user: (req) => req.body?.userId }), handler);
    app.post(
      '/org',
      lockout.guard('password', {
        org: (req) => String(req.headers['x-org'] ?? ''),
        user: (req) => req.body.userId,
      }),
      handler,
    );

    const thrown = await request(app).post('/throws').send({}).expect(400);
    expect(thrown.body).toEqual({
      code: 3,
      message: 'The user could not be read from the request',
      details: [
        {
          '@type': ERROR_DETAIL,
          id: 'Errors.Request.Subject',
          message: 'The user could not be read from the request',
        },
      ],
    });
    expect(JSON.stringify(thrown.body)).not.toContain('secret internal text');
    await request(app).post('/rejects').send({}).expect(400);

    const missing = await request(app).post('/body').send({}).expect(400);
    expect(missing.body.details[0]).toMatchObject({ id: 'Errors.Id.Missing', message: 'userId is required' });
    const long = await request(app)
      .post('/body')
      .send({ userId: 'x'.repeat(257) })
      .expect(400);
    expect(long.body.details[0].id).toBe('Errors.Id.TooLong');
    const control = await request(app).post('/body').send({ userId: 'a\u0000b' }).expect(400);
    expect(control.body.details[0].id).toBe('Errors.Id.Invalid');
    const number = await request(app).post('/body').send({ userId: 42 }).expect(400);
    expect(number.body.code).toBe(3);

    const noOrg = await request(app).post('/org').send({ userId: 'u1' }).expect(400);
    expect(noOrg.body.details[0]).toMatchObject({ message: 'orgId is required' });
    await request(app).post('/org').set('x-org', 'org-b').send({ userId: 'u1' }).expect(200);
    expect(handler).toHaveBeenCalledTimes(1);
  });

  test('counters are per org: an org extractor and a constant org', async () => {
    const lockout = makeLockout();
    const app = express();
    app.use(express.json());
    app.post('/a', lockout.guard('password', { org: 'org-a', user: (req) => req.body.userId }), answer(401));
    app.post(
      '/b',
      lockout.guard('password', { org: async () => 'org-b', user: (req) => req.body.userId }),
      answer(401),
    );
    await request(app).post('/a').send({ userId: 'u1' }).expect(401);
    await request(app).post('/b').send({ userId: 'u1' }).expect(401);
    await request(app).post('/b').send({ userId: 'u1' }).expect(401);
    expect(await failures(lockout, 'u1', 'org-a')).toEqual({ password: 1, locked: false });
    expect(await failures(lockout, 'u1', 'org-b')).toEqual({ password: 2, locked: false });
    expect(await failures(lockout, 'u1', ORG)).toEqual({ password: 0, locked: false });
  });

  test('factors count separately; guards.* are shorthands', async () => {
    const lockout = makeLockout();
    const app = express();
    app.use(express.json());
    app.post('/pw', lockout.guards.password({ user: (req) => req.body.userId }), answer(401));
    app.post('/totp', lockout.guards.totp({ user: (req) => req.body.userId }), answer(401));
    app.post('/sms', lockout.guards.otpSms({ user: (req) => req.body.userId }), answer(401));
    await request(app).post('/pw').send({ userId: 'u1' }).expect(401);
    await request(app).post('/totp').send({ userId: 'u1' }).expect(401);
    await request(app).post('/totp').send({ userId: 'u1' }).expect(401);
    await request(app).post('/sms').send({ userId: 'u1' }).expect(401);
    const s = await lockout.engine.getUserStatus(ORG, 'u1');
    expect(s.failedAttempts).toEqual({ password: 1, totp: 2, otp_sms: 1, otp_email: 0, recovery_code: 0 });
  });
});

describe('guard: refusals', () => {
  test('busy: 429 with Retry-After in the error body, the handler does not run', async () => {
    const lockout = makeLockout({ instance: { maxPasswordAttempts: 1, maxOtpAttempts: 1 } });
    const handler = jest.fn(answer(200));
    const app = loginApp(lockout, handler);
    const held = await lockout.engine.reserve(ORG, 'u1', 'password');
    const res = await request(app).post('/login').send({ userId: 'u1' }).expect(429);
    expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(res.body).toMatchObject({
      code: 8,
      details: [{ '@type': ERROR_DETAIL, id: 'Errors.Lockout.Busy' }],
    });
    expect(handler).not.toHaveBeenCalled();
    if (held.status === 'admitted') await lockout.engine.settle(held.reservation, 'release');
    await request(app).post('/login').send({ userId: 'u1' }).expect(200);
  });

  test('a custom locked response hides the lock (status, body, headers); the handler does not run', async () => {
    const disguise = {
      status: 401,
      body: { error: 'invalid_credentials' },
      headers: { 'Cache-Control': 'no-store' },
    };
    const lockout = makeLockout({
      instance: { maxPasswordAttempts: 1, maxOtpAttempts: 1 },
      lockedResponse: disguise,
    });
    const handler = jest.fn((_req: Request, res: Response) => {
      res.status(401).json({ error: 'invalid_credentials' });
    });
    const app = loginApp(lockout, handler);
    const wrong = await request(app).post('/login').send({ userId: 'u1' }).expect(401);
    const locked = await request(app).post('/login').send({ userId: 'u1' }).expect(401);
    expect(locked.body).toEqual(wrong.body);
    expect(locked.headers['cache-control']).toBe('no-store');
    expect(handler).toHaveBeenCalledTimes(1);
  });

  test('a busy response disguised as 401 has no Retry-After; a guard overrides createLockout', async () => {
    const lockout = makeLockout({
      instance: { maxPasswordAttempts: 1, maxOtpAttempts: 1 },
      busyResponse: { status: 401, body: { error: 'invalid_credentials' } },
    });
    const app = express();
    app.use(express.json());
    app.post('/a', lockout.guard('password', { user: (req) => req.body.userId }), answer(200));
    app.post(
      '/b',
      lockout.guard('password', {
        user: (req) => req.body.userId,
        busyResponse: (_req, res, refusal) => {
          res.status(503).json({ reason: refusal.reason, standard: refusal.standard.status });
        },
      }),
      answer(200),
    );
    await lockout.engine.reserve(ORG, 'u1', 'password');
    const a = await request(app).post('/a').send({ userId: 'u1' }).expect(401);
    expect(a.headers['retry-after']).toBeUndefined();
    expect(a.body).toEqual({ error: 'invalid_credentials' });
    const b = await request(app).post('/b').send({ userId: 'u1' }).expect(503);
    expect(b.body).toEqual({ reason: 'busy', standard: 429 });
  });

  test('store down, fail-closed (default): 503 in the error body, reported to onError', async () => {
    const store = createSwitchableStore();
    const reports: LockoutErrorContext[] = [];
    const lockout = makeLockout({ store, onError: (_e, ctx) => reports.push(ctx) });
    const handler = jest.fn(answer(200));
    const app = loginApp(lockout, handler);
    store.down = true;
    const res = await request(app).post('/login').send({ userId: 'u1' }).expect(503);
    expect(res.body).toEqual({
      code: 14,
      message: 'Lockout store unavailable',
      details: [
        { '@type': ERROR_DETAIL, id: 'Errors.Store.Unavailable', message: 'Lockout store unavailable' },
      ],
    });
    expect(handler).not.toHaveBeenCalled();
    expect(reports).toEqual([
      expect.objectContaining({ operation: 'reserve', outcome: 'refused', factor: 'password', userId: 'u1' }),
    ]);
    store.down = false;
    await request(app).post('/login').send({ userId: 'u1' }).expect(200);
  });

  test('store down, fail-open: the request passes unguarded (req.lockout.guarded false), reported', async () => {
    const store = createSwitchableStore();
    const reports: LockoutErrorContext[] = [];
    const lockout = makeLockout({
      store,
      onStoreError: 'fail-open',
      onError: (_e, ctx) => reports.push(ctx),
      unavailableResponse: { status: 599 },
    });
    const seen: unknown[] = [];
    const app = loginApp(lockout, async (req, res) => {
      seen.push({ guarded: req.lockout?.guarded, settlement: await req.lockout?.failure() });
      res.status(401).json({});
    });
    store.down = true;
    await request(app).post('/login').send({ userId: 'u1' }).expect(401);
    expect(seen).toEqual([
      {
        guarded: false,
        settlement: expect.objectContaining({ failedAttempts: 0, locked: false, enforced: false }),
      },
    ]);
    expect(reports).toEqual([expect.objectContaining({ operation: 'reserve', outcome: 'unguarded' })]);
    store.down = false;
    expect(await failures(lockout, 'u1')).toEqual({ password: 0, locked: false });
    await request(app).post('/login').send({ userId: 'u1' }).expect(401);
    expect(await failures(lockout, 'u1')).toEqual({ password: 1, locked: false });
  });

  test('the store goes down between reserve and settle: the answer still leaves, reported unsettled, the settle compensated', async () => {
    const store = createSwitchableStore();
    const reports: LockoutErrorContext[] = [];
    const lockout = makeLockout({ store, onError: (_e, ctx) => reports.push(ctx) });
    try {
      const app = loginApp(lockout, (_req, res) => {
        store.down = true;
        res.status(401).json({ error: 'invalid' });
      });
      await request(app).post('/login').send({ userId: 'u1' }).expect(401);
      expect(reports).toEqual([expect.objectContaining({ operation: 'settle', outcome: 'unsettled' })]);
      expect(lockout.engine.compensationStats()).toMatchObject({ pending: 1, queued: 1 });
      store.down = false;
      await lockout.engine.flushCompensations();
      expect(lockout.engine.compensationStats()).toMatchObject({ pending: 0, compensated: 1, abandoned: 0 });
      // the same settle (failure) was written again, once: counted now, not at lease end
      expect(await failures(lockout, 'u1')).toEqual({ password: 1, locked: false });
    } finally {
      await lockout.close();
    }
  });
});

describe('guard: options are validated when the guard is made', () => {
  const lockout = createLockout();
  afterAll(() => lockout.close());

  test.each([
    [() => lockout.guard('pin' as never, { user: () => 'u' }), /guard: factor must be one of password, totp/],
    [() => lockout.guard('password', undefined as never), /guard\(password\): options must be an object/],
    [
      () => lockout.guard('password', {} as never),
      /guard\(password\): user must be a function .*req\.body\.userId/,
    ],
    [() => lockout.guard('password', { user: 'u1' } as never), /user must be a function/],
    [
      () => lockout.guard('password', { user: () => 'u', org: 5 } as never),
      /org must be an org id or a function/,
    ],
    [() => lockout.guard('password', { user: () => 'u', org: '' }), /org must be a valid org id/],
    [
      () => lockout.guard('password', { user: () => 'u', lockedResponse: { status: 200 } }),
      /lockedResponse\.status must be an HTTP error status from 400 to 599, got 200/,
    ],
    [
      () => lockout.guard('password', { user: () => 'u', lockedResponse: { code: 401 } as never }),
      /lockedResponse\.code is not an option: give status, body and\/or headers/,
    ],
  ])('%#', (make, message) => {
    let error: unknown;
    try {
      make();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect((error as Error).message).toMatch(message);
  });

  test('a MemoryStore created by default is closed by close()', async () => {
    const l = createLockout();
    expect(l.store).toBeInstanceOf(MemoryStore);
    await l.close();
    await l.close();
  });
});
