/**
 * The sidecar in process on the memory store: service routes, metrics, the OpenAPI document
 * against the app's real routes, audit logs, and what never reaches a log.
 */
import type { Express } from 'express';
import { parseConfig } from '../../src/sidecar/config';
import { createLogger } from '../../src/sidecar/logger';
import { ROUTES, buildOpenApiDocument } from '../../src/sidecar/openapi';
import { isOwnPath, startSidecar, type SidecarHandle } from '../../src/sidecar/server';
import { hashPassword, totpCode, generateTotpSecret } from '../../src/verify';
import { PERMISSIONS } from '../../src/http/auth';
import { readAnswer } from '../helpers/http';

/** A parsed JSON answer, read freely by the assertions. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
const ADMIN = 'admin-token-for-tests-0001';
const CHECKER = 'checker-token-for-tests-0002';
const FAST_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 };

function memoryConfig(extra: Record<string, unknown> = {}) {
  return parseConfig({
    server: { port: 0, bodyLimit: '2kb' },
    instance: { id: 'itest', maxPasswordAttempts: 3 },
    log: { level: 'info' },
    password: { argon2: FAST_ARGON2 },
    auth: {
      tokens: [
        {
          name: 'root',
          token: ADMIN,
          orgs: ['*'],
          permissions: [...PERMISSIONS],
        },
        { name: 'login-service', token: CHECKER, org: 'org-a', permissions: ['lockout.check'] },
      ],
    },
    ...extra,
  });
}

function capture() {
  const lines: string[] = [];
  const logger = createLogger('debug', { write: (line: string) => void lines.push(line) });
  return { logger, lines, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

async function call(
  sidecar: SidecarHandle,
  method: string,
  path: string,
  options: { token?: string; org?: string; body?: unknown; raw?: string } = {},
): Promise<{ status: number; body: Json; text: string; headers: Headers }> {
  const headers: Record<string, string> = {};
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.org) headers['x-zitadel-orgid'] = options.org;
  let payload: string | undefined;
  if (options.body !== undefined || options.raw !== undefined) {
    headers['content-type'] = 'application/json';
    payload = options.raw ?? JSON.stringify(options.body);
  }
  const res = await fetch(`${sidecar.url}${path}`, { method, headers, body: payload });
  return (await readAnswer(res)) as { status: number; body: Json; text: string; headers: Headers };
}

/** Every (METHOD, /openapi/{path}) the Express app routes, found by walking its router stack. */
function appRoutes(app: Express): string[] {
  const out = new Set<string>();
  type Layer = {
    route?: { path: string | string[]; methods: Record<string, boolean> };
    handle?: { stack?: Layer[] };
  };
  const walk = (stack: Layer[]) => {
    for (const layer of stack) {
      if (layer.route) {
        const paths = Array.isArray(layer.route.path) ? layer.route.path : [layer.route.path];
        for (const p of paths) {
          for (const [method, on] of Object.entries(layer.route.methods)) {
            if (on && method !== '_all')
              out.add(`${method.toUpperCase()} ${p.replace(/:([A-Za-z]+)/g, '{$1}')}`);
          }
        }
      } else if (layer.handle?.stack) {
        walk(layer.handle.stack);
      }
    }
  };
  walk((app as unknown as { router: { stack: Layer[] } }).router.stack);
  return [...out].sort();
}

describe('sidecar server (memory store)', () => {
  let sidecar: SidecarHandle;
  const log = capture();
  let hash: string;

  beforeAll(async () => {
    hash = await hashPassword('correct horse', FAST_ARGON2);
    sidecar = await startSidecar(memoryConfig(), { logger: log.logger });
  });
  afterAll(async () => {
    await sidecar?.close();
  });

  it('listens on a free port and answers its real address', () => {
    expect(sidecar.port).toBeGreaterThan(0);
    expect(sidecar.url).toBe(`http://127.0.0.1:${sidecar.port}`);
  });

  it('/healthz and /readyz answer 200 without a token', async () => {
    const health = await call(sidecar, 'GET', '/healthz');
    expect(health.status).toBe(200);
    expect(health.body).toEqual({ status: 'ok' });
    const ready = await call(sidecar, 'GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({ status: 'ok', store: 'memory' });
  });

  it('every other route needs a token: 401 code 16', async () => {
    const res = await call(sidecar, 'GET', '/management/v1/policies/lockout');
    expect(res.status).toBe(401);
    expect(res.body.code).toBe(16);
    const unknown = await call(sidecar, 'GET', '/management/v1/policies/lockout', { token: 'nope' });
    expect(unknown.status).toBe(401);
    expect(unknown.body.details).toHaveLength(1);
  });

  it('unknown routes are 404 code 5; a body over bodyLimit is 413; malformed JSON 400 code 3', async () => {
    const missing = await call(sidecar, 'GET', '/nope', { token: ADMIN });
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe(5);
    const big = await call(sidecar, 'POST', '/v1/checks/password', {
      token: CHECKER,
      body: { userId: 'u', password: 'x'.repeat(4096) },
    });
    expect(big.status).toBe(413);
    const malformed = await call(sidecar, 'POST', '/v1/checks/password', {
      token: CHECKER,
      raw: '{"userId":',
    });
    expect(malformed.status).toBe(400);
    expect(malformed.body.code).toBe(3);
  });

  it('counts checks in /metrics by factor and outcome, with locks, unlocks and latency', async () => {
    const user = 'metrics-user';
    const ok = await call(sidecar, 'POST', '/v1/checks/password', {
      token: CHECKER,
      body: { userId: user, password: 'correct horse', encodedHash: hash },
    });
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ userId: user, factor: 'password', failedAttempts: '0', locked: false });
    const statuses: number[] = [];
    for (let i = 0; i < 4; i += 1) {
      const r = await call(sidecar, 'POST', '/v1/checks/password', {
        token: CHECKER,
        body: { userId: user, password: 'wrong', encodedHash: hash },
      });
      statuses.push(r.status);
    }
    expect(statuses).toEqual([401, 401, 401, 423]);
    const unlock = await call(sidecar, 'POST', `/v2/users/${user}/unlock`, { token: ADMIN, org: 'org-a' });
    expect(unlock.status).toBe(200);

    const metrics = await call(sidecar, 'GET', '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toContain('text/plain');
    const text = metrics.text;
    expect(text).toContain('lockgate_checks_total{factor="password",outcome="success"} 1');
    expect(text).toContain('lockgate_checks_total{factor="password",outcome="failure"} 3');
    expect(text).toContain('lockgate_checks_total{factor="password",outcome="locked"} 1');
    expect(text).toContain('lockgate_locks_total{reason="failures"} 1');
    expect(text).toContain('lockgate_unlocks_total 1');
    expect(text).toMatch(/lockgate_check_duration_seconds_count\{factor="password",outcome="failure"\} 3/);
    expect(text).toContain('# TYPE lockgate_store_errors_total counter');
    expect(text).toContain('# TYPE lockgate_busy_total counter');
  });

  it('writes one audit line per admin action and lock, with who, org and user', async () => {
    const user = 'audit-user';
    await call(sidecar, 'POST', `/management/v1/users/${user}/_lock`, { token: ADMIN, org: 'org-b' });
    await call(sidecar, 'POST', `/management/v1/users/${user}/_lock`, { token: ADMIN, org: 'org-b' }); // 400: already locked
    await call(sidecar, 'PUT', '/admin/v1/policies/password/lockout', {
      token: ADMIN,
      body: { maxPasswordAttempts: 4, maxOtpAttempts: 4 },
    });
    await call(sidecar, 'POST', '/management/v1/policies/lockout', {
      token: ADMIN,
      org: 'org-b',
      body: { maxPasswordAttempts: '2', maxOtpAttempts: '2' },
    });
    for (let i = 0; i < 2; i += 1) {
      await call(sidecar, 'POST', '/v1/checks/password', {
        token: ADMIN,
        org: 'org-b',
        body: { userId: 'audit-victim', password: 'wrong', encodedHash: hash },
      });
    }
    // A lock made by failures settled through /v1/attempts names the token that settled it
    // (login-service, whose org is org-a, at the instance's limit of 4).
    for (let i = 0; i < 4; i += 1) {
      const attempt = await call(sidecar, 'POST', '/v1/attempts', {
        token: CHECKER,
        body: { userId: 'audit-victim-2', factor: 'password' },
      });
      expect(attempt.status).toBe(201);
      const id = (attempt.body as { attemptId: string }).attemptId;
      expect((await call(sidecar, 'POST', `/v1/attempts/${id}/failure`, { token: CHECKER })).status).toBe(
        200,
      );
    }
    const audit = log.records().filter((r) => r.audit === true);
    expect(audit).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          action: 'user.lock',
          reason: 'failures',
          factor: 'password',
          principal: 'login-service',
          orgId: 'org-a',
          userId: 'audit-victim-2',
        }),
        expect.objectContaining({
          action: 'user.lock',
          principal: 'root',
          orgId: 'org-b',
          userId: user,
          outcome: 'ok',
        }),
        expect.objectContaining({
          action: 'user.lock',
          principal: 'root',
          orgId: 'org-b',
          userId: user,
          outcome: 'Errors.User.AlreadyLocked',
        }),
        expect.objectContaining({
          action: 'settings.instance.update',
          principal: 'root',
          orgId: 'itest',
          outcome: 'ok',
        }),
        expect.objectContaining({
          action: 'settings.org.add',
          principal: 'root',
          orgId: 'org-b',
          outcome: 'ok',
        }),
        expect.objectContaining({
          action: 'user.lock',
          reason: 'failures',
          factor: 'password',
          principal: 'root',
          orgId: 'org-b',
          userId: 'audit-victim',
        }),
      ]),
    );
  });

  it('never logs a token, password, hash, code or secret', async () => {
    const secret = generateTotpSecret();
    await call(sidecar, 'POST', '/v1/checks/totp', {
      token: CHECKER,
      body: { userId: 'log-user', code: totpCode(secret), secret },
    });
    const issued = await call(sidecar, 'POST', '/v1/otp/sms', {
      token: CHECKER,
      body: { userId: 'log-user' },
    });
    expect(issued.status).toBe(201);
    await call(sidecar, 'POST', '/v1/checks/otp_sms', {
      token: CHECKER,
      body: { userId: 'log-user', code: issued.body.code },
    });
    await call(sidecar, 'POST', '/v1/checks/password', {
      token: CHECKER,
      body: { userId: 'log-user', password: 'hunter2-secret', encodedHash: hash },
    });
    const all = log.lines.join('\n');
    expect(log.lines.length).toBeGreaterThan(5); // debug: one line per request
    for (const forbidden of [
      ADMIN,
      CHECKER,
      'hunter2-secret',
      'correct horse',
      hash,
      secret,
      `"${issued.body.code}"`,
    ]) {
      expect(all).not.toContain(forbidden);
    }
  });

  it('/openapi.json is an OpenAPI 3.1 document of exactly the routes the app has', async () => {
    const res = await call(sidecar, 'GET', '/openapi.json');
    expect(res.status).toBe(200);
    expect(res.body.openapi).toBe('3.1.0');
    const documented = Object.entries(res.body.paths as Record<string, Record<string, unknown>>)
      .flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`))
      .sort();
    expect(documented).toEqual(appRoutes(sidecar.app));
    expect(documented).toHaveLength(ROUTES.length);
    // Every $ref resolves, every operation id is unique.
    const doc = buildOpenApiDocument();
    const refs = [...JSON.stringify(doc).matchAll(/"#\/components\/schemas\/([A-Za-z0-9]+)"/g)].map(
      (m) => m[1]!,
    );
    const schemas = (doc.components as { schemas: Record<string, unknown> }).schemas;
    for (const r of refs) expect(schemas).toHaveProperty(r);
    const ids = ROUTES.map((r) => r.operationId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(res.body.paths['/v1/checks/password'].post.security).toEqual([{ bearer: [] }]);
    expect(res.body.paths['/healthz'].get.security).toEqual([]);
  });
});

describe('sidecar shutdown (in process)', () => {
  it('close() drains an in-flight request, then refuses new connections', async () => {
    const sidecar = await startSidecar(memoryConfig({ shutdownTimeoutMs: 5000 }), {
      logger: createLogger('silent'),
    });
    const body = JSON.stringify({ userId: 'drain', password: 'pw' });
    // A request whose body arrives slowly is in flight when close() starts.
    const net = await import('node:net');
    const socket = net.connect(sidecar.port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    let response = '';
    socket.on('data', (d) => (response += d.toString()));
    const ended = new Promise((resolve) => socket.once('close', resolve));
    socket.write(
      `POST /v1/checks/password HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${CHECKER}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, 10)}`,
    );
    await new Promise((r) => setTimeout(r, 100));
    let closed = false;
    const closing = sidecar.close().then(() => (closed = true));
    await new Promise((r) => setTimeout(r, 200));
    expect(closed).toBe(false);
    await expect(fetch(`${sidecar.url}/healthz`)).rejects.toThrow();
    socket.write(body.slice(10));
    await closing;
    await ended;
    expect(response).toMatch(/^HTTP\/1\.1 401 /);
    expect(response).toContain('Errors.User.Password.Invalid');
  });
});

describe('sidecar with the reverse proxy (proxy section)', () => {
  it('serves its own routes and forwards everything else, judging the configured logins', async () => {
    const http = await import('node:http');
    const upstream = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        if (req.url === '/login') {
          const ok = (JSON.parse(body) as { password?: string }).password === 'right';
          res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ ok }));
          return;
        }
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(`upstream saw ${req.method} ${req.url}`);
      });
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const upstreamUrl = `http://127.0.0.1:${(upstream.address() as import('node:net').AddressInfo).port}`;
    const sidecar = await startSidecar(
      memoryConfig({
        proxy: {
          upstream: upstreamUrl,
          routes: [{ path: '/login', user: { from: 'json', name: 'user' }, org: { fixed: 'org-p' } }],
        },
      }),
      { logger: createLogger('silent') },
    );
    try {
      const login = (password: string) =>
        fetch(`${sidecar.url}/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ user: 'pat', password }),
        }).then((r) => r.status);
      expect(await login('right')).toBe(200);
      expect([await login('x'), await login('x'), await login('x'), await login('right')]).toEqual([
        401, 401, 401, 423,
      ]);
      const status = await call(sidecar, 'GET', '/v1/users/pat/lockout', { token: ADMIN, org: 'org-p' });
      expect(status.body).toMatchObject({ state: 'USER_STATE_LOCKED', failedAttempts: { password: '3' } });
      expect(
        (await call(sidecar, 'POST', '/v2/users/pat/unlock', { token: ADMIN, org: 'org-p' })).status,
      ).toBe(200);
      expect(await login('right')).toBe(200);

      const other = await fetch(`${sidecar.url}/some/page?x=1`);
      expect(await other.text()).toBe('upstream saw GET /some/page?x=1');
      expect((await call(sidecar, 'GET', '/healthz')).body).toEqual({ status: 'ok' });
      // Paths that go straight to the proxy (none of lockgate's first segments) and paths that go
      // through the app answer as the app alone would: Express matches case-insensitively, and a
      // path under a lockgate segment that no route takes still reaches the upstream.
      expect((await call(sidecar, 'GET', '/HEALTHZ')).body).toEqual({ status: 'ok' });
      expect((await call(sidecar, 'GET', '/healthz/')).body).toEqual({ status: 'ok' });
      for (const path of ['/healthz.json', '/v1/not-ours?y=2', '/V2/nope', '/%76%31/checks/password', '/']) {
        expect(await (await fetch(`${sidecar.url}${path}`)).text()).toBe(`upstream saw GET ${path}`);
      }
      const metrics = await (await fetch(`${sidecar.url}/metrics`)).text();
      expect(metrics).toContain('lockgate_proxy_logins_total{factor="password",outcome="failure"} 3');
      expect(metrics).toContain('lockgate_proxy_logins_total{factor="password",outcome="locked"} 1');
    } finally {
      await sidecar.close();
      await new Promise((resolve) => upstream.close(resolve));
    }
  });

  it("every route of the app starts with one of lockgate's own path segments (the rest goes straight to the proxy)", async () => {
    const sidecar = await startSidecar(
      memoryConfig({
        proxy: {
          upstream: 'http://127.0.0.1:9',
          routes: [{ path: '/login', user: { from: 'json', name: 'u' } }],
        },
      }),
      { logger: createLogger('silent') },
    );
    try {
      const routes = appRoutes(sidecar.app);
      expect(routes.length).toBeGreaterThan(30);
      for (const route of routes) {
        const path = route.slice(route.indexOf(' ') + 1);
        expect(isOwnPath(path)).toBe(true);
        expect(isOwnPath(path.toUpperCase())).toBe(true);
      }
      expect(routes.filter((r) => r.includes(' /console'))).toEqual([]);
      expect([isOwnPath('/login'), isOwnPath('/'), isOwnPath('//v1/x'), isOwnPath('/v1x')]).toEqual([
        false,
        false,
        false,
        false,
      ]);
      expect([isOwnPath('*'), isOwnPath('http://h/v1'), isOwnPath(undefined), isOwnPath('/v1?q')]).toEqual([
        true,
        true,
        true,
        true,
      ]);
    } finally {
      await sidecar.close();
    }
  });

  it('a bad proxy section is a ConfigError naming the field', () => {
    expect(() => memoryConfig({ proxy: { upstream: 'ftp://x', routes: [] } })).toThrow(
      /^lockgate: invalid configuration: proxy\.upstream: expected an http:\/\/ or https:\/\/ URL/,
    );
    expect(() =>
      memoryConfig({
        proxy: { upstream: 'http://x:1', routes: [{ path: '/login', user: { from: 'json', nam: 'u' } }] },
      }),
    ).toThrow(/proxy\.routes\[0\]\.user\.nam: unknown option/);
  });
});
