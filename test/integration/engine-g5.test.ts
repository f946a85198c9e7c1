/**
 * G5 in the engine (issue 8): a store write whose outcome is unknown is answered 503 and
 * compensated by nonce; a check's evaluation is bounded below its lease; a check never answers
 * "not found"; fail-open lives in the engine (guard, checks and routers use it). The store is a
 * MemoryStore with the test's clock, wrapped to lose requests or replies on demand.
 */
import express from 'express';
import request from 'supertest';
import {
  CompensationQueue,
  type CompensationEvent,
  type CompensationTask,
} from '../../src/core/compensation';
import {
  CheckAbortedError,
  CheckTimeoutError,
  createLockout,
  GrpcCode,
  InvalidArgumentError,
  LockoutEngine,
  MemoryStore,
  StoreUnavailableError,
  type Lockout,
  type LockoutErrorContext,
  type LockoutStore,
  type SettleOutcome,
} from '../../src';
import { makeSubject } from '../../src/core/subjects';
import { generateTotpSecret, hashPassword, totpCode } from '../../src/verify';

const ORG = 'default';
const LEASE = 1000;

/** Faults to inject, each used once per count. */
interface Faults {
  /** reserve: applied by the store, then the reply is lost. */
  reserveReplyLost: number;
  /** settle: never reaches the store. */
  settleRequestLost: number;
  /** settle: applied by the store, then the reply is lost. */
  settleReplyLost: number;
}

/** A MemoryStore on the test's clock whose reserve/settle can lose a request or a reply. */
function faultyStore() {
  const clock = { now: Date.now() };
  const inner = new MemoryStore({ now: () => clock.now });
  const faults: Faults = { reserveReplyLost: 0, settleRequestLost: 0, settleReplyLost: 0 };
  const settles: SettleOutcome[] = [];
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop === 'reserve') {
        return async (...args: Parameters<LockoutStore['reserve']>) => {
          const r = await target.reserve(...args);
          if (faults.reserveReplyLost > 0) {
            faults.reserveReplyLost -= 1;
            throw new StoreUnavailableError('reply lost (test)');
          }
          return r;
        };
      }
      if (prop === 'settle') {
        return async (...args: Parameters<LockoutStore['settle']>) => {
          settles.push(args[3]);
          if (faults.settleRequestLost > 0) {
            faults.settleRequestLost -= 1;
            throw new StoreUnavailableError('request lost (test)');
          }
          const r = await target.settle(...args);
          if (faults.settleReplyLost > 0) {
            faults.settleReplyLost -= 1;
            throw new StoreUnavailableError('reply lost (test)');
          }
          return r;
        };
      }
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  }) as LockoutStore;
  return { store, inner, clock, faults, settles };
}

const engines: LockoutEngine[] = [];
const lockouts: Lockout[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) e.close();
  await Promise.all(lockouts.splice(0).map((l) => l.close()));
});

function engineOn(
  store: LockoutStore,
  max: number,
  extra: Partial<ConstructorParameters<typeof LockoutEngine>[0]> = {},
) {
  const events: CompensationEvent[] = [];
  const engine = new LockoutEngine({
    store,
    instanceId: 'g5',
    leaseMs: LEASE,
    defaults: { maxPasswordAttempts: max, maxOtpAttempts: max },
    onCompensation: (e) => events.push(e),
    ...extra,
  });
  engines.push(engine);
  return { engine, events };
}

async function state(engine: LockoutEngine, user: string) {
  const s = await engine.getUserStatus(ORG, user);
  return { password: s.failedAttempts.password, locked: s.locked };
}

describe('defect 3: a lost settle never turns a success into a failure', () => {
  test('settle request lost: the check answers 503, the success is written again, nothing counted after the lease', async () => {
    const f = faultyStore();
    const { engine } = engineOn(f.store, 1);
    f.faults.settleRequestLost = 1;
    await expect(engine.check(ORG, 'ann', 'password', async () => true)).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    await engine.flushCompensations();
    expect(f.settles).toEqual(['success', 'success']);
    expect(engine.compensationStats()).toMatchObject({ queued: 1, compensated: 1, abandoned: 0, pending: 0 });
    f.clock.now += LEASE + 1;
    // Before: the lease counted the correct password as a failure and (max 1) locked ann.
    expect(await state(engine, 'ann')).toEqual({ password: 0, locked: false });
  });

  test('settle applied, reply lost: the check answers 503, the same settle again answers unknown, nothing counted', async () => {
    const f = faultyStore();
    const { engine, events } = engineOn(f.store, 1);
    f.faults.settleReplyLost = 1;
    await expect(engine.check(ORG, 'bob', 'password', async () => true)).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    await engine.flushCompensations();
    expect(f.settles).toEqual(['success', 'success']);
    expect(events.map((e) => e.type)).toEqual(['queued', 'compensated']);
    expect(events[1]).toMatchObject({ result: { status: 'unknown' } });
    f.clock.now += LEASE + 1;
    expect(await state(engine, 'bob')).toEqual({ password: 0, locked: false });
  });

  test('a lost failure is written again: counted once, not twice', async () => {
    const f = faultyStore();
    const { engine } = engineOn(f.store, 3);
    f.faults.settleReplyLost = 1;
    await expect(engine.check(ORG, 'cid', 'password', async () => false)).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    await engine.flushCompensations();
    f.clock.now += LEASE + 1;
    expect(await state(engine, 'cid')).toEqual({ password: 1, locked: false });
  });

  test('guard: a lost settle of a 200 is reported unsettled and compensated; the user is not locked', async () => {
    const f = faultyStore();
    const reports: LockoutErrorContext[] = [];
    const lockout = createLockout({
      store: f.store,
      leaseMs: LEASE,
      instance: { maxPasswordAttempts: 1, maxOtpAttempts: 1 },
      onError: (_e, c) => reports.push(c),
    });
    lockouts.push(lockout);
    const app = express();
    app.post(
      '/login',
      express.json(),
      lockout.guard('password', { user: (req) => req.body.userId }),
      (_q, r) => {
        r.json({ ok: true });
      },
    );
    f.faults.settleRequestLost = 1;
    await request(app).post('/login').send({ userId: 'dee' }).expect(200);
    expect(reports).toEqual([
      expect.objectContaining({ operation: 'settle', outcome: 'unsettled', userId: 'dee' }),
    ]);
    await lockout.engine.flushCompensations();
    f.clock.now += LEASE + 1;
    expect(await state(lockout.engine, 'dee')).toEqual({ password: 0, locked: false });
    await request(app).post('/login').send({ userId: 'dee' }).expect(200);
  });
});

describe('a reserve whose reply was lost is released by its nonce', () => {
  test('the check answers 503 uncounted; the release is sent and accepted; the user is free after', async () => {
    const f = faultyStore();
    const { engine, events } = engineOn(f.store, 1);
    f.faults.reserveReplyLost = 1;
    const evaluate = jest.fn(async () => true);
    await expect(engine.check(ORG, 'eve', 'password', evaluate)).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    expect(evaluate).not.toHaveBeenCalled();
    await engine.flushCompensations();
    expect(f.settles).toEqual(['release']);
    expect(events.map((e) => e.type)).toEqual(['queued', 'compensated']);
    expect(events[1]).toMatchObject({
      task: { origin: 'reserve', outcome: 'release' },
      result: { status: 'settled' },
    });
    // max 1: an orphan reservation would answer busy now, and lock eve when its lease ends
    const again = await engine.reserve(ORG, 'eve', 'password');
    if (again.status !== 'admitted') throw new Error(`expected admitted, got ${again.status}`);
    await engine.settle(again.reservation, 'success');
    f.clock.now += LEASE + 1;
    expect(await state(engine, 'eve')).toEqual({ password: 0, locked: false });
  });
});

describe('defect 4: the evaluation is bounded below the lease', () => {
  test('an evaluation past evaluationTimeoutMs: CheckTimeoutError (503 code 14), released uncounted', async () => {
    const f = faultyStore();
    const { engine } = engineOn(f.store, 1, { evaluationTimeoutMs: 50 });
    let finish: (ok: boolean) => void = () => undefined;
    const slow = new Promise<boolean>((resolve) => (finish = resolve));
    const error = await engine.check(ORG, 'fay', 'password', () => slow).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CheckTimeoutError);
    expect(error).toMatchObject({ code: 'Errors.Check.Timeout', grpcCode: GrpcCode.Unavailable });
    finish(false); // a late answer changes nothing
    expect(f.settles).toEqual(['release']);
    f.clock.now += LEASE + 1;
    expect(await state(engine, 'fay')).toEqual({ password: 0, locked: false });
    expect((await engine.reserve(ORG, 'fay', 'password')).status).toBe('admitted');
  });

  test('a reservation gone when the check settles it: CheckAbortedError (503), never NotFoundError', async () => {
    const f = faultyStore();
    const { engine } = engineOn(f.store, 3);
    const error = await engine
      .check(ORG, 'gus', 'password', () => {
        f.clock.now += LEASE + 1; // the lease ends while the credential is evaluated
        return Promise.resolve(true);
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CheckAbortedError);
    expect(error).toMatchObject({ grpcCode: GrpcCode.Unavailable });
  });

  test('leaseMs has a minimum of 1000 ms; evaluationTimeoutMs defaults below the lease and is validated', () => {
    const store = new MemoryStore();
    const make = (o: object) => {
      const e = new LockoutEngine({ store, ...o });
      e.close();
      return e.config;
    };
    expect(() => make({ leaseMs: 999 })).toThrow(/leaseMs must be an integer from 1000 to 3600000/);
    expect(make({}).evaluationTimeoutMs).toBe(10_000);
    expect(make({ leaseMs: 1000 }).evaluationTimeoutMs).toBe(500);
    expect(make({ leaseMs: 8000 }).evaluationTimeoutMs).toBe(4000);
    expect(make({ leaseMs: 2000, evaluationTimeoutMs: 1500 }).evaluationTimeoutMs).toBe(1500);
    let error: unknown;
    try {
      make({ leaseMs: 2000, evaluationTimeoutMs: 1501 });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error).toMatchObject({ field: 'evaluationTimeoutMs' });
    expect((error as Error).message).toMatch(
      /leaseMs − 500 \(1500 with leaseMs 2000\).*lower it or raise leaseMs/,
    );
  });
});

describe('the compensation queue', () => {
  const task = (nonce: string, deadline = Date.now() + 60_000): CompensationTask => ({
    subject: makeSubject('i', 'o', 'u'),
    factor: 'password',
    nonce,
    outcome: 'release',
    origin: 'reserve',
    deadline,
  });

  test('bounded: past maxPending the oldest task is dropped (reported); close() abandons the rest', async () => {
    const events: CompensationEvent[] = [];
    const q = new CompensationQueue({
      run: () => Promise.reject(new StoreUnavailableError('down')),
      onEvent: (e) => events.push(e),
      maxPending: 2,
    });
    q.enqueue(task('a'));
    q.enqueue(task('b'));
    q.enqueue(task('c'));
    expect(events.filter((e) => e.type === 'abandoned')).toEqual([
      expect.objectContaining({ reason: 'dropped', task: expect.objectContaining({ nonce: 'a' }) }),
    ]);
    expect(q.stats()).toMatchObject({ pending: 2, queued: 3, abandoned: 1 });
    q.close();
    await q.idle();
    expect(q.stats()).toMatchObject({ pending: 0, abandoned: 3 });
    q.enqueue(task('d'));
    expect(events.at(-1)).toMatchObject({ type: 'abandoned', reason: 'closed' });
  });

  test('retried with backoff until the lease ends, then abandoned as expired', async () => {
    const events: CompensationEvent[] = [];
    let tries = 0;
    const q = new CompensationQueue({
      run: () => {
        tries += 1;
        return Promise.reject(new StoreUnavailableError('down'));
      },
      onEvent: (e) => events.push(e),
      initialDelayMs: 5,
      maxDelayMs: 20,
    });
    q.enqueue(task('x', Date.now() + 150));
    await q.idle();
    expect(tries).toBeGreaterThan(1);
    expect(events.at(-1)).toMatchObject({
      type: 'abandoned',
      reason: 'expired',
      error: expect.any(StoreUnavailableError),
    });
    expect(q.stats()).toMatchObject({ retried: tries, compensated: 0, abandoned: 1 });
  });

  test('engine.close() stops it: a pending compensation is abandoned', async () => {
    const f = faultyStore();
    const { engine, events } = engineOn(f.store, 3);
    f.faults.settleRequestLost = 5;
    await expect(engine.check(ORG, 'hal', 'password', () => true)).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    engine.close();
    await engine.flushCompensations();
    expect(events.at(-1)).toMatchObject({ type: 'abandoned', reason: 'closed' });
  });
});

describe('G4 fail-open in the engine; defect 7: TOTP answers 503 under fail-open', () => {
  function switchable() {
    const f = faultyStore();
    const down = { value: false };
    const store = new Proxy(f.store, {
      get(target, prop, receiver) {
        const value: unknown = Reflect.get(target, prop, receiver);
        if (typeof value !== 'function' || prop === 'onSettingsChanged' || prop === 'close') return value;
        return (...args: unknown[]) =>
          down.value
            ? Promise.reject(new StoreUnavailableError('down (test)'))
            : (value as (...a: unknown[]) => unknown)(...args);
      },
    });
    return { ...f, store, down };
  }

  test('engine: an unenforced reservation while the store is down; its settle is a no-op, told once', async () => {
    const s = switchable();
    const notices: unknown[] = [];
    const { engine } = engineOn(s.store, 1, {
      onStoreError: 'fail-open',
      onFailOpen: (n) => notices.push(n),
    });
    s.down.value = true;
    const r = await engine.reserve(ORG, 'ida', 'password');
    if (r.status !== 'admitted') throw new Error('expected admitted');
    expect(r.reservation.enforced).toBe(false);
    expect(await engine.settle(r.reservation.attemptId, 'failure')).toMatchObject({
      failedAttempts: 0,
      locked: false,
      enforced: false,
    });
    await expect(engine.settle(r.reservation.attemptId, 'failure')).rejects.toMatchObject({
      code: 'Errors.Attempt.NotFound',
    });
    expect(await engine.check(ORG, 'ida', 'password', () => true)).toMatchObject({
      outcome: 'success',
      enforced: false,
    });
    expect(await engine.check(ORG, 'ida', 'password', () => false)).toMatchObject({
      outcome: 'failure',
      failedAttempts: 0,
      enforced: false,
    });
    expect(notices).toHaveLength(3);
    expect(notices[0]).toMatchObject({ operation: 'reserve', org: ORG, user: 'ida', factor: 'password' });
    s.down.value = false;
    expect(await state(engine, 'ida')).toEqual({ password: 0, locked: false });
  });

  test('checks: a correct password passes, a wrong one fails uncounted, TOTP throws StoreUnavailableError', async () => {
    const s = switchable();
    const reports: LockoutErrorContext[] = [];
    const lockout = createLockout({
      store: s.store,
      onStoreError: 'fail-open',
      instance: { maxPasswordAttempts: 1, maxOtpAttempts: 1 },
      onError: (_e, c) => reports.push(c),
    });
    lockouts.push(lockout);
    s.down.value = true;
    expect(await lockout.checks.check(ORG, 'jo', 'password', () => true)).toEqual({
      ok: true,
      failedAttempts: 0,
      locked: false,
    });
    expect(await lockout.checks.check(ORG, 'jo', 'password', () => false)).toEqual({
      ok: false,
      failedAttempts: 0,
      locked: false,
    });
    const secret = generateTotpSecret();
    await expect(lockout.checks.totp(ORG, 'jo', secret, totpCode(secret))).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    expect(reports.map((r) => `${r.operation}:${r.outcome}:${r.factor}`)).toEqual([
      'check:unguarded:password',
      'check:unguarded:password',
      'check:refused:totp',
    ]);
    s.down.value = false;
    expect(await state(lockout.engine, 'jo')).toEqual({ password: 0, locked: false });
  });

  test('guard: a correct password passes (200), a wrong one 401, nothing counted', async () => {
    const s = switchable();
    const lockout = createLockout({
      store: s.store,
      onStoreError: 'fail-open',
      instance: { maxPasswordAttempts: 1, maxOtpAttempts: 1 },
      onError: () => undefined,
    });
    lockouts.push(lockout);
    const app = express();
    app.post(
      '/login',
      express.json(),
      lockout.guards.password({ user: (req) => req.body.userId }),
      (req, res) => {
        res.status(req.body.password === 'right' ? 200 : 401).json({ guarded: req.lockout?.guarded });
      },
    );
    s.down.value = true;
    for (let i = 0; i < 3; i += 1) {
      const wrong = await request(app).post('/login').send({ userId: 'kay', password: 'x' }).expect(401);
      expect(wrong.body).toEqual({ guarded: false });
    }
    await request(app).post('/login').send({ userId: 'kay', password: 'right' }).expect(200);
    s.down.value = false;
    expect(await state(lockout.engine, 'kay')).toEqual({ password: 0, locked: false });
  });

  test('routers: password 200 / 401 with failedAttempts "0"; TOTP 503 code 14', async () => {
    const s = switchable();
    const lockout = createLockout({
      store: s.store,
      onStoreError: 'fail-open',
      instance: { maxPasswordAttempts: 1, maxOtpAttempts: 1 },
      password: { memoryCost: 1024, timeCost: 1, parallelism: 1 },
      tokens: [{ name: 'login', token: 'g5-login-token-0001', org: ORG, permissions: ['lockout.check'] }],
      onError: () => undefined,
    });
    lockouts.push(lockout);
    const hash = await hashPassword('right', { memoryCost: 1024, timeCost: 1, parallelism: 1 });
    const app = express();
    app.use(lockout.routers.checks());
    const auth = { Authorization: 'Bearer g5-login-token-0001' };
    s.down.value = true;
    await request(app)
      .post('/v1/checks/password')
      .set(auth)
      .send({ userId: 'lee', password: 'right', encodedHash: hash })
      .expect(200);
    const wrong = await request(app)
      .post('/v1/checks/password')
      .set(auth)
      .send({ userId: 'lee', password: 'nope', encodedHash: hash })
      .expect(401);
    expect(wrong.body.details[1].failedAttempts).toBe('0');
    const secret = generateTotpSecret();
    const totp = await request(app)
      .post('/v1/checks/totp')
      .set(auth)
      .send({ userId: 'lee', secret, code: totpCode(secret) })
      .expect(503);
    expect(totp.body.code).toBe(14);
    s.down.value = false;
    expect(await state(lockout.engine, 'lee')).toEqual({ password: 0, locked: false });
  });

  test("createLockout passes the engine's notices on: onFailOpen (routers too), onCompensation, a router's observeCheck", async () => {
    const s = switchable();
    const failOpen: unknown[] = [];
    const compensation: CompensationEvent[] = [];
    const observed: unknown[] = [];
    const lockout = createLockout({
      store: s.store,
      leaseMs: LEASE,
      onStoreError: 'fail-open',
      instance: { maxPasswordAttempts: 1, maxOtpAttempts: 1 },
      password: { memoryCost: 1024, timeCost: 1, parallelism: 1 },
      tokens: [{ name: 'login', token: 'g5-login-token-0002', org: ORG, permissions: ['lockout.check'] }],
      onError: () => undefined,
      onFailOpen: (n) => failOpen.push(n),
      onCompensation: (e) => compensation.push(e),
    });
    lockouts.push(lockout);
    const hash = await hashPassword('right', { memoryCost: 1024, timeCost: 1, parallelism: 1 });
    const app = express();
    app.use(lockout.routers.checks({ observeCheck: (...args) => observed.push(args) }));
    s.down.value = true;
    await request(app)
      .post('/v1/checks/password')
      .set({ Authorization: 'Bearer g5-login-token-0002' })
      .send({ userId: 'max', password: 'nope', encodedHash: hash })
      .expect(401);
    expect(failOpen).toEqual([
      expect.objectContaining({ operation: 'reserve', user: 'max', factor: 'password' }),
    ]);
    expect(observed).toEqual([['password', 'failure', expect.any(Number)]]);
    s.down.value = false;
    // Fail-closed: a reserve whose reply is lost answers 503 and is released by its nonce.
    const closed = createLockout({
      store: s.store,
      leaseMs: LEASE,
      onError: () => undefined,
      onCompensation: (e) => compensation.push(e),
    });
    lockouts.push(closed);
    s.faults.reserveReplyLost = 1;
    await expect(closed.checks.check(ORG, 'ned', 'password', () => true)).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    await closed.engine.flushCompensations();
    expect(compensation.map((e) => e.type)).toEqual(['queued', 'compensated']);
  });
});
