/**
 * Reverse-proxy mode, requests that are not login routes: they pass through untouched (methods,
 * paths, query strings, headers, bodies streamed both ways and byte-exact), hop-by-hop headers
 * are removed, X-Forwarded-* are set, and upstream failures answer 502 / 504.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { LockoutEngine } from '../../src/core/engine';
import { MemoryStore } from '../../src/store';
import {
  deadPort,
  delay,
  echoHandler,
  rawRequest,
  readAll,
  startProxy,
  startUpstream,
  waitFor,
  type ProxyServer,
  type Upstream,
} from './proxy-harness';

const LOGIN_ROUTE = { method: 'POST', path: '/login', user: { from: 'json', name: 'user' } } as const;

let upstream: Upstream;
let gate: ProxyServer;
let engine: LockoutEngine;

beforeAll(async () => {
  upstream = await startUpstream();
  engine = new LockoutEngine({ store: new MemoryStore({ purgeIntervalMs: 0 }), instanceId: 'pt' });
  gate = await startProxy({ engine, config: { upstream: upstream.url, routes: [LOGIN_ROUTE] } });
});

afterAll(async () => {
  await gate.close();
  await upstream.close();
  engine.close();
});

beforeEach(() => {
  upstream.handle(echoHandler);
  upstream.hits.length = 0;
});

describe('pass-through', () => {
  test.each(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])(
    '%s keeps method, path and query string',
    async (method) => {
      const path = '/api/v1/things/%E2%9C%93/x?b=2&a=1&a=3&empty=&enc=%20%2B%26';
      const res = await rawRequest(gate.url, path, {
        method,
        headers: { 'content-type': 'text/plain' },
        body: method === 'GET' || method === 'OPTIONS' ? undefined : 'payload',
      });
      expect(res.status).toBe(200);
      expect(upstream.hits).toHaveLength(1);
      expect(upstream.hits[0]!.method).toBe(method);
      expect(upstream.hits[0]!.url).toBe(path);
      expect(res.json.bodyLength).toBe(method === 'GET' || method === 'OPTIONS' ? 0 : 7);
    },
  );

  test('HEAD passes through, with the upstream status, headers and no body', async () => {
    upstream.handle((_req, res) => {
      res.writeHead(204, { 'x-head': 'yes' });
      res.end();
    });
    const res = await rawRequest(gate.url, '/head', { method: 'HEAD' });
    expect(res.status).toBe(204);
    expect(res.headers['x-head']).toBe('yes');
    expect(res.body.length).toBe(0);
    expect(upstream.hits[0]!.method).toBe('HEAD');
  });

  test('statuses, repeated response headers and the body come back as the upstream sent them', async () => {
    upstream.handle((_req, res) => {
      res.statusCode = 418;
      res.setHeader('set-cookie', ['a=1; Path=/', 'b=2; HttpOnly']);
      res.setHeader('x-custom', 'value');
      res.setHeader('content-type', 'text/plain');
      res.end('short and stout');
    });
    const res = await rawRequest(gate.url, '/teapot');
    expect(res.status).toBe(418);
    expect(res.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; HttpOnly']);
    expect(res.headers['x-custom']).toBe('value');
    expect(res.text).toBe('short and stout');
  });

  test('a login route with another method is not a login: it passes through', async () => {
    const res = await rawRequest(gate.url, '/login?x=1', { method: 'GET' });
    expect(res.status).toBe(200);
    expect(upstream.hits[0]!.url).toBe('/login?x=1');
  });

  test('request headers pass through; hop-by-hop ones (and those named in Connection) are removed', async () => {
    await rawRequest(gate.url, '/headers', {
      headers: {
        'x-app': 'kept',
        authorization: 'Bearer abc',
        cookie: 'sid=1',
        'user-agent': 'proxy-test',
        connection: 'x-drop-me, keep-alive',
        'x-drop-me': 'secret hop',
        'keep-alive': 'timeout=5',
        te: 'trailers',
        'proxy-connection': 'keep-alive',
        'proxy-authorization': 'Basic Zm9vOmJhcg==',
        upgrade: 'h2c',
      },
    });
    const seen = upstream.hits[0]!.headers;
    expect(seen['x-app']).toBe('kept');
    expect(seen.authorization).toBe('Bearer abc');
    expect(seen.cookie).toBe('sid=1');
    expect(seen['user-agent']).toBe('proxy-test');
    for (const hop of [
      'x-drop-me',
      'keep-alive',
      'te',
      'proxy-connection',
      'proxy-authorization',
      'upgrade',
    ]) {
      expect(seen[hop]).toBeUndefined();
    }
    // undici's own connection management, not the client's
    expect(seen.connection ?? 'keep-alive').toBe('keep-alive');
  });

  test('response hop-by-hop headers (and those named in Connection) are removed', async () => {
    upstream.handle((_req, res) => {
      res.setHeader('connection', 'x-up-hop');
      res.setHeader('x-up-hop', 'hop');
      res.setHeader('keep-alive', 'timeout=99');
      res.setHeader('proxy-authenticate', 'Basic');
      res.setHeader('x-end', 'kept');
      res.end('ok');
    });
    const res = await rawRequest(gate.url, '/resp');
    expect(res.status).toBe(200);
    expect(res.headers['x-up-hop']).toBeUndefined();
    expect(res.headers['proxy-authenticate']).toBeUndefined();
    expect(res.headers['keep-alive']).not.toBe('timeout=99');
    expect(res.headers['x-end']).toBe('kept');
    expect(res.text).toBe('ok');
  });

  test('X-Forwarded-For/Proto/Host are set, and an untrusted peer cannot forge them', async () => {
    await rawRequest(gate.url, '/xff', {
      headers: {
        host: 'login.example.com',
        'x-forwarded-for': '203.0.113.9',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'evil.example',
        forwarded: 'for=203.0.113.9',
        'x-real-ip': '203.0.113.9',
      },
    });
    const seen = upstream.hits[0]!.headers;
    expect(seen['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen['x-forwarded-proto']).toBe('http');
    expect(seen['x-forwarded-host']).toBe('login.example.com');
    expect(seen.forwarded).toBeUndefined();
    expect(seen['x-real-ip']).toBeUndefined();
    // the client's Host is kept (preserveHost: true)
    expect(seen.host).toBe('login.example.com');
  });

  test('a trusted peer: X-Forwarded-For is appended to, its Proto and Host kept', async () => {
    const trusting = await startProxy({
      engine,
      config: {
        upstream: upstream.url,
        trustProxy: ['loopback'],
        preserveHost: false,
        routes: [LOGIN_ROUTE],
      },
    });
    try {
      await rawRequest(trusting.url, '/xff', {
        headers: {
          host: 'login.example.com',
          'x-forwarded-for': '203.0.113.9, 10.0.0.2',
          'x-forwarded-proto': 'https',
          'x-forwarded-host': 'public.example',
        },
      });
      const seen = upstream.hits[0]!.headers;
      expect(seen['x-forwarded-for']).toBe('203.0.113.9, 10.0.0.2, 127.0.0.1');
      expect(seen['x-forwarded-proto']).toBe('https');
      expect(seen['x-forwarded-host']).toBe('public.example');
      // preserveHost: false sends the upstream's own host
      expect(seen.host).toBe(`127.0.0.1:${upstream.port}`);
    } finally {
      await trusting.close();
    }
  });

  test('hop counts and subnets: a peer outside the trusted subnet is not trusted', async () => {
    const strict = await startProxy({
      engine,
      config: { upstream: upstream.url, trustProxy: '10.0.0.0/8', routes: [LOGIN_ROUTE] },
    });
    try {
      await rawRequest(strict.url, '/xff', { headers: { 'x-forwarded-for': '203.0.113.9' } });
      expect(upstream.hits[0]!.headers['x-forwarded-for']).toBe('127.0.0.1');
    } finally {
      await strict.close();
    }
  });
});

describe('bodies stream, byte for byte', () => {
  test('a 10 MB upload arrives byte-exact (hashed on both sides), streamed as it is sent', async () => {
    const upstreamHash = createHash('sha256');
    let upstreamBytes = 0;
    upstream.handle(async (req, res) => {
      for await (const chunk of req) {
        upstreamHash.update(chunk as Buffer);
        upstreamBytes += (chunk as Buffer).length;
      }
      res.end(JSON.stringify({ bytes: upstreamBytes }));
    });

    const clientHash = createHash('sha256');
    const total = 10 * 1024 * 1024;
    const chunk = 256 * 1024;
    let upstreamHadBytesBeforeEnd = false;
    const status = await new Promise<number>((resolve, reject) => {
      const url = new URL('/upload', gate.url);
      const req = http.request(
        {
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          method: 'PUT',
          agent: false,
          headers: { 'content-type': 'application/octet-stream' }, // chunked: no content-length
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', reject);
      void (async () => {
        for (let sent = 0; sent < total; sent += chunk) {
          const part = randomBytes(chunk);
          clientHash.update(part);
          if (!req.write(part)) await new Promise((r) => req.once('drain', r));
          // The upstream sees the first bytes before the client has sent the last ones.
          if (sent === 0) await waitFor(() => upstreamBytes > 0);
        }
        upstreamHadBytesBeforeEnd = upstreamBytes > 0;
        req.end();
      })().catch(reject);
    });
    expect(status).toBe(200);
    expect(upstreamBytes).toBe(total);
    expect(upstreamHash.digest('hex')).toBe(clientHash.digest('hex'));
    expect(upstreamHadBytesBeforeEnd).toBe(true);
  });

  test('an upload with Content-Length keeps it and arrives byte-exact', async () => {
    const body = randomBytes(3 * 1024 * 1024 + 17);
    upstream.handle(async (req, res, hit) => {
      hit.body = await readAll(req);
      res.end(createHash('sha256').update(hit.body).digest('hex'));
    });
    const res = await rawRequest(gate.url, '/upload-cl', {
      method: 'POST',
      headers: { 'content-length': body.length, 'content-type': 'application/octet-stream' },
      body,
    });
    expect(res.text).toBe(createHash('sha256').update(body).digest('hex'));
    expect(upstream.hits[0]!.headers['content-length']).toBe(String(body.length));
  });

  test('a download streams: the client sees the first chunk before the last is written', async () => {
    let clientGotFirst = false;
    let clientHadFirstBeforeLast = false;
    const expected = createHash('sha256');
    upstream.handle(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const first = randomBytes(64 * 1024);
      expected.update(first);
      res.write(first);
      // The last chunk is written only once the client has the first: a buffering proxy hangs here.
      await waitFor(() => clientGotFirst, 10_000);
      for (let i = 0; i < 8; i++) {
        const part = randomBytes(128 * 1024);
        expected.update(part);
        res.write(part);
        await new Promise((r) => setTimeout(r, 20));
      }
      clientHadFirstBeforeLast = clientGotFirst;
      res.end();
    });
    const received = createHash('sha256');
    await new Promise<void>((resolve, reject) => {
      http
        .get(new URL('/download', gate.url), { agent: false }, (res) => {
          res.on('data', (chunk: Buffer) => {
            if (!clientGotFirst) {
              clientGotFirst = true;
            }
            received.update(chunk);
          });
          res.on('end', resolve);
          res.on('error', reject);
        })
        .on('error', reject);
    });
    expect(clientHadFirstBeforeLast).toBe(true);
    expect(received.digest('hex')).toBe(expected.digest('hex'));
  });

  test('a 10 MB download arrives byte-exact with its Content-Length', async () => {
    const body = randomBytes(10 * 1024 * 1024);
    upstream.handle((_req, res) => {
      res.writeHead(200, { 'content-length': body.length });
      res.end(body);
    });
    const res = await rawRequest(gate.url, '/big');
    expect(res.headers['content-length']).toBe(String(body.length));
    expect(createHash('sha256').update(res.body).digest('hex')).toBe(
      createHash('sha256').update(body).digest('hex'),
    );
  });
});

describe('upstream failures', () => {
  test('upstream down: 502 in the ZITADEL error body', async () => {
    const down = await startProxy({
      engine,
      config: { upstream: `http://127.0.0.1:${await deadPort()}`, routes: [LOGIN_ROUTE] },
    });
    try {
      const res = await rawRequest(down.url, '/anything');
      expect(res.status).toBe(502);
      expect(res.json).toEqual({
        code: 14,
        message: 'Upstream unavailable',
        details: [
          {
            '@type': 'type.googleapis.com/zitadel.v1.ErrorDetail',
            id: 'Errors.Upstream.Unavailable',
            message: 'Upstream unavailable',
          },
        ],
      });
    } finally {
      await down.close();
    }
  });

  test('upstream slower than timeoutMs: 504', async () => {
    const slow = await startProxy({
      engine,
      config: { upstream: upstream.url, timeoutMs: 200, routes: [LOGIN_ROUTE] },
    });
    upstream.handle(async (req, res) => {
      await delay(req, 4000);
      res.end('late');
    });
    try {
      const res = await rawRequest(slow.url, '/slow');
      expect(res.status).toBe(504);
      expect(res.json.code).toBe(4);
      expect(res.json.details[0].id).toBe('Errors.Upstream.Timeout');
    } finally {
      await slow.close();
    }
  });

  test('the client going away aborts a pass-through request upstream', async () => {
    let upstreamClosed = false;
    upstream.handle((req, res) => {
      res.writeHead(200);
      res.write('start');
      req.socket.once('close', () => {
        upstreamClosed = true;
      });
    });
    await new Promise<void>((resolve, reject) => {
      const req = http.get(new URL('/hang', gate.url), { agent: false }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => undefined);
      setTimeout(() => reject(new Error('no first chunk')), 5000).unref();
    });
    await waitFor(() => upstreamClosed);
  });
});
