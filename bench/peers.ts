/**
 * Peer benchmark (issue 16): lockgate's faces against what a user would pick instead, over HTTP
 * with autocannon, every server in a process of its own, in interleaved rounds.
 *
 * Processes: every server (lockgate's sidecar and reverse proxy, the compiled build that
 * `npm run build` makes, dist/cjs; the Express apps guarded by lockgate, also from dist/cjs; the
 * peers; the upstream; the bare routes) is a child process (this file in server mode, through
 * ts-node: transpiled once at start, so the request path runs plain JavaScript), nginx runs as one
 * process of its own, redis-server is started on a free port, and autocannon drives the load from
 * this (the parent) process.
 *
 * Workloads, each in BENCH_PEERS_ROUNDS rounds (A, B, C, A, B, C… with the first contender
 * rotating every round) of BENCH_PEERS_SECONDS per contender after BENCH_PEERS_WARMUP_SECONDS of
 * warm-up each:
 *   1. proxy:    GET /plain through each proxy to a node:http upstream (a small fixed body), against
 *                the upstream directly;
 *   2. login:    POST /login (a new user each request) through lockgate's proxy on Redis, judged,
 *                against the same body through lockgate's pass-through (POST /other) and through
 *                fastify + @fastify/http-proxy;
 *   3. sidecar:  POST /v1/checks/password for locked users against bare routes answering a fixed
 *                423 (Express 5 with express.json, node:http), and /v1/attempts reserve + settle;
 *   4. middleware: an Express login route (trivial verifier, a new user each request, 1 in 5 with a
 *                wrong password) unguarded, guarded by lockgate (Redis, memory) and by the peers
 *                (express-rate-limit with rate-limit-redis or its memory store, the
 *                rate-limiter-flexible login recipe on Redis).
 * Figures per contender: req/s (median of the rounds), p50/p99 (median of the rounds), CPU time
 * per request of the server process (and of the upstream, and of redis-server where it is used,
 * from /proc), and ratios to the workload's baseline, computed per round, as median (min–max).
 * The goals of issue 16 are recorded (bench/lib.ts) and printed at the end as a table.
 *
 * Settings (environment): BENCH_PEERS_ROUNDS (5), BENCH_PEERS_SECONDS (1), BENCH_PEERS_WARMUP_SECONDS
 * (1), BENCH_PEERS_CONNECTIONS (32; the proxy workloads: BENCH_PEERS_PROXY_CONNECTIONS, 50),
 * BENCH_PEERS_ONLY (e.g. "proxy,middleware": only these of proxy, login, sidecar, middleware),
 * BENCH_PEERS_NGINX=0 (skip nginx), BENCH_CPU_PROF=<dir> (lockgate's server processes run with
 * `node --cpu-prof --cpu-prof-dir=<dir>` and write their profile there when they exit).
 *
 * Run alone: `npm run bench -- peers` or `node -r ts-node/register/transpile-only bench/peers.ts`.
 */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as argon2 from 'argon2';
import autocannon from 'autocannon';
import express from 'express';
import { Redis } from 'ioredis';
import { getFreePort, startStandalone, type RedisServerHandle } from '../test/helpers/redis-servers';
import {
  attemptPairRequests,
  envInt,
  fixed,
  goalsTable,
  grouped,
  median,
  processCpuMs,
  recordedGoals,
  recordGoal,
  recordRatioGoal,
  serverStarted,
  spread,
  spreadX,
  table,
  type Goal,
} from './lib';

const ROLE_ENV = 'LOCKGATE_BENCH_PEERS_ROLE';
const OPTIONS_ENV = 'LOCKGATE_BENCH_PEERS_OPTIONS';

const ROUNDS = envInt('BENCH_PEERS_ROUNDS', 5);
const RUN_S = envInt('BENCH_PEERS_SECONDS', 1);
const WARMUP_S = envInt('BENCH_PEERS_WARMUP_SECONDS', 1);
const CONNECTIONS = envInt('BENCH_PEERS_CONNECTIONS', 32);
const PROXY_CONNECTIONS = envInt('BENCH_PEERS_PROXY_CONNECTIONS', 50);
const ONLY = (process.env.BENCH_PEERS_ONLY ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const WITH_NGINX = process.env.BENCH_PEERS_NGINX !== '0';
const CPU_PROF_DIR = process.env.BENCH_CPU_PROF ? path.resolve(process.env.BENCH_CPU_PROF) : undefined;

const TOKEN = 'bench-peers-token-0123456789abcdef';
const AUTH = `Bearer ${TOKEN}`;
const PASSWORD = 'correct horse battery staple';
const LOCKED_USERS = 256;
/** express-rate-limit and the rate-limiter-flexible recipe: 5 failures per 15 minutes per user. */
const PEER_LIMIT = 5;
const PEER_WINDOW_S = 15 * 60;
const LOGIN_PAD = 'x'.repeat(40);

const WORKLOADS = ['proxy', 'login', 'sidecar', 'middleware'] as const;
type WorkloadName = (typeof WORKLOADS)[number];

// ==== servers (child processes) ===========================================================

type Role =
  | { role: 'upstream' }
  | { role: 'lockgate'; dist: string; config: unknown }
  | { role: 'http-proxy'; upstream: string }
  | { role: 'fastify'; upstream: string }
  | { role: 'express-hpm'; upstream: string }
  | { role: 'bare-express-423'; body: unknown }
  | { role: 'bare-http-423'; body: unknown }
  | { role: 'middleware'; variant: MiddlewareVariant; dist: string; redisUrl?: string; prefix: string };

type MiddlewareVariant =
  'unguarded' | 'lockgate-redis' | 'lockgate-memory' | 'erl-redis' | 'erl-memory' | 'rlf-redis';

type FromServer = { type: 'listening'; url: string; proxyUrl?: string };

interface Served {
  readonly url: string;
  readonly proxyUrl?: string;
  close(): Promise<void>;
}

function listen(server: http.Server): Promise<string> {
  server.keepAliveTimeout = 60_000;
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`),
    ),
  );
}

function closer(server: http.Server): () => Promise<void> {
  return () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
}

/** An app as the sidecar's: no X-Powered-By, no ETag. */
function plainExpress(): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  return app;
}

async function serve(role: Role): Promise<Served> {
  switch (role.role) {
    case 'upstream': {
      // answers every request (after reading its body) with a small fixed JSON body
      const answer = Buffer.from('{"ok":true,"session":"bench-session"}');
      const server = http.createServer((req, res) => {
        req.on('end', () => {
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': answer.length });
          res.end(answer);
        });
        req.resume();
      });
      return { url: await listen(server), close: closer(server) };
    }
    case 'lockgate': {
      const { parseConfig } = require(
        path.join(role.dist, 'sidecar/config.js'),
      ) as typeof import('../src/sidecar/config');
      const { startSidecar } = require(
        path.join(role.dist, 'sidecar/server.js'),
      ) as typeof import('../src/sidecar/server');
      const sidecar = await startSidecar(parseConfig(role.config));
      return {
        url: sidecar.url,
        ...(sidecar.proxyUrl ? { proxyUrl: sidecar.proxyUrl } : {}),
        close: () => sidecar.close(),
      };
    }
    case 'http-proxy': {
      const httpProxy = require('http-proxy') as typeof import('http-proxy');
      const proxy = httpProxy.createProxyServer({
        target: role.upstream,
        agent: new http.Agent({ keepAlive: true }),
      });
      proxy.on('error', (_error, _req, res) => {
        if ('writeHead' in res && !res.headersSent) res.writeHead(502);
        res.end();
      });
      const server = http.createServer((req, res) => proxy.web(req, res));
      return { url: await listen(server), close: closer(server) };
    }
    case 'fastify': {
      const Fastify = require('fastify') as typeof import('fastify').default;
      const fastifyHttpProxy = require('@fastify/http-proxy') as typeof import('@fastify/http-proxy').default;
      const app = Fastify({ logger: false });
      await app.register(fastifyHttpProxy, { upstream: role.upstream });
      const url = await app.listen({ host: '127.0.0.1', port: 0 });
      return { url, close: () => app.close() };
    }
    case 'express-hpm': {
      const { createProxyMiddleware } =
        require('http-proxy-middleware') as typeof import('http-proxy-middleware');
      const app = plainExpress();
      app.use(createProxyMiddleware({ target: role.upstream, agent: new http.Agent({ keepAlive: true }) }));
      const server = http.createServer(app);
      return { url: await listen(server), close: closer(server) };
    }
    case 'bare-express-423': {
      const app = plainExpress();
      app.use(express.json());
      const body = role.body;
      app.post('/v1/checks/password', (_req, res) => {
        res.status(423).json(body);
      });
      const server = http.createServer(app);
      return { url: await listen(server), close: closer(server) };
    }
    case 'bare-http-423': {
      const answer = Buffer.from(JSON.stringify(role.body));
      const server = http.createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          try {
            JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            res.writeHead(400).end();
            return;
          }
          res.writeHead(423, {
            'content-type': 'application/json; charset=utf-8',
            'content-length': answer.length,
          });
          res.end(answer);
        });
      });
      return { url: await listen(server), close: closer(server) };
    }
    case 'middleware':
      return serveMiddleware(role);
  }
}

/** The trivial verifier both the guarded and the unguarded route share. */
const verify = (body: { password?: unknown } | undefined): boolean => body?.password === PASSWORD;

async function serveMiddleware(role: Extract<Role, { role: 'middleware' }>): Promise<Served> {
  const closers: Array<() => Promise<unknown> | void> = [];
  let redis: Redis | undefined;
  if (role.redisUrl) {
    redis = new Redis(role.redisUrl, { lazyConnect: true, enableOfflineQueue: false });
    await redis.connect();
    const client = redis;
    closers.push(() => client.quit());
  }
  const login: express.RequestHandler = (req, res) => {
    const ok = verify(req.body);
    res.status(ok ? 200 : 401).json(ok ? { ok: true } : { error: 'invalid_credentials' });
  };
  const username = (req: express.Request): string => String(req.body?.username ?? '');
  const app = plainExpress();
  app.use(express.json());
  switch (role.variant) {
    case 'unguarded':
      app.post('/login', login);
      break;
    case 'lockgate-redis':
    case 'lockgate-memory': {
      const lg = require(path.join(role.dist, 'index.js')) as typeof import('../src');
      const store =
        role.variant === 'lockgate-redis'
          ? new lg.RedisStore({ client: redis!, prefix: role.prefix })
          : new lg.MemoryStore();
      const lockout = lg.createLockout({
        store,
        instanceId: `bench-peers-${process.pid}`,
        instance: { maxPasswordAttempts: PEER_LIMIT, maxOtpAttempts: PEER_LIMIT },
      });
      closers.unshift(() => lockout.close());
      app.post('/login', lockout.guard('password', { user: (req) => req.body?.username }), login);
      break;
    }
    case 'erl-redis':
    case 'erl-memory': {
      const { rateLimit } = require('express-rate-limit') as typeof import('express-rate-limit');
      const { RedisStore } = require('rate-limit-redis') as typeof import('rate-limit-redis');
      const client = redis;
      app.post(
        '/login',
        rateLimit({
          windowMs: PEER_WINDOW_S * 1000,
          limit: PEER_LIMIT,
          keyGenerator: username,
          skipSuccessfulRequests: true,
          standardHeaders: 'draft-8',
          legacyHeaders: false,
          ...(role.variant === 'erl-redis' && client
            ? {
                store: new RedisStore({
                  prefix: role.prefix,
                  sendCommand: (command: string, ...args: string[]) =>
                    client.call(command, ...args) as Promise<never>,
                }),
              }
            : {}),
        }),
        login,
      );
      break;
    }
    case 'rlf-redis': {
      // rate-limiter-flexible's wiki, "Login endpoint protection" (consecutive failures by
      // username): get() before; refuse at the limit; on a failure consume(), on a success
      // delete() when the user had failures.
      const { RateLimiterRedis, RateLimiterRes } =
        require('rate-limiter-flexible') as typeof import('rate-limiter-flexible');
      const limiter = new RateLimiterRedis({
        storeClient: redis!,
        keyPrefix: role.prefix,
        points: PEER_LIMIT,
        duration: PEER_WINDOW_S,
      });
      app.post('/login', async (req, res, next) => {
        try {
          const key = username(req);
          const before = await limiter.get(key);
          if (before !== null && before.consumedPoints >= PEER_LIMIT) {
            res.set('Retry-After', String(Math.ceil(before.msBeforeNext / 1000) || 1));
            res.status(429).json({ error: 'too_many_requests' });
            return;
          }
          if (verify(req.body)) {
            if (before !== null && before.consumedPoints > 0) await limiter.delete(key);
            res.status(200).json({ ok: true });
            return;
          }
          try {
            await limiter.consume(key);
          } catch (error) {
            if (!(error instanceof RateLimiterRes)) throw error;
          }
          res.status(401).json({ error: 'invalid_credentials' });
        } catch (error) {
          next(error);
        }
      });
      break;
    }
  }
  const server = http.createServer(app);
  const url = await listen(server);
  const closeServer = closer(server);
  return {
    url,
    close: async () => {
      await closeServer();
      for (const close of closers) await close();
    },
  };
}

/** The server side: serves its role (environment) until told to stop, then exits (profile written). */
async function runServer(): Promise<void> {
  const role = JSON.parse(process.env[OPTIONS_ENV] ?? '{}') as Role;
  const served = await serve(role);
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    void served
      .close()
      .catch((error: unknown) => console.error(`bench server ${role.role}: close failed`, error))
      .finally(() => process.exit(0));
  };
  process.on('message', (m: { type?: string }) => {
    if (m?.type === 'stop') stop();
  });
  process.on('disconnect', stop);
  process.on('SIGTERM', stop);
  process.send!({
    type: 'listening',
    url: served.url,
    ...(served.proxyUrl ? { proxyUrl: served.proxyUrl } : {}),
  } satisfies FromServer);
}

// ==== servers (parent side) ===============================================================

interface ServerHandle {
  readonly label: string;
  readonly url: string;
  readonly proxyUrl?: string;
  readonly pid: number | undefined;
  stop(): Promise<void>;
}

/** Forks this file as a server; `profile`: a lockgate process (BENCH_CPU_PROF applies). */
function startNodeServer(label: string, role: Role, profile = false): Promise<ServerHandle> {
  const profiling = profile && CPU_PROF_DIR !== undefined;
  if (profiling) mkdirSync(CPU_PROF_DIR!, { recursive: true });
  const child: ChildProcess = fork(__filename, [], {
    execArgv: [
      ...(profiling ? ['--cpu-prof', `--cpu-prof-dir=${CPU_PROF_DIR}`] : []),
      '-r',
      require.resolve('ts-node/register/transpile-only'),
    ],
    env: { ...process.env, [ROLE_ENV]: role.role, [OPTIONS_ENV]: JSON.stringify(role) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  if (profiling) console.log(`  (${label}: pid ${child.pid}, CPU profile to ${CPU_PROF_DIR} at exit)`);
  return serverStarted<FromServer>(label, child).then(({ message: m, stop }) => ({
    label,
    url: m.url,
    ...(m.proxyUrl ? { proxyUrl: m.proxyUrl } : {}),
    pid: child.pid,
    stop,
  }));
}

function findNginx(): string | undefined {
  for (const dir of ['/usr/sbin', '/usr/bin', ...(process.env.PATH ?? '').split(path.delimiter)]) {
    if (!dir) continue;
    const candidate = path.join(dir, 'nginx');
    try {
      execFileSync(candidate, ['-v'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // next
    }
  }
  return undefined;
}

/** nginx in one process (master_process off), keep-alive to the upstream; undefined if absent. */
async function startNginx(upstream: string): Promise<ServerHandle | undefined> {
  if (!WITH_NGINX) {
    console.log('nginx skipped (BENCH_PEERS_NGINX=0)');
    return undefined;
  }
  const binary = findNginx();
  if (!binary) {
    console.log('nginx not found (PATH, /usr/sbin): its row is skipped (apt-get install -y nginx adds it)');
    return undefined;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lockgate-bench-nginx-'));
  const port = await getFreePort();
  const up = new URL(upstream);
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 1000000;
  upstream bench_upstream {
    server ${up.hostname}:${up.port};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`,
  );
  const child = spawn(binary, ['-p', dir, '-c', conf, '-e', `${dir}/error.log`], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) {
      rmSync(dir, { recursive: true, force: true });
      console.log(`nginx exited at start (code ${child.exitCode}): its row is skipped`);
      return undefined;
    }
    try {
      const res = await fetch(`${url}/plain`);
      await res.arrayBuffer();
      if (res.ok) break;
    } catch {
      // not yet
    }
    if (i > 100) {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      console.log('nginx did not answer within 5 s: its row is skipped');
      return undefined;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    label: 'nginx',
    url,
    pid: child.pid,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGQUIT');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ==== load and rounds =====================================================================

interface Contender {
  readonly key: string;
  readonly label: string;
  /** Where the load goes. */
  readonly url: string;
  /** The process whose CPU is this contender's "server CPU". */
  readonly pid: number | undefined;
  readonly upstreamPid?: number;
  readonly redisPid?: number;
  readonly requests: () => autocannon.Request[];
  readonly expect: readonly number[];
}

/** One run of one contender. */
interface Sample {
  readonly requests: number;
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly serverUs: number;
  readonly upstreamUs: number;
  readonly redisUs: number;
  readonly statuses: Map<string, number>;
  readonly errors: number;
}

async function hit(c: Contender, seconds: number, connections: number): Promise<Sample> {
  const cpu = () => [processCpuMs(c.pid), processCpuMs(c.upstreamPid), processCpuMs(c.redisPid)];
  const before = cpu();
  const r = await autocannon({
    url: c.url,
    connections,
    duration: seconds,
    timeout: 30,
    requests: c.requests(),
  });
  const after = cpu();
  const n = Math.max(1, r.requests.total);
  const us = (i: number) => ((after[i]! - before[i]!) * 1000) / n;
  const statuses = new Map<string, number>();
  for (const [status, s] of Object.entries(r.statusCodeStats ?? {})) statuses.set(status, s.count ?? 0);
  return {
    requests: r.requests.total,
    rps: r.requests.total / r.duration,
    p50: r.latency.p50,
    p99: r.latency.p99,
    serverUs: us(0),
    upstreamUs: us(1),
    redisUs: us(2),
    statuses,
    errors: r.errors + r.timeouts,
  };
}

/** Warm-up of each, then ROUNDS rounds in a rotating order. Samples per contender key. */
async function rounds(contenders: readonly Contender[], connections: number): Promise<Map<string, Sample[]>> {
  for (const c of contenders) await hit(c, WARMUP_S, connections);
  const samples = new Map(contenders.map((c) => [c.key, [] as Sample[]]));
  for (let round = 0; round < ROUNDS; round++) {
    for (let k = 0; k < contenders.length; k++) {
      const c = contenders[(round + k) % contenders.length]!;
      samples.get(c.key)!.push(await hit(c, RUN_S, connections));
    }
  }
  return samples;
}

/** Per-round ratios a/b of a metric of two contenders. */
function perRound(
  samples: Map<string, Sample[]>,
  a: string,
  b: string | ((round: number) => number),
  metric: (s: Sample) => number,
): number[] {
  const as = samples.get(a) ?? [];
  return as.map((s, i) => {
    const denominator = typeof b === 'function' ? b(i) : metric((samples.get(b) ?? [])[i]!);
    return metric(s) / denominator;
  });
}

const rpsOf = (s: Sample): number => s.rps;
const cpuOf = (s: Sample): number => s.serverUs;

const problems: string[] = [];

/** Prints a workload's table: absolute medians and ratios to the baseline, per round. */
function report(
  title: string,
  contenders: readonly Contender[],
  samples: Map<string, Sample[]>,
  baseline: string,
  notes: string[] = [],
  /** The contender of the "CPU vs" column, when not the baseline (a proxy's CPU against another proxy's). */
  cpuBaseline = baseline,
): void {
  const labelOf = (key: string) => contenders.find((c) => c.key === key)?.label ?? key;
  const baseLabel = labelOf(baseline);
  const withUpstream = contenders.some((c) => c.upstreamPid !== undefined);
  const withRedis = contenders.some((c) => c.redisPid !== undefined);
  const rows: string[][] = [
    [
      'contender',
      'req/s',
      'p50 ms',
      'p99 ms',
      'req/s vs baseline',
      'server CPU us/req',
      cpuBaseline === baseline ? 'CPU vs baseline' : `CPU vs ${cpuBaseline}`,
      ...(withUpstream ? ['upstream us/req'] : []),
      ...(withRedis ? ['redis us/req'] : []),
      'answers',
    ],
  ];
  for (const c of contenders) {
    const ss = samples.get(c.key) ?? [];
    const statuses = new Map<string, number>();
    let errors = 0;
    for (const s of ss) {
      errors += s.errors;
      for (const [status, n] of s.statuses) statuses.set(status, (statuses.get(status) ?? 0) + n);
    }
    const unexpected = [...statuses.keys()].filter((s) => !c.expect.includes(Number(s)));
    if (unexpected.length > 0 || errors > 0) {
      problems.push(`${title} / ${c.label}: ${errors} errors, unexpected answers ${unexpected.join(', ')}`);
    }
    const isBase = c.key === baseline;
    rows.push([
      `${c.label}${isBase ? ' (baseline)' : ''}`,
      grouped(median(ss.map(rpsOf))),
      fixed(median(ss.map((s) => s.p50)), 2),
      fixed(median(ss.map((s) => s.p99)), 2),
      isBase ? '1.00x' : spreadX(spread(perRound(samples, c.key, baseline, rpsOf))),
      fixed(median(ss.map(cpuOf)), 0),
      c.key === cpuBaseline
        ? '1.00x'
        : // the baseline's CPU is another kind of process's (the upstream's, direct) when cpuBaseline differs
          isBase
          ? '-'
          : spreadX(spread(perRound(samples, c.key, cpuBaseline, cpuOf))),
      ...(withUpstream
        ? [c.upstreamPid === undefined ? '-' : fixed(median(ss.map((s) => s.upstreamUs)), 0)]
        : []),
      ...(withRedis ? [c.redisPid === undefined ? '-' : fixed(median(ss.map((s) => s.redisUs)), 0)] : []),
      [...statuses.entries()]
        .sort()
        .map(([status, n]) => `${status} x ${grouped(n)}`)
        .join(', ') + (errors > 0 ? `; ${errors} errors` : ''),
    ]);
  }
  console.log(`\n== ${title}`);
  console.log(
    `${ROUNDS} rounds of ${RUN_S} s per contender (rotating order) after ${WARMUP_S} s of warm-up each. ` +
      `Ratios to "${baseLabel}"${cpuBaseline === baseline ? '' : ` (CPU: to "${labelOf(cpuBaseline)}")`}: ` +
      'computed per round, median (min–max). req/s, p50, p99, CPU: medians of the rounds.',
  );
  for (const note of notes) console.log(note);
  console.log(table(rows));
}

// ==== workloads ===========================================================================

function plainRequests(): autocannon.Request[] {
  return [{ method: 'GET', path: '/plain' }];
}

/** POST `path` with a JSON login body of a new user each request. */
function loginRequests(pathname: string, prefix: string): () => autocannon.Request[] {
  let n = 0;
  return () => [
    {
      method: 'POST',
      path: pathname,
      headers: { 'content-type': 'application/json' },
      setupRequest: (req) => ({
        ...req,
        body: JSON.stringify({ user: `${prefix}-${n++}`, password: PASSWORD, pad: LOGIN_PAD }),
      }),
    },
  ];
}

function sidecarConfig(store: unknown, proxy?: unknown): unknown {
  return {
    server: { host: '127.0.0.1', port: 0 },
    instance: { id: 'bench' },
    store,
    auth: {
      tokens: [{ name: 'bench', token: TOKEN, orgs: ['*'], permissions: ['user.write', 'lockout.check'] }],
    },
    otp: { pepper: 'bench-pepper-0123456789' },
    // the bench's Redis has no persistence: its start-up warning is expected
    log: { level: 'error' },
    shutdownTimeoutMs: 2000,
    ...(proxy ? { proxy } : {}),
  };
}

function proxySection(upstream: string): unknown {
  return {
    upstream,
    listen: { host: '127.0.0.1', port: 0 },
    timeoutMs: 10_000,
    routes: [{ path: '/login', user: { from: 'json', name: 'user' }, org: { fixed: 'bench-org' } }],
  };
}

interface Context {
  readonly dist: string;
  readonly redis: RedisServerHandle;
  readonly upstream: ServerHandle;
  readonly start: (label: string, role: Role, profile?: boolean) => Promise<ServerHandle>;
  readonly stop: (server: ServerHandle) => Promise<void>;
}

async function proxyWorkload(ctx: Context): Promise<void> {
  const { upstream } = ctx;
  const lockgate = await ctx.start(
    'lockgate proxy (memory)',
    {
      role: 'lockgate',
      dist: ctx.dist,
      config: sidecarConfig({ type: 'memory' }, proxySection(upstream.url)),
    },
    true,
  );
  const [hp, fastify, hpm] = await Promise.all([
    ctx.start('http-proxy', { role: 'http-proxy', upstream: upstream.url }),
    ctx.start('fastify', { role: 'fastify', upstream: upstream.url }),
    ctx.start('express-hpm', { role: 'express-hpm', upstream: upstream.url }),
  ]);
  const nginx = await startNginx(upstream.url);
  try {
    const via = (key: string, label: string, server: ServerHandle, url = server.url): Contender => ({
      key,
      label,
      url,
      pid: server.pid,
      upstreamPid: upstream.pid,
      requests: plainRequests,
      expect: [200],
    });
    const contenders: Contender[] = [
      { ...via('direct', 'direct to the upstream', upstream), pid: upstream.pid },
      via('lockgate', 'lockgate proxy (sidecar, proxy.listen, memory)', lockgate, lockgate.proxyUrl),
      via('http-proxy', 'node:http + http-proxy (keep-alive agent)', hp),
      via('fastify', 'fastify + @fastify/http-proxy', fastify),
      via('hpm', 'Express 5 + http-proxy-middleware', hpm),
      ...(nginx ? [via('nginx', 'nginx (1 process, upstream keepalive)', nginx)] : []),
    ];
    const samples = await rounds(contenders, PROXY_CONNECTIONS);
    report(
      '1. Proxy pass-through: GET /plain',
      contenders,
      samples,
      'direct',
      [
        `${PROXY_CONNECTIONS} connections. server CPU: the proxy process (direct: the upstream's). ` +
          `upstream us/req: the upstream process.`,
      ],
      'http-proxy',
    );
    recordRatioGoal(
      'proxy',
      "pass-through: lockgate proxy CPU/req ≤ 1.00x http-proxy's",
      perRound(samples, 'lockgate', 'http-proxy', cpuOf),
      '<=',
      1,
    );
    recordRatioGoal(
      'proxy',
      "pass-through: lockgate req/s ≥ 1.00x fastify + @fastify/http-proxy's",
      perRound(samples, 'lockgate', 'fastify', rpsOf),
      '>=',
      1,
    );
    recordGoal({
      area: 'proxy',
      goal: 'pass-through: lockgate req/s vs direct (issue: 0.10x)',
      measured: spreadX(spread(perRound(samples, 'lockgate', 'direct', rpsOf))),
      met: undefined,
    });
  } finally {
    await Promise.all([ctx.stop(lockgate), ctx.stop(hp), ctx.stop(fastify), ctx.stop(hpm), nginx?.stop()]);
  }
}

async function loginWorkload(ctx: Context): Promise<void> {
  const { upstream, redis } = ctx;
  const lockgate = await ctx.start(
    'lockgate proxy (Redis)',
    {
      role: 'lockgate',
      dist: ctx.dist,
      config: sidecarConfig(
        { type: 'redis', redis: { url: redis.url, prefix: `bench-peers-login-${process.pid}` } },
        proxySection(upstream.url),
      ),
    },
    true,
  );
  const fastify = await ctx.start('fastify', { role: 'fastify', upstream: upstream.url });
  try {
    const contenders: Contender[] = [
      {
        key: 'passthrough',
        label: 'lockgate pass-through POST /other (Redis sidecar)',
        url: lockgate.proxyUrl!,
        pid: lockgate.pid,
        upstreamPid: upstream.pid,
        redisPid: redis.pid,
        requests: loginRequests('/other', 'pass'),
        expect: [200],
      },
      {
        key: 'judged',
        label: 'lockgate judged POST /login (Redis)',
        url: lockgate.proxyUrl!,
        pid: lockgate.pid,
        upstreamPid: upstream.pid,
        redisPid: redis.pid,
        requests: loginRequests('/login', `judged-${process.pid}`),
        expect: [200],
      },
      {
        key: 'fastify',
        label: 'fastify + @fastify/http-proxy POST /login',
        url: fastify.url,
        pid: fastify.pid,
        upstreamPid: upstream.pid,
        requests: loginRequests('/login', 'fastify'),
        expect: [200],
      },
    ];
    const samples = await rounds(contenders, PROXY_CONNECTIONS);
    report(
      '2. Proxied login on Redis: POST /login, a new user each request',
      contenders,
      samples,
      'passthrough',
      [
        `${PROXY_CONNECTIONS} connections; JSON body {user, password, pad}, the upstream answers 200 (success).`,
        `vs fastify: judged login CPU/req ${spreadX(spread(perRound(samples, 'judged', 'fastify', cpuOf)))}, ` +
          `req/s ${spreadX(spread(perRound(samples, 'judged', 'fastify', rpsOf)))}`,
      ],
    );
    recordRatioGoal(
      'proxy',
      'judged login on Redis: CPU/req ≤ 1.50x lockgate pass-through',
      perRound(samples, 'judged', 'passthrough', cpuOf),
      '<=',
      1.5,
    );
    recordGoal({
      area: 'proxy',
      goal: "judged login on Redis: CPU/req vs fastify pass-through's (info)",
      measured: spreadX(spread(perRound(samples, 'judged', 'fastify', cpuOf))),
      met: undefined,
    });
  } finally {
    await Promise.all([ctx.stop(lockgate), ctx.stop(fastify)]);
  }
}

async function sidecarWorkload(ctx: Context): Promise<void> {
  const { redis } = ctx;
  const hash = await argon2.hash(PASSWORD);
  const sidecar = await ctx.start(
    'lockgate sidecar (Redis)',
    {
      role: 'lockgate',
      dist: ctx.dist,
      config: sidecarConfig({
        type: 'redis',
        redis: { url: redis.url, prefix: `bench-peers-sidecar-${process.pid}` },
      }),
    },
    true,
  );
  const servers: ServerHandle[] = [sidecar];
  try {
    const lockedUser = (i: number) => `bench-locked-${i % LOCKED_USERS}`;
    const body = (userId: string) => JSON.stringify({ userId, password: PASSWORD, encodedHash: hash });
    const post = async (pathname: string, payload?: string) => {
      const res = await fetch(`${sidecar.url}${pathname}`, {
        method: 'POST',
        headers:
          payload === undefined
            ? { authorization: AUTH }
            : { authorization: AUTH, 'content-type': 'application/json' },
        ...(payload === undefined ? {} : { body: payload }),
      });
      return { status: res.status, text: await res.text() };
    };
    for (let i = 0; i < LOCKED_USERS; i += 16) {
      await Promise.all(
        Array.from({ length: Math.min(16, LOCKED_USERS - i) }, async (_, k) => {
          const r = await post(`/v2/users/${lockedUser(i + k)}/lock`);
          if (r.status !== 200) throw new Error(`locking ${lockedUser(i + k)}: HTTP ${r.status} ${r.text}`);
        }),
      );
    }
    const probe = await post('/v1/checks/password', body(lockedUser(0)));
    if (probe.status !== 423) throw new Error(`probe of a locked user: HTTP ${probe.status} ${probe.text}`);
    // the bare routes answer the sidecar's own 423 body
    const lockedBody: unknown = JSON.parse(probe.text);
    const [bareExpress, bareHttp] = await Promise.all([
      ctx.start('bare Express 423', { role: 'bare-express-423', body: lockedBody }),
      ctx.start('bare node:http 423', { role: 'bare-http-423', body: lockedBody }),
    ]);
    servers.push(bareExpress, bareHttp);
    const checkRequests = (): autocannon.Request[] => {
      let n = 0;
      return [
        {
          method: 'POST',
          path: '/v1/checks/password',
          headers: { 'content-type': 'application/json', authorization: AUTH },
          setupRequest: (req) => ({ ...req, body: body(lockedUser(n++)) }),
        },
      ];
    };
    let attemptSeq = 0;
    const attemptRequests = (): autocannon.Request[] =>
      attemptPairRequests({ 'content-type': 'application/json', authorization: AUTH }, () => attemptSeq++);

    const contenders: Contender[] = [
      {
        key: 'express',
        label: 'bare Express 5 route, fixed 423 (express.json)',
        url: bareExpress.url,
        pid: bareExpress.pid,
        requests: checkRequests,
        expect: [423],
      },
      {
        key: 'http',
        label: 'bare node:http, fixed 423 (JSON.parse)',
        url: bareHttp.url,
        pid: bareHttp.pid,
        requests: checkRequests,
        expect: [423],
      },
      {
        key: 'locked',
        label: 'lockgate POST /v1/checks/password, locked user',
        url: sidecar.url,
        pid: sidecar.pid,
        redisPid: redis.pid,
        requests: checkRequests,
        expect: [423],
      },
      {
        key: 'attempts',
        label: 'lockgate /v1/attempts reserve + settle (2 req/pair)',
        url: sidecar.url,
        pid: sidecar.pid,
        redisPid: redis.pid,
        requests: attemptRequests,
        expect: [200, 201],
      },
    ];
    const samples = await rounds(contenders, CONNECTIONS);
    report('3. Sidecar: refusing a locked user', contenders, samples, 'express', [
      `${CONNECTIONS} connections; ${LOCKED_USERS} users locked via POST /v2/users/{id}/lock; body: right password ` +
        'and an argon2 encodedHash (argon2 would run if the user were not locked); the bare routes answer the ' +
        `sidecar's own 423 body. /v1/attempts: 3 in 4 settled success, 1 in 4 failure, a new user per pair; ` +
        `pairs/s = req/s / 2 (median ${grouped(median((samples.get('attempts') ?? []).map(rpsOf)) / 2)}).`,
    ]);
    recordRatioGoal(
      'sidecar',
      "locked user: CPU/req ≤ 1.00x bare Express 423 route's",
      perRound(samples, 'locked', 'express', cpuOf),
      '<=',
      1,
    );
    recordRatioGoal(
      'sidecar',
      "locked user: req/s ≥ 1.00x bare Express 423 route's",
      perRound(samples, 'locked', 'express', rpsOf),
      '>=',
      1,
    );
    recordRatioGoal(
      'sidecar',
      '/v1/attempts reserve + settle: requests/s ≥ 0.80x bare route',
      perRound(samples, 'attempts', 'express', rpsOf),
      '>=',
      0.8,
    );
  } finally {
    await Promise.all(servers.map((s) => ctx.stop(s)));
  }
}

async function middlewareWorkload(ctx: Context): Promise<void> {
  const { redis } = ctx;
  const variants: Array<{ variant: MiddlewareVariant; label: string; redis: boolean; lockgate: boolean }> = [
    { variant: 'unguarded', label: 'unguarded', redis: false, lockgate: false },
    { variant: 'lockgate-redis', label: 'lockgate guard, Redis', redis: true, lockgate: true },
    { variant: 'erl-redis', label: 'express-rate-limit + rate-limit-redis', redis: true, lockgate: false },
    { variant: 'rlf-redis', label: 'rate-limiter-flexible recipe, Redis', redis: true, lockgate: false },
    { variant: 'lockgate-memory', label: 'lockgate guard, memory', redis: false, lockgate: true },
    { variant: 'erl-memory', label: 'express-rate-limit, memory store', redis: false, lockgate: false },
  ];
  const servers = await Promise.all(
    variants.map((v) =>
      ctx.start(
        `middleware ${v.variant}`,
        {
          role: 'middleware',
          variant: v.variant,
          dist: ctx.dist,
          // lockgate's RedisStore takes a name (it adds its own separators); the peers a key prefix
          prefix: `bench-peers-mw-${v.variant}-${process.pid}${v.lockgate ? '' : ':'}`,
          ...(v.redis ? { redisUrl: redis.url } : {}),
        },
        v.lockgate,
      ),
    ),
  );
  try {
    // One sequence for every run (warm-ups and rounds alike): a user is never seen twice.
    let n = 0;
    const requests = (variant: string) => (): autocannon.Request[] => {
      return [
        {
          method: 'POST',
          path: '/login',
          headers: { 'content-type': 'application/json' },
          // a new user each request (nobody reaches a limit); 1 in 5 with a wrong password
          setupRequest: (req) => {
            const i = n++;
            return {
              ...req,
              body: JSON.stringify({
                username: `${variant}-${process.pid}-${i}`,
                password: i % 5 === 4 ? 'wrong password' : PASSWORD,
              }),
            };
          },
        },
      ];
    };
    const contenders: Contender[] = variants.map((v, i) => ({
      key: v.variant,
      label: v.label,
      url: servers[i]!.url,
      pid: servers[i]!.pid,
      ...(v.redis ? { redisPid: redis.pid } : {}),
      requests: requests(v.variant),
      expect: [200, 401],
    }));
    const samples = await rounds(contenders, CONNECTIONS);
    report(
      '4. Middleware: Express 5 login route (mixed: 4 in 5 right password)',
      contenders,
      samples,
      'unguarded',
      [
        `${CONNECTIONS} connections; trivial verifier; a new user each request. Limits: lockgate maxPasswordAttempts ` +
          `${PEER_LIMIT}; express-rate-limit ${PEER_LIMIT} per ${PEER_WINDOW_S / 60} min keyed by username, ` +
          `skipSuccessfulRequests; rate-limiter-flexible: RateLimiterRedis keyed by username, ${PEER_LIMIT} points per ` +
          `${PEER_WINDOW_S / 60} min, its wiki's "Login endpoint protection" (get before, consume on a failure, ` +
          'delete on a success when the user had failures). express-brute: not run (its peer dependency is ' +
          'express 4.x; npm refuses it next to Express 5).',
      ],
    );
    recordRatioGoal(
      'middleware',
      'guarded route on Redis: req/s ≥ 0.85x unguarded',
      perRound(samples, 'lockgate-redis', 'unguarded', rpsOf),
      '>=',
      0.85,
    );
    const erl = samples.get('erl-redis') ?? [];
    const rlf = samples.get('rlf-redis') ?? [];
    recordRatioGoal(
      'middleware',
      'guarded route on Redis: req/s ≥ 1.20x the best Redis peer of the round',
      perRound(samples, 'lockgate-redis', (i) => Math.max(erl[i]?.rps ?? NaN, rlf[i]?.rps ?? NaN), rpsOf),
      '>=',
      1.2,
    );
    recordRatioGoal(
      'middleware',
      'guarded route on memory: req/s ≥ 0.97x unguarded',
      perRound(samples, 'lockgate-memory', 'unguarded', rpsOf),
      '>=',
      0.97,
    );
  } finally {
    await Promise.all(servers.map((s) => ctx.stop(s)));
  }
}

// ==== the benchmark =======================================================================

export async function benchPeers(): Promise<Goal[]> {
  const unknown = ONLY.filter((w) => !(WORKLOADS as readonly string[]).includes(w));
  if (unknown.length > 0) {
    throw new Error(`BENCH_PEERS_ONLY: unknown ${unknown.join(', ')}; workloads: ${WORKLOADS.join(', ')}`);
  }
  const selected = WORKLOADS.filter((w) => ONLY.length === 0 || ONLY.includes(w));
  const root = path.join(__dirname, '..');
  // lockgate runs compiled, as it ships (no ts-node on its request path)
  execFileSync(process.execPath, [path.join(root, 'scripts/build.mjs')], { cwd: root, stdio: 'ignore' });
  const dist = path.join(root, 'dist/cjs');
  const servers = new Set<ServerHandle>();
  let redis: RedisServerHandle | undefined;
  const goalsBefore = new Set<Goal>();
  for (const g of recordedGoals()) goalsBefore.add(g);
  try {
    redis = await startStandalone();
    const start = async (label: string, role: Role, profile = false) => {
      const server = await startNodeServer(label, role, profile);
      servers.add(server);
      return server;
    };
    const stop = async (server: ServerHandle) => {
      servers.delete(server);
      await server.stop();
    };
    const upstream = await start('upstream', { role: 'upstream' });
    console.log(
      `node ${process.version}, ${os.cpus().length} CPU cores shared by autocannon (this process), the servers ` +
        `(one process each) and redis-server ${redis.port}; lockgate from dist/cjs (npm run build)` +
        (CPU_PROF_DIR ? `; lockgate's processes profiled to ${CPU_PROF_DIR}` : '') +
        `.\nWorkloads: ${selected.join(', ')}.`,
    );
    const ctx: Context = { dist, redis, upstream, start, stop };
    const run: Record<WorkloadName, (ctx: Context) => Promise<void>> = {
      proxy: proxyWorkload,
      login: loginWorkload,
      sidecar: sidecarWorkload,
      middleware: middlewareWorkload,
    };
    for (const w of selected) {
      try {
        await run[w](ctx);
      } catch (error) {
        // the other workloads still run; their goals are still recorded
        process.exitCode = 1;
        console.error(`\npeers: workload ${w} failed:`, error);
      }
    }
  } finally {
    await Promise.all([...servers].map((s) => s.stop()));
    await redis?.stop();
  }
  // the goals table: printed by bench/run.ts at the end of npm run bench (or below, when run alone)
  const goals = recordedGoals().filter((g) => !goalsBefore.has(g));
  if (problems.length > 0) {
    process.exitCode = 1;
    console.log(`\nunexpected answers or errors:\n  ${problems.join('\n  ')}`);
  }
  return goals;
}

if (require.main === module) {
  if (process.env[ROLE_ENV]) {
    runServer().catch((error: unknown) => {
      console.error('bench server:', error);
      process.exit(1);
    });
  } else {
    benchPeers()
      .then((goals) => console.log(`\n== Goals\n${goalsTable(goals)}`))
      .catch((error: unknown) => {
        console.error(error);
        process.exitCode = 1;
      });
  }
}
