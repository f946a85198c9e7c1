/**
 * The defences of issue 12 in each face, end to end over HTTP: the middleware (createLockout with
 * `defences`, a login route on checks.password, a MemoryStore on an injected clock), the sidecar
 * (/v1/checks/password, the status route, the per-org defence routes) and the reverse proxy (a
 * route that names the password field, in front of a real upstream). Times: the middleware's clock
 * is moved; the sidecar and proxy run on real time with 300 ms locks, asserted by state.
 */
import express from 'express';
import request from 'supertest';
import { createLockout, hashPassword, MemoryStore, UserLockedError, type Lockout } from '../../src';
import { createLogger } from '../../src/sidecar/logger';
import { maskConfig } from '../../src/cli/mask';
import { parseConfig } from '../../src/sidecar/config';
import { startSidecar, type SidecarHandle } from '../../src/sidecar/server';
import { PERMISSIONS } from '../../src/http/auth';
import { auth, TEST_ARGON2 } from '../helpers/api-app';
import { loginHandler, postJson, startUpstream, type Upstream } from './proxy-harness';

const KEY = 'repeat-password-key-of-the-tests-0123456789';
const ADMIN = 'defences-admin-token';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(holds: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await holds())) {
    if (Date.now() > deadline) throw new Error(`still not ${what} after 15 s`);
    await sleep(50);
  }
}

describe('middleware: createLockout({ defences })', () => {
  let lockout: Lockout;
  let skew = 0;
  const start = Date.now();
  let app: express.Express;
  let hash: string;

  beforeAll(async () => {
    hash = await hashPassword('right', TEST_ARGON2);
    lockout = createLockout({
      store: new MemoryStore({ now: () => start + skew, purgeIntervalMs: 0 }),
      instance: { maxPasswordAttempts: 3, maxOtpAttempts: 3 },
      password: TEST_ARGON2,
      tokens: [{ name: 'root', token: ADMIN, org: 'org-m', orgs: ['*'], permissions: [...PERMISSIONS] }],
      defences: {
        temporaryLockout: { enabled: true, durationMs: 60_000, maxDurationMs: 600_000 },
        repeatPassword: { enabled: true, remember: 5, key: KEY },
      },
    });
    app = express();
    app.use(express.json());
    app.post('/login', async (req, res) => {
      const body = req.body as { user: string; password: string };
      try {
        const r = await lockout.checks.password('org-m', body.user, hash, body.password);
        res.status(r.ok ? 200 : 401).json(r);
      } catch (error) {
        if (error instanceof UserLockedError) res.status(423).json({ locked: true });
        else throw error;
      }
    });
    app.use(lockout.routers.all());
  });
  afterAll(async () => {
    await lockout.close();
  });

  const login = (user: string, password: string) => request(app).post('/login').send({ user, password });
  const status = async (user: string) =>
    (await request(app).get(`/v1/users/${user}/lockout`).set(auth(ADMIN)).set('x-zitadel-orgid', 'org-m'))
      .body as {
      state: string;
      lockedAt?: string;
      lockedUntil?: string;
      failedAttempts: { password: string };
    };

  it('temporary lockout: the lock ends at lockedUntil (60 s, then 120 s on repeat)', async () => {
    for (const p of ['a', 'b', 'c']) await login('tina', p);
    let s = await status('tina');
    expect(s.state).toBe('USER_STATE_LOCKED');
    expect(Date.parse(s.lockedUntil!) - Date.parse(s.lockedAt!)).toBe(60_000);
    skew += 59_999;
    expect((await login('tina', 'right')).status).toBe(423);
    skew += 1;
    expect((await login('tina', 'wrong-1')).status).toBe(401);
    for (const p of ['wrong-2', 'wrong-3']) await login('tina', p);
    s = await status('tina');
    expect(Date.parse(s.lockedUntil!) - Date.parse(s.lockedAt!)).toBe(120_000);
    skew += 120_000;
    expect((await login('tina', 'right')).status).toBe(200);
  });

  it('repeat-password forgiveness: the same wrong password 20 times counts once', async () => {
    for (let i = 0; i < 20; i++) expect((await login('rita', 'hunter2')).status).toBe(401);
    expect((await status('rita')).failedAttempts.password).toBe('1');
  });

  it('per-org defence settings through the mounted routers: an org turns forgiveness off', async () => {
    const put = await request(app)
      .post('/v1/policies/defences')
      .set(auth(ADMIN))
      .set('x-zitadel-orgid', 'org-m')
      .send({ repeatPassword: { enabled: false } });
    expect(put.status).toBe(200);
    const got = await request(app)
      .get('/v1/policies/defences')
      .set(auth(ADMIN))
      .set('x-zitadel-orgid', 'org-m');
    expect(got.body).toMatchObject({
      isDefault: false,
      defences: {
        repeatPassword: { enabled: false, isDefault: false },
        temporaryLockout: { isDefault: true },
      },
    });
    expect(JSON.stringify(got.body)).not.toContain(KEY);
    await login('otto', 'same');
    await login('otto', 'same');
    expect((await status('otto')).failedAttempts.password).toBe('2');
  });
});

describe('sidecar and proxy: the defences section of the config file', () => {
  let upstream: Upstream;
  let sidecar: SidecarHandle;
  let hash: string;

  beforeAll(async () => {
    hash = await hashPassword('right', TEST_ARGON2);
    upstream = await startUpstream(loginHandler(new Map([['pat', 'right']])));
    sidecar = await startSidecar(
      parseConfig({
        server: { port: 0 },
        instance: { id: 'def-faces', maxPasswordAttempts: 3, maxOtpAttempts: 3 },
        log: { level: 'silent' },
        password: { argon2: TEST_ARGON2 },
        auth: {
          tokens: [{ name: 'root', token: ADMIN, org: 'org-s', orgs: ['*'], permissions: [...PERMISSIONS] }],
        },
        defences: {
          temporaryLockout: { enabled: true, durationMs: 300, maxDurationMs: 1200 },
          repeatPassword: { enabled: true, key: KEY },
        },
        proxy: {
          upstream: upstream.url,
          routes: [
            {
              path: '/login',
              user: { from: 'json', name: 'user' },
              org: { fixed: 'org-p' },
              password: { from: 'json', name: 'password' },
            },
          ],
        },
      }),
      { logger: createLogger('silent') },
    );
  });
  afterAll(async () => {
    await sidecar?.close();
    await upstream?.close();
  });

  const check = (user: string, password: string) =>
    postJson(
      sidecar.url,
      '/v1/checks/password',
      { userId: user, password, encodedHash: hash },
      {
        authorization: `Bearer ${ADMIN}`,
        'x-zitadel-orgid': 'org-s',
      },
    );
  const status = async (user: string, org: string) =>
    (
      await fetch(`${sidecar.url}/v1/users/${user}/lockout`, {
        headers: { ...auth(ADMIN), 'x-zitadel-orgid': org },
      })
    ).json() as Promise<{
      state: string;
      lockedAt?: string;
      lockedUntil?: string;
      failedAttempts: { password: string };
    }>;

  it('sidecar /v1/checks/password: the same wrong password 20 times counts once', async () => {
    for (let i = 0; i < 20; i++) expect((await check('sam', 'hunter2')).status).toBe(401);
    expect((await status('sam', 'org-s')).failedAttempts.password).toBe('1');
    // twenty different ones count up to the limit (3), then the user is locked
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push((await check('sid', `guess-${i}`)).status);
    expect(statuses.filter((st) => st === 401)).toHaveLength(3);
    expect(statuses.slice(0, 3)).toEqual([401, 401, 401]);
  });

  it('sidecar: a temporary lock shows lockedUntil and ends by itself', async () => {
    for (const p of ['a', 'b', 'c']) await check('tom', p);
    const s = await status('tom', 'org-s');
    if (s.state === 'USER_STATE_LOCKED') {
      expect(Date.parse(s.lockedUntil!) - Date.parse(s.lockedAt!)).toBe(300);
    }
    await until(async () => (await check('tom', 'right')).status === 200, 'unlocked');
    expect((await status('tom', 'org-s')).state).toBe('USER_STATE_ACTIVE');
  });

  it('proxy: a route naming the password field forgives repeats; a temporary lock ends by itself', async () => {
    const login = (password: string) => postJson(sidecar.url, '/login', { user: 'pat', password });
    for (let i = 0; i < 10; i++) expect((await login('same-wrong')).status).toBe(401);
    expect((await status('pat', 'org-p')).failedAttempts.password).toBe('1');
    await login('w2');
    expect((await login('w3')).status).toBe(401);
    await until(async () => (await login('right')).status === 200, 'unlocked');
    expect(upstream.hits.length).toBeGreaterThan(0);
  });

  it('per-org routes: an org of its own turns temporary lockout off; its locks are permanent', async () => {
    const res = await postJson(
      sidecar.url,
      '/v1/policies/defences',
      { temporaryLockout: { enabled: false } },
      { authorization: `Bearer ${ADMIN}`, 'x-zitadel-orgid': 'org-perm' },
    );
    expect(res.status).toBe(200);
    const c = (p: string) =>
      postJson(
        sidecar.url,
        '/v1/checks/password',
        { userId: 'perm', password: p, encodedHash: hash },
        {
          authorization: `Bearer ${ADMIN}`,
          'x-zitadel-orgid': 'org-perm',
        },
      );
    for (const p of ['a', 'b', 'c']) await c(p);
    const s = await status('perm', 'org-perm');
    expect(s.state).toBe('USER_STATE_LOCKED');
    expect(s.lockedUntil).toBeUndefined();
  });
});

describe('configuration of the defences', () => {
  it('names the bad field: repeatPassword enabled without a key, a lock shorter than 100 ms', () => {
    expect(() => parseConfig({ defences: { repeatPassword: { enabled: true } } })).toThrow(
      /defences\.repeatPassword\.key/,
    );
    expect(() => parseConfig({ defences: { temporaryLockout: { enabled: true, durationMs: 5 } } })).toThrow(
      /defences\.temporaryLockout\.durationMs/,
    );
    expect(() => createLockout({ defences: { repeatPassword: { enabled: true, key: 'short' } } })).toThrow(
      /defences\.repeatPassword\.key/,
    );
  });

  it('expands ${VAR} in the key, and config check masks it', () => {
    const config = parseConfig(
      { defences: { repeatPassword: { enabled: true, key: '${LG_TEST_KEY}' } } },
      { LG_TEST_KEY: KEY },
    );
    expect(config.defences?.repeatPassword?.key).toBe(KEY);
    expect(JSON.stringify(maskConfig(config))).not.toContain(KEY);
  });
});

describe('sidecar audit log of the defences', () => {
  it('logs forgiven repeats, locks with lockedUntil and automatic unlocks, never the password or the key', async () => {
    const lines: string[] = [];
    const logger = createLogger('info', { write: (line: string) => void lines.push(line) });
    const hash = await hashPassword('right', TEST_ARGON2);
    const sidecar = await startSidecar(
      parseConfig({
        server: { port: 0 },
        instance: { id: 'def-audit', maxPasswordAttempts: 3, maxOtpAttempts: 3 },
        password: { argon2: TEST_ARGON2 },
        auth: {
          tokens: [
            { name: 'auditor', token: ADMIN, org: 'org-a', orgs: ['*'], permissions: [...PERMISSIONS] },
          ],
        },
        defences: {
          temporaryLockout: { enabled: true, durationMs: 200, maxDurationMs: 200 },
          repeatPassword: { enabled: true, key: KEY },
        },
      }),
      { logger },
    );
    try {
      const check = (password: string) =>
        postJson(
          sidecar.url,
          '/v1/checks/password',
          { userId: 'ada', password, encodedHash: hash },
          { authorization: `Bearer ${ADMIN}` },
        );
      await check('Secret-Guess-1');
      await check('Secret-Guess-1');
      await check('Secret-Guess-2');
      await check('Secret-Guess-3');
      await until(async () => (await check('right')).status === 200, 'unlocked');
      const audit = lines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((r) => r.audit === true);
      expect(audit).toContainEqual(
        expect.objectContaining({ action: 'check.forgiven', principal: 'auditor', userId: 'ada' }),
      );
      const lock = audit.find((r) => r.action === 'user.lock');
      expect(lock).toMatchObject({ reason: 'failures', userId: 'ada' });
      expect(typeof lock?.lockedUntil).toBe('string');
      expect(audit).toContainEqual(
        expect.objectContaining({ action: 'user.unlock', reason: 'automatic', userId: 'ada' }),
      );
      const all = lines.join('\n');
      expect(all).not.toContain('Secret-Guess');
      expect(all).not.toContain(KEY);
    } finally {
      await sidecar.close();
    }
  });
});
