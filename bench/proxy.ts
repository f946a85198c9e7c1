/**
 * Reverse-proxy benchmark: lockgate's proxy in front of a fast upstream against calling the
 * upstream directly, measured with autocannon in one run.
 *
 * Three event loops: the upstream (a node:http server) and the proxy each run in a worker thread
 * of their own, and autocannon drives the load from the main thread, so that "direct" and
 * "proxied" differ only by the proxy hop. Scenarios:
 *   - plain:  GET /plain, pass-through (streamed), direct vs proxied;
 *   - login:  POST /login with a JSON body of a different user each time (so every request is a
 *             reserve → forward → settle on a fresh user), the upstream answering 200 at once:
 *             direct vs proxied on the MemoryStore and, when redis-server is installed, on Redis;
 *   - login, 1 ms upstream: the same with an upstream that spends 1 ms of CPU per login (a real
 *             password hash costs 10 to 100 times that), to show the ratio where it matters.
 *
 * Figures: requests/s, p50/p99 latency (ms), proxied/direct ratios (goal ≥ 0.7×), and the
 * event-loop time per request of the proxy and of the upstream (event-loop utilization × time ÷
 * requests). With an upstream that answers at once, the proxy does more work per request than the
 * upstream (it is an HTTP server and an HTTP client), so the ratio is bounded by that work and, on
 * a machine with fewer cores than busy threads (3 when proxied, 2 direct), by the share of the
 * CPU the proxy takes; the core count is printed with the figures.
 *
 * Settings (environment): BENCH_PROXY_SECONDS (default 3) per scenario after 1 s of warm-up,
 * BENCH_PROXY_CONNECTIONS (default 50), BENCH_PROXY_REDIS=0 skips the Redis run.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { LockoutEngine } from '../src/core/engine';
import type { LockoutStore } from '../src/core/store';
import { createProxy } from '../src/sidecar/proxy/proxy';
import { MemoryStore, RedisStore } from '../src/store';
import { findRedisBinaries, startStandalone, type RedisServerHandle } from '../test/helpers/redis-servers';
import { envInt, fixed, grouped, ratio, table } from './lib';

const SECONDS = envInt('BENCH_PROXY_SECONDS', 3);
const CONNECTIONS = envInt('BENCH_PROXY_CONNECTIONS', 50);
const WITH_REDIS = process.env.BENCH_PROXY_REDIS !== '0';
/** CPU the upstream spends per login in the "1 ms upstream" scenario (µs). */
const UPSTREAM_WORK_US = 1000;
const LOGIN_BODY_PAD = 'x'.repeat(40);

type Role = { role: 'upstream' } | { role: 'proxy'; upstream: string; redisUrl?: string };

interface Measured {
  readonly label: string;
  readonly requests: number;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly non2xx: number;
  readonly errors: number;
  /** Event-loop µs per request of the proxy (proxied runs) and of the upstream. */
  readonly proxyUs?: number;
  readonly upstreamUs: number;
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
      `autocannon, ${CONNECTIONS} connections, ${SECONDS} s per scenario after 1 s of warm-up; ` +
        `${os.cpus().length} CPU cores for 3 busy threads (load driver, proxy, upstream)\n`,
    );
    const run = (label: string, target: WorkerHandle, requests: autocannon.Request[]) =>
      measure(label, target, upstream, requests);

    const directPlain = await run('direct GET /plain', upstream, plainRequest());
    const proxiedPlain = await run('proxied GET /plain (pass-through)', proxy, plainRequest());
    const directLogin = await run('direct POST /login', upstream, loginRequest());
    const proxiedLogin = await run('proxied POST /login (memory store)', proxy, loginRequest());
    const redisLogin = redisProxy
      ? await run('proxied POST /login (Redis store)', redisProxy, loginRequest())
      : undefined;
    const directWork = await run(
      'direct POST /login, 1 ms upstream',
      upstream,
      loginRequest(UPSTREAM_WORK_US),
    );
    const proxiedWork = await run(
      'proxied POST /login, 1 ms upstream (memory)',
      proxy,
      loginRequest(UPSTREAM_WORK_US),
    );

    const rows: string[][] = [
      [
        'scenario',
        'req/s',
        'p50 ms',
        'p99 ms',
        'vs direct',
        'proxy us/req',
        'upstream us/req',
        'non-2xx',
        'errors',
      ],
    ];
    const row = (m: Measured, base?: Measured) => [
      m.label,
      grouped(m.rps),
      fixed(m.p50, 1),
      fixed(m.p99, 1),
      base ? ratio(m.rps, base.rps) : '1.00x',
      m.proxyUs === undefined ? '-' : fixed(m.proxyUs, 0),
      fixed(m.upstreamUs, 0),
      String(m.non2xx),
      String(m.errors),
    ];
    rows.push(
      row(directPlain),
      row(proxiedPlain, directPlain),
      row(directLogin),
      row(proxiedLogin, directLogin),
    );
    if (redisLogin) rows.push(row(redisLogin, directLogin));
    rows.push(row(directWork), row(proxiedWork, directWork));
    console.log(`\n${table(rows)}`);
    console.log(
      `\nratios (goal >= 0.7x): pass-through ${ratio(proxiedPlain.rps, directPlain.rps)}, ` +
        `login ${ratio(proxiedLogin.rps, directLogin.rps)} (memory)` +
        (redisLogin ? `, ${ratio(redisLogin.rps, directLogin.rps)} (Redis)` : ', Redis run skipped') +
        `; with a 1 ms upstream: login ${ratio(proxiedWork.rps, directWork.rps)}`,
    );
    const bad = [
      directPlain,
      proxiedPlain,
      directLogin,
      proxiedLogin,
      redisLogin,
      directWork,
      proxiedWork,
    ].filter((m): m is Measured => m !== undefined && (m.non2xx > 0 || m.errors > 0));
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

/** A JSON login of a new user every time; `workUs`: CPU the upstream spends on it. */
function loginRequest(workUs = 0): autocannon.Request[] {
  let n = 0;
  return [
    {
      method: 'POST',
      path: workUs > 0 ? `/login?work=${workUs}` : '/login',
      headers: { 'content-type': 'application/json' },
      setupRequest: (request) => ({
        ...request,
        body: JSON.stringify({ user: `user-${n++}`, password: 'correct horse', pad: LOGIN_BODY_PAD }),
      }),
    },
  ];
}

async function measure(
  label: string,
  target: WorkerHandle,
  upstream: WorkerHandle,
  requests: autocannon.Request[],
): Promise<Measured> {
  const url = target.url;
  await autocannon({ url, connections: CONNECTIONS, duration: 1, requests });
  const proxied = target !== upstream;
  const [u0, p0] = await Promise.all([upstream.elu(), proxied ? target.elu() : undefined]);
  const r = await autocannon({ url, connections: CONNECTIONS, duration: SECONDS, requests });
  const [u1, p1] = await Promise.all([upstream.elu(), proxied ? target.elu() : undefined]);
  const perRequest = (a: EventLoopUtilization, b: EventLoopUtilization) =>
    ((b.active - a.active) * 1000) / Math.max(1, r.requests.total);
  const m: Measured = {
    label,
    requests: r.requests.total,
    rps: r.requests.total / r.duration,
    p50: r.latency.p50,
    p99: r.latency.p99,
    non2xx: r.non2xx,
    errors: r.errors,
    upstreamUs: perRequest(u0, u1),
    ...(p0 && p1 ? { proxyUs: perRequest(p0, p1) } : {}),
  };
  console.log(
    `  ${label}: ${grouped(m.rps)} req/s, p50 ${fixed(m.p50, 1)} ms, p99 ${fixed(m.p99, 1)} ms` +
      (m.proxyUs !== undefined ? `, proxy ${fixed(m.proxyUs, 0)} us/req` : '') +
      `, upstream ${fixed(m.upstreamUs, 0)} us/req`,
  );
  return m;
}

// ---- workers -----------------------------------------------------------------------------

interface WorkerHandle {
  readonly url: string;
  /** The worker's event-loop utilization so far (active/idle in ms). */
  elu(): Promise<EventLoopUtilization>;
  stop(): Promise<void>;
}

type ToWorker = { type: 'elu' } | { type: 'stop' };
type FromWorker = { type: 'listening'; port: number } | { type: 'elu'; elu: EventLoopUtilization };

/** Boots this module in a worker under ts-node (unless the worker has a .ts loader already). */
const BOOT = `
if (!require.extensions['.ts']) require('ts-node/register/transpile-only');
require(${JSON.stringify(__filename)}).runBenchWorker();
`;

function startWorker(role: Role): Promise<WorkerHandle> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(BOOT, { eval: true, workerData: role });
    const waiting: Array<(elu: EventLoopUtilization) => void> = [];
    worker.once('error', reject);
    worker.on('message', (message: FromWorker) => {
      if (message.type === 'elu') {
        waiting.shift()?.(message.elu);
        return;
      }
      worker.off('error', reject);
      resolve({
        url: `http://127.0.0.1:${message.port}`,
        elu: () =>
          new Promise((r) => {
            waiting.push(r);
            worker.postMessage({ type: 'elu' } satisfies ToWorker);
          }),
        stop: async () => {
          const exited = new Promise<void>((r) => worker.once('exit', () => r()));
          worker.postMessage({ type: 'stop' } satisfies ToWorker);
          const timer = setTimeout(() => void worker.terminate(), 5000);
          await exited;
          clearTimeout(timer);
        },
      });
    });
  });
}

/** Burns `us` microseconds of CPU (the upstream's "password hash"). */
function work(us: number): void {
  const end = performance.now() + us / 1000;
  while (performance.now() < end) {
    // spin
  }
}

/** The worker side: serves its role until told to stop. */
export async function runBenchWorker(): Promise<void> {
  if (isMainThread || !parentPort) throw new Error('runBenchWorker runs in a worker thread');
  const port = parentPort;
  const role = workerData as Role;
  const closers: Array<() => Promise<void> | void> = [];
  let server: http.Server;
  if (role.role === 'upstream') {
    const answer = Buffer.from('{"ok":true,"session":"bench-session"}');
    server = http.createServer((req, res) => {
      const reply = () => {
        const q = req.url?.indexOf('?work=') ?? -1;
        if (q >= 0) work(Number(req.url?.slice(q + 6)));
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': answer.length });
        res.end(answer);
      };
      req.on('end', reply);
      req.resume();
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
  port.on('message', (message: ToWorker) => {
    if (message.type === 'elu') {
      port.postMessage({ type: 'elu', elu: performance.eventLoopUtilization() } satisfies FromWorker);
      return;
    }
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    void closed
      .then(async () => {
        for (const close of closers) await close();
      })
      .finally(() => process.exit(0));
  });
  port.postMessage({ type: 'listening', port: (server.address() as AddressInfo).port } satisfies FromWorker);
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

if (require.main === module) {
  benchProxy().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
