/**
 * The console's parts in the middleware: routers.console() beside the users and settings
 * routers an app mounts under a prefix, GET /v1/me and GET /v1/activity through createLockout's
 * routers (the activity fed by the engine's events, the app's own onEvent still told).
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { createLockout, type Lockout, type LockoutEvent } from '../../src';
import { readAnswer } from '../helpers/http';

const ADMIN = 'mw-console-admin-0001';
const READER = 'mw-console-reader-0002';

let lockout: Lockout;
let server: Server;
let base: string;
const events: LockoutEvent[] = [];

beforeAll(async () => {
  lockout = createLockout({
    instance: { maxPasswordAttempts: 2, maxOtpAttempts: 2 },
    onEvent: (event) => events.push(event),
    tokens: [
      { name: 'admin', token: ADMIN, org: 'org-a', orgs: ['*'], permissions: ['user.read', 'user.write'] },
      { name: 'reader', token: READER, org: 'org-a', orgs: ['org-a', 'org-b'], permissions: ['user.read'] },
    ],
  });
  const app = express();
  app.use('/admin', lockout.routers.settings(), lockout.routers.users());
  app.use('/console', lockout.routers.console({ apiBase: '/admin' }));
  server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server?.close();
  await lockout?.close();
});

const get = async (path: string, token: string, org?: string) =>
  readAnswer(
    await fetch(`${base}${path}`, {
      headers: { authorization: `Bearer ${token}`, ...(org ? { 'x-zitadel-orgid': org } : {}) },
    }),
  );

test('the console page names the API prefix it was given, and carries its CSP', async () => {
  const res = await fetch(`${base}/console/`);
  expect(res.status).toBe(200);
  expect(await res.text()).toContain('<meta name="lockgate-api" content="/admin">');
  expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
  // Only GET and HEAD of its files: anything else falls through (404 of the app).
  expect((await fetch(`${base}/console/`, { method: 'POST' })).status).toBe(404);
  expect((await fetch(`${base}/console/nope.js`)).status).toBe(404);
});

test('the files carry an ETag: a browser that has one revalidates and gets 304 without a body', async () => {
  const first = await fetch(`${base}/console/vendor/uplot.mjs`);
  const etag = first.headers.get('etag');
  expect(etag).toMatch(/^"[A-Za-z0-9_-]{43}"$/);
  expect(first.headers.get('cache-control')).toBe('no-cache');
  const again = await fetch(`${base}/console/vendor/uplot.mjs`, { headers: { 'if-none-match': etag! } });
  expect(again.status).toBe(304);
  expect(await again.text()).toBe('');
  const other = await fetch(`${base}/console/vendor/uplot.mjs`, { headers: { 'if-none-match': '"other"' } });
  expect(other.status).toBe(200);
});

test('routers.console() refuses an apiBase on another origin, naming the option', () => {
  expect(() => lockout.routers.console({ apiBase: 'https://evil.example/admin' })).toThrow(/apiBase/);
  expect(() => lockout.routers.console({ apiBase: '//evil.example' })).toThrow(/apiBase/);
});

test('GET /v1/me through the users router: the token, its orgs and permissions', async () => {
  const me = await get('/admin/v1/me', READER, 'org-b');
  expect(me.status).toBe(200);
  expect(me.body).toEqual({
    principal: 'reader',
    orgId: 'org-b',
    homeOrg: 'org-a',
    orgs: ['org-a', 'org-b'],
    permissions: ['user.read'],
  });
  expect((await get('/admin/v1/me', READER, 'org-c')).status).toBe(403);
  expect((await get('/admin/v1/me', 'unknown')).status).toBe(401);
});

test('GET /v1/activity counts the failures and the lock of checks, and the app onEvent is still told', async () => {
  const before = events.length;
  await lockout.checks.check('org-act', 'mallory', 'password', async () => false);
  await lockout.checks.check('org-act', 'mallory', 'password', async () => false);
  const activity = await get('/admin/v1/activity?minutes=2', ADMIN, 'org-act');
  expect(activity.status).toBe(200);
  const minutes = (activity.body as { minutes: Array<{ failures: number; locks: number }> }).minutes;
  expect(minutes).toHaveLength(2);
  expect(minutes.reduce((t, m) => t + m.failures, 0)).toBe(2);
  expect(minutes.reduce((t, m) => t + m.locks, 0)).toBe(1);
  expect(events.length - before).toBeGreaterThanOrEqual(3); // two failed checks and the lock
  expect(lockout.activity.read('org-act', 2).reduce((t, m) => t + m.failures, 0)).toBe(2);
});
