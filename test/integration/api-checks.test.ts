import express from 'express';
import request from 'supertest';
import { LockoutEngine, type LockoutEngineOptions } from '../../src/core/engine';
import { StoreUnavailableError } from '../../src/core/errors';
import {
  createApiRouter,
  createChecksRouter,
  type ApiRouterOptions,
  type ObservedCheckOutcome,
} from '../../src/http/routers';
import { createNotFoundHandler, createTokenAuthorizer, type TokenOptions } from '../../src/http';
import { MemoryStore } from '../../src/store';
import {
  createIssueLimiter,
  createOtpCodes,
  createPasswordVerifier,
  createTotpVerifier,
  generateTotpSecret,
  hashPassword,
  totpCode,
} from '../../src/verify';

const INSTANCE = 'inst-1';
const ORG_A = 'org-a';
const ORG_B = 'org-b';
const COST = { memoryCost: 4096, timeCost: 2, parallelism: 1 } as const;
const TOKENS: TokenOptions[] = [
  { name: 'login-a', token: 'login-a', org: ORG_A, permissions: ['lockout.check'] },
  { name: 'login-b', token: 'login-b', org: ORG_B, permissions: ['lockout.check'] },
  { name: 'login-all', token: 'login-all', org: ORG_A, orgs: ['*'], permissions: ['lockout.check'] },
  {
    name: 'admin-a',
    token: 'admin-a',
    org: ORG_A,
    permissions: ['policy.write', 'user.read', 'user.write'],
  },
];
const RFC3339_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const ERROR_DETAIL = 'type.googleapis.com/zitadel.v1.ErrorDetail';
const CREDENTIALS_CHECK_ERROR = 'type.googleapis.com/zitadel.v1.CredentialsCheckError';

const passwordVerifier = createPasswordVerifier(COST);

function makeApp(extra: Partial<ApiRouterOptions> = {}, engineOptions: Partial<LockoutEngineOptions> = {}) {
  const store = new MemoryStore();
  const engine = new LockoutEngine({ store, instanceId: INSTANCE, ...engineOptions });
  const observed: Array<[string, ObservedCheckOutcome]> = [];
  // Recorded here and asserted by the tests: the router calls observeCheck inside a try/catch
  // (metrics must not change an answer), so an expect() inside the callback could never fail.
  const seconds: number[] = [];
  const verifier = { verify: jest.fn(passwordVerifier.verify), ready: passwordVerifier.ready };
  const options: ApiRouterOptions = {
    engine,
    authorize: createTokenAuthorizer({ tokens: TOKENS }),
    passwordVerifier: verifier,
    totpVerifier: createTotpVerifier({ store }),
    otpCodes: createOtpCodes({ store, limiter: createIssueLimiter({ points: 3, durationSec: 900 }) }),
    observeCheck: (factor, outcome, elapsed) => {
      seconds.push(elapsed);
      observed.push([factor, outcome]);
    },
    ...extra,
  };
  const app = express();
  app.use(createApiRouter(options));
  app.use(createNotFoundHandler());
  return { app, store, engine, observed, seconds, verifier };
}

const auth = (token: string) => ({ Authorization: `Bearer ${token}` });

/** A 6-digit code that is not valid for `secret` within ±2 steps of now. */
function wrongTotp(secret: string): string {
  const valid = new Set([-2, -1, 0, 1, 2].map((k) => totpCode(secret, Date.now() + k * 30_000)));
  for (let n = 0; ; n++) {
    const code = String(n).padStart(6, '0');
    if (!valid.has(code)) return code;
  }
}

function invalidCredentialBody(id: string, message: string, failedAttempts: number) {
  return {
    code: 3,
    message,
    details: [
      { '@type': ERROR_DETAIL, id, message },
      { '@type': CREDENTIALS_CHECK_ERROR, id, message, failedAttempts: String(failedAttempts) },
    ],
  };
}

describe('check and attempt routes (API.md 2.2)', () => {
  let ctx: ReturnType<typeof makeApp>;
  let aliceHash: string;

  beforeAll(async () => {
    aliceHash = await hashPassword('correct horse', COST);
    await passwordVerifier.ready();
  });
  beforeEach(() => {
    ctx = makeApp();
  });
  afterEach(async () => {
    ctx.engine.close();
    await ctx.store.close();
    // Every observed check has a duration: a finite, non-negative number of seconds.
    expect(ctx.seconds).toHaveLength(ctx.observed.length);
    for (const elapsed of ctx.seconds) {
      expect(Number.isFinite(elapsed)).toBe(true);
      expect(elapsed).toBeGreaterThanOrEqual(0);
    }
  });

  async function setLimits(maxPasswordAttempts: number, maxOtpAttempts: number, org = ORG_A): Promise<void> {
    await ctx.engine.addOrgSettings(org, { maxPasswordAttempts, maxOtpAttempts });
  }

  const checkPassword = (
    password: string,
    userId = 'alice',
    token = 'login-a',
    encodedHash: string | undefined = aliceHash,
  ) => request(ctx.app).post('/v1/checks/password').set(auth(token)).send({ userId, password, encodedHash });

  describe('POST /v1/checks/password', () => {
    it('success: 200 with the exact body', async () => {
      const res = await checkPassword('correct horse').expect(200);
      expect(res.body).toEqual({ userId: 'alice', factor: 'password', failedAttempts: '0', locked: false });
      expect(ctx.observed).toEqual([['password', 'success']]);
      expect(ctx.seconds).toEqual([expect.any(Number)]);
      expect(ctx.seconds[0]).toBeGreaterThanOrEqual(0);
    });

    it('wrong password: 401 code 3 with a CredentialsCheckError detail', async () => {
      const res = await checkPassword('wrong').expect(401);
      expect(res.body).toEqual(
        invalidCredentialBody('Errors.User.Password.Invalid', 'Password is invalid', 1),
      );
      expect(res.headers['www-authenticate']).toBeUndefined();
      expect(ctx.observed).toEqual([['password', 'failure']]);
    });

    it('no encodedHash (unknown user): a dummy verification and a normal failure', async () => {
      const res = await request(ctx.app)
        .post('/v1/checks/password')
        .set(auth('login-a'))
        .send({ userId: 'nobody', password: 'whatever' })
        .expect(401);
      expect(res.body.details[1]).toMatchObject({ id: 'Errors.User.Password.Invalid', failedAttempts: '1' });
      expect(ctx.verifier.verify).toHaveBeenCalledWith(undefined, 'whatever');
    });

    it('the full lockout flow: the attempt reaching the limit is invalid, later ones locked, argon2 never runs', async () => {
      await setLimits(3, 10);
      for (const n of [1, 2, 3]) {
        const res = await checkPassword(`wrong ${n}`).expect(401);
        expect(res.body.details[1].failedAttempts).toBe(String(n));
      }
      ctx.verifier.verify.mockClear();
      const locked = await checkPassword('correct horse').expect(423);
      expect(locked.body).toEqual({
        code: 9,
        message: 'User is locked',
        details: [{ '@type': ERROR_DETAIL, id: 'Errors.User.Locked', message: 'User is locked' }],
      });
      await checkPassword('wrong again').expect(423);
      expect(ctx.verifier.verify).not.toHaveBeenCalled();
      expect(ctx.observed.slice(-2)).toEqual([
        ['password', 'locked'],
        ['password', 'locked'],
      ]);

      const status = await request(ctx.app).get('/v1/users/alice/lockout').set(auth('admin-a')).expect(200);
      expect(status.body).toMatchObject({ state: 'USER_STATE_LOCKED', failedAttempts: { password: '3' } });

      await request(ctx.app).post('/v2/users/alice/unlock').set(auth('admin-a')).expect(200);
      await checkPassword('correct horse').expect(200);
    });

    it('success resets the password counter and leaves the OTP counters', async () => {
      await checkPassword('wrong').expect(401);
      await checkPassword('wrong').expect(401);
      const a = await request(ctx.app)
        .post('/v1/attempts')
        .set(auth('login-a'))
        .send({ userId: 'alice', factor: 'totp' });
      await request(ctx.app)
        .post(`/v1/attempts/${a.body.attemptId}/failure`)
        .set(auth('login-a'))
        .expect(200);
      await checkPassword('correct horse').expect(200);
      const res = await checkPassword('wrong').expect(401);
      expect(res.body.details[1].failedAttempts).toBe('1');
      const status = await request(ctx.app).get('/v1/users/alice/lockout').set(auth('admin-a')).expect(200);
      expect(status.body.failedAttempts).toMatchObject({ password: '1', totp: '1' });
    });

    it('busy: 429 code 8 with Retry-After when as many checks are in flight as attempts remain', async () => {
      await setLimits(2, 10);
      for (let i = 0; i < 2; i++) {
        await request(ctx.app)
          .post('/v1/attempts')
          .set(auth('login-a'))
          .send({ userId: 'alice', factor: 'password' })
          .expect(201);
      }
      ctx.verifier.verify.mockClear();
      const res = await checkPassword('correct horse').expect(429);
      expect(res.headers['retry-after']).toBe('1');
      expect(res.body).toMatchObject({
        code: 8,
        details: [{ '@type': ERROR_DETAIL, id: 'Errors.Lockout.Busy' }],
      });
      expect(ctx.verifier.verify).not.toHaveBeenCalled();
      expect(ctx.observed).toEqual([['password', 'busy']]);
    });

    it('store unavailable: 503 code 14 (fail closed), no internal text', async () => {
      jest
        .spyOn(ctx.store, 'reserve')
        .mockRejectedValue(new StoreUnavailableError('Redis did not answer within 50 ms'));
      const res = await checkPassword('correct horse').expect(503);
      expect(res.body).toEqual({
        code: 14,
        message: 'Lockout store unavailable',
        details: [
          { '@type': ERROR_DETAIL, id: 'Errors.Store.Unavailable', message: 'Lockout store unavailable' },
        ],
      });
      expect(ctx.verifier.verify).not.toHaveBeenCalled();
      expect(ctx.observed).toEqual([['password', 'error']]);
    });

    it("fail-open (the engine's onStoreError): with the store down the password alone decides", async () => {
      const open = makeApp({}, { onStoreError: 'fail-open' });
      try {
        jest.spyOn(open.store, 'reserve').mockRejectedValue(new StoreUnavailableError());
        const ok = await request(open.app)
          .post('/v1/checks/password')
          .set(auth('login-a'))
          .send({ userId: 'alice', password: 'correct horse', encodedHash: aliceHash })
          .expect(200);
        expect(ok.body).toEqual({ userId: 'alice', factor: 'password', failedAttempts: '0', locked: false });
        await request(open.app)
          .post('/v1/checks/password')
          .set(auth('login-a'))
          .send({ userId: 'alice', password: 'nope', encodedHash: aliceHash })
          .expect(401);
      } finally {
        open.engine.close();
        await open.store.close();
      }
    });

    it('input validation: 400 code 3 naming the field, nothing counted', async () => {
      const cases: Array<[Record<string, unknown>, string]> = [
        [{ password: 'x' }, 'userId'],
        [{ userId: '', password: 'x' }, 'userId'],
        [{ userId: 7, password: 'x' }, 'userId'],
        [{ userId: 'a\u0000b', password: 'x' }, 'userId'],
        [{ userId: 'a\u009fb', password: 'x' }, 'userId'],
        [{ userId: 'x'.repeat(257), password: 'x' }, 'userId'],
        // Not well-formed Unicode: a lone high, a lone low, and a reversed pair of surrogates.
        [{ userId: '\ud800', password: 'x' }, 'userId'],
        [{ userId: 'al\udc00ice', password: 'x' }, 'userId'],
        [{ userId: '\udc00\ud800', password: 'x' }, 'userId'],
        [{ userId: 'alice' }, 'password'],
        [{ userId: 'alice', password: 12345 }, 'password'],
        [{ userId: 'alice', password: 'x', encodedHash: 5 }, 'encodedHash'],
        [{ userId: 'alice', password: 'x', encodedHash: 'not-a-phc-string' }, 'encodedHash'],
        [{ userId: 'alice', password: 'x'.repeat(1025), encodedHash: aliceHash }, 'password'],
      ];
      for (const [body, field] of cases) {
        const res = await request(ctx.app)
          .post('/v1/checks/password')
          .set(auth('login-a'))
          .send(body)
          .expect(400);
        expect(res.body.code).toBe(3);
        expect(res.body.message).toContain(field);
        expect(res.body.details).toHaveLength(1);
        expect(JSON.stringify(res.body)).not.toContain('x'.repeat(20));
      }
      const status = await ctx.engine.getUserStatus(ORG_A, 'alice');
      expect(status.failedAttempts.password).toBe(0);
    });

    it('unknown JSON fields are ignored', async () => {
      await request(ctx.app)
        .post('/v1/checks/password')
        .set(auth('login-a'))
        .send({ userId: 'alice', password: 'correct horse', encodedHash: aliceHash, extra: { deep: [1] } })
        .expect(200);
    });
  });

  describe('POST /v1/checks/totp', () => {
    it('success, wrong code, replay refused, lockout flow', async () => {
      await setLimits(10, 3);
      const secret = generateTotpSecret();
      const code = totpCode(secret);
      const ok = await request(ctx.app)
        .post('/v1/checks/totp')
        .set(auth('login-a'))
        .send({ userId: 'bob', code, secret })
        .expect(200);
      expect(ok.body).toEqual({ userId: 'bob', factor: 'totp', failedAttempts: '0', locked: false });

      const replay = await request(ctx.app)
        .post('/v1/checks/totp')
        .set(auth('login-a'))
        .send({ userId: 'bob', code, secret })
        .expect(401);
      expect(replay.body).toEqual(
        invalidCredentialBody('Errors.User.MFA.OTP.InvalidCode', 'Code is invalid', 1),
      );

      for (const n of [2, 3]) {
        const res = await request(ctx.app)
          .post('/v1/checks/totp')
          .set(auth('login-a'))
          .send({ userId: 'bob', code: wrongTotp(secret), secret })
          .expect(401);
        expect(res.body.details[1].failedAttempts).toBe(String(n));
      }
      await request(ctx.app)
        .post('/v1/checks/totp')
        .set(auth('login-a'))
        .send({ userId: 'bob', code: totpCode(secret, Date.now() + 30_000), secret })
        .expect(423);
      // The lock applies to every factor.
      await checkPassword('correct horse', 'bob').expect(423);
    });

    it('RFC 6238 §5.2: once a step is used, a code of an earlier step is refused', async () => {
      // A fixed clock in the middle of a step, so that the previous and the current steps are
      // both inside the ±1 window whatever the wall clock says.
      const now = 1_800_000_015_000;
      const store = new MemoryStore();
      const engine = new LockoutEngine({ store, instanceId: INSTANCE });
      const app = express();
      app.use(
        createApiRouter({
          engine,
          authorize: createTokenAuthorizer({ tokens: TOKENS }),
          passwordVerifier,
          totpVerifier: createTotpVerifier({ store, clock: () => now }),
          otpCodes: createOtpCodes({ store, limiter: createIssueLimiter({ points: 3 }) }),
        }),
      );
      try {
        const secret = generateTotpSecret();
        const previous = totpCode(secret, now - 30_000);
        const current = totpCode(secret, now);
        const next = totpCode(secret, now + 30_000);
        const check = (code: string) =>
          request(app).post('/v1/checks/totp').set(auth('login-a')).send({ userId: 'carol', code, secret });
        await check(current).expect(200);
        // The previous step was never used, but it is earlier than a used one: refused.
        const res = await check(previous).expect(401);
        expect(res.body).toEqual(
          invalidCredentialBody('Errors.User.MFA.OTP.InvalidCode', 'Code is invalid', 1),
        );
        await check(current).expect(401);
        // A later step is still accepted once.
        await check(next).expect(200);
        await check(current).expect(401);
        // Another user has their own record.
        await request(app)
          .post('/v1/checks/totp')
          .set(auth('login-a'))
          .send({ userId: 'dave', code: previous, secret })
          .expect(200);
      } finally {
        engine.close();
        await store.close();
      }
    });

    it('bad input: 400 naming the field', async () => {
      const secret = generateTotpSecret();
      for (const [body, field] of [
        [{ userId: 'bob', secret }, 'code'],
        [{ userId: 'bob', code: 123456, secret }, 'code'],
        [{ userId: 'bob', code: '123456' }, 'secret'],
        [{ userId: 'bob', code: '123456', secret: 'not base32!' }, 'secret'],
      ] as const) {
        const res = await request(ctx.app)
          .post('/v1/checks/totp')
          .set(auth('login-a'))
          .send(body)
          .expect(400);
        expect(res.body.message).toContain(field);
      }
      const status = await ctx.engine.getUserStatus(ORG_A, 'bob');
      expect(status.failedAttempts.totp).toBe(0);
    });
  });

  describe.each([
    ['sms', 'otp_sms'],
    ['email', 'otp_email'],
  ] as const)('one-time codes by %s', (channel, factor) => {
    it(`POST /v1/otp/${channel}: 201 {code, expiresAt}; /v1/checks/${factor}: single use`, async () => {
      const issued = await request(ctx.app)
        .post(`/v1/otp/${channel}`)
        .set(auth('login-a'))
        .send({ userId: 'carol' })
        .expect(201);
      expect(issued.body).toEqual({
        code: expect.stringMatching(/^[0-9]{6}$/),
        expiresAt: expect.stringMatching(RFC3339_MS),
      });
      expect(Date.parse(issued.body.expiresAt)).toBeGreaterThan(Date.now());
      expect(issued.headers['cache-control']).toBe('no-store');

      const ok = await request(ctx.app)
        .post(`/v1/checks/${factor}`)
        .set(auth('login-a'))
        .send({ userId: 'carol', code: issued.body.code })
        .expect(200);
      expect(ok.body).toEqual({ userId: 'carol', factor, failedAttempts: '0', locked: false });

      const again = await request(ctx.app)
        .post(`/v1/checks/${factor}`)
        .set(auth('login-a'))
        .send({ userId: 'carol', code: issued.body.code })
        .expect(401);
      expect(again.body).toEqual(invalidCredentialBody('Errors.User.Code.Invalid', 'Code is invalid', 1));
    });

    it('the lockout flow, separate from the other code counters', async () => {
      await setLimits(10, 2);
      const issued = await request(ctx.app)
        .post(`/v1/otp/${channel}`)
        .set(auth('login-a'))
        .send({ userId: 'dan' })
        .expect(201);
      const wrong = issued.body.code === '000000' ? '000001' : '000000';
      const first = await request(ctx.app)
        .post(`/v1/checks/${factor}`)
        .set(auth('login-a'))
        .send({ userId: 'dan', code: wrong })
        .expect(401);
      expect(first.body.details[1].failedAttempts).toBe('1');
      const second = await request(ctx.app)
        .post(`/v1/checks/${factor}`)
        .set(auth('login-a'))
        .send({ userId: 'dan', code: wrong })
        .expect(401);
      expect(second.body.details[1].failedAttempts).toBe('2');
      // The correct code, still stored, is refused: the user is locked.
      await request(ctx.app)
        .post(`/v1/checks/${factor}`)
        .set(auth('login-a'))
        .send({ userId: 'dan', code: issued.body.code })
        .expect(423);
      // A locked user gets no new code.
      const refused = await request(ctx.app)
        .post(`/v1/otp/${channel}`)
        .set(auth('login-a'))
        .send({ userId: 'dan' })
        .expect(423);
      expect(refused.body.details[0].id).toBe('Errors.User.Locked');
      const status = await ctx.engine.getUserStatus(ORG_A, 'dan');
      const other = factor === 'otp_sms' ? 'otp_email' : 'otp_sms';
      expect(status.failedAttempts[factor]).toBe(2);
      expect(status.failedAttempts[other]).toBe(0);
    });

    it('too many codes issued: 429 code 8 with Retry-After', async () => {
      for (let i = 0; i < 3; i++) {
        await request(ctx.app)
          .post(`/v1/otp/${channel}`)
          .set(auth('login-a'))
          .send({ userId: 'erin' })
          .expect(201);
      }
      const res = await request(ctx.app)
        .post(`/v1/otp/${channel}`)
        .set(auth('login-a'))
        .send({ userId: 'erin' })
        .expect(429);
      expect(res.body).toMatchObject({ code: 8, details: [{ id: 'Errors.Otp.TooManyCodes' }] });
      expect(Number(res.headers['retry-after'])).toBeGreaterThan(800);
      expect(Number(res.headers['retry-after'])).toBeLessThanOrEqual(900);
    });

    it('bad input: 400', async () => {
      await request(ctx.app).post(`/v1/otp/${channel}`).set(auth('login-a')).send({}).expect(400);
      const res = await request(ctx.app)
        .post(`/v1/checks/${factor}`)
        .set(auth('login-a'))
        .send({ userId: 'erin', code: 123456 })
        .expect(400);
      expect(res.body.message).toContain('code');
    });
  });

  describe('attempts', () => {
    it('reserve, settle failure, settle success, double settle 404', async () => {
      const r1 = await request(ctx.app)
        .post('/v1/attempts')
        .set(auth('login-a'))
        .send({ userId: 'frank', factor: 'password' })
        .expect(201);
      expect(r1.body).toEqual({
        attemptId: expect.any(String),
        expiresAt: expect.stringMatching(RFC3339_MS),
      });
      const lease = Date.parse(r1.body.expiresAt) - Date.now();
      expect(lease).toBeGreaterThan(25_000);
      expect(lease).toBeLessThanOrEqual(30_000);

      const f = await request(ctx.app)
        .post(`/v1/attempts/${r1.body.attemptId}/failure`)
        .set(auth('login-a'))
        .expect(200);
      expect(f.body).toEqual({ failedAttempts: '1', locked: false });
      const twice = await request(ctx.app)
        .post(`/v1/attempts/${r1.body.attemptId}/success`)
        .set(auth('login-a'))
        .expect(404);
      expect(twice.body).toMatchObject({
        code: 5,
        details: [{ '@type': ERROR_DETAIL, id: 'Errors.Attempt.NotFound' }],
      });

      const r2 = await request(ctx.app)
        .post('/v1/attempts')
        .set(auth('login-a'))
        .send({ userId: 'frank', factor: 'password' })
        .expect(201);
      const s = await request(ctx.app)
        .post(`/v1/attempts/${r2.body.attemptId}/success`)
        .set(auth('login-a'))
        .expect(200);
      expect(s.body).toEqual({ failedAttempts: '0', locked: false });
      await request(ctx.app)
        .post(`/v1/attempts/${r2.body.attemptId}/failure`)
        .set(auth('login-a'))
        .expect(404);
    });

    it('every factor, recovery_code included; the limit locks and later reservations are 423', async () => {
      await setLimits(2, 2);
      for (const factor of ['password', 'totp', 'otp_sms', 'otp_email', 'recovery_code']) {
        const userId = `user-${factor}`;
        for (const n of [1, 2]) {
          const r = await request(ctx.app)
            .post('/v1/attempts')
            .set(auth('login-a'))
            .send({ userId, factor })
            .expect(201);
          const s = await request(ctx.app)
            .post(`/v1/attempts/${r.body.attemptId}/failure`)
            .set(auth('login-a'))
            .expect(200);
          expect(s.body).toEqual({ failedAttempts: String(n), locked: n === 2 });
        }
        const locked = await request(ctx.app)
          .post('/v1/attempts')
          .set(auth('login-a'))
          .send({ userId, factor })
          .expect(423);
        expect(locked.body).toMatchObject({ code: 9, details: [{ id: 'Errors.User.Locked' }] });
      }
    });

    it('busy: concurrent reservations beyond the attempts left answer 429, never 423', async () => {
      await setLimits(3, 10);
      const results = await Promise.all(
        Array.from({ length: 8 }, () =>
          request(ctx.app)
            .post('/v1/attempts')
            .set(auth('login-a'))
            .send({ userId: 'gina', factor: 'password' }),
        ),
      );
      const statuses = results.map((r) => r.status).sort();
      expect(statuses).toEqual([201, 201, 201, 429, 429, 429, 429, 429]);
      for (const r of results.filter((x) => x.status === 429)) {
        expect(r.headers['retry-after']).toBe('1');
        expect(r.body).toMatchObject({ code: 8, details: [{ id: 'Errors.Lockout.Busy' }] });
      }
      // Settling one as a success frees a slot.
      const admitted = results.filter((r) => r.status === 201);
      await request(ctx.app)
        .post(`/v1/attempts/${admitted[0]?.body.attemptId}/success`)
        .set(auth('login-a'))
        .expect(200);
      await request(ctx.app)
        .post('/v1/attempts')
        .set(auth('login-a'))
        .send({ userId: 'gina', factor: 'password' })
        .expect(201);
    });

    it("an attempt of another org: 403 unless the token may act on the attempt's org", async () => {
      const r = await request(ctx.app)
        .post('/v1/attempts')
        .set(auth('login-b'))
        .send({ userId: 'hal', factor: 'totp' })
        .expect(201);
      const denied = await request(ctx.app)
        .post(`/v1/attempts/${r.body.attemptId}/failure`)
        .set(auth('login-a'))
        .expect(403);
      expect(denied.body).toMatchObject({ code: 7, details: [{ id: 'Errors.Token.OrgDenied' }] });
      // Even naming that org in the header does not help a token that may not act on it.
      await request(ctx.app)
        .post(`/v1/attempts/${r.body.attemptId}/failure`)
        .set(auth('login-a'))
        .set('x-zitadel-orgid', ORG_B)
        .expect(403);
      // A token of every org may settle it, whatever its home org or header.
      const ok = await request(ctx.app)
        .post(`/v1/attempts/${r.body.attemptId}/failure`)
        .set(auth('login-all'))
        .set('x-zitadel-orgid', ORG_A)
        .expect(200);
      expect(ok.body).toEqual({ failedAttempts: '1', locked: false });
      expect((await ctx.engine.getUserStatus(ORG_B, 'hal')).failedAttempts.totp).toBe(1);
      expect((await ctx.engine.getUserStatus(ORG_A, 'hal')).failedAttempts.totp).toBe(0);
    });

    it('bad input: unknown factor, bad ids, malformed and forged attempt ids', async () => {
      const unknown = await request(ctx.app)
        .post('/v1/attempts')
        .set(auth('login-a'))
        .send({ userId: 'ivy', factor: 'sms' })
        .expect(400);
      expect(unknown.body.message).toContain('factor');
      await request(ctx.app).post('/v1/attempts').set(auth('login-a')).send({ userId: 'ivy' }).expect(400);
      await request(ctx.app)
        .post('/v1/attempts')
        .set(auth('login-a'))
        .send({ userId: ['ivy'], factor: 'password' })
        .expect(400);

      const malformed = await request(ctx.app)
        .post('/v1/attempts/not-an-id/success')
        .set(auth('login-a'))
        .expect(400);
      expect(malformed.body).toMatchObject({ code: 3, details: [{ id: 'Errors.Attempt.Invalid' }] });
      // Well-formed but never reserved: 404.
      const ref = Buffer.from(JSON.stringify([ORG_A, 'ivy', 'password'])).toString('base64url');
      const forged = `${ref}.${'A'.repeat(22)}`;
      const res = await request(ctx.app)
        .post(`/v1/attempts/${forged}/failure`)
        .set(auth('login-a'))
        .expect(404);
      expect(res.body.code).toBe(5);
      // A malformed id from an unauthenticated client: 401 first.
      await request(ctx.app).post('/v1/attempts/not-an-id/success').expect(401);
    });
  });

  it('org isolation: a lock in org A does not touch the same user id in org B', async () => {
    await setLimits(1, 1);
    await checkPassword('wrong', 'alice', 'login-a').expect(401);
    await checkPassword('correct horse', 'alice', 'login-a').expect(423);
    await checkPassword('correct horse', 'alice', 'login-b').expect(200);
    await request(ctx.app)
      .post('/v1/checks/password')
      .set(auth('login-all'))
      .set('x-zitadel-orgid', ORG_B)
      .send({ userId: 'alice', password: 'correct horse', encodedHash: aliceHash })
      .expect(200);
    await request(ctx.app)
      .post('/v1/checks/password')
      .set(auth('login-b'))
      .set('x-zitadel-orgid', ORG_A)
      .send({ userId: 'alice', password: 'correct horse', encodedHash: aliceHash })
      .expect(403);
  });

  it('checks need lockout.check', async () => {
    const res = await request(ctx.app)
      .post('/v1/checks/password')
      .set(auth('admin-a'))
      .send({ userId: 'alice', password: 'correct horse', encodedHash: aliceHash })
      .expect(403);
    expect(res.body).toMatchObject({ code: 7, details: [{ id: 'Errors.Token.PermissionDenied' }] });
    await request(ctx.app)
      .post('/v1/attempts')
      .set(auth('admin-a'))
      .send({ userId: 'a', factor: 'password' })
      .expect(403);
    await request(ctx.app).post('/v1/otp/sms').set(auth('admin-a')).send({ userId: 'a' }).expect(403);
    expect(ctx.verifier.verify).not.toHaveBeenCalled();
  });

  it('the checks router can be mounted alone under a prefix', async () => {
    const app = express();
    app.use(
      '/auth',
      createChecksRouter({
        engine: ctx.engine,
        authorize: createTokenAuthorizer({ tokens: TOKENS }),
        passwordVerifier,
        totpVerifier: createTotpVerifier({ store: ctx.store }),
        otpCodes: createOtpCodes({ store: ctx.store }),
      }),
    );
    await request(app)
      .post('/auth/v1/checks/password')
      .set(auth('login-a'))
      .send({ userId: 'alice', password: 'correct horse', encodedHash: aliceHash })
      .expect(200);
  });
});
