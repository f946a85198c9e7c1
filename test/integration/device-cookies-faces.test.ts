/**
 * Device cookies (issue 12) in each face, end to end over HTTP: the middleware (checks.password
 * with lockout.deviceCookie), the sidecar (deviceToken in the check and attempt routes' requests
 * and success answers, scopes in the status and the listing) and the reverse proxy (the device
 * cookie read from the login request and set on the upstream's success answer).
 */
import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import express from 'express';
import request from 'supertest';
import { createLockout, hashPassword, UserLockedError, type Lockout } from '../../src';
import { maskConfig } from '../../src/cli/mask';
import { PERMISSIONS } from '../../src/http/auth';
import { parseConfig } from '../../src/sidecar/config';
import { createLogger } from '../../src/sidecar/logger';
import { startSidecar, type SidecarHandle } from '../../src/sidecar/server';
import { auth, TEST_ARGON2 } from '../helpers/api-app';
import { loginHandler, postJson, startUpstream, type Upstream } from './proxy-harness';

const SECRET = 'device-cookie-secret-of-the-tests-0123456789';

interface Scoped {
  readonly scope: string;
  readonly state: string;
  readonly failedAttempts: { readonly password: string };
}
interface Status {
  readonly state: string;
  readonly scopes: Scoped[];
}
interface Listing {
  readonly users: Array<{ userId: string; lockedAt: string; scope?: string }>;
}
const ADMIN = 'device-cookies-admin-token';
const DEVICE_COOKIES = {
  enabled: true,
  maxDevices: 5,
  keys: [{ id: 'k2', secret: SECRET }],
};

/** The value of the lockgate_device cookie in Set-Cookie headers. */
function deviceCookieIn(
  setCookie: string | string[] | undefined,
): { value: string; line: string } | undefined {
  const lines = setCookie === undefined ? [] : Array.isArray(setCookie) ? setCookie : [setCookie];
  const line = lines.find((l) => l.startsWith('lockgate_device='));
  return line === undefined
    ? undefined
    : { value: line.slice('lockgate_device='.length).split(';')[0]!, line };
}

describe('middleware: lockout.deviceCookie with checks.password', () => {
  let lockout: Lockout;
  let app: express.Express;

  beforeAll(async () => {
    const hash = await hashPassword('right', TEST_ARGON2);
    lockout = createLockout({
      instance: { maxPasswordAttempts: 3, maxOtpAttempts: 3 },
      password: TEST_ARGON2,
      defences: { deviceCookies: { ...DEVICE_COOKIES, cookie: { secure: false, sameSite: 'strict' } } },
    });
    app = express();
    app.use(express.json());
    app.post('/login', async (req, res) => {
      const { user, password } = req.body as { user: string; password: string };
      try {
        const r = await lockout.checks.password('org-m', user, hash, password, {
          deviceToken: lockout.deviceCookie?.read(req),
        });
        if (r.ok && r.deviceToken) lockout.deviceCookie?.write(res, r.deviceToken);
        res.status(r.ok ? 200 : 401).end();
      } catch (error) {
        if (error instanceof UserLockedError) res.status(423).end();
        else throw error;
      }
    });
  });
  afterAll(async () => {
    await lockout.close();
  });

  it('sets the cookie after a success; that browser logs in while untrusted clients are locked', async () => {
    const first = await request(app).post('/login').send({ user: 'mia', password: 'right' });
    expect(first.status).toBe(200);
    const cookie = deviceCookieIn(first.headers['set-cookie']);
    expect(cookie?.line).toMatch(/; HttpOnly; SameSite=Strict$/);
    expect(cookie?.line).toMatch(/; Path=\//);
    for (let i = 0; i < 5; i++) await request(app).post('/login').send({ user: 'mia', password: 'guess' });
    expect((await request(app).post('/login').send({ user: 'mia', password: 'right' })).status).toBe(423);
    const mine = await request(app)
      .post('/login')
      .set('Cookie', `other=1; lockgate_device=${cookie!.value}`)
      .send({ user: 'mia', password: 'right' });
    expect(mine.status).toBe(200);
    // the cookie is refreshed
    expect(deviceCookieIn(mine.headers['set-cookie'])).toBeDefined();
  });

  it('is Secure by default', () => {
    const secure = createLockout({ defences: { deviceCookies: DEVICE_COOKIES } });
    const res = { append: jest.fn() } as unknown as express.Response;
    secure.deviceCookie!.write(res, 'token');
    expect((res.append as jest.Mock).mock.calls[0][1]).toMatch(/; HttpOnly; SameSite=Lax; Secure$/);
    void secure.close();
  });
});

describe('sidecar and proxy: deviceCookies in the config file', () => {
  let upstream: Upstream;
  let sidecar: SidecarHandle;
  let hash: string;

  beforeAll(async () => {
    hash = await hashPassword('right', TEST_ARGON2);
    upstream = await startUpstream(loginHandler(new Map([['pia', 'right']])));
    sidecar = await startSidecar(
      parseConfig({
        server: { port: 0 },
        instance: { id: 'dc-faces', maxPasswordAttempts: 3, maxOtpAttempts: 3 },
        log: { level: 'silent' },
        password: { argon2: TEST_ARGON2 },
        auth: {
          tokens: [{ name: 'root', token: ADMIN, org: 'org-s', orgs: ['*'], permissions: [...PERMISSIONS] }],
        },
        defences: { deviceCookies: DEVICE_COOKIES },
        proxy: {
          upstream: upstream.url,
          routes: [{ path: '/login', user: { from: 'json', name: 'user' }, org: { fixed: 'org-p' } }],
        },
      }),
      { logger: createLogger('silent') },
    );
  });
  afterAll(async () => {
    await sidecar?.close();
    await upstream?.close();
  });

  const headers = { authorization: `Bearer ${ADMIN}` };
  const check = (user: string, password: string, deviceToken?: string) =>
    postJson(
      sidecar.url,
      '/v1/checks/password',
      { userId: user, password, encodedHash: hash, ...(deviceToken ? { deviceToken } : {}) },
      headers,
    );

  it('sidecar: the success answers a deviceToken; with it the user logs in while untrusted clients are locked', async () => {
    const first = await check('sue', 'right');
    expect(first.status).toBe(200);
    const token = first.json.deviceToken as string;
    expect(typeof token).toBe('string');
    for (let i = 0; i < 4; i++) await check('sue', 'guess');
    expect((await check('sue', 'right')).status).toBe(423);
    expect((await check('sue', 'right', token)).status).toBe(200);
    const status = (await (
      await fetch(`${sidecar.url}/v1/users/sue/lockout`, { headers: auth(ADMIN) })
    ).json()) as Status;
    expect(status.state).toBe('USER_STATE_ACTIVE');
    expect(status.scopes).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ scope: 'untrusted', state: 'USER_STATE_LOCKED' }),
        expect.objectContaining({ scope: expect.stringMatching(/^device:/), state: 'USER_STATE_ACTIVE' }),
      ]),
    );
    const list = (await (
      await fetch(`${sidecar.url}/v1/lockouts`, { headers: auth(ADMIN) })
    ).json()) as Listing;
    expect(list.users).toEqual([{ userId: 'sue', lockedAt: expect.any(String), scope: 'untrusted' }]);
  });

  it('sidecar answers with device cookies match the OpenAPI document (check success, settle, status, listing)', async () => {
    const doc = (await (await fetch(`${sidecar.url}/openapi.json`)).json()) as object;
    const ajv = new Ajv2020({ allErrors: true, strict: true });
    addFormats(ajv);
    ajv.addVocabulary(['openapi', 'info', 'servers', 'tags', 'paths', 'components']);
    ajv.addSchema(doc, 'https://lockgate.test/openapi.json');
    const valid = (ref: string, body: unknown) => {
      const v = ajv.getSchema(`https://lockgate.test/openapi.json#/components/schemas/${ref}`)!;
      expect({ ref, ok: v(body), errors: v.errors ?? null }).toEqual({ ref, ok: true, errors: null });
    };
    const ok = await check('val', 'right');
    expect(typeof ok.json.deviceToken).toBe('string');
    valid('CheckSuccess', ok.json);
    for (let i = 0; i < 3; i++) await check('val', 'guess');
    const r = await postJson(sidecar.url, '/v1/attempts', { userId: 'val2', factor: 'password' }, headers);
    const settled = await postJson(
      sidecar.url,
      `/v1/attempts/${r.json.attemptId as string}/success`,
      {},
      headers,
    );
    valid('Settlement', settled.json);
    const status = await (
      await fetch(`${sidecar.url}/v1/users/val/lockout`, { headers: auth(ADMIN) })
    ).json();
    valid('UserLockout', status);
    const list = await (await fetch(`${sidecar.url}/v1/lockouts`, { headers: auth(ADMIN) })).json();
    valid('LockedUsers', list);
  });

  it('sidecar attempt routes: the reserve takes the deviceToken, the success settle answers one', async () => {
    const r = await postJson(sidecar.url, '/v1/attempts', { userId: 'ann', factor: 'password' }, headers);
    const s = await postJson(sidecar.url, `/v1/attempts/${r.json.attemptId as string}/success`, {}, headers);
    expect(s.status).toBe(200);
    const token = s.json.deviceToken as string;
    expect(typeof token).toBe('string');
    const r2 = await postJson(
      sidecar.url,
      '/v1/attempts',
      { userId: 'ann', factor: 'password', deviceToken: token },
      headers,
    );
    const f = await postJson(sidecar.url, `/v1/attempts/${r2.json.attemptId as string}/failure`, {}, headers);
    expect(f.json).toEqual({ failedAttempts: '1', locked: false });
    const status = (await (
      await fetch(`${sidecar.url}/v1/users/ann/lockout`, { headers: auth(ADMIN) })
    ).json()) as Status;
    const device = status.scopes.find((sc) => sc.scope.startsWith('device:'));
    expect(device?.failedAttempts.password).toBe('1');
  });

  it('proxy: sets the device cookie on the upstream success; that browser passes while untrusted logins are locked', async () => {
    const login = (password: string, cookie?: string) =>
      postJson(
        sidecar.url,
        '/login',
        { user: 'pia', password },
        cookie ? { cookie: `lockgate_device=${cookie}` } : {},
      );
    const first = await login('right');
    expect(first.status).toBe(200);
    const cookie = deviceCookieIn(first.headers['set-cookie']);
    expect(cookie?.line).toMatch(/; HttpOnly; SameSite=Lax; Secure$/);
    for (let i = 0; i < 4; i++) await login('guess');
    expect((await login('right')).status).toBe(423);
    const mine = await login('right', cookie!.value);
    expect(mine.status).toBe(200);
    expect(mine.json).toEqual({ session: 'session-of-pia' });
  });

  it('names the bad field: deviceCookies enabled without keys, a duplicate key id', () => {
    expect(() => parseConfig({ defences: { deviceCookies: { enabled: true } } })).toThrow(
      /defences\.deviceCookies\.keys/,
    );
    expect(() =>
      parseConfig({
        defences: {
          deviceCookies: { enabled: true, keys: [...DEVICE_COOKIES.keys, ...DEVICE_COOKIES.keys] },
        },
      }),
    ).toThrow(/defences\.deviceCookies\.keys/);
  });

  it('config check masks the device keys', () => {
    const config = parseConfig({ defences: { deviceCookies: DEVICE_COOKIES } });
    expect(JSON.stringify(maskConfig(config))).not.toContain(SECRET);
  });
});

describe('middleware guard: reads and sets the device cookie', () => {
  it('a guarded login with a valid device cookie counts on its device while untrusted requests are locked', async () => {
    const lockout = createLockout({
      instance: { maxPasswordAttempts: 2, maxOtpAttempts: 2 },
      defences: { deviceCookies: DEVICE_COOKIES },
    });
    try {
      const first = await lockout.checks.check('org-g', 'gus', 'password', () => true);
      const token = first.ok ? first.deviceToken : undefined;
      expect(typeof token).toBe('string');
      const app = express();
      app.use(express.json());
      app.post(
        '/login',
        lockout.guards.password({ user: (req) => (req.body as { user: string }).user, org: () => 'org-g' }),
        (req, res) => {
          res.status((req.body as { password: string }).password === 'right' ? 200 : 401).end();
        },
      );
      for (let i = 0; i < 3; i++) await request(app).post('/login').send({ user: 'gus', password: 'x' });
      expect((await request(app).post('/login').send({ user: 'gus', password: 'right' })).status).toBe(423);
      const mine = await request(app)
        .post('/login')
        .set('Cookie', `lockgate_device=${token!}`)
        .send({ user: 'gus', password: 'right' });
      expect(mine.status).toBe(200);
    } finally {
      await lockout.close();
    }
  });

  it("a guarded success sets the device cookie (not a failure's, nor a streamed answer's), and that cookie is the device's own scope", async () => {
    const lockout = createLockout({
      instance: { maxPasswordAttempts: 2, maxOtpAttempts: 2 },
      defences: { deviceCookies: DEVICE_COOKIES },
    });
    try {
      const app = express();
      app.use(express.json());
      const guard = lockout.guards.password({
        user: (req) => (req.body as { user: string }).user,
        org: () => 'org-g',
      });
      app.post('/login', guard, (req, res) => {
        res.status((req.body as { password: string }).password === 'right' ? 200 : 401).json({});
      });
      app.post('/login-streamed', guard, (req, res) => {
        res.status(200).write('{');
        res.end('}');
      });
      const wrong = await request(app).post('/login').send({ user: 'hal', password: 'x' });
      expect(wrong.status).toBe(401);
      expect(wrong.headers['set-cookie']).toBeUndefined();
      const streamed = await request(app).post('/login-streamed').send({ user: 'hal', password: 'right' });
      expect(streamed.status).toBe(200);
      expect(streamed.headers['set-cookie']).toBeUndefined();
      const ok = await request(app).post('/login').send({ user: 'hal', password: 'right' });
      expect(ok.status).toBe(200);
      const cookies = ok.headers['set-cookie'] as unknown as string[];
      expect(cookies).toHaveLength(1);
      expect(cookies[0]).toMatch(/^lockgate_device=[^;]+;.*HttpOnly/);
      const cookie = cookies[0]!.split(';')[0]!;
      // Untrusted clients lock; the browser holding the cookie still logs in.
      for (let i = 0; i < 3; i++) await request(app).post('/login').send({ user: 'hal', password: 'x' });
      expect((await request(app).post('/login').send({ user: 'hal', password: 'right' })).status).toBe(423);
      const mine = await request(app)
        .post('/login')
        .set('Cookie', cookie)
        .send({ user: 'hal', password: 'right' });
      expect(mine.status).toBe(200);
    } finally {
      await lockout.close();
    }
  });
});

describe('sidecar audit log of device cookies', () => {
  it('names the scope a lock by failures locked', async () => {
    const lines: string[] = [];
    const logger = createLogger('info', { write: (line: string) => void lines.push(line) });
    const sidecar = await startSidecar(
      parseConfig({
        server: { port: 0 },
        instance: { id: 'dc-audit', maxPasswordAttempts: 2, maxOtpAttempts: 2 },
        auth: {
          tokens: [{ name: 'root', token: ADMIN, org: 'org-a', orgs: ['*'], permissions: [...PERMISSIONS] }],
        },
        defences: { deviceCookies: DEVICE_COOKIES },
      }),
      { logger },
    );
    try {
      for (let i = 0; i < 2; i++) {
        await postJson(
          sidecar.url,
          '/v1/attempts/' +
            ((
              await postJson(
                sidecar.url,
                '/v1/attempts',
                { userId: 'al', factor: 'password' },
                { authorization: `Bearer ${ADMIN}` },
              )
            ).json.attemptId as string) +
            '/failure',
          {},
          { authorization: `Bearer ${ADMIN}` },
        );
      }
      const lock = lines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((r) => r.audit === true && r.action === 'user.lock');
      expect(lock).toMatchObject({ reason: 'failures', userId: 'al', scope: 'untrusted' });
      expect(lines.join('\n')).not.toContain(SECRET);
    } finally {
      await sidecar.close();
    }
  });
});
