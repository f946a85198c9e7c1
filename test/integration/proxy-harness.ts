/**
 * Shared pieces of the reverse-proxy tests (test/integration/proxy-*.test.ts): a real upstream
 * HTTP server that records what reaches it, the proxy served by a real node:http server, and a
 * raw HTTP client (node:http) that can send hop-by-hop headers and stream bodies.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { LockoutEngine } from '../../src/core/engine';
import { createProxy, type LockgateProxy, type ProxyOptions } from '../../src/sidecar/proxy/proxy';

/** What reached the upstream. */
export interface Hit {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: string[];
  /** Filled by handlers that read the body (see `readAll`). */
  body?: Buffer;
}

export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse, hit: Hit) => void | Promise<void>;

export interface Upstream {
  readonly url: string;
  readonly port: number;
  readonly hits: Hit[];
  /** Replaces the handler for the next requests. */
  handle(handler: UpstreamHandler): void;
  close(): Promise<void>;
}

export async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function listen(server: http.Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

async function shut(server: http.Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  await closed;
}

/** A real upstream on port 0 that records every request before its handler runs. */
export async function startUpstream(handler: UpstreamHandler = echoHandler): Promise<Upstream> {
  const hits: Hit[] = [];
  let current = handler;
  const server = http.createServer((req, res) => {
    const hit: Hit = {
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
    };
    hits.push(hit);
    Promise.resolve(current(req, res, hit)).catch((error: unknown) => {
      res.destroy(error instanceof Error ? error : new Error(String(error)));
    });
  });
  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    hits,
    handle: (h) => {
      current = h;
    },
    close: () => shut(server),
  };
}

/** Reads the body and answers 200 with a JSON echo of the request. */
export const echoHandler: UpstreamHandler = async (req, res, hit) => {
  hit.body = await readAll(req);
  const payload = JSON.stringify({
    method: req.method,
    url: req.url,
    headers: req.headers,
    bodyLength: hit.body.length,
  });
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(payload);
};

/**
 * An auth service: `passwords` maps user → password. JSON bodies `{ user, password }` or forms
 * `user=…&password=…`: 200 `{"session": …}` when right, 401 when wrong, after `delayMs`.
 */
export function loginHandler(passwords: Map<string, string>, delayMs = 0): UpstreamHandler {
  return async (req, res, hit) => {
    hit.body = await readAll(req);
    const text = hit.body.toString('utf8');
    let user: unknown;
    let password: unknown;
    if ((req.headers['content-type'] ?? '').includes('json')) {
      try {
        ({ user, password } = JSON.parse(text) as { user?: unknown; password?: unknown });
      } catch {
        // a wrong body is a wrong login
      }
    } else {
      const form = new URLSearchParams(text);
      user = form.get('user');
      password = form.get('password');
    }
    if (delayMs > 0) await delay(req, delayMs);
    const ok = typeof user === 'string' && passwords.get(user) === password;
    res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json', 'x-upstream': 'auth' });
    res.end(
      JSON.stringify(ok ? { session: `session-of-${String(user)}` } : { error: 'invalid credentials' }),
    );
  };
}

export interface ProxyServer {
  readonly url: string;
  readonly port: number;
  readonly proxy: LockgateProxy;
  readonly server: http.Server;
  close(): Promise<void>;
}

/** The proxy served on port 0 by a node:http server. */
export async function startProxy(options: ProxyOptions): Promise<ProxyServer> {
  const proxy = createProxy(options);
  const server = http.createServer(proxy.handle);
  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    proxy,
    server,
    close: async () => {
      await shut(server);
      await proxy.close();
    },
  };
}

/** A port nothing listens on (a server was there a moment ago). */
export async function deadPort(): Promise<number> {
  const server = http.createServer();
  const port = await listen(server);
  await shut(server);
  return port;
}

export interface RawResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: string[];
  readonly body: Buffer;
  readonly text: string;
  /** The body parsed as JSON, or undefined (loosely typed: tests read fields of error bodies). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly json: any;
}

export interface RawRequestOptions {
  readonly method?: string;
  readonly headers?: http.OutgoingHttpHeaders;
  readonly body?: string | Buffer;
  /** A fresh connection (no keep-alive agent). Default true. */
  readonly agent?: http.Agent | false;
}

/** One request with node:http (any header allowed, hop-by-hop ones included). */
export function rawRequest(
  base: string,
  path: string,
  options: RawRequestOptions = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    // The path is sent as written (no URL resolution: `//x` and dot segments stay).
    const url = new URL(base);
    const headers: http.OutgoingHttpHeaders = { ...options.headers };
    const has = (name: string) => Object.keys(headers).some((k) => k.toLowerCase() === name);
    if (options.body !== undefined && !has('content-length') && !has('transfer-encoding')) {
      headers['content-length'] = Buffer.byteLength(options.body);
    }
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path,
        method: options.method ?? 'GET',
        headers,
        agent: options.agent ?? false,
      },
      (res) => {
        readAll(res).then((body) => {
          const text = body.toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            rawHeaders: res.rawHeaders,
            body,
            text,
            json,
          });
        }, reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** POST a JSON login. */
export function postJson(base: string, path: string, body: unknown, headers: http.OutgoingHttpHeaders = {}) {
  return rawRequest(base, path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

/** Waits `ms`, or less when the connection of `req` closes first (no timer outlives a test). */
export function delay(req: IncomingMessage, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      req.socket.off('close', done);
      resolve();
    }
    req.socket.once('close', done);
  });
}

/** Resolves when `predicate` holds (polled), rejects after `timeoutMs`. */
export async function waitFor(predicate: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The user's password failures and lock, from the engine. */
export async function passwordState(
  engine: LockoutEngine,
  org: string,
  user: string,
): Promise<{ failed: number; locked: boolean }> {
  const s = await engine.getUserStatus(org, user);
  return { failed: s.failedAttempts.password, locked: s.locked };
}
