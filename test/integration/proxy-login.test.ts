/**
 * Reverse-proxy mode, login routes, on the memory store: the body is forwarded byte for byte,
 * the upstream's answer is judged and settled exactly once, a locked user never reaches the
 * upstream, and every refusal (400, 413, 423, 429, 503, 502, 504) comes before or instead of it.
 */
import http from 'node:http';
import { LockoutEngine } from '../../src/core/engine';
import { StoreUnavailableError } from '../../src/core/errors';
import type { LockoutStore } from '../../src/core/store';
import type { ProxyConfigInput } from '../../src/sidecar/proxy/config';
import type { ProxyLoginEvent } from '../../src/sidecar/proxy/proxy';
import { MemoryStore } from '../../src/store';
import {
  deadPort,
  delay,
  loginHandler,
  passwordState,
  postJson,
  rawRequest,
  readAll,
  startProxy,
  startUpstream,
  waitFor,
  type ProxyServer,
  type Upstream,
} from './proxy-harness';

const MAX = 5;
const PASSWORDS = new Map([
  ['alice', 'right'],
  ['bob', 'right'],
  ['carol', 'right'],
  ['dave', 'right'],
  ['erin', 'right'],
  ['frank', 'right'],
  ['grace', 'right'],
  ['heidi', 'right'],
  ['ivan', 'right'],
  ['judy', 'right'],
  ['mallory', 'right'],
  ['niaj', 'right'],
  ['olivia', 'right'],
  ['peggy', 'right'],
  ['trent', 'right'],
  ['victor', 'right'],
  ['walter', 'right'],
]);

const ROUTES: ProxyConfigInput['routes'] = [
  {
    method: 'POST',
    path: '/login',
    user: { from: 'json', name: 'user' },
    org: { from: 'header', name: 'x-zitadel-orgid', default: 'org-a', allow: ['org-a', 'org-b'] },
  },
  { method: 'POST', path: '/form/login', user: { from: 'form', name: 'user' }, org: { fixed: 'org-f' } },
  {
    method: 'POST',
    path: '/orgs/:org/users/:user/login',
    user: { from: 'param', name: 'user' },
    org: { from: 'param', name: 'org', allow: ['o-1'] },
  },
  { method: 'POST', path: '/q/login', user: { from: 'query', name: 'u', lowercase: true, trim: true } },
  {
    method: 'POST',
    path: '/html/login',
    user: { from: 'form', name: 'user' },
    org: { fixed: 'org-h' },
    judge: { success: [302], failure: [200] },
  },
];

let upstream: Upstream;
let engine: LockoutEngine;
let gate: ProxyServer;
const events: ProxyLoginEvent[] = [];

function newEngine(
  store: LockoutStore = new MemoryStore({ purgeIntervalMs: 0 }),
  onStoreError: 'fail-closed' | 'fail-open' = 'fail-closed',
): LockoutEngine {
  return new LockoutEngine({
    store,
    instanceId: 'login-it',
    defaults: { maxPasswordAttempts: MAX },
    onStoreError,
  });
}

beforeAll(async () => {
  upstream = await startUpstream(loginHandler(PASSWORDS));
  engine = newEngine();
  gate = await startProxy({
    engine,
    config: { upstream: upstream.url, bodyLimit: '1kb', routes: ROUTES },
    onLogin: (e) => events.push(e),
  });
});

afterAll(async () => {
  await gate.close();
  await upstream.close();
  engine.close();
});

beforeEach(() => {
  upstream.handle(loginHandler(PASSWORDS));
  upstream.hits.length = 0;
  events.length = 0;
});

const login = (user: string, password: string, headers: http.OutgoingHttpHeaders = {}, base = gate.url) =>
  postJson(base, '/login', { user, password }, headers);

const hitsOf = (user: string) =>
  upstream.hits.filter((h) => h.body !== undefined && h.body.toString('utf8').includes(`"${user}"`)).length;

describe('forwarding', () => {
  test('a JSON login is forwarded byte for byte and the answer relayed', async () => {
    const body = '{"user":"alice" ,\n  "password":"right", "extra": ["ü", 1e3, null]}  ';
    const res = await rawRequest(gate.url, '/login?next=%2Fhome', {
      method: 'POST',
      headers: { 'content-type': 'application/json; charset=utf-8', 'x-app': 'a' },
      body,
    });
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ session: 'session-of-alice' });
    expect(res.headers['x-upstream']).toBe('auth');
    const hit = upstream.hits[0]!;
    expect(hit.url).toBe('/login?next=%2Fhome');
    expect(hit.body!.equals(Buffer.from(body))).toBe(true);
    expect(hit.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(hit.headers['content-length']).toBe(String(Buffer.byteLength(body)));
    expect(hit.headers['x-app']).toBe('a');
    expect(hit.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(await passwordState(engine, 'org-a', 'alice')).toEqual({ failed: 0, locked: false });
  });

  test('a form login is forwarded byte for byte, also when it came chunked', async () => {
    const body = 'user=bob&password=wr%C3%B6ng+pw&x=%26%3D&x=2';
    const res = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const url = new URL('/form/login', gate.url);
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          method: 'POST',
          agent: false,
          headers: { 'content-type': 'application/x-www-form-urlencoded', 'transfer-encoding': 'chunked' },
        },
        (r) =>
          void readAll(r).then((b) => resolve({ status: r.statusCode ?? 0, text: b.toString() }), reject),
      );
      req.on('error', reject);
      req.write(body.slice(0, 10));
      req.end(body.slice(10));
    });
    expect(res.status).toBe(401);
    const hit = upstream.hits[0]!;
    expect(hit.body!.toString('latin1')).toBe(body);
    expect(hit.headers['content-length']).toBe(String(body.length));
    expect(hit.headers['transfer-encoding']).toBeUndefined();
    expect(await passwordState(engine, 'org-f', 'bob')).toEqual({ failed: 1, locked: false });
  });

  test('user and org from path parameters and from the query (normalized)', async () => {
    upstream.handle(async (req, res) => {
      await readAll(req);
      res.writeHead(401).end();
    });
    expect((await rawRequest(gate.url, '/orgs/o-1/users/u%201/login', { method: 'POST' })).status).toBe(401);
    expect(await passwordState(engine, 'o-1', 'u 1')).toEqual({ failed: 1, locked: false });
    expect((await rawRequest(gate.url, '/q/login?u=%20Mixed.Case%20', { method: 'POST' })).status).toBe(401);
    expect(await passwordState(engine, 'login-it', 'mixed.case')).toEqual({ failed: 1, locked: false });
    expect(upstream.hits.map((h) => h.url)).toEqual([
      '/orgs/o-1/users/u%201/login',
      '/q/login?u=%20Mixed.Case%20',
    ]);
  });

  test('the org comes from x-zitadel-orgid, else the default', async () => {
    await login('carol', 'wrong', { 'x-zitadel-orgid': 'org-b' });
    expect(await passwordState(engine, 'org-b', 'carol')).toEqual({ failed: 1, locked: false });
    expect(await passwordState(engine, 'org-a', 'carol')).toEqual({ failed: 0, locked: false });
  });

  test.each([
    '/LOGIN',
    '/login/',
    '//login',
    '/log%69n',
    '/x/../login',
    '/./login;jsessionid=1',
    '/%256cogin',
  ])('the login path spelled %s is still a login (forwarded as spelled)', async (path) => {
    const user = `spell-${path}`;
    const res = await rawRequest(gate.url, path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user, password: 'x' }),
    });
    expect(res.status).toBe(401);
    expect(upstream.hits[0]!.url).toBe(path);
    expect((await passwordState(engine, 'org-a', user.toLowerCase())).failed).toBe(1);
  });
});

describe('counting, reset, lock and unlock', () => {
  test('wrong logins count; a correct one resets the counter', async () => {
    for (let i = 1; i <= MAX - 1; i++) {
      const res = await login('dave', 'wrong');
      expect(res.status).toBe(401);
      expect(res.json).toEqual({ error: 'invalid credentials' });
      expect((await passwordState(engine, 'org-a', 'dave')).failed).toBe(i);
    }
    expect((await login('dave', 'right')).status).toBe(200);
    expect(await passwordState(engine, 'org-a', 'dave')).toEqual({ failed: 0, locked: false });
    for (let i = 0; i < MAX - 1; i++) expect((await login('dave', 'wrong')).status).toBe(401);
    expect(await passwordState(engine, 'org-a', 'dave')).toEqual({ failed: MAX - 1, locked: false });
  });

  test('the limit locks; a locked user never reaches the upstream, a correct password neither; unlock restores', async () => {
    for (let i = 0; i < MAX; i++) expect((await login('erin', 'wrong')).status).toBe(401);
    expect(await passwordState(engine, 'org-a', 'erin')).toEqual({ failed: MAX, locked: true });
    const before = hitsOf('erin');
    expect(before).toBe(MAX);

    const refused = await login('erin', 'right');
    expect(refused.status).toBe(423);
    expect(refused.json).toEqual({
      code: 9,
      message: 'User is locked',
      details: [
        {
          '@type': 'type.googleapis.com/zitadel.v1.ErrorDetail',
          id: 'Errors.User.Locked',
          message: 'User is locked',
        },
      ],
    });
    expect((await login('erin', 'wrong')).status).toBe(423);
    expect(hitsOf('erin')).toBe(before);

    await engine.unlockUser('org-a', 'erin');
    const res = await login('erin', 'right');
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ session: 'session-of-erin' });
    expect(hitsOf('erin')).toBe(before + 1);
  });

  test('a configured lockedResponse mimics the upstream failure, and the upstream is not reached', async () => {
    const mimic = await startProxy({
      engine,
      config: {
        upstream: upstream.url,
        routes: ROUTES,
        lockedResponse: {
          status: 401,
          body: { error: 'invalid credentials' },
          headers: { 'x-upstream': 'auth' },
        },
      },
    });
    try {
      let wrong: Awaited<ReturnType<typeof login>> | undefined;
      for (let i = 0; i < MAX; i++) wrong = await login('frank', 'wrong', {}, mimic.url);
      const reached = hitsOf('frank');
      const locked = await login('frank', 'right', {}, mimic.url);
      expect(locked.status).toBe(wrong!.status);
      expect(locked.text).toBe(wrong!.text);
      expect(locked.headers['content-type']).toBe(wrong!.headers['content-type']);
      expect(locked.headers['x-upstream']).toBe('auth');
      expect(hitsOf('frank')).toBe(reached);
    } finally {
      await mimic.close();
    }
  });

  test('a custom judge: 302 is success, 200 (the form again) is failure, anything else uncounted', async () => {
    const status = new Map<string, number>();
    upstream.handle(async (req, res) => {
      const user = new URLSearchParams((await readAll(req)).toString()).get('user') ?? '';
      res.writeHead(status.get(user) ?? 200, { location: '/home' }).end();
    });
    const post = (user: string) =>
      rawRequest(gate.url, '/html/login', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: `user=${user}&password=x`,
      });
    expect((await post('grace')).status).toBe(200);
    expect((await post('grace')).status).toBe(200);
    expect((await passwordState(engine, 'org-h', 'grace')).failed).toBe(2);
    status.set('grace', 500);
    expect((await post('grace')).status).toBe(500);
    expect((await passwordState(engine, 'org-h', 'grace')).failed).toBe(2);
    status.set('grace', 302);
    expect((await post('grace')).status).toBe(302);
    expect((await passwordState(engine, 'org-h', 'grace')).failed).toBe(0);
  });

  test('more logins in flight than attempts remain: the surplus is 429 with Retry-After, not sent upstream', async () => {
    for (let i = 0; i < MAX - 1; i++) await login('heidi', 'wrong');
    upstream.handle(loginHandler(PASSWORDS, 300));
    const [a, b] = await Promise.all([login('heidi', 'right'), login('heidi', 'right')]);
    const statuses = [a.status, b.status].sort();
    expect(statuses).toEqual([200, 429]);
    const busy = a.status === 429 ? a : b;
    expect(busy.headers['retry-after']).toMatch(/^[1-9][0-9]*$/);
    expect(busy.json.code).toBe(8);
    expect(hitsOf('heidi')).toBe(MAX);
    expect(await passwordState(engine, 'org-a', 'heidi')).toEqual({ failed: 0, locked: false });
  });

  test('a user locked by an admin while the upstream evaluates gets the lock, not the session', async () => {
    upstream.handle(loginHandler(PASSWORDS, 300));
    const pending = login('ivan', 'right');
    await waitFor(() => hitsOf('ivan') === 1);
    await engine.lockUser('org-a', 'ivan');
    const res = await pending;
    expect(res.status).toBe(423);
    expect(res.text).not.toContain('session');
  });
});

describe('refusals before the upstream', () => {
  test.each([
    ['no user field', { password: 'x' }, 'Errors.Request.Missing'],
    ['an empty user', { user: '', password: 'x' }, 'Errors.Request.Missing'],
    ['a user that is not a string', { user: { $ne: 1 }, password: 'x' }, 'Errors.Request.Invalid'],
    ['a user with control characters', { user: 'a\u0000b', password: 'x' }, 'Errors.Id.Invalid'],
  ])('%s: 400 code 3 in the ZITADEL error body', async (_name, body, id) => {
    const res = await postJson(gate.url, '/login', body);
    expect(res.status).toBe(400);
    expect(res.json.code).toBe(3);
    expect(res.json.details[0]).toMatchObject({ '@type': 'type.googleapis.com/zitadel.v1.ErrorDetail', id });
    expect(upstream.hits).toHaveLength(0);
  });

  test('malformed JSON: 400, upstream not reached', async () => {
    const res = await rawRequest(gate.url, '/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"user": ',
    });
    expect(res.status).toBe(400);
    expect(res.json.details[0].id).toBe('Errors.Request.MalformedJson');
    expect(upstream.hits).toHaveLength(0);
  });

  test('a form field given twice: 400 (the upstream might read the other one)', async () => {
    const res = await rawRequest(gate.url, '/form/login', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'user=decoy&user=judy&password=x',
    });
    expect(res.status).toBe(400);
    expect(upstream.hits).toHaveLength(0);
  });

  test('a body over bodyLimit: 413 (declared or streamed), upstream not reached', async () => {
    const big = JSON.stringify({ user: 'judy', password: 'x'.repeat(2000) });
    const declared = await rawRequest(gate.url, '/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: big,
    });
    expect(declared.status).toBe(413);
    expect(declared.json.details[0].id).toBe('Errors.Request.TooLarge');
    const chunked = await rawRequest(gate.url, '/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
      body: big,
    });
    expect(chunked.status).toBe(413);
    expect(upstream.hits).toHaveLength(0);
    expect((await passwordState(engine, 'org-a', 'judy')).failed).toBe(0);
  });

  test('a compressed login body: 415', async () => {
    const res = await rawRequest(gate.url, '/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      body: 'not really gzip',
    });
    expect(res.status).toBe(415);
    expect(upstream.hits).toHaveLength(0);
  });
});

describe('failures: settled exactly once, never counted by mistake', () => {
  test('slow upstream: 504, the reservation released (not counted)', async () => {
    const slow = await startProxy({
      engine,
      config: { upstream: upstream.url, timeoutMs: 200, routes: ROUTES },
    });
    try {
      for (let i = 0; i < MAX - 1; i++) await login('mallory', 'wrong');
      upstream.handle(async (req, res) => {
        await delay(req, 4000);
        res.end();
      });
      const res = await login('mallory', 'right', {}, slow.url);
      expect(res.status).toBe(504);
      expect(res.json.details[0].id).toBe('Errors.Upstream.Timeout');
      expect(await passwordState(engine, 'org-a', 'mallory')).toEqual({ failed: MAX - 1, locked: false });
      // Released: the one attempt left is free again (a leaked reservation would answer 429).
      upstream.handle(loginHandler(PASSWORDS));
      expect((await login('mallory', 'right', {}, slow.url)).status).toBe(200);
    } finally {
      await slow.close();
    }
  });

  test('a login never outlives its lease: the deadline is capped, answered 504 and released in time', async () => {
    let skewMs = 0;
    const shortLease = new LockoutEngine({
      store: new MemoryStore({ purgeIntervalMs: 0, now: () => Date.now() + skewMs }),
      instanceId: 'lease-it',
      leaseMs: 1500,
    });
    const gated = await startProxy({
      engine: shortLease,
      config: { upstream: upstream.url, timeoutMs: 30_000, routes: ROUTES },
    });
    try {
      upstream.handle(async (req, res) => {
        await delay(req, 4000);
        res.end();
      });
      const res = await login('walter', 'wrong', {}, gated.url);
      expect(res.status).toBe(504);
      // Released before the lease ended: even once the store's clock is far past the lease, the
      // lease never counts it (an unreleased reservation would count as a failure here).
      skewMs = 60_000;
      expect(await passwordState(shortLease, 'org-a', 'walter')).toEqual({ failed: 0, locked: false });
    } finally {
      await gated.close();
      shortLease.close();
    }
  });

  test('upstream down: 502, released (not counted)', async () => {
    const down = await startProxy({
      engine,
      config: { upstream: `http://127.0.0.1:${await deadPort()}`, routes: ROUTES },
    });
    try {
      for (let i = 0; i < 3; i++) {
        const res = await login('niaj', 'wrong', {}, down.url);
        expect(res.status).toBe(502);
        expect(res.json.code).toBe(14);
      }
      expect(await passwordState(engine, 'org-a', 'niaj')).toEqual({ failed: 0, locked: false });
    } finally {
      await down.close();
    }
  });

  test('store down: 503 code 14 and the upstream is never reached (fail-closed)', async () => {
    const broken = newEngine(storeWithBrokenReserve());
    const gated = await startProxy({ engine: broken, config: { upstream: upstream.url, routes: ROUTES } });
    try {
      const res = await login('olivia', 'right', {}, gated.url);
      expect(res.status).toBe(503);
      expect(res.json).toMatchObject({ code: 14, details: [{ id: 'Errors.Store.Unavailable' }] });
      expect(upstream.hits).toHaveLength(0);
      // pass-through does not need the store
      expect((await rawRequest(gated.url, '/health')).status).toBe(401);
    } finally {
      await gated.close();
      broken.close();
    }
  });

  test('store down with onStoreError fail-open: forwarded without lockout', async () => {
    const broken = newEngine(storeWithBrokenReserve(), 'fail-open');
    const warnings: string[] = [];
    const gated = await startProxy({
      engine: broken,
      config: { upstream: upstream.url, routes: ROUTES },
      logger: { warn: (_o, m) => warnings.push(m), error: () => undefined, debug: () => undefined },
    });
    try {
      expect((await login('olivia', 'right', {}, gated.url)).status).toBe(200);
      expect(upstream.hits).toHaveLength(1);
      expect(warnings.some((w) => w.includes('fail-open'))).toBe(true);
    } finally {
      await gated.close();
      broken.close();
    }
  });

  test('a client that goes away: the upstream answer is still judged and settled once', async () => {
    upstream.handle(loginHandler(PASSWORDS, 300));
    await new Promise<void>((resolve) => {
      const url = new URL('/login', gate.url);
      const req = http.request({
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json' },
      });
      req.on('error', () => resolve());
      req.end(JSON.stringify({ user: 'peggy', password: 'wrong' }));
      void waitFor(() => hitsOf('peggy') === 1).then(() => {
        req.destroy();
        resolve();
      });
    });
    await waitFor(async () => (await passwordState(engine, 'org-a', 'peggy')).failed === 1);
    await new Promise((r) => setTimeout(r, 100));
    expect(await passwordState(engine, 'org-a', 'peggy')).toEqual({ failed: 1, locked: false });
  });

  test('every login is reported once to onLogin, without credentials', async () => {
    await login('trent', 'wrong');
    await login('trent', 'right');
    await postJson(gate.url, '/login', { password: 'x' });
    expect(events.map((e) => [e.outcome, e.status, e.userId])).toEqual([
      ['failure', 401, 'trent'],
      ['success', 200, 'trent'],
      ['bad_request', 400, undefined],
    ]);
    expect(JSON.stringify(events)).not.toContain('right');
  });
});

/** A memory store whose reserve fails as an unreachable Redis does. */
function storeWithBrokenReserve(): LockoutStore {
  const base = new MemoryStore({ purgeIntervalMs: 0 });
  return new Proxy(base, {
    get(target, property, receiver) {
      if (property === 'reserve') {
        return () => Promise.reject(new StoreUnavailableError());
      }
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
