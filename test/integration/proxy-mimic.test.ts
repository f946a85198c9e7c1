/**
 * Mimic mode (issue 9): a locked user's answer is the upstream's own failure answer (same status,
 * headers modulo Date, body), after a delay drawn from the upstream's observed failure latencies.
 * Indistinguishability of the latencies is tested with a two-sample Kolmogorov–Smirnov test over
 * 200 interleaved samples each, against an Express 5 upstream whose failures take 100 ms ± 20 ms
 * (seeded). The KS test must not reject at alpha 0.01. Not a timing bound: both samples are
 * measured in the same run on the same machine, and only their distributions are compared.
 */
import http from 'node:http';
import { LockoutEngine } from '../../src/core/engine';
import { MemoryStore } from '../../src/store';
import { passwordState, startProxy, type ProxyServer } from './proxy-harness';
import { startReference, type ReferenceUpstream } from './proxy-reference';

const MAX = 5;
const ORG = 'mimic';
const SAMPLES = 200;
/** The reservoir: the last 64 failures, so that the replayed latencies follow the current load. */
const RESERVOIR = 64;
const ALPHA = 0.01;

/** mulberry32: a small seeded PRNG (fixed seeds keep the run reproducible). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Two-sample Kolmogorov–Smirnov: the D statistic and its asymptotic p-value (Numerical Recipes' Q_KS). */
export function ks(a: readonly number[], b: readonly number[]): { d: number; p: number } {
  const x = [...a].sort((m, n) => m - n);
  const y = [...b].sort((m, n) => m - n);
  let i = 0;
  let j = 0;
  let d = 0;
  while (i < x.length && j < y.length) {
    const v = Math.min(x[i]!, y[j]!);
    while (i < x.length && x[i]! <= v) i++;
    while (j < y.length && y[j]! <= v) j++;
    d = Math.max(d, Math.abs(i / x.length - j / y.length));
  }
  const ne = (x.length * y.length) / (x.length + y.length);
  const lambda = (Math.sqrt(ne) + 0.12 + 0.11 / Math.sqrt(ne)) * d;
  let p = 0;
  for (let k = 1; k <= 100; k++) p += 2 * (-1) ** (k - 1) * Math.exp(-2 * k * k * lambda * lambda);
  return { d, p: Math.min(1, Math.max(0, p)) };
}

const median = (v: readonly number[]) => {
  const s = [...v].sort((m, n) => m - n);
  return (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2;
};

interface Timed {
  readonly ms: number;
  readonly status: number;
  readonly rawHeaders: string[];
  readonly body: string;
}

function timedLogin(base: string, user: string, password: string): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const url = new URL('/login', base);
    const body = JSON.stringify({ username: user, password });
    const started = process.hrtime.bigint();
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: '/login',
        method: 'POST',
        agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            ms: Number(process.hrtime.bigint() - started) / 1e6,
            status: res.statusCode ?? 0,
            rawHeaders: res.rawHeaders,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const withoutDate = (raw: readonly string[]) =>
  raw.flatMap((v, i) => (i % 2 === 0 && v.toLowerCase() !== 'date' ? [`${v}: ${raw[i + 1]}`] : []));

let upstream: ReferenceUpstream;
let engine: LockoutEngine;
let gate: ProxyServer;

beforeAll(async () => {
  upstream = await startReference(['alice']);
  const jitter = seeded(9);
  upstream.failureDelay = () => 80 + 40 * jitter();
  engine = new LockoutEngine({
    store: new MemoryStore({ purgeIntervalMs: 0 }),
    instanceId: 'mimic',
    defaults: { maxPasswordAttempts: MAX },
  });
  const pick = seeded(42);
  gate = await startProxy({
    engine,
    config: {
      upstream: upstream.url,
      mimic: { samples: RESERVOIR },
      routes: [{ path: '/login', user: { from: 'json', name: 'username' }, org: { fixed: ORG } }],
    },
    randomInt: (n) => Math.floor(pick() * n),
  });
});

afterAll(async () => {
  await gate.close();
  await upstream.close();
  engine.close();
});

test('before any failure was seen, the lock answer is lockedResponse (default 423)', async () => {
  await engine.lockUser(ORG, 'early');
  const res = await timedLogin(gate.url, 'early', 'pw');
  expect(res.status).toBe(423);
});

test(`a locked user's answer: the upstream's failure answer (headers modulo Date, body), latencies not distinguishable (KS, ${SAMPLES} interleaved samples each, alpha ${ALPHA})`, async () => {
  // alice locks through the proxy; the route has now seen its upstream's failures
  let failure: Timed | undefined;
  for (let i = 0; i < MAX; i++) failure = await timedLogin(gate.url, 'alice', 'wrong');
  expect(await passwordState(engine, ORG, 'alice')).toEqual({ failed: MAX, locked: true });
  const reached = upstream.evaluations.length;

  const lock = await timedLogin(gate.url, 'alice', 'pw');
  expect(upstream.evaluations.length).toBe(reached); // the locked user never reaches the upstream
  expect(lock.status).toBe(failure!.status);
  expect(lock.body).toBe(failure!.body);
  expect(withoutDate(lock.rawHeaders)).toEqual(withoutDate(failure!.rawHeaders));
  expect(lock.rawHeaders.map((h) => h.toLowerCase())).toContain('date');
  // Express's own marks are there: the answer is not lockgate's
  expect(withoutDate(lock.rawHeaders)).toEqual(
    expect.arrayContaining(['x-powered-by: Express', 'content-type: application/json; charset=utf-8']),
  );

  // 200 locked answers and 200 real failures (fresh users, never locked), interleaved: eight
  // requests at a time, locked and real alternating.
  const locked: number[] = [];
  const real: number[] = [];
  for (let round = 0; round < SAMPLES / 4; round++) {
    const batch = await Promise.all(
      [0, 1, 2, 3].flatMap((k) => {
        const n = round * 4 + k;
        const a = () => timedLogin(gate.url, 'alice', 'pw');
        const b = () => timedLogin(gate.url, `user-${n}`, 'wrong');
        return n % 2 === 0 ? [a(), b()] : [b(), a()];
      }),
    );
    for (const r of batch) {
      expect(r.status).toBe(401);
      expect(r.body).toBe(failure!.body);
    }
    // [locked, real, real, locked, locked, real, real, locked]
    batch.forEach((r, i) => ([0, 3, 4, 7].includes(i) ? locked : real).push(r.ms));
  }
  expect(upstream.evaluations.filter((e) => e.user === 'alice')).toHaveLength(MAX);
  const { d, p } = ks(locked, real);

  console.log(
    `mimic mode, KS over ${locked.length} + ${real.length} samples: D = ${d.toFixed(3)}, p = ${p.toFixed(3)}; medians: locked ${median(locked).toFixed(1)} ms, upstream failure ${median(real).toFixed(1)} ms`,
  );
  expect(locked).toHaveLength(SAMPLES);
  expect(real).toHaveLength(SAMPLES);
  expect(p).toBeGreaterThan(ALPHA);
}, 60_000);

test('the KS test used here does reject two distributions 10 ms apart (it has the power to fail)', () => {
  const r = seeded(7);
  const a = Array.from({ length: SAMPLES }, () => 80 + 40 * r());
  const b = Array.from({ length: SAMPLES }, () => 90 + 40 * r());
  expect(ks(a, b).p).toBeLessThan(ALPHA);
  const c = Array.from({ length: SAMPLES }, () => 80 + 40 * r());
  expect(ks(a, c).p).toBeGreaterThan(ALPHA);
});
