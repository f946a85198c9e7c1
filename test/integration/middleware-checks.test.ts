import express from 'express';
import request from 'supertest';
import {
  BusyError,
  createLockout,
  generateTotpSecret,
  hashPassword,
  InvalidArgumentError,
  RateLimitedError,
  StoreUnavailableError,
  totpCode,
  UserLockedError,
  type Lockout,
  type LockoutErrorContext,
} from '../../src';
import { createSwitchableStore } from '../fixtures/switchable-store';

const COST = { memoryCost: 4096, timeCost: 2, parallelism: 1 } as const;
const ORG = 'org-a';

const lockouts: Lockout[] = [];
afterAll(async () => {
  await Promise.all(lockouts.map((l) => l.close()));
});

function make(options: Parameters<typeof createLockout>[0] = {}): Lockout {
  const lockout = createLockout({
    instance: { maxPasswordAttempts: 3, maxOtpAttempts: 2 },
    password: COST,
    onError: () => undefined,
    ...options,
  });
  lockouts.push(lockout);
  return lockout;
}

/** A 6-digit code that is not valid for `secret` within ±2 steps of now. */
function wrongTotp(secret: string): string {
  const valid = new Set([-2, -1, 0, 1, 2].map((k) => totpCode(secret, Date.now() + k * 30_000)));
  for (let n = 0; ; n++) {
    const code = String(n).padStart(6, '0');
    if (!valid.has(code)) return code;
  }
}

describe('checks', () => {
  test('password: argon2, failures counted, success resets, locked throws UserLockedError', async () => {
    const lockout = make();
    const hash = await hashPassword('s3cret', COST);
    expect(await lockout.checks.password(ORG, 'u1', hash, 'nope')).toEqual({
      ok: false,
      failedAttempts: 1,
      locked: false,
    });
    expect(await lockout.checks.password(ORG, 'u1', hash, 's3cret')).toEqual({
      ok: true,
      failedAttempts: 0,
      locked: false,
    });
    await lockout.checks.password(ORG, 'u1', hash, 'nope');
    await lockout.checks.password(ORG, 'u1', hash, 'nope');
    expect(await lockout.checks.password(ORG, 'u1', hash, 'nope')).toEqual({
      ok: false,
      failedAttempts: 3,
      locked: true,
    });
    const locked = await lockout.checks.password(ORG, 'u1', hash, 's3cret').catch((e: unknown) => e);
    expect(locked).toBeInstanceOf(UserLockedError);
    expect(locked).toMatchObject({ code: 'Errors.User.Locked', grpcCode: 9 });
    expect(typeof (locked as UserLockedError).lockedAt).toBe('number');
  });

  test('password of an unknown user (no hash): a normal failure', async () => {
    const lockout = make();
    expect(await lockout.checks.password(ORG, 'ghost', undefined, 'x')).toEqual({
      ok: false,
      failedAttempts: 1,
      locked: false,
    });
  });

  test('totp: right code once, a replay fails, a wrong code fails; maxOtpAttempts locks', async () => {
    const lockout = make();
    const secret = generateTotpSecret();
    const code = totpCode(secret);
    expect((await lockout.checks.totp(ORG, 'u1', secret, code)).ok).toBe(true);
    expect(await lockout.checks.totp(ORG, 'u1', secret, code)).toEqual({
      ok: false,
      failedAttempts: 1,
      locked: false,
    });
    expect(await lockout.checks.totp(ORG, 'u1', secret, wrongTotp(secret))).toEqual({
      ok: false,
      failedAttempts: 2,
      locked: true,
    });
    await expect(lockout.checks.totp(ORG, 'u1', secret, totpCode(secret))).rejects.toBeInstanceOf(
      UserLockedError,
    );
  });

  test('issueCode / verifyCode: single use, per channel; issuance refused for a locked user', async () => {
    const lockout = make({ codes: { limiter: { consume: async () => undefined } } });
    const sms = await lockout.checks.issueCode(ORG, 'u1', 'sms');
    expect(sms.code).toMatch(/^[0-9]{6}$/);
    expect(sms.expiresAt).toBeGreaterThan(Date.now());
    const email = await lockout.checks.issueCode(ORG, 'u1', 'email');
    expect(
      (await lockout.checks.verifyCode(ORG, 'u1', 'email', sms.code === email.code ? '000000' : sms.code)).ok,
    ).toBe(false);
    expect((await lockout.checks.verifyCode(ORG, 'u1', 'sms', sms.code)).ok).toBe(true);
    expect((await lockout.checks.verifyCode(ORG, 'u1', 'sms', sms.code)).ok).toBe(false);
    const status = await lockout.engine.getUserStatus(ORG, 'u1');
    expect(status.failedAttempts).toMatchObject({ otp_sms: 1, otp_email: 1 });

    await lockout.engine.lockUser(ORG, 'u1');
    await expect(lockout.checks.issueCode(ORG, 'u1', 'sms')).rejects.toBeInstanceOf(UserLockedError);
    await expect(lockout.checks.issueCode(ORG, 'u1', 'fax' as never)).rejects.toThrow(
      "channel must be 'sms' or 'email'",
    );
  });

  test('issueCode: too many codes is a RateLimitedError (default limiter: 5 per 15 min)', async () => {
    const lockout = make();
    for (let i = 0; i < 5; i++) await lockout.checks.issueCode(ORG, 'u1', 'email');
    const error = await lockout.checks.issueCode(ORG, 'u1', 'email').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RateLimitedError);
    expect((error as RateLimitedError).retryAfterMs).toBeGreaterThan(0);
  });

  test('check: any verifier; a throwing verifier releases uncounted; busy throws BusyError', async () => {
    const lockout = make();
    expect(await lockout.checks.check(ORG, 'u1', 'recovery_code', () => false)).toEqual({
      ok: false,
      failedAttempts: 1,
      locked: false,
    });
    await expect(
      lockout.checks.check(ORG, 'u1', 'recovery_code', async () => {
        throw new Error('verifier down');
      }),
    ).rejects.toThrow('verifier down');
    expect((await lockout.engine.getUserStatus(ORG, 'u1')).failedAttempts.recovery_code).toBe(1);

    // one attempt of two left, held in flight: the next check is busy, not locked
    const held = await lockout.engine.reserve(ORG, 'u1', 'recovery_code');
    const busy = await lockout.checks.check(ORG, 'u1', 'recovery_code', () => true).catch((e: unknown) => e);
    expect(busy).toBeInstanceOf(BusyError);
    expect((busy as BusyError).retryAfterMs).toBeGreaterThan(0);
    if (held.status === 'admitted') await lockout.engine.settle(held.reservation, 'release');
    expect((await lockout.checks.check(ORG, 'u1', 'recovery_code', async () => true)).ok).toBe(true);
  });

  test('bad input is an InvalidArgumentError naming the field, before the store is touched', async () => {
    const lockout = make();
    const cases: Array<[() => Promise<unknown>, string]> = [
      [() => lockout.checks.password('', 'u1', undefined, 'x'), 'orgId'],
      [() => lockout.checks.password(ORG, 'x'.repeat(300), undefined, 'x'), 'userId'],
      [() => lockout.checks.password(ORG, 'u1', undefined, 5 as never), 'password'],
      [() => lockout.checks.password(ORG, 'u1', 'not-a-hash', 'x'), 'encodedHash'],
      [() => lockout.checks.totp(ORG, 'u1', 'not base32!', '123456'), 'secret'],
      [() => lockout.checks.check(ORG, 'u1', 'pin' as never, () => true), 'factor'],
      [() => lockout.checks.check(ORG, 'u1', 'password', 'yes' as never), 'verifier'],
    ];
    for (const [call, field] of cases) {
      const error = await call().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect((error as InvalidArgumentError).field).toBe(field);
    }
    // the bad hash was released, not counted
    expect((await lockout.engine.getUserStatus(ORG, 'u1')).failedAttempts.password).toBe(0);
  });

  test('store down: fail-closed throws StoreUnavailableError; fail-open evaluates without counting', async () => {
    const store = createSwitchableStore();
    const reports: LockoutErrorContext[] = [];
    const closed = make({ store, onError: (_e, c) => reports.push(c) });
    store.down = true;
    await expect(closed.checks.check(ORG, 'u1', 'password', () => true)).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    expect(reports).toEqual([expect.objectContaining({ operation: 'check', outcome: 'refused' })]);

    const store2 = createSwitchableStore();
    const open = make({ store: store2, onStoreError: 'fail-open', onError: (_e, c) => reports.push(c) });
    store2.down = true;
    const verifier = jest.fn(async () => true);
    expect(await open.checks.check(ORG, 'u1', 'password', verifier)).toEqual({
      ok: true,
      failedAttempts: 0,
      locked: false,
    });
    expect(verifier).toHaveBeenCalledTimes(1);
    expect(await open.checks.check(ORG, 'u1', 'password', () => false)).toEqual({
      ok: false,
      failedAttempts: 0,
      locked: false,
    });
    expect(reports.slice(1)).toEqual([
      expect.objectContaining({ operation: 'check', outcome: 'unguarded' }),
      expect.objectContaining({ operation: 'check', outcome: 'unguarded' }),
    ]);
    // codes live in the store: no fallback
    await expect(open.checks.verifyCode(ORG, 'u1', 'sms', '123456')).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    await expect(open.checks.issueCode(ORG, 'u1', 'sms')).rejects.toBeInstanceOf(StoreUnavailableError);
  });
});

describe('routers', () => {
  const TOKENS = [
    {
      name: 'admin',
      token: 'admin-token',
      org: ORG,
      permissions: ['user.read', 'user.write', 'policy.read'],
    },
  ];

  test('users() and settings() with tokens: status, unlock, settings; 401 without a token', async () => {
    const lockout = make({ tokens: TOKENS });
    const app = express();
    app.use('/admin', lockout.routers.users(), lockout.routers.settings());
    await lockout.engine.lockUser(ORG, 'u1');

    await request(app).post('/admin/v2/users/u1/unlock').expect(401);
    const auth = { Authorization: 'Bearer admin-token' };
    const status = await request(app).get('/admin/v1/users/u1/lockout').set(auth).expect(200);
    expect(status.body).toMatchObject({ userId: 'u1', orgId: ORG, state: 'USER_STATE_LOCKED' });
    await request(app).post('/admin/v2/users/u1/unlock').set(auth).expect(200);
    expect((await lockout.engine.getUserStatus(ORG, 'u1')).locked).toBe(false);
    const policy = await request(app).get('/admin/management/v1/policies/lockout').set(auth).expect(200);
    expect(policy.body.policy).toMatchObject({
      maxPasswordAttempts: '3',
      maxOtpAttempts: '2',
      isDefault: true,
    });
    // a permission the token lacks
    await request(app)
      .put('/admin/admin/v1/policies/lockout')
      .set(auth)
      .send({ maxPasswordAttempts: 1, maxOtpAttempts: 1 })
      .expect(403);
  });

  test('all() and checks() with a custom authorize hook', async () => {
    const lockout = make();
    const authorize = jest.fn(async (req: express.Request) => {
      if (req.headers['x-session'] !== 'ok') throw new InvalidArgumentError('Errors.Session', 'no session');
      return { principal: 'session-user', orgId: ORG };
    });
    const app = express();
    app.use(lockout.routers.all({ authorize }));
    await request(app).get('/v1/users/u1/lockout').expect(400);
    await request(app).get('/v1/users/u1/lockout').set('x-session', 'ok').expect(200);
    const hash = await hashPassword('pw', COST);
    const check = await request(app)
      .post('/v1/checks/password')
      .set('x-session', 'ok')
      .send({ userId: 'u9', password: 'bad', encodedHash: hash })
      .expect(401);
    expect(check.body.details[1]).toMatchObject({ failedAttempts: '1' });

    const checksOnly = express();
    checksOnly.use(lockout.routers.checks({ authorize }));
    await request(checksOnly)
      .post('/v1/checks/password')
      .set('x-session', 'ok')
      .send({ userId: 'u9', password: 'pw', encodedHash: hash })
      .expect(200);
  });

  test('routers without tokens or authorize: a corrective error when the router is made', () => {
    const lockout = make();
    expect(() => lockout.routers.users()).toThrow(
      /routers\.users: authorize is needed: pass createLockout\(\{ tokens: \[/,
    );
    expect(() => lockout.routers.settings({ tokens: [{ name: 'x' } as never] })).toThrow(
      /routers\.settings: tokens\[0\]\.token must|routers\.settings: tokens\[0\] must have token or sha256/,
    );
  });
});
