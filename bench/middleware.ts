/**
 * Middleware benchmark: a login route guarded by lockgate against the same route unguarded, over
 * HTTP with autocannon, with the memory store and with Redis (a redis-server this benchmark
 * starts on a free port). The app runs in a child process (this file, in server mode) so that the
 * load generator does not share its event loop. The verifier is trivial (a string comparison), so
 * the figures show lockgate's own cost: one reserve and one settle per request. Every request
 * signs in a different user with the right password, so nobody locks.
 *
 * Goals: guarded ≥ 0.95× unguarded with memory, ≥ 0.85× with Redis.
 *
 * Run alone: `node -r ts-node/register/transpile-only bench/middleware.ts`.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import autocannon from 'autocannon';
import express from 'express';
import { Redis } from 'ioredis';
import { createLockout, MemoryStore, RedisStore, type LockoutStore } from '../src';
import { startStandalone, type RedisServerHandle } from '../test/helpers/redis-servers';
import { fixed, grouped, ratio, table } from './lib';

const CHILD_ENV = 'LOCKGATE_BENCH_MIDDLEWARE_SERVER';
const REDIS_ENV = 'LOCKGATE_BENCH_MIDDLEWARE_REDIS_URL';
/** `all`: the guarded route runs with every defence on (issue 12); otherwise every one is off. */
const DEFENCES_ENV = 'LOCKGATE_BENCH_DEFENCES';

const CONNECTIONS = 32;
const WARMUP_S = 1;
/** Short runs, unguarded and guarded alternately, so that both see the same machine load. */
const RUN_S = 1;
const PAIRS = 6;
const GOALS: Record<string, number> = { memory: 0.95, redis: 0.85 };

type Route = 'unguarded' | 'guarded';

interface Measure {
  requests: number;
  seconds: number;
  latencies: { p50: number; p99: number; weight: number }[];
  errors: number;
  non2xx: number;
  /** CPU time the server process used (µs). */
  serverCpuUs: number;
}

// ---- server (child process) ------------------------------------------------------------

async function serve(): Promise<void> {
  const url = process.env[REDIS_ENV];
  let redis: Redis | undefined;
  let store: LockoutStore;
  if (url) {
    redis = new Redis(url, { enableOfflineQueue: false, lazyConnect: true });
    await redis.connect();
    store = new RedisStore({ client: redis });
  } else {
    store = new MemoryStore();
  }
  const lockout = createLockout({
    store,
    instanceId: `bench-mw-${process.pid}`,
    instance: { maxPasswordAttempts: 5, maxOtpAttempts: 5 },
    // LOCKGATE_BENCH_DEFENCES=all: every defence of issue 12 on (a limit no run reaches for the
    // spray throttle: every request comes from 127.0.0.1); default: every one off.
    ...(process.env[DEFENCES_ENV] === 'all'
      ? {
          defences: {
            sprayThrottle: { failures: 1_000_000, windowSeconds: 60 },
            temporaryLockout: { enabled: true, durationMs: 60_000, maxDurationMs: 3_600_000 },
            repeatPassword: { enabled: true, remember: 5, key: 'bench-repeat-password-key-0123456789abcdef' },
            deviceCookies: {
              enabled: true,
              keys: [{ id: 'k1', secret: 'bench-device-cookie-key-0123456789abcdef' }],
            },
          },
        }
      : {}),
  });
  // The trivial verifier: the login handler both routes share.
  const login: express.RequestHandler = (req, res) => {
    const ok = req.body?.password === 'pw';
    res.status(ok ? 200 : 401).json(ok ? { ok: true } : { error: 'invalid_credentials' });
  };
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.use(express.json());
  app.post('/login/unguarded', login);
  app.post('/login/guarded', lockout.guard('password', { user: (req) => req.body?.username }), login);
  const server = http.createServer(app);
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => {
    process.send!({ port: (server.address() as AddressInfo).port });
  });
  const stop = () => {
    server.close();
    server.closeAllConnections();
    void lockout
      .close()
      .then(() => redis?.quit())
      .finally(() => process.exit(0));
  };
  process.on('message', (m: { type?: string }) => {
    if (m?.type === 'cpu') {
      const u = process.cpuUsage();
      process.send!({ type: 'cpu', us: u.user + u.system });
    }
  });
  process.on('disconnect', stop);
  process.on('SIGTERM', stop);
}

// ---- load (parent) ---------------------------------------------------------------------

async function startServer(redisUrl?: string): Promise<{ child: ChildProcess; port: number }> {
  // BENCH_CPU_PROF=<dir>: the app runs with --cpu-prof (the profile is written when it exits)
  const profDir = process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : undefined;
  if (profDir) mkdirSync(profDir, { recursive: true });
  const child = fork(__filename, [], {
    execArgv: [
      ...(profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : []),
      '-r',
      require.resolve('ts-node/register/transpile-only'),
    ],
    env: { ...process.env, [CHILD_ENV]: '1', ...(redisUrl ? { [REDIS_ENV]: redisUrl } : {}) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve(m.port));
    child.once('exit', (code) => reject(new Error(`bench server exited with ${code}`)));
  });
  return { child, port };
}

/** CPU time (µs) the server process has used so far. */
function serverCpu(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    const onMessage = (m: { type?: string; us?: number }) => {
      if (m?.type !== 'cpu') return;
      child.off('message', onMessage);
      resolve(m.us ?? NaN);
    };
    child.on('message', onMessage);
    child.send({ type: 'cpu' });
  });
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

let userSeq = 0;

async function load(port: number, route: Route, seconds: number): Promise<autocannon.Result> {
  return autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: CONNECTIONS,
    duration: seconds,
    requests: [
      {
        method: 'POST',
        path: `/login/${route}`,
        headers: { 'content-type': 'application/json' },
        // a new user at every request: nobody accumulates state or locks
        setupRequest: (req) => ({
          ...req,
          body: JSON.stringify({ username: `user-${++userSeq}`, password: 'pw' }),
        }),
      },
    ],
  });
}

function add(m: Measure, r: autocannon.Result, cpuUs: number): void {
  m.serverCpuUs += cpuUs;
  m.requests += r.requests.total;
  m.seconds += r.duration;
  m.latencies.push({ p50: r.latency.p50, p99: r.latency.p99, weight: r.requests.total });
  m.errors += r.errors + r.timeouts;
  m.non2xx += r.non2xx;
}

/** Request-weighted mean of the runs' percentiles (autocannon reports them per run). */
function weighted(m: Measure, key: 'p50' | 'p99'): number {
  const total = m.latencies.reduce((s, l) => s + l.weight, 0);
  return m.latencies.reduce((s, l) => s + l[key] * l.weight, 0) / total;
}

interface StoreResult {
  readonly routes: Record<Route, Measure>;
  /** guarded/unguarded req/s of each adjacent pair. */
  readonly pairRatios: number[];
}

async function measureStore(name: string, redisUrl?: string): Promise<StoreResult> {
  const { child, port } = await startServer(redisUrl);
  try {
    const empty = (): Measure => ({
      requests: 0,
      seconds: 0,
      latencies: [],
      errors: 0,
      non2xx: 0,
      serverCpuUs: 0,
    });
    const routes: Record<Route, Measure> = { unguarded: empty(), guarded: empty() };
    const pairRatios: number[] = [];
    await load(port, 'unguarded', WARMUP_S);
    await load(port, 'guarded', WARMUP_S);
    for (let pair = 0; pair < PAIRS; pair++) {
      // alternate the order too, so that a drift of the machine's load hits both alike
      const order: Route[] = pair % 2 === 0 ? ['unguarded', 'guarded'] : ['guarded', 'unguarded'];
      const rate: Partial<Record<Route, number>> = {};
      for (const route of order) {
        const before = await serverCpu(child);
        const r = await load(port, route, RUN_S);
        add(routes[route], r, (await serverCpu(child)) - before);
        rate[route] = r.requests.total / r.duration;
      }
      pairRatios.push(rate.guarded! / rate.unguarded!);
    }
    for (const route of ['unguarded', 'guarded'] as const) {
      const m = routes[route];
      if (m.errors > 0 || m.non2xx > 0) {
        throw new Error(`${name} ${route}: ${m.errors} errors, ${m.non2xx} non-2xx answers`);
      }
    }
    return { routes, pairRatios };
  } finally {
    await stopServer(child);
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export async function benchMiddleware(): Promise<void> {
  let redisServer: RedisServerHandle | undefined;
  try {
    redisServer = await startStandalone();
    const rows: string[][] = [
      [
        'store',
        'route',
        'req/s',
        'p50 ms',
        'p99 ms',
        'server CPU us/req',
        'req/s ratio',
        'CPU ratio',
        'goal',
        'met',
      ],
    ];
    const summary: string[] = [];
    for (const [name, url] of [
      ['memory', undefined],
      ['redis', redisServer.url],
    ] as const) {
      const { routes, pairRatios } = await measureStore(name, url);
      const rate = (m: Measure) => m.requests / m.seconds;
      const cpu = (m: Measure) => m.serverCpuUs / m.requests;
      const x = median(pairRatios);
      const goal = GOALS[name]!;
      for (const route of ['unguarded', 'guarded'] as const) {
        const m = routes[route];
        const guarded = route === 'guarded';
        rows.push([
          name,
          route,
          grouped(rate(m)),
          fixed(weighted(m, 'p50'), 2),
          fixed(weighted(m, 'p99'), 2),
          fixed(cpu(m), 1),
          guarded ? `${x.toFixed(2)}x` : '',
          guarded ? ratio(cpu(routes.unguarded), cpu(routes.guarded)) : '',
          guarded ? `${goal.toFixed(2)}x` : '',
          guarded ? (x >= goal ? 'yes' : 'NO') : '',
        ]);
      }
      summary.push(
        `${name} ${x.toFixed(2)}x (pairs ${Math.min(...pairRatios).toFixed(2)}–${Math.max(...pairRatios).toFixed(2)}, goal ${goal.toFixed(2)}x)`,
      );
    }
    console.log(
      `POST /login, JSON body, trivial verifier; ${CONNECTIONS} connections; ${PAIRS} pairs of ${RUN_S} s runs ` +
        `(unguarded, guarded, alternately) after ${WARMUP_S} s warm-up; server in a child process; a new ` +
        `user per request.\nreq/s ratio: median of the pairs' guarded/unguarded; CPU ratio: unguarded/guarded ` +
        `server CPU per request (less sensitive to other load on the machine).\n` +
        `Defences (issue 12): ${process.env[DEFENCES_ENV] === 'all' ? 'ALL ON (LOCKGATE_BENCH_DEFENCES=all)' : 'all off (LOCKGATE_BENCH_DEFENCES=all turns every one on)'}.\n`,
    );
    console.log(table(rows));
    console.log(`\nguarded / unguarded req/s: ${summary.join('; ')}`);
  } finally {
    await redisServer?.stop();
  }
}

if (require.main === module) {
  if (process.env[CHILD_ENV] === '1') {
    serve().catch((error: unknown) => {
      console.error('bench server:', error);
      process.exit(1);
    });
  } else {
    benchMiddleware().catch((error: unknown) => {
      console.error(error);
      process.exitCode = 1;
    });
  }
}
