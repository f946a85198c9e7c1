/**
 * The admin and settings API beside the proxy in one Express app, composed as
 * src/sidecar/server.ts composes the sidecar (its routes first, the proxy behind them): lockgate's
 * routes answer themselves, everything else reaches the upstream, and an unlock or a settings
 * change made through the API applies to the proxied logins at once.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { LockoutEngine } from '../../src/core/engine';
import { createApiRouter } from '../../src/http/routers';
import { PERMISSIONS, createTokenAuthorizer } from '../../src/http/auth';
import { createProxy, type LockgateProxy } from '../../src/sidecar/proxy/proxy';
import { MemoryStore } from '../../src/store';
import { createOtpCodes, createPasswordVerifier, createTotpVerifier } from '../../src/verify';
import {
  loginHandler,
  passwordState,
  postJson,
  rawRequest,
  startUpstream,
  type Upstream,
} from './proxy-harness';

const ADMIN = 'proxy-sidecar-admin-token';
const ORG = 'org-s';

let upstream: Upstream;
let engine: LockoutEngine;
let proxy: LockgateProxy;
let server: http.Server;
let url: string;

beforeAll(async () => {
  upstream = await startUpstream(loginHandler(new Map([['sam', 'right']])));
  const store = new MemoryStore({ purgeIntervalMs: 0 });
  engine = new LockoutEngine({ store, instanceId: 'side', defaults: { maxPasswordAttempts: 3 } });
  proxy = createProxy({
    engine,
    config: {
      upstream: upstream.url,
      routes: [{ path: '/login', user: { from: 'json', name: 'user' }, org: { fixed: ORG } }],
    },
  });
  const app = express();
  app.disable('x-powered-by');
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.use(
    createApiRouter({
      engine,
      authorize: createTokenAuthorizer({
        tokens: [{ name: 'root', token: ADMIN, org: ORG, orgs: '*', permissions: [...PERMISSIONS] }],
      }),
      passwordVerifier: createPasswordVerifier({ memoryCost: 1024, timeCost: 1, parallelism: 1 }),
      totpVerifier: createTotpVerifier({ store }),
      otpCodes: createOtpCodes({ store }),
    }),
  );
  app.use(proxy.handle);
  server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  const closed = new Promise((resolve) => server.close(resolve));
  server.closeAllConnections();
  await closed;
  await proxy.close();
  await upstream.close();
  engine.close();
});

const admin = (method: string, path: string, body?: unknown) =>
  rawRequest(url, path, {
    method,
    headers: {
      authorization: `Bearer ${ADMIN}`,
      'x-zitadel-orgid': ORG,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });

test("lockgate's own routes answer beside the proxy; other paths reach the upstream", async () => {
  expect((await rawRequest(url, '/healthz')).json).toEqual({ status: 'ok' });
  const policy = await admin('GET', '/management/v1/policies/lockout');
  expect(policy.status).toBe(200);
  expect(policy.json.policy.maxPasswordAttempts).toBe('3');
  expect(upstream.hits).toHaveLength(0);

  const passed = await rawRequest(url, '/app/page?x=1');
  expect(passed.status).toBe(401); // the upstream's answer to a request without credentials
  expect(upstream.hits.map((h) => h.url)).toEqual(['/app/page?x=1']);
});

test('a user locked through the proxy is shown and unlocked by the admin API, and can log in again', async () => {
  for (let i = 0; i < 3; i++)
    expect((await postJson(url, '/login', { user: 'sam', password: 'no' })).status).toBe(401);
  expect((await postJson(url, '/login', { user: 'sam', password: 'right' })).status).toBe(423);

  const status = await admin('GET', '/v1/users/sam/lockout');
  expect(status.json).toMatchObject({ userId: 'sam', orgId: ORG, state: 'USER_STATE_LOCKED' });
  expect(status.json.failedAttempts.password).toBe('3');

  expect((await admin('POST', '/v2/users/sam/unlock')).status).toBe(200);
  const ok = await postJson(url, '/login', { user: 'sam', password: 'right' });
  expect(ok.status).toBe(200);
  expect(ok.json).toEqual({ session: 'session-of-sam' });
});

test('org settings changed through the API apply to the next proxied login', async () => {
  expect(
    (await admin('POST', '/management/v1/policies/lockout', { maxPasswordAttempts: 1, maxOtpAttempts: 1 }))
      .status,
  ).toBe(200);
  expect((await postJson(url, '/login', { user: 'sam', password: 'no' })).status).toBe(401);
  expect(await passwordState(engine, ORG, 'sam')).toEqual({ failed: 1, locked: true });
  expect((await postJson(url, '/login', { user: 'sam', password: 'right' })).status).toBe(423);
});
