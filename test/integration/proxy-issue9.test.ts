/**
 * Issue 9, G6 "one user, one reading": the five reproduced bypasses (each fails on the old proxy:
 * alice is locked, yet the right password reaches the Express 5 upstream and gets a session),
 * the safe defaults, the judge presets, and the forwarding of repeated and client-IP headers.
 */
import http from 'node:http';
import { LockoutEngine } from '../../src/core/engine';
import type { ProxyConfigInput } from '../../src/sidecar/proxy/config';
import { createProxy, type ProxyLoginEvent } from '../../src/sidecar/proxy/proxy';
import { MemoryStore } from '../../src/store';
import { passwordState, rawRequest, startProxy, startUpstream, type ProxyServer } from './proxy-harness';
import { startReference, type ReferenceUpstream } from './proxy-reference';

const MAX = 5;
const ORG = 'org-9';

const ROUTES: ProxyConfigInput['routes'] = [
  { path: '/login', user: { from: 'json', name: 'username' }, org: { fixed: ORG } },
  { path: '/form/login', user: { from: 'form', name: 'username' }, org: { fixed: ORG } },
  { path: '/v2/sessions', user: { from: 'json', name: 'checks.user.loginName' }, org: { fixed: ORG } },
  { path: '/fw/login', user: { from: 'json', name: 'username' }, org: { fixed: ORG } },
  {
    path: '/oauth/token',
    user: { from: 'form', name: 'username' },
    org: { fixed: ORG },
    judge: { preset: 'oauth2-token' },
  },
];

let upstream: ReferenceUpstream;
let engine: LockoutEngine;
let gate: ProxyServer;
const events: ProxyLoginEvent[] = [];

beforeAll(async () => {
  upstream = await startReference(['alice', 'bob', 'carol', 'dave', 'erin', 'frank']);
  engine = new LockoutEngine({
    store: new MemoryStore({ purgeIntervalMs: 0 }),
    instanceId: 'issue9',
    defaults: { maxPasswordAttempts: MAX },
  });
  gate = await startProxy({
    engine,
    config: { upstream: upstream.url, routes: ROUTES },
    onLogin: (e) => events.push(e),
  });
});

afterAll(async () => {
  await gate.close();
  await upstream.close();
  engine.close();
});

beforeEach(() => {
  events.length = 0;
});

const post = (
  path: string,
  contentType: string | undefined,
  body: string,
  headers: http.OutgoingHttpHeaders = {},
) =>
  rawRequest(gate.url, path, {
    method: 'POST',
    headers: { ...(contentType ? { 'content-type': contentType } : {}), ...headers },
    body,
  });

const evaluationsOf = (user: string) =>
  upstream.evaluations.filter((e) => typeof e.user === 'string' && e.user.toLowerCase().trim() === user)
    .length;

/** Locks `user` with MAX wrong passwords through the proxy, as an attacker would. */
async function lock(user: string): Promise<void> {
  for (let i = 0; i < MAX; i++) {
    const res = await post(
      '/login',
      'application/json',
      JSON.stringify({ username: user, password: 'wrong' }),
    );
    expect(res.status).toBe(401);
  }
  expect(await passwordState(engine, ORG, user)).toEqual({ failed: MAX, locked: true });
}

/** The locked user's right password did not get a session, and the upstream did not see it. */
async function expectNoBypass(user: string, attempt: () => Promise<{ status: number; text: string }>) {
  const before = evaluationsOf(user);
  const res = await attempt();
  expect(res.text).not.toContain('session');
  expect(res.status).toBeGreaterThanOrEqual(400);
  expect(evaluationsOf(user)).toBe(before);
  return res;
}

describe('issue 9: the five reproductions', () => {
  test('1. a "#" in the request target is refused (400), never forwarded unjudged', async () => {
    await lock('alice');
    const res = await expectNoBypass('alice', () =>
      post('/login#x', 'application/json', JSON.stringify({ username: 'alice', password: 'pw' })),
    );
    expect(res.status).toBe(400);
    // any request, not only logins
    expect((await rawRequest(gate.url, '/other#x')).status).toBe(400);
  });

  test('2. the body is read per its Content-Type: a form that looks like JSON counts the form user', async () => {
    await lock('bob');
    const body = '{"username":"decoy-1","x":"&username=bob&password=pw&y="}';
    await expectNoBypass('bob', () => post('/login', 'application/x-www-form-urlencoded', body));
    // and the reverse, a JSON body on a form route
    await expectNoBypass('bob', () =>
      post('/form/login', 'application/json', JSON.stringify({ username: 'bob', password: 'pw' })),
    );
    expect(await passwordState(engine, ORG, 'decoy-1')).toEqual({ failed: 0, locked: false });
  });

  test('3. a literal dotted key that shadows the nested field is refused (400)', async () => {
    await lock('carol');
    const body = '{"checks.user.loginName":"decoy","checks":{"user":{"loginName":"carol"}},"password":"pw"}';
    const res = await expectNoBypass('carol', () => post('/v2/sessions', 'application/json', body));
    expect(res.status).toBe(400);
    expect(res.text).toContain('Errors.Request.Ambiguous');
    // the nested field alone is read and counted
    const plain = await post(
      '/v2/sessions',
      'application/json',
      '{"checks":{"user":{"loginName":"carol"}},"password":"pw"}',
    );
    expect(plain.status).toBe(423);
  });

  test('4. duplicate JSON keys are refused (400): a first-wins upstream would read the other one', async () => {
    await lock('dave');
    const body = '{"username":"dave","username":"decoy-4","password":"pw"}';
    const res = await expectNoBypass('dave', () => post('/fw/login', 'application/json', body));
    expect(res.status).toBe(400);
    // nested duplicates on the path too
    const nested = '{"checks":{"user":{"loginName":"dave","loginName":"decoy"}},"password":"pw"}';
    expect((await post('/v2/sessions', 'application/json', nested)).status).toBe(400);
    // duplicates elsewhere do not matter
    const elsewhere = '{"username":"decoy-4b","meta":{"a":1,"a":2},"password":"wrong"}';
    expect((await post('/login', 'application/json', elsewhere)).status).toBe(401);
  });

  test('5a. login names are normalized by default: case, white space and compatibility forms share a counter', async () => {
    await lock('erin');
    for (const spelling of ['ERIN', ' erin ', 'Erin\t', 'ｅｒｉｎ']) {
      const res = await expectNoBypass('erin', () =>
        post('/login', 'application/json', JSON.stringify({ username: spelling, password: 'pw' })),
      );
      expect(res.status).toBe(423);
    }
  });

  test('5b. the default judge counts 400; the OAuth2 preset counts invalid_grant and not invalid_request', async () => {
    const form = (user: string, pw: string) => `grant_type=password&username=${user}&password=${pw}`;
    for (let i = 0; i < MAX; i++) {
      const res = await post('/oauth/token', 'application/x-www-form-urlencoded', form('frank', 'wrong'));
      expect(res.status).toBe(400);
      expect(res.json).toMatchObject({ error: 'invalid_grant' });
    }
    expect(await passwordState(engine, ORG, 'frank')).toEqual({ failed: MAX, locked: true });
    await expectNoBypass('frank', () =>
      post('/oauth/token', 'application/x-www-form-urlencoded', form('frank', 'pw')),
    );
    // a malformed token request (400 invalid_request) is not a wrong password
    const bad = await post(
      '/oauth/token',
      'application/x-www-form-urlencoded',
      'grant_type=nope&username=zed',
    );
    expect(bad.status).toBe(400);
    expect(await passwordState(engine, ORG, 'zed')).toEqual({ failed: 0, locked: false });
  });

  test('5c. an org from a client header needs an allow-list: the start refuses without one, a foreign org is 400', async () => {
    const orgRoute = (allow?: string[]) => ({
      path: '/login',
      user: { from: 'json' as const, name: 'username' },
      org: { from: 'header' as const, name: 'x-zitadel-orgid', ...(allow ? { allow } : {}) },
    });
    expect(() => createProxy({ engine, config: { upstream: upstream.url, routes: [orgRoute()] } })).toThrow(
      'proxy.routes[0].org.allow: the org is read from the client (header x-zitadel-orgid)',
    );
    const allowed = await startProxy({
      engine,
      config: { upstream: upstream.url, routes: [orgRoute(['o1', 'o2'])] },
    });
    try {
      for (let i = 0; i < MAX; i++) {
        const res = await rawRequest(allowed.url, '/login', {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-zitadel-orgid': 'o1' },
          body: JSON.stringify({ username: 'alice', password: 'wrong' }),
        });
        expect(res.status).toBe(401);
      }
      const before = evaluationsOf('alice');
      const rotated = await rawRequest(allowed.url, '/login', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-zitadel-orgid': 'fresh-org-1' },
        body: JSON.stringify({ username: 'alice', password: 'pw' }),
      });
      expect(rotated.status).toBe(400);
      expect(rotated.text).not.toContain('session');
      expect(evaluationsOf('alice')).toBe(before);
    } finally {
      await allowed.close();
    }
  });
});

describe('one reading of the body', () => {
  test.each([
    [
      'a charset other than UTF-8',
      'application/json; charset=utf-16le',
      '{"username":"x1","password":"pw"}',
      400,
    ],
    ['a byte order mark', 'application/json', '\ufeff{"username":"x2","password":"pw"}', 400],
    ['a body that is not JSON', 'application/json', 'username=x3&password=pw', 400],
    ['a user that is a number', 'application/json', '{"username":12345,"password":"pw"}', 400],
    ['a user that is a list', 'application/json', '{"username":["x4"],"password":"pw"}', 400],
    ['a lone surrogate', 'application/json', '{"username":"x\\ud800","password":"pw"}', 400],
    [
      'a form key [username]',
      'application/x-www-form-urlencoded',
      'username=x5&%5Busername%5D=x6&password=pw',
      400,
    ],
    ['a form pair split two ways', 'application/x-www-form-urlencoded', 'username=x7]=x8&password=pw', 400],
    ['malformed percent-encoding', 'application/x-www-form-urlencoded', 'username=x9%zz&password=pw', 400],
    ['a form field twice', 'application/x-www-form-urlencoded', 'username=a&username=b&password=pw', 400],
    ['text/plain', 'text/plain', '{"username":"x10","password":"pw"}', 415],
    ['no Content-Type', undefined, '{"username":"x11","password":"pw"}', 415],
  ])('%s: refused before the upstream', async (_name, type, body, status) => {
    const before = upstream.evaluations.length;
    const res = await post('/login', type, body);
    expect(res.status).toBe(status);
    expect(upstream.evaluations.length).toBe(before);
    expect(events.map((e) => e.outcome)).toEqual(['bad_request']);
  });

  test('Content-Type given twice: 400', async () => {
    const before = upstream.evaluations.length;
    const res = await new Promise<number>((resolve, reject) => {
      const url = new URL('/login', gate.url);
      const req = http.request({
        host: url.hostname,
        port: url.port,
        path: '/login',
        method: 'POST',
        agent: false,
      });
      req.setHeader('content-type', ['application/json', 'application/x-www-form-urlencoded']);
      req.on('response', (r) => {
        r.resume();
        resolve(r.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end('{"username":"x12","password":"pw"}');
    });
    expect(res).toBe(400);
    expect(upstream.evaluations.length).toBe(before);
  });

  test('a path parameter read two ways is refused; percent-encoded slashes stay in the parameter', async () => {
    const p = await startProxy({
      engine,
      config: {
        upstream: upstream.url,
        routes: [
          {
            path: '/orgs/:org/users/:user/login',
            user: { from: 'param', name: 'user' },
            org: { fixed: ORG },
          },
        ],
      },
    });
    try {
      // Express reads the user "a/b" (one segment); the normalized reading sees no login path.
      const slash = await rawRequest(p.url, '/orgs/o/users/a%2Fb/login', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"password":"x"}',
      });
      expect(slash.status).toBe(401);
      expect(await passwordState(engine, ORG, 'a/b')).toEqual({ failed: 1, locked: false });
      // double encoding: Express reads "a%41", the normalized reading "aa"
      const twice = await rawRequest(p.url, '/orgs/o/users/a%2541/login', { method: 'POST' });
      expect(twice.status).toBe(400);
    } finally {
      await p.close();
    }
  });
});

test('a header source given with an underscore spelling too is refused (CGI-style readers merge them)', async () => {
  const up = await startUpstream();
  const p = await startProxy({
    engine,
    config: {
      upstream: up.url,
      routes: [{ path: '/h/login', user: { from: 'header', name: 'x-login-name' }, org: { fixed: ORG } }],
    },
  });
  try {
    const both = await rawRequest(p.url, '/h/login', {
      method: 'POST',
      headers: { 'x-login-name': 'decoy-h', x_login_name: 'alice' },
    });
    expect(both.status).toBe(400);
    expect(up.hits).toHaveLength(0);
    const one = await rawRequest(p.url, '/h/login', {
      method: 'POST',
      headers: { 'x-login-name': 'Header-User' },
    });
    expect(one.status).toBe(200);
    expect(await passwordState(engine, ORG, 'header-user')).toEqual({ failed: 0, locked: false });
  } finally {
    await p.close();
    await up.close();
  }
});

describe('judge by body', () => {
  test('an upstream that answers 200 with an error: a rule counts it as a failure', async () => {
    const up = await startUpstream(async (req, res) => {
      for await (const _ of req) void _;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(req.url === '/ok' ? '{"session":"s"}' : '{"error":"bad password"}');
    });
    const p = await startProxy({
      engine,
      config: {
        upstream: up.url,
        routes: [
          {
            path: '/:any',
            user: { from: 'json', name: 'username' },
            org: { fixed: ORG },
            judge: { rules: [{ status: [200], json: 'error', verdict: 'failure' }] },
          },
        ],
      },
    });
    try {
      const body = JSON.stringify({ username: 'judged', password: 'x' });
      const bad = await rawRequest(p.url, '/bad', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
      expect(bad.status).toBe(200);
      expect(bad.json).toEqual({ error: 'bad password' });
      expect(await passwordState(engine, ORG, 'judged')).toEqual({ failed: 1, locked: false });
      await rawRequest(p.url, '/ok', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
      expect(await passwordState(engine, ORG, 'judged')).toEqual({ failed: 0, locked: false });
    } finally {
      await p.close();
      await up.close();
    }
  });
});

describe('headers', () => {
  test('repeated request header lines reach the upstream as sent; every client-IP header of an untrusted peer is dropped', async () => {
    const up = await startUpstream();
    const p = await startProxy({ engine, config: { upstream: up.url, routes: ROUTES } });
    try {
      await new Promise<void>((resolve, reject) => {
        const url = new URL('/echo', p.url);
        const req = http.request({ host: url.hostname, port: url.port, path: '/echo', agent: false });
        req.setHeader('x-multi', ['one', 'two']);
        req.setHeader('authorization', ['Bearer first', 'Bearer second']);
        for (const name of [
          'True-Client-IP',
          'X-Client-IP',
          'CF-Connecting-IP',
          'X-Real-IP',
          'Forwarded',
          'X-Forwarded-For',
          'X-Forwarded-Host',
          'X-Forwarded-Proto',
          'X-Forwarded-Port',
          'X-Forwarded-Server',
          'x_forwarded_for',
          'X_Real_IP',
          'true_client_ip',
          'cf_connecting_ip',
          'x_client_ip',
        ]) {
          req.setHeader(name, '203.0.113.9');
        }
        req.on('response', (r) => {
          r.resume();
          r.on('end', resolve);
        });
        req.on('error', reject);
        req.end();
      });
      const raw = up.hits[0]!.rawHeaders;
      const lines = (name: string) =>
        raw.flatMap((v, i) => (i % 2 === 0 && v.toLowerCase() === name ? [raw[i + 1]] : []));
      expect(lines('x-multi')).toEqual(['one', 'two']);
      expect(lines('authorization')).toEqual(['Bearer first', 'Bearer second']);
      expect(raw.filter((v, i) => i % 2 === 1 && v.includes('203.0.113.9'))).toEqual([]);
      expect(lines('x-forwarded-for')).toEqual(['127.0.0.1']);
    } finally {
      await p.close();
      await up.close();
    }
  });
});

test('a fragment in an absolute-form target is refused too', async () => {
  const before = upstream.evaluations.length;
  const res = await new Promise<number>((resolve, reject) => {
    const url = new URL(gate.url);
    const body = JSON.stringify({ username: 'alice', password: 'pw' });
    const req = http.request({
      host: url.hostname,
      port: url.port,
      path: `http://${url.host}/login#x`,
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    });
    req.on('response', (r) => {
      r.resume();
      resolve(r.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end(body);
  });
  expect(res).toBe(400);
  expect(upstream.evaluations.length).toBe(before);
});
