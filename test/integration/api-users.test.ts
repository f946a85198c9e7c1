import express from 'express';
import request from 'supertest';
import { RFC3339_MS, auth, makeApiApp } from '../helpers/api-app';
import { createUsersRouter } from '../../src/http/routers';
import { createTokenAuthorizer, type TokenOptions } from '../../src/http';

const INSTANCE = 'inst-1';
const ORG_A = 'org-a';
const ORG_B = 'org-b';
const TOKENS: TokenOptions[] = [
  {
    name: 'org-a-helpdesk',
    token: 'a-helpdesk',
    org: ORG_A,
    orgs: [ORG_A],
    permissions: ['user.read', 'user.write', 'policy.write'],
  },
  { name: 'org-a-reader', token: 'a-reader', org: ORG_A, permissions: ['user.read'] },
  { name: 'org-b-helpdesk', token: 'b-helpdesk', org: ORG_B, permissions: ['user.read', 'user.write'] },
  { name: 'checker', token: 'checker', org: ORG_A, orgs: '*', permissions: ['lockout.check'] },
];

const makeApp = () => makeApiApp(INSTANCE, TOKENS);

describe('user routes (API.md 2.1 lock/unlock, 2.2 status, lockouts, password_changed)', () => {
  let ctx: ReturnType<typeof makeApp>;
  beforeEach(() => {
    ctx = makeApp();
  });
  afterEach(async () => {
    ctx.engine.close();
    await ctx.store.close();
  });

  /** Records `n` failed attempts of `factor` for the user through the attempts API. */
  async function fail(userId: string, factor: string, n: number, org = ORG_A): Promise<void> {
    for (let i = 0; i < n; i++) {
      const r = await request(ctx.app)
        .post('/v1/attempts')
        .set(auth('checker'))
        .set('x-zitadel-orgid', org)
        .send({ userId, factor })
        .expect(201);
      await request(ctx.app)
        .post(`/v1/attempts/${r.body.attemptId}/failure`)
        .set(auth('checker'))
        .expect(200);
    }
  }

  it('GET /v1/users/{userId}/lockout of a user with no state', async () => {
    const res = await request(ctx.app).get('/v1/users/alice/lockout').set(auth('a-reader')).expect(200);
    expect(res.body).toEqual({
      userId: 'alice',
      orgId: ORG_A,
      state: 'USER_STATE_ACTIVE',
      failedAttempts: { password: '0', totp: '0', otpSms: '0', otpEmail: '0', recoveryCode: '0' },
      settings: {
        details: { sequence: '0', resourceOwner: INSTANCE },
        maxPasswordAttempts: '10',
        maxOtpAttempts: '10',
        isDefault: true,
        resourceOwnerType: 'RESOURCE_OWNER_TYPE_INSTANCE',
      },
    });
  });

  it('status shows every counter and the lock', async () => {
    await fail('alice', 'password', 2);
    await fail('alice', 'totp', 1);
    await fail('alice', 'otp_sms', 3);
    await fail('alice', 'otp_email', 4);
    await fail('alice', 'recovery_code', 5);
    const res = await request(ctx.app).get('/v1/users/alice/lockout').set(auth('a-reader')).expect(200);
    expect(res.body.failedAttempts).toEqual({
      password: '2',
      totp: '1',
      otpSms: '3',
      otpEmail: '4',
      recoveryCode: '5',
    });
    expect(res.body.state).toBe('USER_STATE_ACTIVE');
    expect(res.body).not.toHaveProperty('lockedAt');

    await request(ctx.app).post('/v2/users/alice/lock').set(auth('a-helpdesk')).expect(200);
    const locked = await request(ctx.app).get('/v1/users/alice/lockout').set(auth('a-reader')).expect(200);
    expect(locked.body.state).toBe('USER_STATE_LOCKED');
    expect(locked.body.lockedAt).toMatch(RFC3339_MS);
  });

  it.each([
    ['/management/v1/users/{id}/_lock', '/management/v1/users/{id}/_unlock'],
    ['/v2/users/{id}/lock', '/v2/users/{id}/unlock'],
  ])('%s and %s: details; lock twice / unlock twice: 400 code 9', async (lockPath, unlockPath) => {
    const lockUrl = lockPath.replace('{id}', 'bob');
    const unlockUrl = unlockPath.replace('{id}', 'bob');
    const notLocked = await request(ctx.app).post(unlockUrl).set(auth('a-helpdesk')).expect(400);
    expect(notLocked.body).toMatchObject({ code: 9, details: [{ id: 'Errors.User.NotLocked' }] });

    const lock = await request(ctx.app).post(lockUrl).set(auth('a-helpdesk')).send({}).expect(200);
    expect(lock.body).toEqual({
      details: { sequence: '0', changeDate: expect.stringMatching(RFC3339_MS), resourceOwner: ORG_A },
    });
    const again = await request(ctx.app).post(lockUrl).set(auth('a-helpdesk')).expect(400);
    expect(again.body).toMatchObject({ code: 9, details: [{ id: 'Errors.User.AlreadyLocked' }] });

    const unlock = await request(ctx.app).post(unlockUrl).set(auth('a-helpdesk')).expect(200);
    expect(unlock.body).toEqual({
      details: { sequence: '0', changeDate: expect.stringMatching(RFC3339_MS), resourceOwner: ORG_A },
    });
    const status = await request(ctx.app).get('/v1/users/bob/lockout').set(auth('a-reader')).expect(200);
    expect(status.body.state).toBe('USER_STATE_ACTIVE');
  });

  it('unlock resets every counter', async () => {
    await fail('carol', 'password', 3);
    await fail('carol', 'totp', 2);
    await request(ctx.app).post('/management/v1/users/carol/_lock').set(auth('a-helpdesk')).expect(200);
    await request(ctx.app).post('/management/v1/users/carol/_unlock').set(auth('a-helpdesk')).expect(200);
    const res = await request(ctx.app).get('/v1/users/carol/lockout').set(auth('a-reader')).expect(200);
    expect(res.body.failedAttempts).toEqual({
      password: '0',
      totp: '0',
      otpSms: '0',
      otpEmail: '0',
      recoveryCode: '0',
    });
  });

  it('password_changed resets the password counter only and does not unlock', async () => {
    await fail('dave', 'password', 3);
    await fail('dave', 'totp', 2);
    await request(ctx.app).post('/v2/users/dave/lock').set(auth('a-helpdesk')).expect(200);
    const res = await request(ctx.app)
      .post('/v1/users/dave/password_changed')
      .set(auth('a-helpdesk'))
      .expect(200);
    expect(res.body).toEqual({
      details: { sequence: '0', changeDate: expect.stringMatching(RFC3339_MS), resourceOwner: ORG_A },
    });
    const status = await request(ctx.app).get('/v1/users/dave/lockout').set(auth('a-reader')).expect(200);
    expect(status.body.failedAttempts).toMatchObject({ password: '0', totp: '2' });
    expect(status.body.state).toBe('USER_STATE_LOCKED');
  });

  it('GET /v1/lockouts lists the locked users of the org, page by page', async () => {
    const empty = await request(ctx.app).get('/v1/lockouts').set(auth('a-reader')).expect(200);
    expect(empty.body).toEqual({ users: [] });
    for (const u of ['u3', 'u1', 'u2']) {
      await request(ctx.app).post(`/v2/users/${u}/lock`).set(auth('a-helpdesk')).expect(200);
    }
    await request(ctx.app).post('/v2/users/u9/lock').set(auth('b-helpdesk')).expect(200);

    const all = await request(ctx.app).get('/v1/lockouts').set(auth('a-reader')).expect(200);
    expect(all.body).toEqual({
      users: ['u1', 'u2', 'u3'].map((userId) => ({ userId, lockedAt: expect.stringMatching(RFC3339_MS) })),
    });
    const page1 = await request(ctx.app).get('/v1/lockouts?limit=2').set(auth('a-reader')).expect(200);
    expect(page1.body.users.map((u: { userId: string }) => u.userId)).toEqual(['u1', 'u2']);
    expect(page1.body.nextCursor).toBe('u2');
    const page2 = await request(ctx.app)
      .get(`/v1/lockouts?limit=2&cursor=${encodeURIComponent(page1.body.nextCursor)}`)
      .set(auth('a-reader'))
      .expect(200);
    expect(page2.body).toEqual({ users: [{ userId: 'u3', lockedAt: expect.stringMatching(RFC3339_MS) }] });

    const b = await request(ctx.app).get('/v1/lockouts').set(auth('b-helpdesk')).expect(200);
    expect(b.body.users.map((u: { userId: string }) => u.userId)).toEqual(['u9']);
  });

  it.each(['0', '1001', '-1', '1.5', 'ten', '', '99999999999'])(
    'GET /v1/lockouts?limit=%s is a 400',
    async (limit) => {
      const res = await request(ctx.app).get(`/v1/lockouts?limit=${limit}`).set(auth('a-reader')).expect(400);
      expect(res.body.code).toBe(3);
      expect(res.body.message).toMatch(/limit/);
    },
  );

  it('GET /v1/lockouts with limit given twice or a bad cursor is a 400', async () => {
    await request(ctx.app).get('/v1/lockouts?limit=1&limit=2').set(auth('a-reader')).expect(400);
    const res = await request(ctx.app).get('/v1/lockouts?cursor=a%01').set(auth('a-reader')).expect(400);
    expect(res.body.message).toMatch(/cursor/);
    await request(ctx.app).get('/v1/lockouts?limit=1000').set(auth('a-reader')).expect(200);
  });

  it('bad user ids are a 400 code 3 naming userId', async () => {
    const long = 'x'.repeat(257);
    for (const path of [`/v1/users/${long}/lockout`, '/v1/users/a%00b/lockout', '/v1/users/a%1Fb/lockout']) {
      const res = await request(ctx.app).get(path).set(auth('a-reader')).expect(400);
      expect(res.body.code).toBe(3);
      expect(res.body.message).toMatch(/userId/);
    }
    await request(ctx.app).post('/v2/users/a%7Fb/lock').set(auth('a-helpdesk')).expect(400);
    // 256 characters, and any other character (ids are opaque): fine.
    await request(ctx.app)
      .get(`/v1/users/${'x'.repeat(256)}/lockout`)
      .set(auth('a-reader'))
      .expect(200);
    const odd = await request(ctx.app)
      .get('/v1/users/J%C3%BCrgen%2F%40x/lockout')
      .set(auth('a-reader'))
      .expect(200);
    expect(odd.body.userId).toBe('Jürgen/@x');
  });

  it('a malformed percent-encoding in the path is a 400, not a 500', async () => {
    const res = await request(ctx.app).get('/v1/users/%E0%A4%A/lockout').set(auth('a-reader')).expect(400);
    expect(res.body.code).toBe(3);
  });

  it('permissions: user.read may not lock; checks may not read', async () => {
    const res = await request(ctx.app).post('/v2/users/alice/lock').set(auth('a-reader')).expect(403);
    expect(res.body).toMatchObject({ code: 7, details: [{ id: 'Errors.Token.PermissionDenied' }] });
    await request(ctx.app).post('/v1/users/alice/password_changed').set(auth('a-reader')).expect(403);
    await request(ctx.app).get('/v1/users/alice/lockout').set(auth('checker')).expect(403);
    await request(ctx.app).get('/v1/lockouts').set(auth('checker')).expect(403);
  });

  it('org isolation: the same user id in two orgs is two users', async () => {
    await request(ctx.app).post('/v2/users/alice/lock').set(auth('a-helpdesk')).expect(200);
    const b = await request(ctx.app).get('/v1/users/alice/lockout').set(auth('b-helpdesk')).expect(200);
    expect(b.body).toMatchObject({ orgId: ORG_B, state: 'USER_STATE_ACTIVE' });
    // Org A's helpdesk may not act on org B.
    const denied = await request(ctx.app)
      .post('/v2/users/alice/unlock')
      .set(auth('a-helpdesk'))
      .set('x-zitadel-orgid', ORG_B)
      .expect(403);
    expect(denied.body).toMatchObject({ code: 7, details: [{ id: 'Errors.Token.OrgDenied' }] });
    const a = await request(ctx.app).get('/v1/users/alice/lockout').set(auth('a-reader')).expect(200);
    expect(a.body.state).toBe('USER_STATE_LOCKED');
  });

  it('audits lock, unlock and password_changed, refusals too', async () => {
    await request(ctx.app).post('/v2/users/alice/lock').set(auth('a-helpdesk')).expect(200);
    await request(ctx.app).post('/management/v1/users/alice/_lock').set(auth('a-helpdesk')).expect(400);
    await request(ctx.app).post('/management/v1/users/alice/_unlock').set(auth('a-helpdesk')).expect(200);
    await request(ctx.app).post('/v1/users/alice/password_changed').set(auth('a-helpdesk')).expect(200);
    const base = { principal: 'org-a-helpdesk', orgId: ORG_A, userId: 'alice' };
    expect(ctx.audit).toEqual([
      { action: 'user.lock', ...base, outcome: 'ok' },
      { action: 'user.lock', ...base, outcome: 'Errors.User.AlreadyLocked' },
      { action: 'user.unlock', ...base, outcome: 'ok' },
      { action: 'user.password_changed', ...base, outcome: 'ok' },
    ]);
  });

  it('the users router can be mounted alone', async () => {
    const app = express();
    app.use(
      '/lockgate',
      createUsersRouter({ engine: ctx.engine, authorize: createTokenAuthorizer({ tokens: TOKENS }) }),
    );
    await request(app).post('/lockgate/v2/users/zed/lock').set(auth('a-helpdesk')).expect(200);
    const res = await request(app).get('/lockgate/v1/users/zed/lockout').set(auth('a-reader')).expect(200);
    expect(res.body.state).toBe('USER_STATE_LOCKED');
  });
});
