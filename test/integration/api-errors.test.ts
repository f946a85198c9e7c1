import express from 'express';
import request from 'supertest';
import { auth, makeApiApp } from '../helpers/api-app';
import {
  AlreadyExistsError,
  BusyError,
  InvalidArgumentError,
  NotChangedError,
  NotFoundError,
  StoreUnavailableError,
  UserLockedError,
} from '../../src/core/errors';
import { type ApiRouterOptions } from '../../src/http/routers';
import {
  InvalidCredentialsError,
  PermissionDeniedError,
  UnauthenticatedError,
  createErrorHandler,
  hashToken,
  resolveTokens,
  retryAfterSeconds,
  toHttpError,
  type TokenOptions,
} from '../../src/http';
import { RateLimitedError, createOtpCodes } from '../../src/verify';

const INSTANCE = 'inst-1';
const ORG_A = 'org-a';
const ALL = ['policy.read', 'policy.write', 'user.read', 'user.write', 'lockout.check'];
const TOKENS: TokenOptions[] = [
  { name: 'plain', token: 'plain-token', org: ORG_A, permissions: ALL },
  {
    name: 'hashed',
    sha256: hashToken('hashed-token').toUpperCase(),
    org: ORG_A,
    orgs: [ORG_A, 'org-c'],
    permissions: ALL,
  },
  { name: 'everywhere', token: 'star-token', org: INSTANCE, orgs: ['*'], permissions: ['policy.read'] },
];
const ERROR_DETAIL = 'type.googleapis.com/zitadel.v1.ErrorDetail';

const makeApp = (extra: Partial<ApiRouterOptions> = {}) =>
  makeApiApp(INSTANCE, TOKENS, (store) => ({
    otpCodes: createOtpCodes({ store }),
    audit: undefined,
    ...extra,
  }));

describe('HTTP errors, authentication and org context', () => {
  let ctx: ReturnType<typeof makeApp>;
  beforeEach(() => {
    ctx = makeApp();
  });
  afterEach(async () => {
    ctx.engine.close();
    await ctx.store.close();
  });

  describe('authentication (401 code 16)', () => {
    const routes: Array<[string, string]> = [
      ['get', '/management/v1/policies/lockout'],
      ['post', '/management/v1/policies/lockout'],
      ['put', '/admin/v1/policies/password/lockout'],
      ['get', '/v2/settings/lockout'],
      ['post', '/v2/users/u/lock'],
      ['get', '/v1/users/u/lockout'],
      ['get', '/v1/lockouts'],
      ['post', '/v1/checks/password'],
      ['post', '/v1/checks/totp'],
      ['post', '/v1/otp/sms'],
      ['post', '/v1/checks/otp_email'],
      ['post', '/v1/attempts'],
    ];

    it.each(routes)('%s %s without a token', async (method, path) => {
      const agent = request(ctx.app);
      const res = await (
        method === 'get' ? agent.get(path) : method === 'put' ? agent.put(path) : agent.post(path)
      ).expect(401);
      expect(res.body).toEqual({
        code: 16,
        message: 'Authorization: Bearer token required',
        details: [
          {
            '@type': ERROR_DETAIL,
            id: 'Errors.Token.Missing',
            message: 'Authorization: Bearer token required',
          },
        ],
      });
      expect(res.headers['www-authenticate']).toBe('Bearer realm="lockgate"');
    });

    it('an unknown token, a non-Bearer scheme, an empty token', async () => {
      const unknown = await request(ctx.app).get('/v1/lockouts').set(auth('nope')).expect(401);
      expect(unknown.body).toEqual({
        code: 16,
        message: 'Token is invalid',
        details: [{ '@type': ERROR_DETAIL, id: 'Errors.Token.Invalid', message: 'Token is invalid' }],
      });
      // No CredentialsCheckError detail: that marks a wrong credential, not a wrong token.
      expect(JSON.stringify(unknown.body)).not.toContain('CredentialsCheckError');
      await request(ctx.app).get('/v1/lockouts').set('Authorization', 'Basic cGxhaW4tdG9rZW4=').expect(401);
      await request(ctx.app).get('/v1/lockouts').set('Authorization', 'Bearer ').expect(401);
      await request(ctx.app).get('/v1/lockouts').set('Authorization', 'plain-token').expect(401);
      // Prefixes and near misses of a real token are unknown tokens.
      await request(ctx.app).get('/v1/lockouts').set(auth('plain-toke')).expect(401);
      await request(ctx.app).get('/v1/lockouts').set(auth('plain-token2')).expect(401);
    });

    it('a check with a bad token answers 401 before looking at the body or the credential', async () => {
      const res = await request(ctx.app)
        .post('/v1/checks/password')
        .set(auth('nope'))
        .set('Content-Type', 'application/json')
        .send('{"userId": "alice", "password": ')
        .expect(401);
      expect(res.body.code).toBe(16);
      expect(res.body.details).toHaveLength(1);
      expect(res.body.details[0]['@type']).toBe(ERROR_DETAIL);
    });

    it('tokens configured by SHA-256 (any hex case) and the Bearer scheme in any case', async () => {
      await request(ctx.app).get('/v1/lockouts').set(auth('hashed-token')).expect(200);
      await request(ctx.app).get('/v1/lockouts').set('Authorization', 'bearer plain-token').expect(200);
      await request(ctx.app).get('/v1/lockouts').set('Authorization', 'BEARER  plain-token ').expect(200);
    });
  });

  describe('org context (x-zitadel-orgid) and permissions (403 code 7)', () => {
    it('the header selects an allowed org; another org is a 403', async () => {
      const c = await request(ctx.app)
        .get('/v1/users/u/lockout')
        .set(auth('hashed-token'))
        .set('x-zitadel-orgid', 'org-c')
        .expect(200);
      expect(c.body.orgId).toBe('org-c');
      const home = await request(ctx.app).get('/v1/users/u/lockout').set(auth('hashed-token')).expect(200);
      expect(home.body.orgId).toBe(ORG_A);
      const denied = await request(ctx.app)
        .get('/v1/users/u/lockout')
        .set(auth('plain-token'))
        .set('x-zitadel-orgid', 'org-c')
        .expect(403);
      expect(denied.body).toEqual({
        code: 7,
        message: 'Token may not act on this organization',
        details: [
          {
            '@type': ERROR_DETAIL,
            id: 'Errors.Token.OrgDenied',
            message: 'Token may not act on this organization',
          },
        ],
      });
    });

    it("a '*' token acts on any org; a missing permission is a 403", async () => {
      await request(ctx.app)
        .get('/management/v1/policies/lockout')
        .set(auth('star-token'))
        .set('x-zitadel-orgid', 'any-org')
        .expect(200);
      const res = await request(ctx.app).get('/v1/lockouts').set(auth('star-token')).expect(403);
      expect(res.body).toMatchObject({ code: 7, details: [{ id: 'Errors.Token.PermissionDenied' }] });
      expect(res.body.message).toContain('user.read');
    });

    it('a bad org header is a 400 code 3 naming it', async () => {
      for (const value of ['a\tb', 'x'.repeat(257), '']) {
        const res = await request(ctx.app)
          .get('/v1/lockouts')
          .set(auth('star-token'))
          .set('x-zitadel-orgid', value)
          .expect(400);
        expect(res.body.code).toBe(3);
        expect(res.body.message).toContain('x-zitadel-orgid');
      }
      await request(ctx.app)
        .get('/management/v1/policies/lockout')
        .set(auth('star-token'))
        .set('x-zitadel-orgid', 'x'.repeat(256))
        .expect(200);
    });
  });

  describe('request bodies', () => {
    it('malformed JSON: 400 code 3', async () => {
      const res = await request(ctx.app)
        .post('/v1/checks/password')
        .set(auth('plain-token'))
        .set('Content-Type', 'application/json')
        .send('{"userId": "alice", "password": ')
        .expect(400);
      expect(res.body).toEqual({
        code: 3,
        message: 'Request body is not valid JSON',
        details: [
          {
            '@type': ERROR_DETAIL,
            id: 'Errors.Request.MalformedJson',
            message: 'Request body is not valid JSON',
          },
        ],
      });
      // A JSON scalar at the top level is refused by the strict parser too.
      await request(ctx.app)
        .post('/management/v1/policies/lockout')
        .set(auth('plain-token'))
        .set('Content-Type', 'application/json')
        .send('"10"')
        .expect(400);
    });

    it('a body above the limit (default 16kb): 413', async () => {
      const res = await request(ctx.app)
        .post('/v1/checks/password')
        .set(auth('plain-token'))
        .send({ userId: 'alice', password: 'x'.repeat(17 * 1024) })
        .expect(413);
      expect(res.body).toMatchObject({
        code: 8,
        details: [{ '@type': ERROR_DETAIL, id: 'Errors.Request.TooLarge' }],
      });
      expect(JSON.stringify(res.body)).not.toContain('xxxx');
      // Just under the limit is read (and then refused by the verifier's own length limit).
      await request(ctx.app)
        .post('/v1/checks/password')
        .set(auth('plain-token'))
        .send({ userId: 'alice', password: 'x'.repeat(15 * 1024) })
        .expect(400);
    });

    it('bodyLimit is configurable', async () => {
      const small = makeApp({ bodyLimit: '100b' });
      try {
        await request(small.app)
          .post('/v1/attempts')
          .set(auth('plain-token'))
          .send({ userId: 'u'.repeat(200), factor: 'password' })
          .expect(413);
      } finally {
        small.engine.close();
        await small.store.close();
      }
    });

    it('a body that is not JSON: 415, so that a missing Content-Type never reads as an empty body', async () => {
      const res = await request(ctx.app)
        .post('/management/v1/policies/lockout')
        .set(auth('plain-token'))
        .set('Content-Type', 'text/plain')
        .send('maxPasswordAttempts=0')
        .expect(415);
      expect(res.body).toMatchObject({ code: 3, details: [{ id: 'Errors.Request.UnsupportedMediaType' }] });
      // Nothing was written.
      expect((await ctx.engine.getEffectiveSettings(ORG_A)).isDefault).toBe(true);
    });

    it('an unsupported charset: 415', async () => {
      await request(ctx.app)
        .post('/v1/attempts')
        .set(auth('plain-token'))
        .set('Content-Type', 'application/json; charset=latin-9')
        .send('{"userId":"u","factor":"password"}')
        .expect(415);
    });

    it('an empty body is an empty object (settings of 0: the proto3 defaults, as ZITADEL)', async () => {
      await request(ctx.app).post('/management/v1/policies/lockout').set(auth('plain-token')).expect(200);
      const s = await ctx.engine.getEffectiveSettings(ORG_A);
      expect(s).toMatchObject({ maxPasswordAttempts: 0, maxOtpAttempts: 0, isDefault: false });
    });
  });

  describe('internal errors', () => {
    it('500 code 13 with a generic message; the error goes to onError only', async () => {
      const seen: unknown[] = [];
      const app = makeApp({ onError: (e) => seen.push(e) });
      try {
        jest
          .spyOn(app.engine, 'getUserStatus')
          .mockRejectedValue(new Error('secret internal detail at line 42'));
        const res = await request(app.app).get('/v1/users/u/lockout').set(auth('plain-token')).expect(500);
        expect(res.body).toEqual({
          code: 13,
          message: 'Internal error',
          details: [{ '@type': ERROR_DETAIL, id: 'Errors.Internal', message: 'Internal error' }],
        });
        expect(res.text).not.toContain('secret');
        expect(res.text).not.toContain('line 42');
        expect(seen).toHaveLength(1);
      } finally {
        app.engine.close();
        await app.store.close();
      }
    });

    it('a throwing audit hook or observer does not change the answer', async () => {
      const app = makeApp({
        audit: () => {
          throw new Error('audit sink down');
        },
      });
      try {
        await request(app.app).post('/v2/users/u/lock').set(auth('plain-token')).expect(200);
      } finally {
        app.engine.close();
        await app.store.close();
      }
    });

    it('unknown routes: 404 code 5 from createNotFoundHandler', async () => {
      const res = await request(ctx.app).get('/v1/nothing-here').set(auth('plain-token')).expect(404);
      expect(res.body).toMatchObject({
        code: 5,
        details: [{ '@type': ERROR_DETAIL, id: 'Errors.Route.NotFound' }],
      });
    });
  });
});

describe('toHttpError', () => {
  it.each([
    [new InvalidArgumentError('Errors.X', 'x is bad', 'x'), 400, 3],
    [new NotChangedError('Errors.X', 'same'), 400, 9],
    [new NotFoundError('Errors.X', 'none'), 404, 5],
    [new AlreadyExistsError('Errors.X', 'exists'), 409, 6],
    [new PermissionDeniedError('Errors.X', 'no'), 403, 7],
    [new UnauthenticatedError('Errors.X', 'who'), 401, 16],
    [new UserLockedError(1), 423, 9],
    [new BusyError(1500), 429, 8],
    [new RateLimitedError(10), 429, 8],
    [new StoreUnavailableError('ECONNREFUSED 10.0.0.1:6379'), 503, 14],
    [new InvalidCredentialsError('totp', 4), 401, 3],
    [new Error('boom'), 500, 13],
    ['a string', 500, 13],
    [null, 500, 13],
  ])('%p → %i code %i', (error, status, code) => {
    const answer = toHttpError(error);
    expect(answer.status).toBe(status);
    expect(answer.body.code).toBe(code);
    expect(answer.body.details[0]?.['@type']).toBe(ERROR_DETAIL);
    expect(JSON.stringify(answer.body)).not.toMatch(/boom|ECONNREFUSED|10\.0\.0\.1/);
  });

  it('Retry-After is whole seconds, rounded up, at least 1', () => {
    expect(toHttpError(new BusyError(1500)).headers['Retry-After']).toBe('2');
    expect(toHttpError(new BusyError(1)).headers['Retry-After']).toBe('1');
    expect(toHttpError(new RateLimitedError(0)).headers['Retry-After']).toBe('1');
    expect(retryAfterSeconds(899_001)).toBe('900');
    expect(retryAfterSeconds(Number.NaN)).toBe('1');
  });

  it('a wrong credential carries a CredentialsCheckError detail with failedAttempts as a string', () => {
    expect(toHttpError(new InvalidCredentialsError('otp_sms', 2)).body.details[1]).toEqual({
      '@type': 'type.googleapis.com/zitadel.v1.CredentialsCheckError',
      id: 'Errors.User.Code.Invalid',
      message: 'Code is invalid',
      failedAttempts: '2',
    });
  });

  it('the error handler can be used on its own', async () => {
    const app = express();
    app.get('/x', () => {
      throw new NotChangedError('Errors.Y', 'nothing to do');
    });
    app.use(createErrorHandler());
    const res = await request(app).get('/x').expect(400);
    expect(res.body).toEqual({
      code: 9,
      message: 'nothing to do',
      details: [{ '@type': ERROR_DETAIL, id: 'Errors.Y', message: 'nothing to do' }],
    });
  });
});

describe('token configuration', () => {
  const ok = { name: 't', token: 'secret', org: 'o', permissions: ['user.read'] };
  it.each([
    [{ ...ok, name: '' }, 'tokens[0].name'],
    [{ ...ok, token: '' }, 'tokens[0].token'],
    [{ ...ok, sha256: 'abc' }, 'tokens[0]'],
    [{ name: 't', sha256: 'zz'.repeat(32), org: 'o', permissions: [] }, 'tokens[0].sha256'],
    [{ name: 't', org: 'o', permissions: [] }, 'tokens[0]'],
    [{ ...ok, org: '' }, 'tokens[0].org'],
    [{ ...ok, orgs: ['other'] }, 'tokens[0].orgs'],
    [{ ...ok, orgs: ['o', '*'] }, 'tokens[0].orgs'],
    [{ ...ok, orgs: ['o', 'a\u0001'] }, 'tokens[0].orgs[1]'],
    [{ ...ok, permissions: ['user.read', 'everything'] }, 'tokens[0].permissions[1]'],
  ])('%p is refused naming %s', (token, field) => {
    expect(() => resolveTokens([token as TokenOptions])).toThrow(InvalidArgumentError);
    try {
      resolveTokens([token as TokenOptions]);
    } catch (e) {
      expect((e as InvalidArgumentError).field).toBe(field);
    }
  });

  it('refuses a repeated token or name', () => {
    expect(() => resolveTokens([ok, { ...ok, name: 'u' }])).toThrow(/repeats the token/);
    expect(() => resolveTokens([ok, { ...ok, sha256: hashToken('other'), token: undefined }])).toThrow(
      /repeats the name/,
    );
    expect(() =>
      resolveTokens([ok, { ...ok, name: 'u', token: undefined, sha256: hashToken('secret') }]),
    ).toThrow(/repeats the token/);
  });

  it('keeps only digests', () => {
    const [t] = resolveTokens([ok]);
    expect(t?.digest.toString('hex')).toBe(hashToken('secret'));
    expect(JSON.stringify(t)).not.toContain('secret');
    expect(t?.orgs).toEqual(new Set(['o']));
  });
});
