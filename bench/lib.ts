/**
 * Shared helpers of the benchmarks: a closed-loop load driver with latency percentiles, a seeded
 * random generator (the same workload for every approach), Redis `INFO commandstats` diffs, what
 * an ioredis client sent (requests = round trips, commands), process CPU time, plain-text tables.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type autocannon from 'autocannon';
import type { Redis } from 'ioredis';

// ---- load --------------------------------------------------------------------------------

export interface LoadOptions {
  /** Operations in flight at all times. */
  concurrency: number;
  /** How long new operations are started (ms); the ones in flight at the end are awaited. */
  durationMs: number;
  /** One operation; `seq` numbers the operations of this run from 0. */
  op: (seq: number) => Promise<unknown>;
}

/** One run of {@link runLoad}. */
export interface LoadRun {
  /** Operations completed (errors included). */
  readonly ops: number;
  /** Operations that threw. */
  readonly errors: number;
  /** The first error thrown, if any. */
  readonly firstError?: unknown;
  /** Wall time from the first start to the last completion (ms). */
  readonly elapsedMs: number;
  /** Latency of every operation (ms), in completion order. */
  readonly latencies: Float64Array;
}

/** Runs combined: throughput over their total time, percentiles over all their operations. */
export interface LoadResult {
  readonly ops: number;
  readonly errors: number;
  readonly firstError?: unknown;
  readonly elapsedMs: number;
  /** Operations per second. */
  readonly perSecond: number;
  /** Lowest and highest throughput of a single run (shows the noise of a shared machine). */
  readonly minPerSecond: number;
  readonly maxPerSecond: number;
  /** Latency percentiles and mean (ms). */
  readonly p50: number;
  readonly p99: number;
  readonly mean: number;
}

/**
 * A closed loop: `concurrency` workers, each starting its next operation as soon as its
 * previous one ended, until `durationMs` has passed. The run ends with nothing in flight, so
 * server-side counters read before and after it cover exactly its operations.
 */
export async function runLoad(options: LoadOptions): Promise<LoadRun> {
  const { concurrency, durationMs, op } = options;
  let latencies = new Float64Array(1 << 16);
  let ops = 0;
  let errors = 0;
  let firstError: unknown;
  let seq = 0;
  const start = performance.now();
  const end = start + durationMs;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const t0 = performance.now();
      try {
        await op(seq++);
      } catch (error) {
        if (errors++ === 0) firstError = error;
      }
      const t = performance.now() - t0;
      if (ops === latencies.length) {
        const bigger = new Float64Array(latencies.length * 2);
        bigger.set(latencies);
        latencies = bigger;
      }
      latencies[ops++] = t;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsedMs = performance.now() - start;
  return {
    ops,
    errors,
    ...(errors > 0 ? { firstError } : {}),
    elapsedMs,
    latencies: latencies.slice(0, ops),
  };
}

/** Combines runs of the same thing into one result. */
export function combineRuns(runs: readonly LoadRun[]): LoadResult {
  let ops = 0;
  let errors = 0;
  let elapsedMs = 0;
  let firstError: unknown;
  let minPerSecond = Infinity;
  let maxPerSecond = -Infinity;
  for (const r of runs) {
    ops += r.ops;
    if (errors === 0 && r.errors > 0) firstError = r.firstError;
    errors += r.errors;
    elapsedMs += r.elapsedMs;
    const perSecond = (r.ops * 1000) / r.elapsedMs;
    minPerSecond = Math.min(minPerSecond, perSecond);
    maxPerSecond = Math.max(maxPerSecond, perSecond);
  }
  const all = new Float64Array(ops);
  let at = 0;
  for (const r of runs) {
    all.set(r.latencies, at);
    at += r.latencies.length;
  }
  all.sort();
  let sum = 0;
  for (const v of all) sum += v;
  return {
    ops,
    errors,
    ...(errors > 0 ? { firstError } : {}),
    elapsedMs,
    perSecond: (ops * 1000) / elapsedMs,
    minPerSecond,
    maxPerSecond,
    p50: percentile(all, 0.5),
    p99: percentile(all, 0.99),
    mean: ops > 0 ? sum / ops : NaN,
  };
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[rank] as number;
}

// ---- workload ----------------------------------------------------------------------------

/** mulberry32: a small seeded generator, so every approach sees the same sequence. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * autocannon requests of the sidecar's attempts API: reserve (`POST /v1/attempts`, a new user
 * each time, numbered by `seq`), then settle the attempt its answer names on the same connection,
 * 3 in 4 as a success and 1 in 4 as a failure. A reserve that answered no attempt starts over.
 */
export function attemptPairRequests(
  headers: Record<string, string>,
  seq: () => number,
): autocannon.Request[] {
  type Context = { attemptId?: string; outcome?: 'success' | 'failure' };
  const authorization = headers.authorization;
  return [
    {
      method: 'POST',
      path: '/v1/attempts',
      headers,
      setupRequest: (req, context) => {
        const n = seq();
        (context as Context).outcome = n % 4 === 3 ? 'failure' : 'success';
        return {
          ...req,
          body: JSON.stringify({ userId: `bench-attempt-${process.pid}-${n}`, factor: 'password' }),
        };
      },
      onResponse: (status, text, context) => {
        (context as Context).attemptId = undefined;
        if (status !== 201) return;
        try {
          (context as Context).attemptId = (JSON.parse(text) as { attemptId?: string }).attemptId;
        } catch {
          // counted as an unexpected answer
        }
      },
    },
    {
      method: 'POST',
      headers: authorization === undefined ? {} : { authorization },
      setupRequest: (req, context) => {
        const { attemptId, outcome } = context as Context;
        // no attempt (the reserve failed): start over with a new reserve
        if (!attemptId) return undefined as unknown as autocannon.Request;
        return { ...req, path: `/v1/attempts/${encodeURIComponent(attemptId)}/${outcome ?? 'success'}` };
      },
    },
  ];
}

// ---- Redis -------------------------------------------------------------------------------

/** Calls per command name (lower case), from `INFO commandstats`. */
export type CommandStats = Map<string, { calls: number; failed: number; usec: number }>;

export async function commandStats(admin: Redis): Promise<CommandStats> {
  const text = await admin.info('commandstats');
  const stats: CommandStats = new Map();
  for (const line of text.split(/\r?\n/)) {
    const m = /^cmdstat_([^:]+):(.*)$/.exec(line);
    if (!m) continue;
    const fields = Object.fromEntries(
      (m[2] ?? '').split(',').map((kv) => {
        const eq = kv.indexOf('=');
        return [kv.slice(0, eq), Number(kv.slice(eq + 1))];
      }),
    );
    stats.set((m[1] ?? '').toLowerCase(), {
      calls: fields.calls ?? 0,
      failed: fields.failed_calls ?? 0,
      usec: fields.usec ?? 0,
    });
  }
  return stats;
}

/** after − before, per command, without the `info` calls that read the stats. */
export function diffStats(before: CommandStats, after: CommandStats): CommandStats {
  const diff: CommandStats = new Map();
  for (const [name, a] of after) {
    if (name === 'info') continue;
    const b = before.get(name) ?? { calls: 0, failed: 0, usec: 0 };
    const calls = a.calls - b.calls;
    const failed = a.failed - b.failed;
    if (calls !== 0 || failed !== 0) diff.set(name, { calls, failed, usec: a.usec - b.usec });
  }
  return diff;
}

/** a + b, per command. */
export function addStats(a: CommandStats, b: CommandStats): CommandStats {
  const sum: CommandStats = new Map(a);
  for (const [name, s] of b) {
    const t = sum.get(name) ?? { calls: 0, failed: 0, usec: 0 };
    sum.set(name, { calls: t.calls + s.calls, failed: t.failed + s.failed, usec: t.usec + s.usec });
  }
  return sum;
}

export function totalCalls(stats: CommandStats): number {
  let n = 0;
  for (const { calls } of stats.values()) n += calls;
  return n;
}

export function usecOf(stats: CommandStats, ...names: string[]): number {
  let n = 0;
  for (const name of names) n += stats.get(name)?.usec ?? 0;
  return n;
}

export function callsOf(stats: CommandStats, ...names: string[]): number {
  let n = 0;
  for (const name of names) n += stats.get(name)?.calls ?? 0;
  return n;
}

/** "evalsha 2.00 (3.1 us), hmget 0.01 (…)" — calls per operation and usec per call, most frequent first. */
export function describeStats(stats: CommandStats, ops: number): string {
  return [...stats.entries()]
    .sort((x, y) => y[1].calls - x[1].calls)
    .map(
      ([name, s]) =>
        `${name} ${fixed(s.calls / ops, 2)} (${fixed(s.usec / s.calls, 2)} us)` +
        (s.failed ? ` (${s.failed} failed)` : ''),
    )
    .join(', ');
}

/** What one ioredis client sent: see {@link instrumentClient}. */
export interface ClientTally {
  /** Requests written to the socket: one per command, one per pipeline or MULTI…EXEC block. */
  writes: number;
  /** Top-level commands sent (MULTI, the queued commands and EXEC each count), by name. */
  readonly commands: Map<string, number>;
}

/**
 * Counts what an ioredis client sends. ioredis writes a lone command with one socket write and a
 * whole pipeline or MULTI…EXEC block with one write, so `writes` is the number of network round
 * trips the callers waited for. Commands run inside Lua scripts are not seen here (they are in
 * INFO commandstats).
 */
export function instrumentClient(client: Redis): ClientTally {
  const tally: ClientTally = { writes: 0, commands: new Map() };
  const stream = (client as unknown as { stream: { write: (...args: unknown[]) => boolean } }).stream;
  const write = stream.write;
  stream.write = function (this: unknown, ...args: unknown[]): boolean {
    tally.writes++;
    return write.apply(this, args);
  };
  type Send = (command: { name: string }, ...rest: unknown[]) => unknown;
  const target = client as unknown as { sendCommand: Send };
  const send = target.sendCommand;
  target.sendCommand = function (this: unknown, command, ...rest) {
    const result = send.call(this, command, ...rest);
    // read after sending: ioredis renames EVALSHA to EVAL when it writes a script the first time
    tally.commands.set(command.name, (tally.commands.get(command.name) ?? 0) + 1);
    return result;
  };
  return tally;
}

/** A copy of the counts, to diff later. */
export function snapshotTally(tally: ClientTally): { writes: number; commands: Map<string, number> } {
  return { writes: tally.writes, commands: new Map(tally.commands) };
}

export function diffTally(
  before: { writes: number; commands: Map<string, number> },
  after: ClientTally,
): { writes: number; commands: Map<string, number> } {
  const commands = new Map<string, number>();
  for (const [name, n] of after.commands) {
    const d = n - (before.commands.get(name) ?? 0);
    if (d !== 0) commands.set(name, d);
  }
  return { writes: after.writes - before.writes, commands };
}

// ---- CPU ---------------------------------------------------------------------------------

/** CPU time (ms) used so far by another process (Linux /proc; NaN elsewhere). */
export function processCpuMs(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after the ")" that ends the command name: state is field 3, utime 14, stime 15
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

/** CPU time (ms) used so far by this process. */
export function ownCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

const CLOCK_TICKS = (() => {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

// ---- server processes --------------------------------------------------------------------

/**
 * A benchmark server forked by the caller (an IPC channel, told `{ type: 'stop' }` to stop):
 * resolves with its first message (where it listens) and a stop that asks it to close, then
 * kills it after 5 s; rejects when it exits or fails before that message.
 */
export function serverStarted<M>(
  label: string,
  child: ChildProcess,
): Promise<{ readonly message: M; stop(): Promise<void> }> {
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    if (child.connected) child.send({ type: 'stop' });
    else child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null, signal: string | null) =>
      reject(new Error(`${label} server exited during start (${signal ?? `code ${String(code)}`})`));
    child.once('exit', onExit);
    child.once('error', reject);
    child.once('message', (message: M) => {
      child.off('exit', onExit);
      child.off('error', reject);
      resolve({ message, stop });
    });
  });
}

// ---- settings ----------------------------------------------------------------------------

/** A positive integer from the environment (`fallback` when unset or empty). */
export function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${raw}`);
  return n;
}

// ---- output ------------------------------------------------------------------------------

export function fixed(n: number, digits: number): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '-';
}

export function ratio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}x` : '-';
}

export function grouped(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-';
}

/** A plain-text table: first row is the header; numeric-looking cells are right-aligned. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  const numeric = /^[-+]?[\d,.]+(x|%)?$|^-$/;
  const line = (row: string[]) =>
    row
      .map((cell, i) =>
        i > 0 && numeric.test(cell) ? cell.padStart(widths[i] ?? 0) : cell.padEnd(widths[i] ?? 0),
      )
      .join('  ')
      .trimEnd();
  const [head, ...body] = rows;
  if (!head) return '';
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

// ---- rounds and goals --------------------------------------------------------------------

export function median(values: readonly number[]): number {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Median and min–max of per-round values. */
export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

export function spread(values: readonly number[]): Spread {
  const finite = values.filter((v) => Number.isFinite(v));
  return {
    median: median(finite),
    min: finite.length ? Math.min(...finite) : NaN,
    max: finite.length ? Math.max(...finite) : NaN,
  };
}

/** "0.95x (0.90–1.01)": a ratio's median and min–max over the rounds. */
export function spreadX(s: Spread, digits = 2): string {
  if (!Number.isFinite(s.median)) return '-';
  return `${s.median.toFixed(digits)}x (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})`;
}

/** One goal of the benchmarks (issue 16), with what a run measured. */
export interface Goal {
  readonly area: string;
  /** The goal, in words ("proxy CPU/request ≤ 1.00x http-proxy's"). */
  readonly goal: string;
  /** The measured figure as text (median, min–max over the rounds). */
  readonly measured: string;
  /** Met (judged on the median); undefined: informative only, or not measured. */
  readonly met: boolean | undefined;
}

const GOALS: Goal[] = [];

/** Records a ratio goal: `ratios` per round, met when the median is `cmp` `target`. */
export function recordRatioGoal(
  area: string,
  goal: string,
  ratios: readonly number[],
  cmp: '>=' | '<=',
  target: number,
): Goal {
  const s = spread(ratios);
  const met = Number.isFinite(s.median)
    ? cmp === '>='
      ? s.median >= target
      : s.median <= target
    : undefined;
  const g: Goal = { area, goal, measured: spreadX(s), met };
  GOALS.push(g);
  return g;
}

/** Records a goal measured some other way (or an informative figure: met undefined). */
export function recordGoal(goal: Goal): Goal {
  GOALS.push(goal);
  return goal;
}

/** The goals recorded so far, as a table ('' if none). */
export function goalsTable(goals: readonly Goal[] = GOALS): string {
  if (goals.length === 0) return '';
  return table([
    ['area', 'goal', 'measured: median (min–max of rounds)', 'met'],
    ...goals.map((g) => [
      g.area,
      g.goal,
      g.measured,
      g.met === undefined ? '(info)' : g.met ? 'met' : 'NOT met',
    ]),
  ]);
}

export function recordedGoals(): readonly Goal[] {
  return GOALS;
}
