import express from 'express';
import request from 'supertest';
import { RFC3339_MS, auth, makeApiApp } from '../helpers/api-app';
import { createSettingsRouter } from '../../src/http/routers';
import { PERMISSIONS, createTokenAuthorizer, type TokenOptions } from '../../src/http';

const INSTANCE = 'inst-1';
const ORG_A = '69629023906488334';
const ORG_B = 'org-b';
const ALL = [...PERMISSIONS];
const TOKENS: TokenOptions[] = [
  { name: 'admin', token: 'admin-token', org: INSTANCE, orgs: ['*'], permissions: ALL },
  { name: 'org-a-admin', token: 'a-admin', org: ORG_A, orgs: [ORG_A], permissions: ALL },
  { name: 'org-a-reader', token: 'a-reader', org: ORG_A, permissions: ['policy.read', 'user.read'] },
  { name: 'org-b-admin', token: 'b-admin', org: ORG_B, permissions: ALL },
];

const makeApp = () => makeApiApp(INSTANCE, TOKENS);

describe('settings routes (API.md 2.1)', () => {
  let ctx: ReturnType<typeof makeApp>;
  beforeEach(() => {
    ctx = makeApp();
  });
  afterEach(async () => {
    ctx.engine.close();
    await ctx.store.close();
  });

  const mgmt = '/management/v1/policies/lockout';

  it('GET management lockout: the instance default when the org has none (seed shape)', async () => {
    const res = await request(ctx.app).get(mgmt).set(auth('a-admin')).expect(200);
    expect(res.headers['content-type']).toMatch(/application\/json/);
    expect(res.body).toEqual({
      policy: {
        details: { sequence: '0', resourceOwner: INSTANCE },
        maxPasswordAttempts: '10',
        maxOtpAttempts: '10',
        isDefault: true,
      },
      isDefault: true,
    });
  });

  it('POST adds org settings, GET shows them, POST again is 409 code 6', async () => {
    const add = await request(ctx.app)
      .post(mgmt)
      .set(auth('a-admin'))
      .send({ maxPasswordAttempts: 5, maxOtpAttempts: '3', unknownField: 'ignored' })
      .expect(200);
    expect(add.body).toEqual({
      details: {
        sequence: '1',
        creationDate: expect.stringMatching(RFC3339_MS),
        changeDate: expect.stringMatching(RFC3339_MS),
        resourceOwner: ORG_A,
      },
    });
    expect(Object.keys(add.body.details)).toEqual([
      'sequence',
      'creationDate',
      'changeDate',
      'resourceOwner',
    ]);

    const get = await request(ctx.app).get(mgmt).set(auth('a-reader')).expect(200);
    expect(get.body).toEqual({
      policy: {
        details: add.body.details,
        maxPasswordAttempts: '5',
        maxOtpAttempts: '3',
        isDefault: false,
      },
      isDefault: false,
    });

    const again = await request(ctx.app)
      .post(mgmt)
      .set(auth('a-admin'))
      .send({ maxPasswordAttempts: 1 })
      .expect(409);
    expect(again.body).toEqual({
      code: 6,
      message: 'Lockout settings already exist',
      details: [
        {
          '@type': 'type.googleapis.com/zitadel.v1.ErrorDetail',
          id: 'Errors.Org.LockoutPolicy.AlreadyExists',
          message: 'Lockout settings already exist',
        },
      ],
    });
  });

  it('PUT changes org settings: none 404 code 5, same values 400 code 9, else the next sequence', async () => {
    const none = await request(ctx.app)
      .put(mgmt)
      .set(auth('a-admin'))
      .send({ maxPasswordAttempts: 4 })
      .expect(404);
    expect(none.body.code).toBe(5);
    expect(none.body.details[0].id).toBe('Errors.Org.LockoutPolicy.NotFound');

    await request(ctx.app)
      .post(mgmt)
      .set(auth('a-admin'))
      .send({ maxPasswordAttempts: 5, maxOtpAttempts: 5 })
      .expect(200);
    const same = await request(ctx.app)
      .put(mgmt)
      .set(auth('a-admin'))
      .send({ maxPasswordAttempts: '5', maxOtpAttempts: 5 })
      .expect(400);
    expect(same.body.code).toBe(9);
    expect(same.body.details[0].id).toBe('Errors.Org.LockoutPolicy.NotChanged');

    const put = await request(ctx.app)
      .put(mgmt)
      .set(auth('a-admin'))
      .send({ maxPasswordAttempts: 6, maxOtpAttempts: 5 })
      .expect(200);
    expect(put.body.details).toMatchObject({ sequence: '2', resourceOwner: ORG_A });
    const get = await request(ctx.app).get(mgmt).set(auth('a-admin')).expect(200);
    expect(get.body.policy.maxPasswordAttempts).toBe('6');
  });

  it('DELETE resets the org to the instance settings; none: 404 code 5', async () => {
    await request(ctx.app).delete(mgmt).set(auth('a-admin')).expect(404);
    await request(ctx.app)
      .post(mgmt)
      .set(auth('a-admin'))
      .send({ maxPasswordAttempts: 2, maxOtpAttempts: 2 })
      .expect(200);
    const del = await request(ctx.app).delete(mgmt).set(auth('a-admin')).expect(200);
    expect(del.body).toEqual({
      details: {
        sequence: '2',
        creationDate: expect.stringMatching(RFC3339_MS),
        changeDate: expect.stringMatching(RFC3339_MS),
        resourceOwner: ORG_A,
      },
    });
    const get = await request(ctx.app).get(mgmt).set(auth('a-admin')).expect(200);
    expect(get.body.isDefault).toBe(true);
    expect(get.body.policy.maxPasswordAttempts).toBe('10');
    const gone = await request(ctx.app).delete(mgmt).set(auth('a-admin')).expect(404);
    expect(gone.body.code).toBe(5);
  });

  it('GET management default lockout and admin lockout: the instance settings', async () => {
    const def = await request(ctx.app)
      .get('/management/v1/policies/default/lockout')
      .set(auth('a-reader'))
      .expect(200);
    const expected = {
      policy: {
        details: { sequence: '0', resourceOwner: INSTANCE },
        maxPasswordAttempts: '10',
        maxOtpAttempts: '10',
        isDefault: true,
      },
    };
    expect(def.body).toEqual(expected);
    const admin = await request(ctx.app)
      .get('/admin/v1/policies/lockout')
      .set(auth('admin-token'))
      .expect(200);
    expect(admin.body).toEqual(expected);
  });

  it('PUT admin password lockout changes the instance settings; same values: 400 code 9', async () => {
    const same = await request(ctx.app)
      .put('/admin/v1/policies/password/lockout')
      .set(auth('admin-token'))
      .send({ maxPasswordAttempts: 10, maxOtpAttempts: 10 })
      .expect(400);
    expect(same.body.code).toBe(9);

    const put = await request(ctx.app)
      .put('/admin/v1/policies/password/lockout')
      .set(auth('admin-token'))
      .send({ maxPasswordAttempts: '7', maxOtpAttempts: 8 })
      .expect(200);
    expect(put.body).toEqual({
      details: {
        sequence: '1',
        creationDate: expect.stringMatching(RFC3339_MS),
        changeDate: expect.stringMatching(RFC3339_MS),
        resourceOwner: INSTANCE,
      },
    });
    // ZITADEL's current admin path does the same.
    const put2 = await request(ctx.app)
      .put('/admin/v1/policies/lockout')
      .set(auth('admin-token'))
      .send({ maxPasswordAttempts: 9, maxOtpAttempts: 8 })
      .expect(200);
    expect(put2.body.details.sequence).toBe('2');

    const admin = await request(ctx.app)
      .get('/admin/v1/policies/lockout')
      .set(auth('admin-token'))
      .expect(200);
    expect(admin.body.policy).toMatchObject({
      maxPasswordAttempts: '9',
      maxOtpAttempts: '8',
      isDefault: true,
    });
    // An org without custom settings follows the instance.
    const org = await request(ctx.app).get(mgmt).set(auth('a-reader')).expect(200);
    expect(org.body.policy).toMatchObject({ maxPasswordAttempts: '9', isDefault: true });
  });

  it('instance settings need iam.policy.* permissions', async () => {
    const res = await request(ctx.app).get('/admin/v1/policies/lockout').set(auth('a-reader')).expect(403);
    expect(res.body.code).toBe(7);
    await request(ctx.app)
      .put('/admin/v1/policies/password/lockout')
      .set(auth('a-reader'))
      .send({ maxPasswordAttempts: 1 })
      .expect(403);
  });

  it('write routes need policy.write / policy.delete', async () => {
    const post = await request(ctx.app)
      .post(mgmt)
      .set(auth('a-reader'))
      .send({ maxPasswordAttempts: 1 })
      .expect(403);
    expect(post.body).toMatchObject({ code: 7, details: [{ id: 'Errors.Token.PermissionDenied' }] });
    await request(ctx.app).put(mgmt).set(auth('a-reader')).send({}).expect(403);
    await request(ctx.app).delete(mgmt).set(auth('a-reader')).expect(403);
  });

  describe('GET /v2/settings/lockout', () => {
    it("the request's org, with the seed's shape", async () => {
      const inst = await request(ctx.app).get('/v2/settings/lockout').set(auth('a-reader')).expect(200);
      expect(inst.body).toEqual({
        details: { sequence: '0', resourceOwner: INSTANCE },
        settings: {
          maxPasswordAttempts: '10',
          maxOtpAttempts: '10',
          resourceOwnerType: 'RESOURCE_OWNER_TYPE_INSTANCE',
        },
      });
      await request(ctx.app)
        .post(mgmt)
        .set(auth('a-admin'))
        .send({ maxPasswordAttempts: 3, maxOtpAttempts: 4 })
        .expect(200);
      const org = await request(ctx.app).get('/v2/settings/lockout').set(auth('a-reader')).expect(200);
      expect(org.body).toEqual({
        details: { sequence: '1', changeDate: expect.stringMatching(RFC3339_MS), resourceOwner: ORG_A },
        settings: {
          maxPasswordAttempts: '3',
          maxOtpAttempts: '4',
          resourceOwnerType: 'RESOURCE_OWNER_TYPE_ORG',
        },
      });
    });

    it('ctx.instance=true: the instance settings', async () => {
      await request(ctx.app).post(mgmt).set(auth('a-admin')).send({ maxPasswordAttempts: 3 }).expect(200);
      const res = await request(ctx.app)
        .get('/v2/settings/lockout?ctx.instance=true')
        .set(auth('a-reader'))
        .expect(200);
      expect(res.body.settings).toEqual({
        maxPasswordAttempts: '10',
        maxOtpAttempts: '10',
        resourceOwnerType: 'RESOURCE_OWNER_TYPE_INSTANCE',
      });
    });

    it('ctx.orgId=X: that org, if the token may act on it', async () => {
      await request(ctx.app).post(mgmt).set(auth('b-admin')).send({ maxPasswordAttempts: 2 }).expect(200);
      const res = await request(ctx.app)
        .get(`/v2/settings/lockout?ctx.orgId=${ORG_B}`)
        .set(auth('admin-token'))
        .expect(200);
      expect(res.body.details.resourceOwner).toBe(ORG_B);
      expect(res.body.settings.maxPasswordAttempts).toBe('2');
      const denied = await request(ctx.app)
        .get(`/v2/settings/lockout?ctx.orgId=${ORG_B}`)
        .set(auth('a-reader'))
        .expect(403);
      expect(denied.body).toMatchObject({ code: 7, details: [{ id: 'Errors.Token.OrgDenied' }] });
    });

    it('bad ctx parameters: 400 code 3', async () => {
      const both = await request(ctx.app)
        .get(`/v2/settings/lockout?ctx.orgId=${ORG_A}&ctx.instance=true`)
        .set(auth('a-reader'))
        .expect(400);
      expect(both.body.code).toBe(3);
      const bad = await request(ctx.app)
        .get('/v2/settings/lockout?ctx.instance=yes')
        .set(auth('a-reader'))
        .expect(400);
      expect(bad.body.message).toMatch(/ctx\.instance/);
      const twice = await request(ctx.app)
        .get(`/v2/settings/lockout?ctx.orgId=${ORG_A}&ctx.orgId=${ORG_A}`)
        .set(auth('a-reader'))
        .expect(400);
      expect(twice.body.message).toMatch(/ctx\.orgId/);
      const empty = await request(ctx.app)
        .get('/v2/settings/lockout?ctx.orgId=')
        .set(auth('admin-token'))
        .expect(400);
      expect(empty.body.code).toBe(3);
      expect(empty.body.message).toContain('ctx.orgId');
      await request(ctx.app).get('/v2/settings/lockout?ctx.orgId=').expect(401);
      const control = await request(ctx.app)
        .get('/v2/settings/lockout?ctx.orgId=a%07b')
        .set(auth('admin-token'))
        .expect(400);
      expect(control.body.code).toBe(3);
    });
  });

  describe('settings values', () => {
    const bad: Array<[string, unknown]> = [
      ['negative', -1],
      ['negative string', '-1'],
      ['fraction', 1.5],
      ['fraction string', '1.5'],
      ['above 2^32-1', 4294967296],
      ['above 2^32-1 as string', '4294967296'],
      ['boolean', true],
      ['object', { value: 1 }],
      ['array', [1]],
      ['non-numeric string', 'ten'],
      ['empty string', ''],
    ];
    it.each(bad)('%s is a 400 code 3 naming the field', async (_name, value) => {
      const res = await request(ctx.app)
        .post(mgmt)
        .set(auth('a-admin'))
        .send({ maxPasswordAttempts: 1, maxOtpAttempts: value })
        .expect(400);
      expect(res.body.code).toBe(3);
      expect(res.body.message).toMatch(/maxOtpAttempts/);
      expect(res.body.details).toEqual([
        {
          '@type': 'type.googleapis.com/zitadel.v1.ErrorDetail',
          id: 'Errors.Settings.Invalid',
          message: res.body.message,
        },
      ]);
    });

    it('accepts 0 and 2^32-1, as numbers or strings', async () => {
      await request(ctx.app)
        .post(mgmt)
        .set(auth('a-admin'))
        .send({ maxPasswordAttempts: 0, maxOtpAttempts: '4294967295' })
        .expect(200);
      const get = await request(ctx.app).get(mgmt).set(auth('a-admin')).expect(200);
      expect(get.body.policy).toMatchObject({ maxPasswordAttempts: '0', maxOtpAttempts: '4294967295' });
    });

    it('a body that is not a JSON object is a 400', async () => {
      const res = await request(ctx.app).post(mgmt).set(auth('a-admin')).send([1, 2]).expect(400);
      expect(res.body.code).toBe(3);
    });
  });

  it('org isolation: custom settings of one org are not seen by another', async () => {
    await request(ctx.app).post(mgmt).set(auth('a-admin')).send({ maxPasswordAttempts: 3 }).expect(200);
    const b = await request(ctx.app).get(mgmt).set(auth('b-admin')).expect(200);
    expect(b.body.isDefault).toBe(true);
    // The same org through the header of a token that may act on every org.
    const viaHeader = await request(ctx.app)
      .get(mgmt)
      .set(auth('admin-token'))
      .set('x-zitadel-orgid', ORG_A)
      .expect(200);
    expect(viaHeader.body.policy.maxPasswordAttempts).toBe('3');
    // A token of org A may not act on org B.
    const denied = await request(ctx.app)
      .get(mgmt)
      .set(auth('a-admin'))
      .set('x-zitadel-orgid', ORG_B)
      .expect(403);
    expect(denied.body.code).toBe(7);
  });

  it('audits every settings change, refusals too', async () => {
    await request(ctx.app).post(mgmt).set(auth('a-admin')).send({ maxPasswordAttempts: 3 }).expect(200);
    await request(ctx.app).post(mgmt).set(auth('a-admin')).send({ maxPasswordAttempts: 3 }).expect(409);
    await request(ctx.app).put(mgmt).set(auth('a-admin')).send({ maxPasswordAttempts: 4 }).expect(200);
    await request(ctx.app).delete(mgmt).set(auth('a-admin')).expect(200);
    await request(ctx.app)
      .put('/admin/v1/policies/password/lockout')
      .set(auth('admin-token'))
      .send({ maxPasswordAttempts: 4 })
      .expect(200);
    expect(ctx.audit).toEqual([
      { action: 'settings.org.add', principal: 'org-a-admin', orgId: ORG_A, outcome: 'ok' },
      {
        action: 'settings.org.add',
        principal: 'org-a-admin',
        orgId: ORG_A,
        outcome: 'Errors.Org.LockoutPolicy.AlreadyExists',
      },
      { action: 'settings.org.update', principal: 'org-a-admin', orgId: ORG_A, outcome: 'ok' },
      { action: 'settings.org.reset', principal: 'org-a-admin', orgId: ORG_A, outcome: 'ok' },
      { action: 'settings.instance.update', principal: 'admin', orgId: INSTANCE, outcome: 'ok' },
    ]);
    expect(JSON.stringify(ctx.audit)).not.toMatch(/token/);
  });

  it('the settings router can be mounted alone, and lets other requests through', async () => {
    const app = express();
    app.use(
      createSettingsRouter({ engine: ctx.engine, authorize: createTokenAuthorizer({ tokens: TOKENS }) }),
    );
    app.get('/app/own', (_req, res) => {
      res.json({ own: true });
    });
    await request(app).get(mgmt).set(auth('a-reader')).expect(200);
    await request(app).get('/app/own').expect(200, { own: true });
    // The check routes are not part of it.
    await request(app).post('/v1/checks/password').set(auth('a-admin')).send({}).expect(404);
  });
});
