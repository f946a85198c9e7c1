/**
 * Reverse-proxy benchmark: lockgate's proxy in front of a fast upstream against calling the
 * upstream directly, measured with autocannon in one run.
 *
 * Three event loops: the upstream (a node:http server answering 200 at once) and the proxy each
 * run in a worker thread of their own, and autocannon drives the load from the main thread, so
 * that "direct" and "proxied" differ only by the proxy hop. Scenarios:
 *   - plain:  GET /plain — pass-through (streamed), direct vs proxied;
 *   - login:  POST /login with a JSON body of a different user each time (so every request is a
 *             reserve → forward → settle on a fresh user), upstream answering 200: direct vs
 *             proxied on the MemoryStore and, when redis-server is installed, on Redis.
 *
 * Figures: requests/s, p50/p99 latency (ms), and proxied/direct ratios (goal ≥ 0.7×). On a
 * machine with fewer cores than busy threads (3 when proxied, 2 direct), the ratio also measures
 * the proxy's share of the CPU, so it is printed with the core count.
 *
 * Settings (environment): BENCH_PROXY_SECONDS (default 5) per scenario after 1 s of warm-up,
 * BENCH_PROXY_CONNECTIONS (default 50), BENCH_PROXY_REDIS=0 skips the Redis run.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { LockoutEngine } from '../src/core/engine';
import type { LockoutStore } from '../src/core/store';
import { createProxy } from '../src/sidecar/proxy/proxy';
import { MemoryStore, RedisStore } from '../src/store';
import { findRedisBinaries, startStandalone, type RedisServerHandle } from '../test/helpers/redis-servers';
import { fixed, grouped, ratio, table } from './lib';

const SECONDS = envInt('BENCH_PROXY_SECONDS', 5);
const CONNECTIONS = envInt('BENCH_PROXY_CONNECTIONS', 50);
const WITH_REDIS = process.env.BENCH_PROXY_REDIS !== '0';
const LOGIN_BODY_PAD = 'x'.repeat(40);

type Role = { role: 'upstream' } | { role: 'proxy'; upstream: string; redisUrl?: string };

interface Measured {
  readonly label: string;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly non2xx: number;
  readonly errors: number;
}

export async function benchProxy(): Promise<void> {
  let redis: RedisServerHandle | undefined;
  const workers: WorkerHandle[] = [];
  try {
    const upstream = await startWorker({ role: 'upstream' });
    workers.push(upstream);
    const proxy = await startWorker({ role: 'proxy', upstream: upstream.url });
    workers.push(proxy);
    let redisProxy: WorkerHandle | undefined;
    if (WITH_REDIS && redisAvailable()) {
      redis = await startStandalone();
      redisProxy = await startWorker({ role: 'proxy', upstream: upstream.url, redisUrl: redis.url });
      workers.push(redisProxy);
    }

    console.log(
      `autocannon ${CONNECTIONS} connections, ${SECONDS} s per scenario after 1 s warm-up; ` +
        `${os.cpus().length} CPU cores for 3 busy threads (load driver, proxy, upstream)\n`,
    );

    const directPlain = await measure('direct GET /plain', upstream.url, plainRequest());
    const proxiedPlain = await measure('proxied GET /plain (pass-through)', proxy.url, plainRequest());
    const directLogin = await measure('direct POST /login', upstream.url, loginRequest());
    const proxiedLogin = await measure('proxied POST /login (memory store)', proxy.url, loginRequest());
    const redisLogin = redisProxy
      ? await measure('proxied POST /login (Redis store)', redisProxy.url, loginRequest())
      : undefined;

    const rows: string[][] = [['scenario', 'req/s', 'p50 ms', 'p99 ms', 'vs direct', 'non-2xx', 'errors']];
    const row = (m: Measured, base?: Measured) => [
      m.label,
      grouped(m.rps),
      fixed(m.p50, 1),
      fixed(m.p99, 1),
      base ? ratio(m.rps, base.rps) : '1.00x',
      String(m.non2xx),
      String(m.errors),
    ];
    rows.push(row(directPlain), row(proxiedPlain, directPlain), row(directLogin), row(proxiedLogin, directLogin));
    if (redisLogin) rows.push(row(redisLogin, directLogin));
    console.log(table(rows));
    console.log(
      `\nratios (goal >= 0.7x): pass-through ${ratio(proxiedPlain.rps, directPlain.rps)}, ` +
        `login on memory ${ratio(proxiedLogin.rps, directLogin.rps)}` +
        (redisLogin ? `, login on Redis ${ratio(redisLogin.rps, directLogin.rps)}` : ' (Redis run skipped)'),
    );
    const bad = [directPlain, proxiedPlain, directLogin, proxiedLogin, redisLogin].filter(
      (m): m is Measured => m !== undefined && (m.non2xx > 0 || m.errors > 0),
    );
    if (bad.length > 0) {
      console.log(`\nWARNING: non-2xx answers or errors in ${bad.map((m) => m.label).join(', ')}`);
    }
  } finally {
    for (const w of workers.reverse()) await w.stop();
    await redis?.stop();
  }
}

// ---- load --------------------------------------------------------------------------------

function plainRequest(): autocannon.Request[] {
  return [{ method: 'GET', path: '/plain' }];
}

/** A JSON login of a new user every time. */
function loginRequest(): autocannon.Request[] {
  let n = 0;
  return [
    {
      method: 'POST',
      path: '/login',
      headers: { 'content-type': 'application/json' },
      setupRequest: (request) => ({
        ...request,
        body: JSON.stringify({ user: `user-${n++}`, password: 'correct horse', pad: LOGIN_BODY_PAD }),
      }),
    },
  ];
}

async function measure(label: string, url: string, requests: autocannon.Request[]): Promise<Measured> {
  await autocannon({ url, connections: CONNECTIONS, duration: 1, requests });
  const r = await autocannon({ url, connections: CONNECTIONS, duration: SECONDS, requests });
  const m = {
    label,
    rps: r.requests.total / r.duration,
    p50: r.latency.p50,
    p99: r.latency.p99,
    non2xx: r.non2xx,
    errors: r.errors,
  };
  console.log(`  ${label}: ${grouped(m.rps)} req/s, p50 ${fixed(m.p50, 1)} ms, p99 ${fixed(m.p99, 1)} ms`);
  return m;
}

// ---- workers -----------------------------------------------------------------------------

interface WorkerHandle {
  readonly url: string;
  stop(): Promise<void>;
}

/** Boots this module in a worker under ts-node (unless the worker already has a .ts loader). */
const BOOT = `
if (!require.extensions['.ts']) require('ts-node/register/transpile-only');
require(${JSON.stringify(__filename)}).runBenchWorker();
`;

function startWorker(role: Role): Promise<WorkerHandle> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(BOOT, { eval: true, workerData: role });
    worker.once('error', reject);
    worker.once('message', (message: { port: number }) => {
      worker.off('error', reject);
      resolve({
        url: `http://127.0.0.1:${message.port}`,
        stop: async () => {
          const exited = new Promise<void>((r) => worker.once('exit', () => r()));
          worker.postMessage('stop');
          const timer = setTimeout(() => void worker.terminate(), 5000);
          await exited;
          clearTimeout(timer);
        },
      });
    });
  });
}

/** The worker side: serves its role until told to stop. */
export async function runBenchWorker(): Promise<void> {
  if (isMainThread || !parentPort) throw new Error('runBenchWorker runs in a worker thread');
  const role = workerData as Role;
  const closers: Array<() => Promise<void> | void> = [];
  let server: http.Server;
  if (role.role === 'upstream') {
    const answer = Buffer.from('{"ok":true,"session":"bench-session"}');
    server = http.createServer((req, res) => {
      const reply = () => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': answer.length });
        res.end(answer);
      };
      if (req.method === 'GET' || req.method === 'HEAD') {
        reply();
        req.resume();
      } else {
        req.on('end', reply);
        req.resume();
      }
    });
  } else {
    let store: LockoutStore;
    if (role.redisUrl) {
      const client = new Redis(role.redisUrl, { enableOfflineQueue: true, lazyConnect: false });
      const redisStore = new RedisStore({ client });
      store = redisStore;
      closers.push(async () => {
        await redisStore.close();
        await client.quit();
      });
    } else {
      const memory = new MemoryStore();
      store = memory;
      closers.push(() => memory.close());
    }
    const engine = new LockoutEngine({ store, instanceId: `bench-${process.pid}-${Date.now()}` });
    const proxy = createProxy({
      engine,
      config: {
        upstream: role.upstream,
        timeoutMs: 10_000,
        routes: [{ path: '/login', user: { from: 'json', name: 'user' }, org: { fixed: 'bench-org' } }],
      },
    });
    closers.unshift(async () => {
      await proxy.close();
      engine.close();
    });
    server = http.createServer(proxy.handle);
  }
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  parentPort.once('message', () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    void closed
      .then(async () => {
        for (const close of closers) await close();
      })
      .finally(() => process.exit(0));
  });
  parentPort.postMessage({ port: (server.address() as AddressInfo).port });
}

function redisAvailable(): boolean {
  try {
    findRedisBinaries();
    return true;
  } catch {
    console.log('redis-server not found: the Redis run is skipped');
    return false;
  }
}

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${raw}`);
  return n;
}

if (require.main === module) {
  benchProxy().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
