/**
 * OIDC/JWT bearer tokens through the real sidecar (memory store): a local JWKS server, keys and
 * tokens made with jose. Every refused token answers the same 401 as an unknown static token.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHmac } from 'node:crypto';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type JWK, type KeyLike } from 'jose';
import { ConfigError, parseConfig } from '../../src/sidecar/config';
import { createLogger } from '../../src/sidecar/logger';
import { startSidecar, type SidecarHandle } from '../../src/sidecar/server';
import type { Request } from 'express';
import { PERMISSIONS } from '../../src/http/auth';
import { createJwtAuthorizer } from '../../src/http/jwt';
import { hashPassword } from '../../src/verify';
import { readAnswer } from '../helpers/http';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
const ADMIN = 'admin-token-for-jwt-tests-01';
/** A static token shaped like a JWT: static tokens are tried first. */
const DOTTED_STATIC = 'static.looks.likejwt';
const AUDIENCE = 'lockgate-api';

interface Key {
  kid: string;
  alg: 'RS256' | 'ES256' | 'EdDSA';
  privateKey: KeyLike;
  publicKey: KeyLike;
  jwk: JWK;
}

async function makeKey(kid: string, alg: Key['alg']): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair(alg, alg === 'EdDSA' ? { crv: 'Ed25519' } : {});
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicKey, jwk };
}

/** The issuer: serves its JWKS (on two paths) and an OIDC discovery document; counts fetches. */
class Issuer {
  keys: Key[] = [];
  fetches = 0;
  private server?: Server;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      if (req.url === '/.well-known/jwks.json' || req.url === '/oauth/v2/keys') {
        this.fetches += 1;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ keys: this.keys.map((k) => k.jwk) }));
      } else if (req.url === '/.well-known/openid-configuration') {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ issuer: this.url, jwks_uri: `${this.url}/oauth/v2/keys` }));
      } else {
        res.statusCode = 404;
        res.end();
      }
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server!.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

const now = () => Math.floor(Date.now() / 1000);
/** Waits out the JWKS refetch cooldown (1 s) of the generic sidecar. */
const pastCooldown = () => new Promise((r) => setTimeout(r, 1100));

async function sign(
  key: Key,
  claims: Record<string, unknown>,
  options: { iss?: string; aud?: string; exp?: number; nbf?: number; sub?: string; kid?: string } = {},
): Promise<string> {
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: key.alg, kid: options.kid ?? key.kid, typ: 'JWT' })
    .setIssuer(options.iss ?? issuer.url)
    .setAudience(options.aud ?? AUDIENCE)
    .setSubject(options.sub ?? 'alice')
    .setIssuedAt()
    .setExpirationTime(options.exp ?? now() + 300);
  if (options.nbf !== undefined) jwt.setNotBefore(options.nbf);
  return jwt.sign(key.privateKey);
}

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

function capture() {
  const lines: string[] = [];
  const logger = createLogger('debug', { write: (line: string) => void lines.push(line) });
  return { logger, lines };
}

async function call(
  sidecar: SidecarHandle,
  method: string,
  path: string,
  options: { token?: string; org?: string; body?: unknown } = {},
): Promise<{ status: number; body: Json; text: string; headers: Headers }> {
  const headers: Record<string, string> = {};
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  if (options.org) headers['x-zitadel-orgid'] = options.org;
  let payload: string | undefined;
  if (options.body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(options.body);
  }
  const res = await fetch(`${sidecar.url}${path}`, { method, headers, body: payload });
  return (await readAnswer(res)) as { status: number; body: Json; text: string; headers: Headers };
}

const FAST_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 };
let encodedHash = '';
beforeAll(async () => {
  encodedHash = await hashPassword('correct horse', FAST_ARGON2);
});
/** A successful password check (lockout.check): 200 when the token may check. */
const check = (sidecar: SidecarHandle, token: string, org?: string) =>
  call(sidecar, 'POST', '/v1/checks/password', {
    token,
    body: { userId: 'someone', password: 'correct horse', encodedHash },
    ...(org ? { org } : {}),
  });
/** A read (user.read). */
const read = (sidecar: SidecarHandle, token: string, org?: string) =>
  call(sidecar, 'GET', '/v1/users/bob/lockout', { token, ...(org ? { org } : {}) });

const issuer = new Issuer();

function baseConfig(jwt: Record<string, unknown>) {
  return parseConfig({
    server: { port: 0 },
    instance: { id: 'itest' },
    log: { level: 'debug' },
    password: { argon2: FAST_ARGON2 },
    auth: {
      tokens: [
        { name: 'root', token: ADMIN, orgs: ['*'], permissions: [...PERMISSIONS] },
        { name: 'dotted', token: DOTTED_STATIC, org: 'org-a', permissions: ['user.read'] },
      ],
      jwt,
    },
  });
}

describe('JWT bearer tokens (generic mapping)', () => {
  let sidecar: SidecarHandle;
  let k1: Key;
  let k2: Key;
  let k3: Key;
  const log = capture();
  /** The 401 of an unknown static token: every refused JWT must answer exactly this. */
  let reference: { status: number; text: string; auth: string | null };
  const tokens: string[] = [];
  const claims = { org_id: 'org-a', orgs: ['org-a', 'org-b'], roles: ['checker', 'auditor'] };

  const expectRefused = async (token: string) => {
    tokens.push(token);
    const res = await read(sidecar, token);
    expect({ status: res.status, text: res.text, auth: res.headers.get('www-authenticate') }).toEqual(
      reference,
    );
  };

  beforeAll(async () => {
    await issuer.start();
    [k1, k2, k3] = await Promise.all([
      makeKey('k1', 'RS256'),
      makeKey('k2', 'ES256'),
      makeKey('k3', 'RS256'),
    ]);
    issuer.keys = [k1, k2];
    sidecar = await startSidecar(
      baseConfig({
        issuer: issuer.url,
        audience: [AUDIENCE, 'other-api'],
        org: { claim: 'org_id' },
        orgs: { claim: 'orgs' },
        permissions: {
          claim: 'roles',
          map: {
            checker: ['lockout.check'],
            auditor: ['user.read', 'policy.read'],
            operator: ['user.read', 'user.write'],
          },
        },
        // The least cooldown (1 s): the refetch tests wait it out (pastCooldown).
        jwks: { cooldownSeconds: 1 },
      }),
      { logger: log.logger },
    );
    const unknown = await read(sidecar, 'nope');
    reference = { status: unknown.status, text: unknown.text, auth: unknown.headers.get('www-authenticate') };
    expect(reference.status).toBe(401);
    expect(JSON.parse(reference.text).code).toBe(16);
    expect(reference.auth).toBe('Bearer realm="lockgate"');
  });
  afterAll(async () => {
    await sidecar?.close();
    await issuer.stop();
  });

  it('a valid RS256 or ES256 token is accepted with the mapped org and permissions', async () => {
    const rs = await sign(k1, claims);
    const es = await sign(k2, claims);
    tokens.push(rs, es);
    for (const token of [rs, es]) {
      const ok = await read(sidecar, token);
      expect(ok.status).toBe(200);
      expect((await check(sidecar, token)).status).toBe(200);
      expect((await read(sidecar, token, 'org-b')).status).toBe(200);
    }
  });

  it('GET /v1/me answers the JWT principal, its orgs (claim) and its permissions on the org', async () => {
    const token = await sign(k1, claims);
    tokens.push(token);
    const me = await call(sidecar, 'GET', '/v1/me', { token });
    expect(me.status).toBe(200);
    expect(me.body).toEqual({
      principal: expect.stringMatching(/^jwt:/),
      orgId: 'org-a',
      homeOrg: 'org-a',
      orgs: ['org-a', 'org-b'],
      permissions: ['policy.read', 'user.read', 'lockout.check'],
    });
    // An org outside its orgs claim: 403, as every route.
    expect((await call(sidecar, 'GET', '/v1/me', { token, org: 'org-c' })).status).toBe(403);
  });

  it('answers 403 where the mapped permissions or orgs do not allow the route', async () => {
    const auditor = await sign(k1, { ...claims, roles: ['auditor', 'unknown-role'] });
    tokens.push(auditor);
    const denied = await check(sidecar, auditor);
    expect(denied.status).toBe(403);
    expect(denied.body.code).toBe(7);
    expect(denied.text).toContain('lockout.check');
    const otherOrg = await read(sidecar, auditor, 'org-c');
    expect(otherOrg.status).toBe(403);
    expect(otherOrg.text).toContain('organization');
    const noRoles = await sign(k1, { org_id: 'org-a' });
    expect((await read(sidecar, noRoles)).status).toBe(403);
  });

  it('audits admin actions with the principal jwt:<sub>, never the token', async () => {
    const operator = await sign(k1, { ...claims, roles: ['operator'] }, { sub: 'op-7' });
    tokens.push(operator);
    const res = await call(sidecar, 'POST', '/management/v1/users/carol/_lock', {
      token: operator,
      org: 'org-b',
    });
    expect(res.status).toBe(200);
    const audit = log.lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((r) => r.audit === true && r.userId === 'carol');
    expect(audit).toMatchObject({ principal: 'jwt:op-7', orgId: 'org-b' });
  });

  it('refuses expired and not-yet-valid tokens, with 30 s of clock tolerance', async () => {
    await expectRefused(await sign(k1, claims, { exp: now() - 120 }));
    await expectRefused(await sign(k1, claims, { exp: now() + 600, nbf: now() + 120 }));
    const justExpired = await sign(k1, claims, { exp: now() - 10 });
    tokens.push(justExpired);
    expect((await read(sidecar, justExpired)).status).toBe(200);
  });

  it('refuses a wrong audience or issuer, and a token without exp or sub', async () => {
    await expectRefused(await sign(k1, claims, { aud: 'someone-else' }));
    await expectRefused(await sign(k1, claims, { iss: 'http://evil.example' }));
    const noExp = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .setIssuer(issuer.url)
      .setAudience(AUDIENCE)
      .setSubject('alice')
      .sign(k1.privateKey);
    await expectRefused(noExp);
    const noSub = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .setIssuer(issuer.url)
      .setAudience(AUDIENCE)
      .setExpirationTime(now() + 300)
      .sign(k1.privateKey);
    await expectRefused(noSub);
  });

  it('refuses alg none, HS256 signed with the RSA public key, and malformed JWTs (no JWKS fetch)', async () => {
    const before = issuer.fetches;
    const payload = { iss: issuer.url, aud: AUDIENCE, sub: 'alice', exp: now() + 300, ...claims };
    await expectRefused(`${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(payload)}.`);
    await expectRefused(`${b64url({ alg: 'none', kid: 'k1' })}.${b64url(payload)}.${b64url('x')}`);
    // Key confusion: the public key (PEM and JWK modulus) used as an HMAC secret.
    const pem = await exportSPKI(k1.publicKey);
    for (const secret of [Buffer.from(pem), Buffer.from(k1.jwk.n!, 'base64url')]) {
      const head = `${b64url({ alg: 'HS256', kid: 'k1', typ: 'JWT' })}.${b64url(payload)}`;
      const mac = createHmac('sha256', secret).update(head).digest('base64url');
      await expectRefused(`${head}.${mac}`);
    }
    await expectRefused('aaa.bbb.ccc');
    await expectRefused(`${b64url({ alg: 'RS256', kid: 'k1' })}.not-json.${b64url('sig')}`);
    await expectRefused('only.two');
    await expectRefused((await sign(k1, claims)).slice(0, -4) + 'AAAA');
    expect(issuer.fetches).toBe(before);
  });

  it('an unknown kid triggers one JWKS refetch, then succeeds once the issuer has the new key', async () => {
    issuer.keys = [k1, k2, k3];
    await pastCooldown();
    const before = issuer.fetches;
    const fresh = await sign(k3, claims);
    tokens.push(fresh);
    expect((await read(sidecar, fresh)).status).toBe(200);
    expect(issuer.fetches).toBe(before + 1);
    expect((await read(sidecar, fresh)).status).toBe(200);
    expect(issuer.fetches).toBe(before + 1);
  });

  it('after a rotation removes a key, tokens signed with it are refused after a refetch', async () => {
    const old = await sign(k1, claims);
    tokens.push(old);
    expect((await read(sidecar, old)).status).toBe(200); // k1 still cached
    issuer.keys = [k3];
    const newer = await sign(k3, claims, { kid: 'k3' });
    tokens.push(newer);
    // A kid the issuer never had makes the cache refetch: now without k1.
    await pastCooldown();
    await expectRefused(await sign(k1, claims, { kid: 'k9' }));
    await pastCooldown();
    const before = issuer.fetches;
    await expectRefused(old);
    expect(issuer.fetches).toBe(before + 1);
    expect((await read(sidecar, newer)).status).toBe(200);
  });

  it('an org header sent twice is refused (400), not read as an org named "a, b"', async () => {
    const { request } = await import('node:http');
    const url = new URL(`${sidecar.url}/management/v1/users/mallory/_lock`);
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        url,
        {
          method: 'POST',
          headers: { authorization: `Bearer ${ADMIN}`, 'x-zitadel-orgid': ['org-a', 'org-b'] },
        },
        (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(answer.status).toBe(400);
    expect(answer.body).toContain('x-zitadel-orgid must be sent once');
    const once = await call(sidecar, 'POST', '/management/v1/users/mallory/_lock', {
      token: ADMIN,
      org: 'org-a',
    });
    expect(once.status).toBe(200);
  });

  it('static tokens still work beside JWTs, one that looks like a JWT included', async () => {
    expect((await read(sidecar, ADMIN)).status).toBe(200);
    expect((await read(sidecar, DOTTED_STATIC)).status).toBe(200);
    expect((await check(sidecar, DOTTED_STATIC)).status).toBe(403);
    const missing = await call(sidecar, 'GET', '/v1/users/bob/lockout');
    expect(missing.status).toBe(401);
  });

  it('logs why a JWT was refused at debug level, and never a token', () => {
    const refusals = log.lines.filter((l) => l.includes('JWT refused'));
    expect(refusals.length).toBeGreaterThan(0);
    const reasons = refusals.map((l) => String((JSON.parse(l) as { reason: unknown }).reason));
    expect(reasons).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^ERR_JWT_EXPIRED/),
        expect.stringMatching(/^ERR_JOSE_ALG_NOT_ALLOWED/),
        expect.stringMatching(/^ERR_JWKS_NO_MATCHING_KEY/),
        expect.stringMatching(/^ERR_JWS_SIGNATURE_VERIFICATION_FAILED/),
      ]),
    );
    expect(refusals.every((l) => JSON.parse(l).level === 20)).toBe(true);
    const all = log.lines.join('\n');
    for (const token of tokens) {
      expect(all).not.toContain(token);
      const signature = token.split('.')[2] ?? '';
      if (signature.length > 0) expect(all).not.toContain(signature);
    }
  });
});

describe('JWT bearer tokens: ZITADEL preset', () => {
  let sidecar: SidecarHandle;
  let key: Key;
  const log = capture();

  beforeAll(async () => {
    await issuer.start();
    key = await makeKey('z1', 'EdDSA');
    issuer.keys = [key];
    sidecar = await startSidecar(
      baseConfig({
        preset: 'zitadel',
        issuer: issuer.url,
        audience: '123456789012345678',
        permissions: {
          map: {
            'lockgate.checker': ['lockout.check'],
            'lockgate.auditor': ['user.read'],
            'lockgate.admin': ['iam.policy.read', 'iam.policy.write', 'user.read'],
          },
        },
      }),
      { logger: log.logger },
    );
  });
  afterAll(async () => {
    await sidecar?.close();
    await issuer.stop();
  });

  const zitadelToken = (roles: Record<string, Record<string, string>>) =>
    new SignJWT({
      'urn:zitadel:iam:user:resourceowner:id': '200000000000000001',
      'urn:zitadel:iam:org:project:roles': roles,
    })
      .setProtectedHeader({ alg: 'EdDSA', kid: key.kid })
      .setIssuer(issuer.url)
      .setAudience(['123456789012345678', '123456789012345679@lockgate'])
      .setSubject('287654321098765432')
      .setIssuedAt()
      .setExpirationTime(now() + 300)
      .sign(key.privateKey);

  it('maps project roles per org and the resource owner as home org (keys from /oauth/v2/keys)', async () => {
    const token = await zitadelToken({
      'lockgate.checker': { '200000000000000001': 'home.example.com' },
      'lockgate.auditor': { '200000000000000002': 'b.example.com' },
      'some.other.role': { '200000000000000003': 'c.example.com' },
    });
    expect((await check(sidecar, token)).status).toBe(200); // home org: checker
    expect((await read(sidecar, token)).status).toBe(403); // home org: not auditor
    expect((await read(sidecar, token, '200000000000000002')).status).toBe(200);
    expect((await check(sidecar, token, '200000000000000002')).status).toBe(403);
    const noOrg = await read(sidecar, token, '200000000000000003');
    expect(noOrg.status).toBe(403);
    expect(noOrg.text).toContain('organization');
    expect(issuer.fetches).toBeGreaterThan(0);
  });

  it('GET /v1/me lists the orgs its roles are granted on, and its permissions per org', async () => {
    const token = await zitadelToken({
      'lockgate.checker': { '200000000000000001': 'home.example.com' },
      'lockgate.auditor': { '200000000000000002': 'b.example.com' },
    });
    const home = await call(sidecar, 'GET', '/v1/me', { token });
    expect(home.body).toMatchObject({
      orgId: '200000000000000001',
      homeOrg: '200000000000000001',
      permissions: ['lockout.check'],
    });
    expect([...(home.body.orgs as string[])].sort()).toEqual(['200000000000000001', '200000000000000002']);
    const other = await call(sidecar, 'GET', '/v1/me', { token, org: '200000000000000002' });
    expect(other.body.permissions).toEqual(['user.read']);
  });

  it('a role granted on an org never carries instance permissions (iam.*): an org admin cannot change every org', async () => {
    const token = await zitadelToken({ 'lockgate.admin': { '200000000000000001': 'home.example.com' } });
    expect((await read(sidecar, token)).status).toBe(200); // user.read on its org
    expect((await call(sidecar, 'GET', '/admin/v1/policies/lockout', { token })).status).toBe(403);
    const write = await call(sidecar, 'PUT', '/admin/v1/policies/password/lockout', {
      token,
      body: { maxPasswordAttempts: 0, maxOtpAttempts: 0 },
    });
    expect(write.status).toBe(403);
    const instance = await call(sidecar, 'GET', '/admin/v1/policies/lockout', { token: ADMIN });
    expect(instance.status).toBe(200);
    expect(JSON.stringify(instance.body)).not.toContain('"maxPasswordAttempts":"0"');
  });

  it('with the preset, a grant not scoped to orgs (fixed permissions) reaches the home org only', async () => {
    const authorize = createJwtAuthorizer({
      preset: 'zitadel',
      issuer: issuer.url,
      audience: '123456789012345678',
      permissions: { fixed: ['user.write'] },
    });
    const token = await zitadelToken({});
    const req = (org?: string) =>
      ({
        headers: { authorization: `Bearer ${token}`, ...(org ? { 'x-zitadel-orgid': org } : {}) },
        rawHeaders: ['Authorization', `Bearer ${token}`, ...(org ? ['x-zitadel-orgid', org] : [])],
      }) as unknown as Request;
    await expect(authorize(req(), 'user.write')).resolves.toMatchObject({ orgId: '200000000000000001' });
    await expect(authorize(req('200000000000000009'), 'user.write')).rejects.toMatchObject({
      code: 'Errors.Token.OrgDenied',
    });
  });

  it('refuses a ZITADEL token for another audience with the same 401', async () => {
    const unknown = await read(sidecar, 'nope');
    const other = await new SignJWT({ 'urn:zitadel:iam:user:resourceowner:id': '200000000000000001' })
      .setProtectedHeader({ alg: 'EdDSA', kid: key.kid })
      .setIssuer(issuer.url)
      .setAudience('999')
      .setSubject('x')
      .setExpirationTime(now() + 300)
      .sign(key.privateKey);
    const res = await read(sidecar, other);
    expect(res.status).toBe(401);
    expect(res.text).toBe(unknown.text);
  });
});

describe('JWT bearer tokens: discovery and the default cooldown', () => {
  let sidecar: SidecarHandle;
  let key: Key;

  beforeAll(async () => {
    await issuer.start();
    key = await makeKey('d1', 'ES256');
    issuer.keys = [key];
    sidecar = await startSidecar(
      baseConfig({
        issuer: issuer.url,
        audience: AUDIENCE,
        jwksUri: 'discovery',
        permissions: { fixed: ['user.read'] },
      }),
      { logger: capture().logger },
    );
  });
  afterAll(async () => {
    await sidecar?.close();
    await issuer.stop();
  });

  it('finds the keys through OIDC discovery; org defaults to the instance id', async () => {
    const token = await sign(key, {});
    expect((await read(sidecar, token)).status).toBe(200);
    expect((await read(sidecar, token, 'itest')).status).toBe(200);
    expect((await read(sidecar, token, 'org-a')).status).toBe(403);
  });

  it('within the cooldown, unknown kids make no further JWKS fetch', async () => {
    const before = issuer.fetches;
    const unknown = await read(sidecar, 'nope');
    for (let i = 0; i < 5; i += 1) {
      const res = await read(sidecar, await sign(key, {}, { kid: `unknown-${i}` }));
      expect(res.text).toBe(unknown.text);
    }
    expect(issuer.fetches).toBe(before);
  });
});

describe('auth.jwt configuration errors', () => {
  const bad = (jwt: Record<string, unknown>) => {
    try {
      baseConfig(jwt);
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as ConfigError).message;
    }
    throw new Error('accepted');
  };
  const valid = { issuer: 'https://id.example.com', audience: 'a', permissions: { fixed: ['user.read'] } };

  it('answers one line naming the field', () => {
    expect(bad({ ...valid, algorithms: ['HS256'] })).toMatch(
      /^lockgate: invalid configuration: auth\.jwt\.algorithms\[0\]: expected one of RS256.*none and HS\* are never allowed\)$/,
    );
    expect(bad({ ...valid, algorithms: ['none'] })).toContain('auth.jwt.algorithms[0]');
    expect(bad({ ...valid, issuer: 'ftp://x' })).toContain(
      'auth.jwt.issuer: expected the issuer: an http(s) URL',
    );
    expect(bad({ issuer: 'https://id.example.com', audience: 'a' })).toContain(
      'auth.jwt.permissions: is required',
    );
    expect(bad({ ...valid, permissions: { claim: 'roles', map: { r: ['root'] } } })).toContain(
      'auth.jwt.permissions',
    );
    expect(bad({ ...valid, permissions: { map: { r: ['user.read'] } } })).toContain(
      'auth.jwt.permissions.claim: is required without a preset',
    );
    expect(bad({ ...valid, clockToleranceSeconds: -1 })).toContain('auth.jwt.clockToleranceSeconds');
    expect(bad({ ...valid, preset: 'keycloak' })).toContain('auth.jwt.preset: expected one of zitadel');
    expect(bad({ ...valid, jwks: { cooldownSeconds: 0 } })).toContain('auth.jwt.jwks.cooldownSeconds');
    expect(bad({ ...valid, issuers: [] })).toContain('auth.jwt.issuers: unknown option');
    for (const message of [bad({ ...valid, algorithms: ['HS256'] }), bad({ ...valid, audience: 3 })]) {
      expect(message).not.toContain('\n');
    }
  });

  it('accepts the ZITADEL preset with just issuer and audience', () => {
    const config = baseConfig({ preset: 'zitadel', issuer: 'https://id.example.com', audience: 'p' });
    expect(config.auth.jwt).toMatchObject({ preset: 'zitadel', clockToleranceSeconds: 30 });
  });
});

describe('JWT bearer tokens while the issuer cannot give its keys', () => {
  /** An issuer that answers its JWKS, a 500, non-JSON, or never (its mode). */
  let mode: 'up' | 'error' | 'garbage' | 'hang' = 'up';
  let key: Key;
  let url = '';
  const held: import('node:http').ServerResponse[] = [];
  let hits = 0;
  const server = createServer((req, res) => {
    hits += 1;
    if (mode === 'hang') return void held.push(res);
    if (mode === 'error') return void res.writeHead(500).end();
    res.setHeader('content-type', 'application/json');
    res.end(mode === 'garbage' ? '<html>' : JSON.stringify({ keys: [key.jwk] }));
  });
  let sidecar: SidecarHandle;
  const log = capture();

  beforeAll(async () => {
    key = await makeKey('kf', 'ES256');
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    sidecar = await startSidecar(
      baseConfig({
        issuer: url,
        audience: AUDIENCE,
        permissions: { fixed: ['user.read'] },
        jwks: { cooldownSeconds: 1, timeoutMs: 300 },
      }),
      { logger: log.logger },
    );
  });
  afterAll(async () => {
    await sidecar?.close();
    for (const res of held) res.destroy();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const token = () =>
    new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: 'kf' })
      .setIssuer(url)
      .setAudience(AUDIENCE)
      .setSubject('carol')
      .setExpirationTime(now() + 300)
      .sign(key.privateKey);

  it.each(['error', 'garbage', 'hang'] as const)(
    'a key fetch that fails (%s) answers 503 code 14 and logs a warning, not a 401',
    async (m) => {
      mode = m;
      await pastCooldown();
      const before = log.lines.length;
      const res = await read(sidecar, await token());
      expect(res.status).toBe(503);
      expect(res.body.code).toBe(14);
      expect(res.text).toContain('Errors.Token.KeysUnavailable');
      expect(res.headers.get('www-authenticate')).toBeNull();
      const warned = log.lines.slice(before).map((l) => JSON.parse(l) as Json);
      expect(warned.some((l) => l.level === 40 && l.auth === 'jwt')).toBe(true);
      // A static token does not need the issuer.
      expect((await read(sidecar, ADMIN)).status).toBe(200);
    },
  );

  it('while the issuer fails, JWTs sent one after another make one key fetch a second, not one each', async () => {
    mode = 'error';
    await pastCooldown();
    const before = hits;
    // One after the other (concurrent ones would share jose's one pending fetch anyway).
    const started = Date.now();
    const statuses: number[] = [];
    for (let i = 0; i < 5; i += 1) statuses.push((await read(sidecar, await token())).status);
    expect(statuses).toEqual([503, 503, 503, 503, 503]);
    if (Date.now() - started < 1000) expect(hits - before).toBe(1);
    else expect(hits - before).toBeLessThanOrEqual(2);
  });

  it('once the issuer answers again, the same token is accepted; a token it does not sign stays 401', async () => {
    mode = 'up';
    await pastCooldown();
    expect((await read(sidecar, await token())).status).toBe(200);
    const stranger = await makeKey('kz', 'ES256');
    const forged = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: 'kf' })
      .setIssuer(url)
      .setAudience(AUDIENCE)
      .setSubject('carol')
      .setExpirationTime(now() + 300)
      .sign(stranger.privateKey);
    expect((await read(sidecar, forged)).status).toBe(401);
    await pastCooldown();
    const unknownKid = await sign(stranger, {}, { iss: url, kid: 'kz' });
    expect((await read(sidecar, unknownKid)).status).toBe(401);
  });
});
