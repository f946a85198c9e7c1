/**
 * Issue 12, defence 2, in the middleware (guard, checks with `{ req }`) and the reverse proxy: the
 * client address is read as each face reads it (Express "trust proxy", the proxy's trustProxy),
 * so a spoofed X-Forwarded-For from an untrusted peer changes nothing, and a trusted proxy's
 * forwarded address is what is counted. Real servers, real HTTP.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { createLockout, type Lockout } from '../../src';
import type { ProxyLoginEvent } from '../../src/sidecar/proxy/proxy';
import {
  loginHandler,
  postJson,
  startProxy,
  startUpstream,
  type ProxyServer,
  type Upstream,
} from './proxy-harness';

const LIMIT = 4;
const lockouts: Lockout[] = [];
const servers: http.Server[] = [];
const proxies: ProxyServer[] = [];
const upstreams: Upstream[] = [];

afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()));
  await Promise.all(upstreams.splice(0).map((u) => u.close()));
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
  await Promise.all(lockouts.splice(0).map((l) => l.close()));
});

function lockout(): Lockout {
  const l = createLockout({
    instance: { maxPasswordAttempts: 3, maxOtpAttempts: 3 },
    defences: { sprayThrottle: { failures: LIMIT, blockSeconds: 120 } },
  });
  lockouts.push(l);
  return l;
}

/** An app with a guarded POST /login (wrong unless the password is "right") and a POST /check using checks.check with { req }. */
async function app(trustProxy: boolean | string): Promise<{ url: string; handled: () => number }> {
  const l = lockout();
  const a = express();
  a.set('trust proxy', trustProxy);
  let handled = 0;
  a.post('/login', express.json(), l.guard('password', { user: (req) => req.body.user }), (req, res) => {
    handled += 1;
    res.status(req.body.password === 'right' ? 200 : 401).json({});
  });
  a.post('/check', express.json(), async (req, res) => {
    try {
      const r = await l.checks.check(
        'default',
        req.body.user,
        'password',
        () => req.body.password === 'right',
        {
          req,
        },
      );
      res.status(r.ok ? 200 : 401).json({});
    } catch (error) {
      res.status((error as { httpStatus?: number }).httpStatus ?? 500).json({});
    }
  });
  const server = http.createServer(a);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, handled: () => handled };
}

describe('guard and checks (Express)', () => {
  it('without trust proxy, a spoofed X-Forwarded-For is ignored: the peer is throttled after 4 failures across users, the handler ran 4 times', async () => {
    const { url, handled } = await app(false);
    const statuses: number[] = [];
    for (let i = 0; i < 10; i += 1) {
      const r = await postJson(
        url,
        '/login',
        { user: `u${i}`, password: 'x' },
        { 'x-forwarded-for': `198.51.100.${i}` },
      );
      statuses.push(r.status);
      if (r.status === 429) {
        expect(r.headers['retry-after']).toBe('120');
        expect(r.json.details[0].id).toBe('Errors.Lockout.Throttled');
      }
    }
    expect(statuses).toEqual([401, 401, 401, 401, 429, 429, 429, 429, 429, 429]);
    expect(handled()).toBe(4);
    // checks.* with { req } read the same client: throttled too.
    expect((await postJson(url, '/check', { user: 'z', password: 'right' })).status).toBe(429);
  });

  it('behind a trusted proxy (trust proxy: loopback), the forwarded address is counted: others pass, the sprayer is throttled', async () => {
    const { url, handled } = await app('loopback');
    for (let i = 0; i < LIMIT; i += 1) {
      expect(
        (
          await postJson(
            url,
            '/check',
            { user: `u${i}`, password: 'x' },
            { 'x-forwarded-for': '203.0.113.5' },
          )
        ).status,
      ).toBe(401);
    }
    expect(
      (await postJson(url, '/login', { user: 'v', password: 'x' }, { 'x-forwarded-for': '203.0.113.5' }))
        .status,
    ).toBe(429);
    expect(handled()).toBe(0);
    expect(
      (await postJson(url, '/login', { user: 'v', password: 'right' }, { 'x-forwarded-for': '203.0.113.6' }))
        .status,
    ).toBe(200);
    expect(handled()).toBe(1);
  });
});

describe('reverse proxy', () => {
  async function gate(
    trustProxy: boolean | string,
  ): Promise<{ url: string; upstream: Upstream; events: ProxyLoginEvent[] }> {
    const l = lockout();
    const upstream = await startUpstream(loginHandler(new Map([['alice', 'right']])));
    upstreams.push(upstream);
    const events: ProxyLoginEvent[] = [];
    const p = await startProxy({
      engine: l.engine,
      throttle: l.throttle!,
      config: {
        upstream: upstream.url,
        trustProxy,
        routes: [{ method: 'POST', path: '/login', user: { from: 'json', name: 'user' } }],
      },
      onLogin: (e) => events.push(e),
    });
    proxies.push(p);
    return { url: p.url, upstream, events };
  }

  it('a spray through the proxy reaches the upstream 4 times, then 429 before anything is forwarded; a spoofed X-Forwarded-For is not believed', async () => {
    const { url, upstream, events } = await gate(false);
    const statuses: number[] = [];
    for (let i = 0; i < 8; i += 1) {
      const r = await postJson(
        url,
        '/login',
        { user: `u${i}`, password: 'x' },
        { 'x-forwarded-for': `198.51.100.${i}` },
      );
      statuses.push(r.status);
    }
    expect(statuses).toEqual([401, 401, 401, 401, 429, 429, 429, 429]);
    expect(upstream.hits).toHaveLength(4);
    const refused = await postJson(url, '/login', { user: 'alice', password: 'right' });
    expect(refused.status).toBe(429);
    expect(refused.headers['retry-after']).toBe('120');
    expect(refused.json).toMatchObject({ code: 8, details: [{ id: 'Errors.Lockout.Throttled' }] });
    expect(upstream.hits).toHaveLength(4);
    expect(events.filter((e) => e.outcome === 'throttled')).toHaveLength(5);
  });

  it('with trustProxy loopback the forwarded client is counted: another client still logs in', async () => {
    const { url, upstream } = await gate('loopback');
    for (let i = 0; i < LIMIT; i += 1) {
      expect(
        (
          await postJson(
            url,
            '/login',
            { user: `u${i}`, password: 'x' },
            { 'x-forwarded-for': '2001:db8::1' },
          )
        ).status,
      ).toBe(401);
    }
    // The same /64, another address: throttled.
    expect(
      (
        await postJson(
          url,
          '/login',
          { user: 'alice', password: 'right' },
          { 'x-forwarded-for': '2001:db8::2' },
        )
      ).status,
    ).toBe(429);
    expect(
      (
        await postJson(
          url,
          '/login',
          { user: 'alice', password: 'right' },
          { 'x-forwarded-for': '2001:db8:0:1::2' },
        )
      ).status,
    ).toBe(200);
    expect(upstream.hits).toHaveLength(LIMIT + 1);
  });
});
