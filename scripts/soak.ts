/**
 * Soak with faults (issue 8): `npm run soak [-- --seconds N]` (default 180 s).
 *
 * Loopback only. Starts its own redis-server (free port, temp dir) and two sidecar processes
 * (`node -r ts-node/register/transpile-only src/sidecar/main.ts`) on that Redis, drives password
 * checks at both — honest users with the right password, attackers with wrong ones — while it
 * kills (SIGKILL) and restarts redis-server with and without AOF and SIGKILLs and restarts each
 * sidecar. Then it waits for every lease to end, reconciles and prints the figures; exit code 1
 * when an invariant is not zero.
 *
 * Accounting (see README "Soak"):
 *   - Every request is recorded with its time window [start, end] and its answer (HTTP status,
 *     or a network error: `refused` when the sidecar was not listening, which cannot have
 *     reserved anything; `abandoned` when the connection died mid-request, i.e. the sidecar was
 *     killed with the request in flight: its reservation, if it made one, is never settled and
 *     counts as a failure when its lease ends).
 *   - Redis outage: from the SIGKILL of redis-server to the spawn of the next one. A 200 or 401
 *     whose whole window lies inside an outage evaluated a credential without the store:
 *     "evaluated while Redis was down" (must be 0 fail-closed).
 *   - State epochs: a restart keeps the state only when both the killed and the new server run
 *     with AOF (appendfsync always); any other restart starts a new epoch with empty state.
 *   - Attackers run lock cycles: each sends two wrong passwords at a time (one to each sidecar)
 *     until one answers 423; then it waits for its own requests to end (and, when one was
 *     abandoned, for its lease to end), reads its counter C from a sidecar and unlocks itself
 *     (admin unlock), which starts the next cycle. A cycle *segment* is the part of a cycle
 *     inside one state epoch; requests that started before the segment and ended in it
 *     ("straddlers") could have been counted before or after, so they widen the allowed range.
 *     Per segment with E = 401s (failures evaluated), S = straddlers, A = requests whose
 *     reservation may rightly count without a 401: abandoned ones, ones the soak timed out
 *     (10 s), 503s answered by a sidecar less than a lease before it was SIGKILLed (its
 *     background compensation of that 503 may have died with it), and 503s whose request overlaps
 *     a Redis outage (G5: a wrong password evaluated whose settle's outcome was unknown is answered
 *     503, and the engine writes the failure again until it is counted, once):
 *       lost failures            = max(0, E − C)          (evaluated but not counted)
 *       double-counted failures  = max(0, C − E − A − S)  (counted more than could have happened)
 *       G1 violations            = segments with E > max  (more evaluations than the limit allows)
 *     An attacker's final (open) segment is reconciled the same way after the run.
 *   - False locks: honest users (only right passwords) answered 423, or found locked at the end.
 *   - Left busy: honest users answered 429 by a right password after faults stopped and leases ended.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import argon2 from 'argon2';

const ROOT = path.resolve(__dirname, '..');
const MAX_PASSWORD = 5;
const LEASE_MS = 5_000;
const HONEST_USERS = 12;
const ATTACKERS = 10;
const HONEST_CONCURRENCY = 4;
const REQUEST_TIMEOUT_MS = 10_000;
const ORG = 'soak-org';
const RIGHT = 'correct horse battery staple';

// ---------------------------------------------------------------------------------------------
// Options

function parseSeconds(argv: string[]): number {
  const i = argv.indexOf('--seconds');
  if (i === -1) return 180;
  const n = Number(argv[i + 1]);
  if (!Number.isInteger(n) || n < 20 || n > 3600) {
    process.stderr.write('soak: --seconds must be an integer from 20 to 3600\n');
    process.exit(2);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Processes

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves when something on 127.0.0.1:port answers `expect` to `send` (or accepts, when send is empty). */
async function waitFor(port: number, send: string, expect: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      let buf = '';
      const done = (v: boolean) => {
        sock.destroy();
        resolve(v);
      };
      sock.setTimeout(1000, () => done(false));
      sock.on('error', () => done(false));
      sock.on('connect', () => {
        if (send) sock.write(send);
      });
      sock.on('data', (d) => {
        buf += d.toString();
        if (buf.includes(expect)) done(true);
      });
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing answered on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

class RedisProcess {
  child?: ChildProcess;
  aof = true;
  constructor(
    readonly port: number,
    readonly dir: string,
  ) {}

  async start(aof: boolean): Promise<void> {
    // A run without AOF persisted nothing: what an older run left on disk is stale, and loading it
    // would bring back counters of a state the soak's accounting treats as lost.
    if (!this.aof) {
      rmSync(path.join(this.dir, 'appendonlydir'), { recursive: true, force: true });
      rmSync(path.join(this.dir, 'dump.rdb'), { force: true });
    }
    this.aof = aof;
    this.child = spawn(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--dir',
        this.dir,
        '--save',
        '',
        '--appendonly',
        aof ? 'yes' : 'no',
        '--appendfsync',
        'always',
        '--protected-mode',
        'yes',
      ],
      { stdio: 'ignore' },
    );
    await waitFor(this.port, 'PING\r\n', '+PONG', 10_000);
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill('SIGKILL');
    await exited(child);
    this.child = undefined;
  }
}

class Sidecar {
  child?: ChildProcess;
  constructor(
    readonly name: string,
    readonly port: number,
    readonly env: NodeJS.ProcessEnv,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.child = spawn(process.execPath, ['-r', 'ts-node/register/transpile-only', 'src/sidecar/main.ts'], {
      cwd: ROOT,
      env: { ...this.env, LOCKGATE_PORT: String(this.port) },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    await waitFor(this.port, 'GET /healthz HTTP/1.0\r\n\r\n', 'HTTP/1.1 200', 30_000);
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill(signal);
    await exited(child);
    this.child = undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Requests

type Answer = number | 'refused' | 'abandoned' | 'timeout';

interface Sample {
  user: string;
  sidecar: string;
  honest: boolean;
  start: number;
  end: number;
  answer: Answer;
  retryAfterMs?: number;
}

interface Client {
  token: string;
  samples: Sample[];
}

async function post(
  c: Client,
  base: string,
  route: string,
  body: unknown,
): Promise<{ answer: Answer; json?: unknown; retryAfterMs?: number }> {
  try {
    const res = await fetch(`${base}${route}`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${c.token}`,
        'x-zitadel-orgid': ORG,
        'content-type': 'application/json',
      },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const json: unknown = await res.json().catch(() => undefined);
    const ra = Number(res.headers.get('retry-after'));
    return { answer: res.status, json, retryAfterMs: Number.isFinite(ra) && ra > 0 ? ra * 1000 : undefined };
  } catch (error) {
    return { answer: classify(error) };
  }
}

async function get(c: Client, base: string, route: string): Promise<{ answer: Answer; json?: unknown }> {
  try {
    const res = await fetch(`${base}${route}`, {
      headers: { authorization: `Bearer ${c.token}`, 'x-zitadel-orgid': ORG },
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    return { answer: res.status, json: await res.json().catch(() => undefined) };
  } catch (error) {
    return { answer: classify(error) };
  }
}

function classify(error: unknown): Answer {
  const e = error as { name?: string; cause?: { code?: string } };
  if (e?.name === 'TimeoutError') return 'timeout';
  return e?.cause?.code === 'ECONNREFUSED' ? 'refused' : 'abandoned';
}

async function check(c: Client, s: Sidecar, user: string, password: string, hash: string, honest: boolean) {
  const start = Date.now();
  const r = await post(c, s.url, '/v1/checks/password', { userId: user, password, encodedHash: hash });
  const sample: Sample = {
    user,
    sidecar: s.name,
    honest,
    start,
    end: Date.now(),
    answer: r.answer,
    retryAfterMs: r.retryAfterMs,
  };
  c.samples.push(sample);
  return sample;
}

// ---------------------------------------------------------------------------------------------
// The run

interface Segment {
  user: string;
  start: number;
  end?: number;
  evaluated: number;
  abandoned: number;
  straddlers: number;
  counted?: number;
}

interface SidecarKill {
  name: string;
  at: number;
}

interface Outage {
  from: number;
  to: number;
}

async function main(): Promise<void> {
  const seconds = parseSeconds(process.argv.slice(2));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lockgate-soak-'));
  const token = randomBytes(24).toString('base64url');
  const redis = new RedisProcess(await freePort(), dir);
  const configFile = path.join(dir, 'lockgate.yaml');
  writeFileSync(
    configFile,
    [
      'instance:',
      `  maxPasswordAttempts: ${MAX_PASSWORD}`,
      `leaseMs: ${LEASE_MS}`,
      'store:',
      '  redis:',
      '    commandTimeoutMs: 1000',
      'log:',
      '  level: fatal',
      '',
    ].join('\n'),
  );
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    NODE_ENV: 'production',
    LOCKGATE_CONFIG: configFile,
    LOCKGATE_REDIS_URL: `redis://127.0.0.1:${redis.port}`,
    LOCKGATE_ADMIN_TOKEN: token,
    LOCKGATE_HOST: '127.0.0.1',
  };
  const sidecars = [new Sidecar('A', await freePort(), env), new Sidecar('B', await freePort(), env)];
  const cleanup = async () => {
    await Promise.allSettled([redis.kill(), ...sidecars.map((s) => s.kill())]);
    rmSync(dir, { recursive: true, force: true });
  };
  process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));

  try {
    log(
      `redis-server on ${redis.port}, sidecars on ${sidecars.map((s) => s.port).join(' and ')}, ${seconds} s`,
    );
    await redis.start(true);
    await Promise.all(sidecars.map((s) => s.start()));

    const cost = { memoryCost: 4096, timeCost: 2, parallelism: 1 };
    const rightHash = await argon2.hash(RIGHT, cost);
    const honest = Array.from({ length: HONEST_USERS }, (_, i) => `honest-${i}`);
    const attackers = Array.from({ length: ATTACKERS }, (_, i) => `attacker-${i}-\u{1F510}`);
    const client: Client = { token, samples: [] };

    const t0 = Date.now();
    const stopAt = t0 + seconds * 1000;
    const outages: Outage[] = [];
    const epochStarts: number[] = [t0];
    const sidecarKills: SidecarKill[] = [];
    const events: string[] = [];
    let faultsDone = false;

    // Faults: a fixed schedule across the run.
    const faults = (async () => {
      const at = (f: number) => sleep(t0 + f * seconds * 1000 - Date.now());
      const redisOutage = async (nextAof: boolean) => {
        const from = Date.now();
        const keeps = redis.aof && nextAof;
        await redis.kill();
        if (!keeps) epochStarts.push(from);
        await sleep(2000);
        const to = Date.now();
        outages.push({ from, to });
        await redis.start(nextAof);
        events.push(
          `${((from - t0) / 1000).toFixed(1)} s: redis-server SIGKILL (AOF ${redis.aof ? 'yes' : 'no'} next), ` +
            `down ${((to - from) / 1000).toFixed(1)} s, state ${keeps ? 'kept (AOF)' : 'lost'}`,
        );
      };
      const sidecarCrash = async (s: Sidecar) => {
        const from = Date.now();
        sidecarKills.push({ name: s.name, at: from });
        await s.kill('SIGKILL');
        await sleep(1500);
        await s.start();
        events.push(`${((from - t0) / 1000).toFixed(1)} s: sidecar ${s.name} SIGKILL, restarted`);
      };
      await at(0.12);
      await redisOutage(true); // AOF → AOF: state kept
      await at(0.27);
      await sidecarCrash(sidecars[0] as Sidecar);
      await at(0.4);
      await redisOutage(false); // AOF → no AOF: state lost
      await at(0.55);
      await sidecarCrash(sidecars[1] as Sidecar);
      await at(0.65);
      await redisOutage(true); // no AOF → AOF: state lost
      await at(0.78);
      await Promise.all([sidecarCrash(sidecars[0] as Sidecar), redisOutage(true)]); // both at once: kept
      faultsDone = true;
    })();

    // Honest users: right passwords, a few at a time, at either sidecar.
    const honestLoop = async (n: number) => {
      let i = n;
      while (Date.now() < stopAt) {
        const user = honest[i++ % honest.length] as string;
        const s = sidecars[i % 2] as Sidecar;
        const r = await check(client, s, user, RIGHT, rightHash, true);
        await sleep(r.answer === 429 ? (r.retryAfterMs ?? 200) : 15);
      }
    };

    // Attackers: lock cycles of wrong passwords, two at a time (one per sidecar).
    const segments: Segment[] = [];
    const attackerLoop = async (user: string, n: number) => {
      let cycleStart = Date.now();
      let k = n;
      while (Date.now() < stopAt) {
        const batch = await Promise.all(
          sidecars.map((s) => check(client, s, user, `wrong-${k++}`, rightHash, false)),
        );
        if (!batch.some((b) => b.answer === 423)) {
          const busy = batch.find((b) => b.answer === 429);
          await sleep(busy ? (busy.retryAfterMs ?? 200) : 20);
          continue;
        }
        // Locked: let abandoned leases end, read the counter, unlock.
        const lastAbandon = Math.max(
          0,
          ...client.samples
            .filter((s) => s.user === user && s.start >= cycleStart && s.answer === 'abandoned')
            .map((s) => s.end),
        );
        if (lastAbandon > 0) await sleep(lastAbandon + LEASE_MS + 500 - Date.now());
        const counted = await readCounter(client, sidecars, user);
        const end = Date.now();
        segments.push(
          ...segmentsOf(user, cycleStart, end, counted, client.samples, epochStarts, sidecarKills, outages),
        );
        await unlock(client, sidecars, user);
        cycleStart = Date.now();
      }
      return cycleStart;
    };

    const attackerRuns = attackers.map((u, i) => attackerLoop(u, i * 1_000_000));
    await Promise.all([
      faults,
      ...Array.from({ length: HONEST_CONCURRENCY }, (_, n) => honestLoop(n)),
      ...attackerRuns,
    ]);
    if (!faultsDone) throw new Error('the fault schedule did not finish');
    const loadEnd = Date.now();
    log(
      `load stopped after ${((loadEnd - t0) / 1000).toFixed(0)} s; waiting ${LEASE_MS + 1000} ms for leases`,
    );
    await sleep(LEASE_MS + 1000);

    // Final reconciliation of each attacker's open cycle.
    const cycleStarts = await Promise.all(attackerRuns);
    for (const [i, user] of attackers.entries()) {
      const counted = await readCounter(client, sidecars, user);
      segments.push(
        ...segmentsOf(
          user,
          cycleStarts[i] as number,
          Date.now(),
          counted,
          client.samples,
          epochStarts,
          sidecarKills,
          outages,
        ),
      );
    }

    // Honest users after the faults: never locked, never left busy.
    const honestSamples = client.samples.filter((s) => s.honest);
    let falseLocks = new Set(honestSamples.filter((s) => s.answer === 423).map((s) => s.user));
    let leftBusy = 0;
    for (const user of honest) {
      const state = await readState(client, sidecars, user);
      if (state.locked) falseLocks = new Set([...falseLocks, user]);
      const r = await check({ token, samples: [] }, sidecars[0] as Sidecar, user, RIGHT, rightHash, true);
      if (r.answer === 429) leftBusy++;
    }

    // Figures.
    const all = client.samples;
    const count = (p: (s: Sample) => boolean) => all.filter(p).length;
    const inOutage = (s: Sample) => outages.some((o) => s.start >= o.from && s.end <= o.to);
    const evaluatedWhileDown = count((s) => (s.answer === 200 || s.answer === 401) && inOutage(s));
    const closed = segments.filter((s) => s.counted !== undefined);
    const lost = closed.reduce((n, s) => n + Math.max(0, s.evaluated - (s.counted ?? 0)), 0);
    const doubled = closed.reduce(
      (n, s) => n + Math.max(0, (s.counted ?? 0) - s.evaluated - s.abandoned - s.straddlers),
      0,
    );
    const g1 = closed.filter((s) => s.evaluated > MAX_PASSWORD).length;
    const byAnswer = new Map<string, number>();
    for (const s of all) byAnswer.set(String(s.answer), (byAnswer.get(String(s.answer)) ?? 0) + 1);

    const out: Array<[string, string | number]> = [
      ['duration (s)', Math.round((loadEnd - t0) / 1000)],
      ['requests', all.length],
      [
        'answers',
        [...byAnswer]
          .sort()
          .map(([k, v]) => `${k}: ${v}`)
          .join(', '),
      ],
      ['503s', count((s) => s.answer === 503)],
      ['redis outages', outages.length],
      ['lock cycles (segments reconciled)', `${segments.filter((s) => s.end !== undefined).length}`],
      ['failures evaluated (attackers, 401)', closed.reduce((n, s) => n + s.evaluated, 0)],
      ['failures counted (attackers)', closed.reduce((n, s) => n + (s.counted ?? 0), 0)],
      ['abandoned requests (sidecar killed)', count((s) => s.answer === 'abandoned')],
      ['503s answered to attackers', count((s) => !s.honest && s.answer === 503)],
      ['INVARIANT credentials evaluated while Redis was down', evaluatedWhileDown],
      ['INVARIANT lost failures', lost],
      ['INVARIANT double-counted failures', doubled],
      ['INVARIANT false locks (honest users locked)', falseLocks.size],
      ['INVARIANT G1 violations (evaluations per lock cycle > max)', g1],
      ['INVARIANT honest users left busy after the faults', leftBusy],
    ];
    log('faults:');
    for (const e of events) log(`  ${e}`);
    const width = Math.max(...out.map(([k]) => k.length));
    for (const [k, v] of out) process.stdout.write(`${k.padEnd(width)}  ${v}\n`);
    const bad = [evaluatedWhileDown, lost, doubled, falseLocks.size, g1, leftBusy].some((n) => n > 0);
    if (bad) {
      const worst = closed
        .filter(
          (s) =>
            s.evaluated > MAX_PASSWORD ||
            s.evaluated > (s.counted ?? 0) ||
            (s.counted ?? 0) > s.evaluated + s.abandoned + s.straddlers,
        )
        .slice(0, 5);
      for (const s of worst) {
        process.stdout.write(
          `  e.g. ${s.user} [${s.start - t0}, ${(s.end ?? 0) - t0}] ms: evaluated ${s.evaluated}, counted ${s.counted}, ` +
            `abandoned ${s.abandoned}, straddlers ${s.straddlers}\n`,
        );
      }
    }
    process.stdout.write(
      bad ? 'soak: FAILED (an invariant is not zero)\n' : 'soak: ok (every invariant is zero)\n',
    );
    process.exitCode = bad ? 1 : 0;
  } finally {
    await cleanup();
  }
}

/** Splits one lock cycle [start, end] into its state epochs; only the last segment saw the counter. */
function segmentsOf(
  user: string,
  start: number,
  end: number,
  counted: number,
  samples: Sample[],
  epochStarts: number[],
  kills: SidecarKill[],
  outages: readonly Outage[],
): Segment[] {
  // A 503 leaves a reservation that its sidecar compensates (releases) in the background; a
  // sidecar killed within a lease of that 503 may not have done it yet: such a 503 may count.
  const orphaned = (s: Sample) =>
    s.answer === 503 && kills.some((k) => k.name === s.sidecar && s.end <= k.at && s.end > k.at - LEASE_MS);
  // A 503 answered because a settle's outcome was unknown (Redis went away mid-request) may be a
  // wrong password that was evaluated and is counted once the engine's repeated settle lands.
  const settleUnknown = (s: Sample) =>
    s.answer === 503 && outages.some((o) => s.start < o.to && s.end > o.from);
  const cuts = [start, ...epochStarts.filter((t) => t > start && t < end), end];
  const segs: Segment[] = [];
  for (let i = 0; i + 1 < cuts.length; i++) {
    const from = cuts[i] as number;
    const to = cuts[i + 1] as number;
    const mine = samples.filter((s) => s.user === user && s.end > from && s.end <= to);
    const inside = mine.filter((s) => s.start >= from);
    segs.push({
      user,
      start: from,
      end: to,
      evaluated: inside.filter((s) => s.answer === 401).length,
      abandoned: inside.filter(
        (s) => s.answer === 'abandoned' || s.answer === 'timeout' || orphaned(s) || settleUnknown(s),
      ).length,
      straddlers: mine.filter((s) => s.start < from && (s.answer === 401 || s.answer === 'abandoned')).length,
      // Only the segment that ends the cycle was read; earlier ones were wiped by a restart.
      counted: i + 2 === cuts.length ? counted : undefined,
    });
  }
  return segs;
}

async function readState(
  c: Client,
  sidecars: Sidecar[],
  user: string,
): Promise<{ locked: boolean; password: number }> {
  for (let attempt = 0; ; attempt++) {
    const s = sidecars[attempt % sidecars.length] as Sidecar;
    const r = await get(c, s.url, `/v1/users/${encodeURIComponent(user)}/lockout`);
    if (r.answer === 200) {
      const body = r.json as { state: string; failedAttempts: { password: string } };
      return { locked: body.state === 'USER_STATE_LOCKED', password: Number(body.failedAttempts.password) };
    }
    if (attempt > 200) throw new Error(`cannot read the state of ${user}: ${r.answer}`);
    await sleep(100);
  }
}

async function readCounter(c: Client, sidecars: Sidecar[], user: string): Promise<number> {
  return (await readState(c, sidecars, user)).password;
}

async function unlock(c: Client, sidecars: Sidecar[], user: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const s = sidecars[attempt % sidecars.length] as Sidecar;
    const r = await post(c, s.url, `/v2/users/${encodeURIComponent(user)}/unlock`, {});
    // 400 (code 9): not locked any more (a restart without AOF wiped the lock).
    if (r.answer === 200 || r.answer === 400) return;
    if (attempt > 200) throw new Error(`cannot unlock ${user}: ${r.answer}`);
    await sleep(100);
  }
}

function log(line: string): void {
  process.stderr.write(`soak: ${line}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`soak: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
