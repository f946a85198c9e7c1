import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { start, type RunningApp } from '../../examples/login-app/server';
import { totpCode } from '../../src';
import { testRedisUrl } from '../helpers/redis-clients';

/**
 * The README walkthrough of examples/login-app, over HTTP against the real app (started
 * in-process on a free port), with the memory store and with Redis.
 */

const ADMIN = { Authorization: 'Bearer test-admin-token' };
const ALICE = { username: 'alice', password: 'correct-horse-battery' };

describe.each([
  ['memory', () => ({})],
  ['redis', () => ({ redisUrl: testRedisUrl() })],
])('examples/login-app (%s store)', (_name, storeOptions) => {
  let app: RunningApp;
  let url: string;
  const sent: Array<{ channel: string; to: string; code: string }> = [];

  beforeAll(async () => {
    app = await start({
      port: 0,
      adminToken: 'test-admin-token',
      argon2Cost: { memoryCost: 4096, timeCost: 2, parallelism: 1 },
      instanceId: `example-${randomUUID()}`,
      sender: { send: (channel, to, code) => void sent.push({ channel, to, code }) },
      ...storeOptions(),
    });
    url = app.url;
  });
  afterAll(async () => {
    await app?.close();
  });

  test('wrong password 5 times → locked → admin unlock → the right password works', async () => {
    for (let i = 1; i <= 5; i++) {
      const res = await request(url)
        .post('/login')
        .send({ ...ALICE, password: 'wrong' })
        .expect(401);
      expect(res.body).toEqual({ error: 'invalid_credentials', failedAttempts: i });
    }
    const locked = await request(url)
      .post('/login')
      .send({ ...ALICE, password: 'wrong' })
      .expect(423);
    expect(locked.body).toMatchObject({ code: 9, details: [{ id: 'Errors.User.Locked' }] });
    // the right password does not help while locked: it is not even evaluated
    await request(url).post('/login').send(ALICE).expect(423);

    const status = await request(url).get('/admin/v1/users/u-alice/lockout').set(ADMIN).expect(200);
    expect(status.body).toMatchObject({
      userId: 'u-alice',
      orgId: 'demo',
      state: 'USER_STATE_LOCKED',
      failedAttempts: { password: '5' },
    });

    await request(url).post('/admin/v2/users/u-alice/unlock').expect(401);
    await request(url)
      .post('/admin/v2/users/u-alice/unlock')
      .set({ Authorization: 'Bearer wrong-token' })
      .expect(401);
    await request(url).post('/admin/v2/users/u-alice/unlock').set(ADMIN).expect(200);

    const login = await request(url).post('/login').send(ALICE).expect(200);
    expect(login.body).toMatchObject({ status: 'signed_in', userId: 'u-alice' });
    const me = await request(url)
      .get('/me')
      .set({ Authorization: `Bearer ${login.body.session}` })
      .expect(200);
    expect(me.body).toEqual({ userId: 'u-alice', username: 'alice', mfa: null });

    const after = await request(url).get('/admin/v1/users/u-alice/lockout').set(ADMIN).expect(200);
    expect(after.body).toMatchObject({ state: 'USER_STATE_ACTIVE', failedAttempts: { password: '0' } });
  });

  test('TOTP: enroll, confirm, then sign in with the password and a code', async () => {
    const login = await request(url).post('/login').send(ALICE).expect(200);
    const auth = { Authorization: `Bearer ${login.body.session}` };
    const enrolled = await request(url).post('/mfa/totp').set(auth).expect(201);
    const { secret, otpauthUrl } = enrolled.body as { secret: string; otpauthUrl: string };
    expect(secret).toMatch(/^[A-Z2-7]{32}$/);
    expect(otpauthUrl).toBe(
      `otpauth://totp/LockgateDemo%3Aalice?secret=${secret}&issuer=LockgateDemo&algorithm=SHA1&digits=6&period=30`,
    );
    await request(url)
      .post('/mfa/totp/verify')
      .set(auth)
      .send({ code: totpCode(secret) })
      .expect(200);

    const step1 = await request(url).post('/login').send(ALICE).expect(200);
    expect(step1.body).toMatchObject({ status: 'second_factor_required', factor: 'totp' });
    const ticket = step1.body.ticket as string;
    const wrong = totpCode(secret, Date.now() + 10 * 30_000);
    const bad = await request(url).post('/login/totp').send({ ticket, code: wrong }).expect(401);
    expect(bad.body).toEqual({ error: 'invalid_code', failedAttempts: 1 });
    // the confirmation code was used already: the next step's code (within the ±1 step window)
    const ok = await request(url)
      .post('/login/totp')
      .send({ ticket, code: totpCode(secret, Date.now() + 30_000) })
      .expect(200);
    expect(ok.body).toMatchObject({ status: 'signed_in', userId: 'u-alice' });
    // a ticket is single use
    await request(url)
      .post('/login/totp')
      .send({ ticket, code: totpCode(secret) })
      .expect(401, { error: 'invalid_ticket' });
  });

  test('SMS code step (bob): the code is sent, a wrong one counts, the right one signs in', async () => {
    const step1 = await request(url)
      .post('/login')
      .send({ username: 'bob', password: 'hunter2-but-longer' })
      .expect(200);
    expect(step1.body).toMatchObject({ status: 'second_factor_required', factor: 'sms' });
    const last = sent.at(-1)!;
    expect(last).toMatchObject({ channel: 'sms', to: '+1 555 0100' });
    const wrong = last.code === '000000' ? '000001' : '000000';
    const bad = await request(url)
      .post('/login/code')
      .send({ ticket: step1.body.ticket, code: wrong })
      .expect(401);
    expect(bad.body).toEqual({ error: 'invalid_code', failedAttempts: 1 });
    const ok = await request(url)
      .post('/login/code')
      .send({ ticket: step1.body.ticket, code: last.code })
      .expect(200);
    expect(ok.body).toMatchObject({ status: 'signed_in', userId: 'u-bob' });
  });

  test('email code step (carol) and OTP lockout: 5 wrong codes lock, the code step answers 423', async () => {
    const step1 = await request(url)
      .post('/login')
      .send({ username: 'carol', password: 'open-sesame-42' })
      .expect(200);
    const { ticket } = step1.body as { ticket: string };
    const code = sent.at(-1)!.code;
    expect(sent.at(-1)).toMatchObject({ channel: 'email', to: 'carol@example.com' });
    const wrong = code === '000000' ? '000001' : '000000';
    for (let i = 1; i <= 5; i++) {
      await request(url).post('/login/code').send({ ticket, code: wrong }).expect(401);
    }
    const locked = await request(url).post('/login/code').send({ ticket, code }).expect(423);
    expect(locked.body.details[0].id).toBe('Errors.User.Locked');
    // and the password step too: the lock is per user, whatever the factor
    await request(url).post('/login').send({ username: 'carol', password: 'open-sesame-42' }).expect(423);
    await request(url).post('/admin/management/v1/users/u-carol/_unlock').set(ADMIN).expect(200);
    await request(url).post('/login').send({ username: 'carol', password: 'open-sesame-42' }).expect(200);
  });

  test('an unknown login name behaves as a known one (401 × 5, then 423); no name is a 400', async () => {
    for (let i = 1; i <= 5; i++) {
      await request(url).post('/login').send({ username: 'mallory', password: 'x' }).expect(401);
    }
    await request(url).post('/login').send({ username: 'mallory', password: 'x' }).expect(423);
    const res = await request(url).post('/login').send({ password: 'x' }).expect(400);
    expect(res.body).toMatchObject({ code: 3 });
  });

  test('the admin routers serve the lockout settings', async () => {
    const res = await request(url).get('/admin/management/v1/policies/lockout').set(ADMIN).expect(200);
    expect(res.body.policy).toMatchObject({ maxPasswordAttempts: '5', maxOtpAttempts: '5', isDefault: true });
  });
});
