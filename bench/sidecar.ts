/**
 * Sidecar benchmark: the sidecar on Redis (a redis-server this benchmark starts on a free port)
 * against a bare Express 5 route, over HTTP with autocannon, in one run.
 *
 * The servers run in child processes (this file, in server mode) so that autocannon, in the
 * parent, does not share their event loop; every server is forked the same way (node + ts-node,
 * one process each). Scenarios:
 *   - bare:     a bare Express 5 app, one JSON POST route (express.json + res.json of a small
 *               object), sent the same body and headers as the locked check: the baseline;
 *   - locked:   POST /v1/checks/password for users locked beforehand through the admin API, the
 *               body carrying the right password and a valid argon2 encodedHash, so argon2 would
 *               run if the user were not locked: the sidecar must refuse (423) before argon2;
 *   - attempts: POST /v1/attempts then POST /v1/attempts/{id}/success (3 in 4) or /failure (1 in 4),
 *               chained on each connection, a new user for every pair (nobody locks).
 * bare, locked and attempts run in short rounds, in a rotating order, so that all three see the
 * same machine load; each ratio is the median of the rounds' ratios.
 *
 * Then argon2: POST /v1/checks/password with the right password, the hash made with argon2's
 * defaults (argon2id, 64 MiB, t=3, p=4), on one sidecar process per UV_THREADPOOL_SIZE (1, the
 * core count, 4 = libuv's default; libuv reads it at process start), in rounds as above.
 *
 * Figures: req/s (pairs/s), p50/p99 latency of each request (ms, from autocannon's response
 * events, exact), ratios against the bare route (goal for the locked answer ≥ 0.8×), and the CPU
 * time the server process (and redis-server) spent per request, which is less sensitive than req/s
 * to the machine's other load.
 *
 * Settings (environment): BENCH_SIDECAR_ROUNDS (default 4) rounds of BENCH_SIDECAR_SECONDS (1) per
 * scenario after 1 s of warm-up each, BENCH_SIDECAR_CONNECTIONS (32); BENCH_SIDECAR_ARGON2_ROUNDS (3)
 * rounds of BENCH_SIDECAR_ARGON2_SECONDS (3) per pool size after 1 s of warm-up each,
 * BENCH_SIDECAR_ARGON2_CONNECTIONS (8).
 *
 * Run alone: `node -r ts-node/register/transpile-only bench/sidecar.ts`.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import * as argon2 from 'argon2';
import autocannon from 'autocannon';
import express from 'express';
import { parseConfig } from '../src/sidecar/config';
import { startSidecar } from '../src/sidecar/server';
import { startStandalone, type RedisServerHandle } from '../test/helpers/redis-servers';
import {
  attemptPairRequests,
  envInt,
  fixed,
  grouped,
  percentile,
  processCpuMs,
  ratio,
  serverStarted,
  table,
} from './lib';

const ROLE_ENV = 'LOCKGATE_BENCH_SIDECAR_ROLE';
const CONFIG_ENV = 'LOCKGATE_BENCH_SIDECAR_CONFIG';
/** The compiled build's dist/cjs folder, for the sidecar children; unset: the TypeScript sources. */
const DIST_ENV = 'LOCKGATE_BENCH_SIDECAR_DIST';
const FROM_SOURCES = process.env.BENCH_SIDECAR_TS === '1';

const ROUNDS = envInt('BENCH_SIDECAR_ROUNDS', 4);
const RUN_S = envInt('BENCH_SIDECAR_SECONDS', 1);
const CONNECTIONS = envInt('BENCH_SIDECAR_CONNECTIONS', 32);
const ARGON2_ROUNDS = envInt('BENCH_SIDECAR_ARGON2_ROUNDS', 3);
const ARGON2_S = envInt('BENCH_SIDECAR_ARGON2_SECONDS', 3);
const ARGON2_CONNECTIONS = envInt('BENCH_SIDECAR_ARGON2_CONNECTIONS', 8);
const WARMUP_S = 1;
const CORES = os.cpus().length;
/** libuv's default thread-pool size. */
const DEFAULT_POOL = 4;
const POOL_SIZES = [...new Set([1, CORES, DEFAULT_POOL])].sort((a, b) => a - b);
const LOCKED_GOAL = 0.8;
const LOCKED_USERS = 256;

const TOKEN = 'bench-sidecar-token-0123456789abcdef';
const PASSWORD = 'correct horse battery staple';
const AUTH = `Bearer ${TOKEN}`;
const JSON_HEADERS = { 'content-type': 'application/json', authorization: AUTH };

type Scenario = 'bare' | 'locked' | 'attempts';

// ---- servers (child processes) -----------------------------------------------------------

type ToServer = { type: 'stop' };
type FromServer = { type: 'listening'; port: number };

/** The server side: serves its role (environment) until told to stop. */
export async function runBenchServer(): Promise<void> {
  let close: () => Promise<void>;
  let port: number;
  if (process.env[ROLE_ENV] === 'bare') {
    const app = express();
    // as the sidecar's app: no X-Powered-By, no ETag
    app.disable('x-powered-by');
    app.set('etag', false);
    app.use(express.json());
    app.post('/bare', (req, res) => {
      res.json({ ok: true, userId: (req.body as { userId?: unknown } | undefined)?.userId });
    });
    const server = http.createServer(app);
    server.keepAliveTimeout = 5000; // as the sidecar's
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    close = () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
  } else {
    // The sidecar as it ships: the compiled build (dist/cjs, made by benchSidecar), unless
    // BENCH_SIDECAR_TS=1 asks for the TypeScript sources (through ts-node).
    const dist = process.env[DIST_ENV];
    const sidecarModules = dist
      ? {
          parseConfig: (
            require(path.join(dist, 'sidecar/config.js')) as typeof import('../src/sidecar/config')
          ).parseConfig,
          startSidecar: (
            require(path.join(dist, 'sidecar/server.js')) as typeof import('../src/sidecar/server')
          ).startSidecar,
        }
      : { parseConfig, startSidecar };
    const config = sidecarModules.parseConfig(JSON.parse(process.env[CONFIG_ENV] ?? '{}'));
    const sidecar = await sidecarModules.startSidecar(config);
    port = sidecar.port;
    close = () => sidecar.close();
  }
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    void close()
      .catch((error: unknown) => console.error('bench server: close failed', error))
      .finally(() => process.exit(0));
  };
  process.on('message', (m: ToServer) => {
    if (m?.type === 'stop') stop();
  });
  process.on('disconnect', stop);
  process.on('SIGTERM', stop);
  process.send!({ type: 'listening', port } satisfies FromServer);
}

// ---- servers (parent side) ---------------------------------------------------------------

interface ServerHandle {
  readonly label: string;
  readonly url: string;
  readonly pid: number | undefined;
  stop(): Promise<void>;
}

function startServer(label: string, env: Record<string, string>): Promise<ServerHandle> {
  // BENCH_CPU_PROF=<dir>: the sidecars run with --cpu-prof (the profile is written when they exit)
  const profile = env[ROLE_ENV] !== 'bare' ? cpuProfArgs(label) : [];
  const child: ChildProcess = fork(__filename, [], {
    execArgv: [...profile, '-r', require.resolve('ts-node/register/transpile-only')],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return serverStarted<FromServer>(label, child).then(({ message: m, stop }) => ({
    label,
    url: `http://127.0.0.1:${m.port}`,
    pid: child.pid,
    stop,
  }));
}

/** `--cpu-prof --cpu-prof-dir=<dir>` when BENCH_CPU_PROF=<dir> is set (the directory is made). */
function cpuProfArgs(label: string): string[] {
  const dir = process.env.BENCH_CPU_PROF;
  if (!dir) return [];
  const resolved = path.resolve(dir);
  mkdirSync(resolved, { recursive: true });
  console.log(`  (${label}: CPU profile to ${resolved} at exit)`);
  return ['--cpu-prof', `--cpu-prof-dir=${resolved}`];
}

function sidecarEnv(redisUrl: string, poolSize: number): Record<string, string> {
  const config = {
    server: { host: '127.0.0.1', port: 0 },
    instance: { id: 'bench' },
    store: { type: 'redis', redis: { url: redisUrl, prefix: `bench-${process.pid}` } },
    auth: {
      tokens: [{ name: 'bench', token: TOKEN, orgs: ['*'], permissions: ['user.write', 'lockout.check'] }],
    },
    // password.argon2 (the dummy hash's cost) stays at its default: argon2's defaults, as the hash.
    otp: { pepper: 'bench-pepper-0123456789' },
    // the bench's Redis has no persistence: its start-up warning is expected
    log: { level: 'error' },
    shutdownTimeoutMs: 2000,
  };
  return {
    [ROLE_ENV]: 'sidecar',
    [CONFIG_ENV]: JSON.stringify(config),
    UV_THREADPOOL_SIZE: String(poolSize),
  };
}

// ---- load --------------------------------------------------------------------------------

/** One autocannon run. */
interface Run {
  readonly requests: number;
  readonly seconds: number;
  readonly latencies: Float64Array;
  readonly statuses: Map<number, number>;
  readonly errors: number;
  /** CPU time (ms) of the server process and of redis-server during the run. */
  readonly serverCpuMs: number;
  readonly redisCpuMs: number;
}

function load(
  server: ServerHandle,
  redis: RedisServerHandle,
  requests: autocannon.Request[],
  seconds: number,
  connections: number,
): Promise<Run> {
  let latencies = new Float64Array(1 << 16);
  let n = 0;
  const statuses = new Map<number, number>();
  const cpu0 = processCpuMs(server.pid);
  const redis0 = processCpuMs(redis.pid);
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      { url: server.url, connections, duration: seconds, timeout: 30, requests },
      (error, r) => {
        if (error) {
          reject(error);
          return;
        }
        resolve({
          requests: r.requests.total,
          seconds: r.duration,
          latencies: latencies.slice(0, n),
          statuses,
          errors: r.errors + r.timeouts,
          serverCpuMs: processCpuMs(server.pid) - cpu0,
          redisCpuMs: processCpuMs(redis.pid) - redis0,
        });
      },
    );
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      statuses.set(statusCode, (statuses.get(statusCode) ?? 0) + 1);
      if (n === latencies.length) {
        const bigger = new Float64Array(latencies.length * 2);
        bigger.set(latencies);
        latencies = bigger;
      }
      latencies[n++] = responseTime;
    });
  });
}

/** Runs of one scenario, combined. */
interface Measured {
  requests: number;
  seconds: number;
  errors: number;
  serverCpuMs: number;
  redisCpuMs: number;
  readonly statuses: Map<number, number>;
  readonly runs: Run[];
}

function emptyMeasured(): Measured {
  return { requests: 0, seconds: 0, errors: 0, serverCpuMs: 0, redisCpuMs: 0, statuses: new Map(), runs: [] };
}

function add(m: Measured, r: Run): void {
  m.requests += r.requests;
  m.seconds += r.seconds;
  m.errors += r.errors;
  m.serverCpuMs += r.serverCpuMs;
  m.redisCpuMs += r.redisCpuMs;
  for (const [status, count] of r.statuses) m.statuses.set(status, (m.statuses.get(status) ?? 0) + count);
  m.runs.push(r);
}

const rate = (m: { requests: number; seconds: number }): number => m.requests / m.seconds;

/** p50 and p99 over every request of every run (ms). */
function latencyOf(m: Measured): { p50: number; p99: number } {
  const all = new Float64Array(m.runs.reduce((s, r) => s + r.latencies.length, 0));
  let at = 0;
  for (const r of m.runs) {
    all.set(r.latencies, at);
    at += r.latencies.length;
  }
  all.sort();
  return { p50: percentile(all, 0.5), p99: percentile(all, 0.99) };
}

/** "423 x 41,234" — the answers' statuses and counts. */
function describeStatuses(statuses: Map<number, number>): string {
  return [...statuses.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([status, count]) => `${status} x ${grouped(count)}`)
    .join(', ');
}

/** Checks that every answer had one of `expected` statuses and that no request errored. */
function expectStatuses(label: string, m: Measured, expected: number[]): string | undefined {
  const unexpected = [...m.statuses.keys()].filter((s) => !expected.includes(s));
  if (unexpected.length === 0 && m.errors === 0) return undefined;
  return `${label}: ${m.errors} errors, answers ${describeStatuses(m.statuses)} (expected only ${expected.join('/')})`;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

// ---- workloads ---------------------------------------------------------------------------

const lockedUser = (i: number): string => `bench-locked-${i % LOCKED_USERS}`;

/** The body of a password check (and of the bare route): right password, valid hash. */
function checkBody(userId: string, encodedHash: string): string {
  return JSON.stringify({ userId, password: PASSWORD, encodedHash });
}

function bareRequests(encodedHash: string): autocannon.Request[] {
  let n = 0;
  return [
    {
      method: 'POST',
      path: '/bare',
      headers: JSON_HEADERS,
      setupRequest: (req) => ({ ...req, body: checkBody(lockedUser(n++), encodedHash) }),
    },
  ];
}

function lockedRequests(encodedHash: string): autocannon.Request[] {
  let n = 0;
  return [
    {
      method: 'POST',
      path: '/v1/checks/password',
      headers: JSON_HEADERS,
      setupRequest: (req) => ({ ...req, body: checkBody(lockedUser(n++), encodedHash) }),
    },
  ];
}

let attemptSeq = 0;
const attemptRequests = (): autocannon.Request[] => attemptPairRequests(JSON_HEADERS, () => attemptSeq++);

// ---- admin calls -------------------------------------------------------------------------

async function call(
  sidecar: ServerHandle,
  path: string,
  body?: unknown,
): Promise<{ status: number; ms: number; text: string }> {
  const started = performance.now();
  const res = await fetch(`${sidecar.url}${path}`, {
    method: 'POST',
    headers: body === undefined ? { authorization: AUTH } : JSON_HEADERS,
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, ms: performance.now() - started, text };
}

async function lockUsers(sidecar: ServerHandle): Promise<void> {
  const ids = Array.from({ length: LOCKED_USERS }, (_, i) => lockedUser(i));
  for (let i = 0; i < ids.length; i += 16) {
    await Promise.all(
      ids.slice(i, i + 16).map(async (id) => {
        const r = await call(sidecar, `/v2/users/${id}/lock`);
        if (r.status !== 200) throw new Error(`locking ${id}: HTTP ${r.status} ${r.text}`);
      }),
    );
  }
}

// ---- the benchmark -----------------------------------------------------------------------

export async function benchSidecar(): Promise<void> {
  let redis: RedisServerHandle | undefined;
  const servers: ServerHandle[] = [];
  const start = async (label: string, env: Record<string, string>): Promise<ServerHandle> => {
    const server = await startServer(label, withDist(env));
    servers.push(server);
    return server;
  };
  const stop = async (server: ServerHandle): Promise<void> => {
    servers.splice(servers.indexOf(server), 1);
    await server.stop();
  };
  let dist: string | undefined;
  if (!FROM_SOURCES) {
    // The sidecar runs compiled, as `lockgate serve` does (no ts-node in its process).
    const root = path.join(__dirname, '..');
    execFileSync(process.execPath, [path.join(root, 'scripts/build.mjs')], { cwd: root, stdio: 'ignore' });
    dist = path.join(root, 'dist/cjs');
  }
  const withDist = (env: Record<string, string>): Record<string, string> =>
    dist ? { ...env, [DIST_ENV]: dist } : env;
  try {
    const [hash, redisServer] = await Promise.all([argon2.hash(PASSWORD), startStandalone()]);
    redis = redisServer;
    const redisUrl = redisServer.url;
    // every server at once (they idle until their turn): the bare app, then one sidecar per pool size
    const started = await Promise.allSettled([
      start('bare', { [ROLE_ENV]: 'bare' }),
      ...POOL_SIZES.map((size) => start(`sidecar (UV_THREADPOOL_SIZE=${size})`, sidecarEnv(redisUrl, size))),
    ]);
    for (const s of started) if (s.status === 'rejected') throw s.reason;
    const [bare, ...sidecars] = started.map((s) => (s as PromiseFulfilledResult<ServerHandle>).value) as [
      ServerHandle,
      ...ServerHandle[],
    ];
    const sidecarOf = new Map(POOL_SIZES.map((size, i) => [size, sidecars[i]!]));
    // the sidecar of the HTTP scenarios: libuv's default pool
    const sidecar = sidecarOf.get(DEFAULT_POOL)!;

    // ---- locked users are refused before argon2 ----
    await lockUsers(sidecar);
    const unlocked = await call(sidecar, '/v1/checks/password', checkBody('bench-probe-unlocked', hash));
    const locked = await call(sidecar, '/v1/checks/password', checkBody(lockedUser(0), hash));
    if (unlocked.status !== 200)
      throw new Error(`probe of an unlocked user: HTTP ${unlocked.status} ${unlocked.text}`);
    if (locked.status !== 423)
      throw new Error(`probe of a locked user: HTTP ${locked.status} ${locked.text}`);
    console.log(
      `hash: argon2 defaults (${hash.slice(0, hash.indexOf('$', 20))}); ${LOCKED_USERS} users locked via ` +
        `POST /v2/users/{id}/lock.\nprobe, same body: unlocked user ${unlocked.status} in ${fixed(unlocked.ms, 1)} ms ` +
        `(argon2 ran), locked user ${locked.status} in ${fixed(locked.ms, 1)} ms (refused before argon2)\n`,
    );

    // ---- bare vs locked vs attempts, in rounds ----
    const requestsOf: Record<Scenario, () => autocannon.Request[]> = {
      bare: () => bareRequests(hash),
      locked: () => lockedRequests(hash),
      attempts: () => attemptRequests(),
    };
    const targetOf: Record<Scenario, ServerHandle> = { bare, locked: sidecar, attempts: sidecar };
    const scenarios: Scenario[] = ['bare', 'locked', 'attempts'];
    for (const s of scenarios) await load(targetOf[s], redisServer, requestsOf[s](), WARMUP_S, CONNECTIONS);
    const measured: Record<Scenario, Measured> = {
      bare: emptyMeasured(),
      locked: emptyMeasured(),
      attempts: emptyMeasured(),
    };
    const lockedRatios: number[] = [];
    const attemptRatios: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const order = scenarios.map((_, i) => scenarios[(i + round) % scenarios.length]!);
      const rates: Partial<Record<Scenario, number>> = {};
      for (const s of order) {
        const r = await load(targetOf[s], redisServer, requestsOf[s](), RUN_S, CONNECTIONS);
        add(measured[s], r);
        rates[s] = rate(r);
      }
      lockedRatios.push(rates.locked! / rates.bare!);
      attemptRatios.push(rates.attempts! / rates.bare!);
    }
    await stop(bare);

    // ---- argon2 checks per UV_THREADPOOL_SIZE, in rounds ----
    const argon2Requests = (): autocannon.Request[] => {
      let n = 0;
      return [
        {
          method: 'POST',
          path: '/v1/checks/password',
          headers: JSON_HEADERS,
          // distinct users (a success resets its counter): none is ever busy or locked
          setupRequest: (req) => ({ ...req, body: checkBody(`bench-argon2-${n++ % 1000}`, hash) }),
        },
      ];
    };
    const argon2Runs = new Map<number, Measured>(POOL_SIZES.map((size) => [size, emptyMeasured()]));
    for (const size of POOL_SIZES) {
      await load(sidecarOf.get(size)!, redisServer, argon2Requests(), WARMUP_S, ARGON2_CONNECTIONS);
    }
    for (let round = 0; round < ARGON2_ROUNDS; round++) {
      const order = round % 2 === 0 ? POOL_SIZES : [...POOL_SIZES].reverse();
      for (const size of order) {
        const r = await load(
          sidecarOf.get(size)!,
          redisServer,
          argon2Requests(),
          ARGON2_S,
          ARGON2_CONNECTIONS,
        );
        add(argon2Runs.get(size)!, r);
      }
    }
    for (const server of [...servers]) if (server !== sidecar) await stop(server);

    // ---- report ----
    const problems = [
      expectStatuses('bare', measured.bare, [200]),
      expectStatuses('locked', measured.locked, [423]),
      expectStatuses('attempts', measured.attempts, [200, 201]),
      ...[...argon2Runs].map(([size, m]) => expectStatuses(`argon2 UV_THREADPOOL_SIZE=${size}`, m, [200])),
    ].filter((p): p is string => p !== undefined);

    console.log(
      `autocannon, ${CONNECTIONS} connections, ${ROUNDS} rounds of ${RUN_S} s per scenario (rotating order) ` +
        `after ${WARMUP_S} s of warm-up each; servers in child processes (the sidecar ${FROM_SOURCES ? 'from the TypeScript sources through ts-node (BENCH_SIDECAR_TS=1)' : 'compiled: npm run build, dist/cjs'}), sidecar on Redis ` +
        `${redisServer.port}, log level warn; ${CORES} CPU cores for autocannon, server and redis-server.\n` +
        `p50/p99: per request (an attempts pair is 2 requests). vs bare: req/s over the bare route's, median ` +
        `of the rounds; for attempts a pair counts as 2 requests. CPU: per request, server process and redis-server.\n`,
    );
    const rows: string[][] = [
      [
        'scenario',
        'req/s',
        'pairs/s',
        'p50 ms',
        'p99 ms',
        'vs bare',
        'goal',
        'server CPU us/req',
        'redis CPU us/req',
        'answers',
      ],
    ];
    const row = (
      label: string,
      m: Measured,
      opts: { ratio?: number; goal?: number; pairs?: boolean } = {},
    ) => {
      const lat = latencyOf(m);
      rows.push([
        label,
        grouped(rate(m)),
        opts.pairs ? grouped(rate(m) / 2) : '',
        fixed(lat.p50, 2),
        fixed(lat.p99, 2),
        opts.ratio === undefined ? '1.00x' : `${opts.ratio.toFixed(2)}x`,
        opts.goal === undefined ? '' : `${opts.goal.toFixed(2)}x`,
        fixed((m.serverCpuMs * 1000) / m.requests, 0),
        fixed((m.redisCpuMs * 1000) / m.requests, 0),
        describeStatuses(m.statuses),
      ]);
    };
    const lockedX = median(lockedRatios);
    const attemptsX = median(attemptRatios);
    row('bare Express POST (baseline)', measured.bare);
    row('locked POST /v1/checks/password', measured.locked, { ratio: lockedX, goal: LOCKED_GOAL });
    row('POST /v1/attempts + settle', measured.attempts, { ratio: attemptsX, pairs: true });
    console.log(table(rows));
    const range = (xs: number[]) => `${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}`;
    console.log(
      `\nlocked / bare: ${lockedX.toFixed(2)}x (rounds ${range(lockedRatios)}, goal ${LOCKED_GOAL.toFixed(2)}x: ` +
        `${lockedX >= LOCKED_GOAL ? 'met' : 'NOT met'}); attempts (pair = 2 requests) / bare: ` +
        `${attemptsX.toFixed(2)}x (rounds ${range(attemptRatios)}), ${grouped(rate(measured.attempts) / 2)} pairs/s`,
    );

    console.log(
      `\nargon2 checks: POST /v1/checks/password, right password, argon2id m=65536 t=3 p=4; ` +
        `${ARGON2_CONNECTIONS} connections, ${ARGON2_ROUNDS} rounds of ${ARGON2_S} s per pool size (order ` +
        `reversed every other round) after ${WARMUP_S} s of warm-up; one sidecar process per ` +
        `UV_THREADPOOL_SIZE (set at its start; the ${DEFAULT_POOL} one is the sidecar above).\n`,
    );
    const base = argon2Runs.get(DEFAULT_POOL)!;
    const argonRows: string[][] = [
      [
        'UV_THREADPOOL_SIZE',
        'checks/s',
        'p50 ms',
        'p99 ms',
        `vs ${DEFAULT_POOL} (default)`,
        'server CPU ms/check',
        'locked req/s / this',
        'answers',
      ],
    ];
    for (const [size, m] of argon2Runs) {
      const lat = latencyOf(m);
      argonRows.push([
        `${size}${size === CORES ? ' (= cores)' : ''}${size === DEFAULT_POOL ? ' (default)' : ''}`,
        fixed(rate(m), 1),
        fixed(lat.p50, 0),
        fixed(lat.p99, 0),
        ratio(rate(m), rate(base)),
        fixed(m.serverCpuMs / m.requests, 0),
        ratio(rate(measured.locked), rate(m)),
        describeStatuses(m.statuses),
      ]);
    }
    console.log(table(argonRows));
    const cpuPerCheck = base.serverCpuMs / base.requests;
    console.log(
      `\nnode-argon2 runs each hash's 4 lanes on threads of its own (threads = parallelism), so one ` +
        `pool thread already keeps several cores busy; the CPU bound is ${CORES} cores / ` +
        `${fixed(cpuPerCheck, 0)} ms per check = ${fixed((CORES * 1000) / cpuPerCheck, 1)} checks/s. ` +
        `Closed loop: p50 is about ${ARGON2_CONNECTIONS} connections / checks/s whatever the pool size ` +
        `(only where the checks wait changes).`,
    );
    if (problems.length > 0) throw new Error(`unexpected answers:\n  ${problems.join('\n  ')}`);
  } finally {
    for (const server of [...servers].reverse()) await server.stop();
    await redis?.stop();
  }
}

if (require.main === module) {
  if (process.env[ROLE_ENV]) {
    runBenchServer().catch((error: unknown) => {
      console.error('bench server:', error);
      process.exit(1);
    });
  } else {
    benchSidecar().catch((error: unknown) => {
      console.error(error);
      process.exitCode = 1;
    });
  }
}
