/**
 * The fault suite (issue 8, G5): randomized, seeded fault schedules over concurrent checks of many
 * users, through LockoutEngine + RedisStore on a client that reaches Redis (standalone, and the
 * 3-node cluster) only through fault proxies. Every user is either honest (only correct
 * credentials) or an attacker (only wrong ones, and some reservations abandoned as a crashed
 * process would). Every evaluate() call is recorded.
 *
 * After the faults stop and the leases pass, a clean client straight to Redis checks:
 *   (a) honest users are never locked, never answered "failure", and a fresh check succeeds;
 *   (b) no in-flight counter (`n:*`) and no reservation member remains, and honest (idle) users
 *       have no keys at all;
 *   (c) each user's counted failures == wrong credentials evaluated + reservations admitted and
 *       abandoned, exactly (a reserve or settle whose outcome was unknown is the engine's to
 *       compensate: it adds nothing);
 *   (d) no user had more wrong credentials evaluated than the limit (one lock cycle: no unlocks);
 *   and no check hangs (each answers or fails within CHECK_HANG_MS).
 * Waiting is done by time (past the lease) and by polling the invariants until a deadline, never
 * by looking into the engine.
 *
 * Replay: a failure prints fast-check's `{ seed, path }`; run with
 *   LOCKGATE_FAULT_SEED=<seed> LOCKGATE_FAULT_PATH=<path> npx jest test/faults/fault-suite.test.ts
 * (LOCKGATE_FAULT_RUNS=<n> runs more schedules; LOCKGATE_FAULT_KINDS=split,delay keeps only those faults).
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import type { Cluster, Redis } from 'ioredis';
import {
  LockoutEngine,
  RedisStore,
  zeroCounters,
  type Factor,
  type Limits,
  type LockoutEvent,
  type Subject,
} from '../../src';
import { createRedisClient } from '../../src/sidecar/store';
import { FaultProxy, startClusterProxies, type ClusterProxies } from '../helpers/fault-proxy';
import { createTestCluster, createTestRedis, testClusterNodes, testRedisUrl } from '../helpers/redis-clients';

// ---- parameters ---------------------------------------------------------------------------------

const SEED = Number(process.env.LOCKGATE_FAULT_SEED ?? 20_261_125);
const PATH = process.env.LOCKGATE_FAULT_PATH;
/** Schedules per topology (standalone, cluster). */
const RUNS = Number(process.env.LOCKGATE_FAULT_RUNS ?? 4);
/** Optional comma-separated fault kinds to keep (e.g. "split,delay"), to narrow a replay down. */
const KINDS = process.env.LOCKGATE_FAULT_KINDS?.split(',').map((k) => k.trim());
const MAX = 3;
const LIMITS: Limits = { maxPasswordAttempts: MAX, maxOtpAttempts: MAX };
const LEASE_MS = 1500;
const COMMAND_TIMEOUT_MS = 150;
/** Checks start within this window; faults start within it too. */
const WORK_MS = 1200;
/** Healthy time between two faults of one proxy (so compensation has room before its lease ends). */
const FAULT_GAP_MS = 300;
/** A check that has not answered after this long is a violation ("hung"). */
const CHECK_HANG_MS = 8000;
/** After heal: wait this long before the first look (leases passed, plus a command's timeout). */
const FIRST_LOOK_MS = LEASE_MS + COMMAND_TIMEOUT_MS + 250;
/** After heal: poll the invariants until this deadline (tombstones last a lease after their settle). */
const DEADLINE_MS = 3 * LEASE_MS + 2000;
const POLL_MS = 150;
const ORG = 'org-f';

// ---- scenarios ----------------------------------------------------------------------------------

type FaultKind =
  | { type: 'delay'; direction: 'up' | 'down' | 'both'; ms: number }
  | { type: 'blackHole' }
  | { type: 'dropReplies' }
  | { type: 'reset' }
  | { type: 'refuse' }
  | { type: 'split'; bytes: number };

interface Fault {
  at: number;
  node: number;
  durationMs: number;
  kind: FaultKind;
}

interface Op {
  at: number;
  /** How long evaluating the credential takes. */
  evalMs: number;
  /** Attackers only: reserve, then never settle (a crashed process). */
  abandon: boolean;
}

interface UserPlan {
  honest: boolean;
  factor: Factor;
  ops: Op[];
}

interface Scenario {
  users: UserPlan[];
  faults: Fault[];
}

const faultKindArb: fc.Arbitrary<FaultKind> = fc.oneof(
  fc.record({
    type: fc.constant('delay' as const),
    direction: fc.constantFrom('up' as const, 'down' as const, 'both' as const),
    ms: fc.integer({ min: 20, max: 300 }),
  }),
  fc.record({ type: fc.constant('blackHole' as const) }),
  fc.record({ type: fc.constant('dropReplies' as const) }),
  fc.record({ type: fc.constant('reset' as const) }),
  fc.record({ type: fc.constant('refuse' as const) }),
  fc.record({ type: fc.constant('split' as const), bytes: fc.integer({ min: 1, max: 16 }) }),
);

const faultArb: fc.Arbitrary<Fault> = fc.record({
  at: fc.integer({ min: 0, max: WORK_MS }),
  node: fc.nat({ max: 2 }),
  durationMs: fc.integer({ min: 50, max: 400 }),
  kind: faultKindArb,
});

/** An honest user only checks; an attacker abandons about one reservation in five. */
const opArb = (honest: boolean): fc.Arbitrary<Op> =>
  fc.record({
    at: fc.integer({ min: 0, max: WORK_MS }),
    evalMs: fc.integer({ min: 0, max: 40 }),
    abandon: honest ? fc.constant(false) : fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
  });

const userArb: fc.Arbitrary<UserPlan> = fc
  .record({ honest: fc.boolean(), factor: fc.constantFrom<Factor>('password', 'totp') })
  .chain(({ honest, factor }) =>
    fc.record({
      honest: fc.constant(honest),
      factor: fc.constant(factor),
      ops: fc.array(opArb(honest), { minLength: 1, maxLength: 6 }),
    }),
  );

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  users: fc.array(userArb, { minLength: 8, maxLength: 14 }),
  faults: fc.array(faultArb, { minLength: 2, maxLength: 10 }),
});

/** Per proxy, faults one after another with FAULT_GAP_MS of health between them, within WORK_MS. */
function normalizeFaults(faults: readonly Fault[], proxies: number): Fault[] {
  const out: Fault[] = [];
  for (let p = 0; p < proxies; p++) {
    let free = 0;
    const mine = faults.filter((f) => f.node % proxies === p).sort((x, y) => x.at - y.at);
    for (const f of mine) {
      const at = Math.max(f.at, free);
      if (at > WORK_MS) break;
      const durationMs = f.kind.type === 'reset' ? 0 : f.durationMs;
      out.push({ ...f, node: p, at, durationMs });
      free = at + durationMs + FAULT_GAP_MS;
    }
  }
  return out.sort((x, y) => x.at - y.at);
}

function applyFault(proxy: FaultProxy, kind: FaultKind, durationMs: number): void {
  switch (kind.type) {
    case 'delay':
      proxy.delay(kind.direction, kind.ms);
      return;
    case 'blackHole':
      proxy.blackHole();
      return;
    case 'dropReplies':
      proxy.dropReplies(durationMs);
      return;
    case 'reset':
      proxy.reset();
      return;
    case 'refuse':
      proxy.reset();
      proxy.refuse(true);
      return;
    case 'split':
      proxy.split(kind.bytes);
      return;
  }
}

function describeFault(f: Fault): string {
  const k = f.kind;
  const detail =
    k.type === 'delay' ? `(${k.direction},${k.ms}ms)` : k.type === 'split' ? `(${k.bytes}B)` : '';
  return `@${f.at}ms node${f.node} ${k.type}${detail}${f.durationMs ? ` for ${f.durationMs}ms` : ''}`;
}

// ---- records -------------------------------------------------------------------------------------

interface UserRecord {
  readonly id: string;
  readonly plan: UserPlan;
  readonly subject: Subject;
  /** Wrong credentials evaluated (attackers) / correct ones (honest). */
  evaluatedWrong: number;
  evaluatedCorrect: number;
  /** Reservations the engine answered `admitted` that the test abandoned. */
  abandonedAdmitted: number;
  /** What each operation got: an outcome, or the error's name. */
  answers: string[];
  hung: number;
}

function summary(r: UserRecord): string {
  return (
    `${r.id} ${r.plan.honest ? 'honest' : 'attacker'} ${r.plan.factor}: ops=${r.plan.ops.length} ` +
    `evaluatedWrong=${r.evaluatedWrong} evaluatedCorrect=${r.evaluatedCorrect} ` +
    `abandonedAdmitted=${r.abandonedAdmitted} answers=[${r.answers.join(',')}]`
  );
}

/** `a=2 b=1` */
function countBy(values: readonly string[]): string {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].map(([k, n]) => `${k}=${n}`).join(' ');
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Resolves to `value`, or to `hung` after `ms` (the operation keeps running). */
function withHang<T>(promise: Promise<T>, ms: number): Promise<T | 'hung'> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), ms)));
  return Promise.race([promise, hang]).finally(() => clearTimeout(timer));
}

// ---- one topology ------------------------------------------------------------------------------

interface Topology {
  readonly name: 'standalone' | 'cluster';
  readonly proxies: FaultProxy[];
  /** A new client through the proxies (the production client options of the sidecar). */
  connectFaulty(): Promise<Redis | Cluster>;
  /** A clean client straight to Redis. */
  readonly clean: Redis | Cluster;
  close(): Promise<void>;
}

function targetOf(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port) };
}

async function waitReady(client: Redis | Cluster): Promise<void> {
  const end = Date.now() + 10_000;
  while (client.status !== 'ready') {
    if (Date.now() > end) throw new Error(`faulty client not ready (status ${client.status})`);
    await sleep(10);
  }
}

function redisConfig(extra: { url?: string; cluster?: { nodes: Array<{ host: string; port: number }> } }) {
  return { ...extra, tls: false, prefix: 'lg', commandTimeoutMs: COMMAND_TIMEOUT_MS };
}

async function standaloneTopology(): Promise<Topology> {
  const proxy = await FaultProxy.start(targetOf(testRedisUrl()));
  const clean = await createTestRedis();
  return {
    name: 'standalone',
    proxies: [proxy],
    clean,
    async connectFaulty() {
      const client = createRedisClient(redisConfig({ url: proxy.url }), 'lockgate-faults');
      client.on('error', () => undefined);
      await waitReady(client);
      return client;
    },
    async close() {
      clean.disconnect();
      await proxy.close();
    },
  };
}

async function clusterTopology(): Promise<Topology> {
  const proxies: ClusterProxies = await startClusterProxies(testClusterNodes());
  const clean = await createTestCluster();
  return {
    name: 'cluster',
    proxies: proxies.proxies,
    clean,
    async connectFaulty() {
      const client = createRedisClient(redisConfig({ cluster: { nodes: proxies.nodes } }), 'lockgate-faults');
      // The sidecar's factory has no natMap option; the Cluster reads it when it maps CLUSTER
      // SLOTS and MOVED/ASK answers, which happens after this synchronous assignment.
      (client as Cluster).options.natMap = proxies.natMap;
      client.on('error', () => undefined);
      client.on('node error', () => undefined);
      await waitReady(client);
      return client;
    },
    async close() {
      clean.disconnect();
      await proxies.closeAll();
    },
  };
}

/** Every key under `prefix` on the server(s) behind `clean`. */
async function keysUnder(clean: Redis | Cluster, prefix: string): Promise<string[]> {
  const nodes: Redis[] = clean.isCluster ? (clean as Cluster).nodes('master') : [clean as Redis];
  const keys: string[] = [];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, batch] = await node.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
  }
  return keys;
}

async function deleteKeys(clean: Redis | Cluster, keys: readonly string[]): Promise<void> {
  await Promise.all(keys.map((k) => clean.del(k)));
}

// ---- one run -----------------------------------------------------------------------------------

async function runScenario(topology: Topology, scenario: Scenario): Promise<void> {
  const prefix = `lgf-${randomUUID().slice(0, 8)}`;
  const instanceId = `faults-${randomUUID()}`;
  const faults = normalizeFaults(
    scenario.faults.filter((f) => KINDS === undefined || KINDS.includes(f.kind.type)),
    topology.proxies.length,
  );
  const records: UserRecord[] = scenario.users.map((plan, i) => ({
    id: `${plan.honest ? 'h' : 'a'}${i}`,
    plan,
    subject: { instance: instanceId, org: ORG, user: `${plan.honest ? 'h' : 'a'}${i}` },
    evaluatedWrong: 0,
    evaluatedCorrect: 0,
    abandonedAdmitted: 0,
    answers: [],
    hung: 0,
  }));
  const events: LockoutEvent[] = [];

  const faulty = await topology.connectFaulty();
  const store = new RedisStore({ client: faulty, prefix, commandTimeoutMs: COMMAND_TIMEOUT_MS });
  const engine = new LockoutEngine({
    store,
    instanceId,
    leaseMs: LEASE_MS,
    defaults: LIMITS,
    settingsCacheTtlMs: 1000,
    onEvent: (e) => events.push(e),
  });
  const cleanStore = new RedisStore({ client: topology.clean, prefix });
  const cleanEngine = new LockoutEngine({
    store: cleanStore,
    instanceId,
    leaseMs: LEASE_MS,
    defaults: LIMITS,
  });
  const timers: NodeJS.Timeout[] = [];

  try {
    // -- the faults, each healed after its duration
    const faultsDone = Promise.all(
      faults.map(
        (f) =>
          new Promise<void>((resolve) => {
            const proxy = topology.proxies[f.node] as FaultProxy;
            timers.push(
              setTimeout(() => {
                applyFault(proxy, f.kind, f.durationMs);
                timers.push(
                  setTimeout(() => {
                    proxy.heal();
                    resolve();
                  }, f.durationMs),
                );
              }, f.at),
            );
          }),
      ),
    );

    // -- the checks
    const checks = records.flatMap((r) =>
      r.plan.ops.map(
        (op) =>
          new Promise<void>((resolve) => {
            timers.push(setTimeout(() => void runOp(engine, r, op).then(resolve), op.at));
          }),
      ),
    );
    await Promise.all(checks);
    await faultsDone;
    for (const proxy of topology.proxies) proxy.heal();
    const healedAt = Date.now();

    // -- faults stopped: let the leases pass, then poll the invariants until the deadline
    await sleep(FIRST_LOOK_MS);
    let violations = await inspect(topology.clean, cleanStore, prefix, records);
    while (violations.length > 0 && Date.now() - healedAt < DEADLINE_MS) {
      await sleep(POLL_MS);
      violations = await inspect(topology.clean, cleanStore, prefix, records);
    }
    // (a) never left busy: a fresh correct check of every honest user succeeds (after the key checks,
    // since it writes a tombstone).
    for (const r of records.filter((x) => x.plan.honest)) {
      const fresh = await cleanEngine.check(ORG, r.subject.user, r.plan.factor, () => true);
      if (fresh.outcome !== 'success') {
        violations.push(`(a) ${r.id}: a fresh correct check after the faults answered ${fresh.outcome}`);
      }
    }
    for (const r of records) {
      if (r.hung > 0)
        violations.push(`(e) ${r.id}: ${r.hung} operation(s) did not answer within ${CHECK_HANG_MS} ms`);
      if (r.plan.honest && r.answers.some((a) => a === 'failure' || a === 'locked')) {
        violations.push(`(a) ${r.id}: an honest check was answered failure/locked: [${r.answers.join(',')}]`);
      }
    }
    if (violations.length > 0) {
      const lines = [
        `${topology.name}: ${violations.length} invariant violation(s) (prefix ${prefix}, instance ${instanceId}):`,
        ...violations.map((v) => `  ${v}`),
        `faults (normalized): ${faults.map(describeFault).join('; ') || 'none'}`,
        'users:',
        ...records.map((r) => `  ${summary(r)}`),
        `engine events: ${countBy(events.map((e) => e.type)) || 'none'}`,
      ];
      throw new Error(lines.join('\n'));
    }
  } finally {
    timers.forEach(clearTimeout);
    for (const proxy of topology.proxies) proxy.heal();
    engine.close();
    cleanEngine.close();
    await store.close();
    await cleanStore.close();
    faulty.disconnect();
    await deleteKeys(topology.clean, await keysUnder(topology.clean, prefix)).catch(() => undefined);
  }
}

async function runOp(engine: LockoutEngine, r: UserRecord, op: Op): Promise<void> {
  const { org, user } = r.subject;
  const factor = r.plan.factor;
  let answer: string;
  try {
    if (op.abandon) {
      const res = await withHang(engine.reserve(org, user, factor), CHECK_HANG_MS);
      if (res === 'hung') answer = 'hung';
      else {
        answer = `reserve:${res.status}`;
        if (res.status === 'admitted') r.abandonedAdmitted += 1;
      }
    } else {
      const res = await withHang(
        engine.check(org, user, factor, async () => {
          if (op.evalMs > 0) await sleep(op.evalMs);
          if (r.plan.honest) r.evaluatedCorrect += 1;
          else r.evaluatedWrong += 1;
          return r.plan.honest;
        }),
        CHECK_HANG_MS,
      );
      answer = res === 'hung' ? 'hung' : res.outcome;
    }
  } catch (error) {
    answer = describeError(error);
  }
  if (answer === 'hung') r.hung += 1;
  r.answers.push(answer);
}

/** `Name(message; cause)` of an error, short, for the report. */
function describeError(error: unknown): string {
  if (!(error instanceof Error)) return 'error';
  const cause = error.cause instanceof Error ? `; ${error.cause.message}` : '';
  return `${error.name}(${error.message}${cause})`.slice(0, 140);
}

/** Invariants (b), (c), (d) and the lock part of (a), read through the clean client. */
async function inspect(
  clean: Redis | Cluster,
  cleanStore: RedisStore,
  prefix: string,
  records: readonly UserRecord[],
): Promise<string[]> {
  const violations: string[] = [];
  for (const r of records) {
    // Reading applies expired leases (every store operation does), as any later request would.
    const state = await cleanStore.getUser(r.subject, LIMITS);
    const expected = r.evaluatedWrong + r.abandonedAdmitted;
    const counted = state.failed[r.plan.factor];
    if (counted !== expected) {
      violations.push(
        `(c) ${r.id}: counted ${counted} ${r.plan.factor} failure(s), expected ${expected} ` +
          `(${r.evaluatedWrong} wrong evaluated + ${r.abandonedAdmitted} abandoned admitted)`,
      );
    }
    const others = { ...state.failed, [r.plan.factor]: 0 };
    if (JSON.stringify(others) !== JSON.stringify(zeroCounters())) {
      violations.push(
        `(c) ${r.id}: failures counted on a factor it never used: ${JSON.stringify(state.failed)}`,
      );
    }
    if (r.plan.honest && state.locked) violations.push(`(a) ${r.id}: honest user is locked`);
    if (r.evaluatedWrong > MAX) {
      violations.push(
        `(d) ${r.id}: ${r.evaluatedWrong} wrong credentials evaluated in one lock cycle, max ${MAX}`,
      );
    }
    // One hash per user: r:<factor>|<nonce> are reservations in flight (n:* only in the old layout).
    const [stateKey] = cleanStore.userKeys(r.subject);
    const fields = await clean.hgetall(stateKey);
    const inFlight = Object.keys(fields).filter((k) => k.startsWith('n:') || k.startsWith('r:'));
    if (inFlight.length > 0) {
      violations.push(`(b) ${r.id}: reservations in flight remain: ${inFlight.join(' ')}`);
    }
  }
  const keys = await keysUnder(clean, prefix);
  for (const r of records.filter((x) => x.plan.honest)) {
    const tag = `${prefix}:{${encodeURIComponent(r.subject.instance)}:${ORG}:${r.subject.user}}`;
    const mine = keys.filter((k) => k.startsWith(tag));
    if (mine.length > 0) violations.push(`(b) ${r.id}: idle honest user still has keys: ${mine.join(' ')}`);
  }
  return violations;
}

// ---- the tests ---------------------------------------------------------------------------------

/**
 * No shrinking (each run takes seconds of real time); on failure, one error with the command that
 * replays the failing schedule and what broke (fast-check's own report would print the whole
 * scenario, which the error lists in a readable form already).
 */
const params: fc.Parameters<[Scenario]> = {
  seed: SEED,
  numRuns: RUNS,
  endOnFailure: true,
  ...(PATH !== undefined ? { path: PATH } : {}),
  asyncReporter: async (run) => {
    if (!run.failed) return;
    const cause = run.errorInstance instanceof Error ? run.errorInstance.message : String(run.errorInstance);
    throw new Error(
      `fault schedule ${run.numRuns} of ${RUNS} failed (seed ${run.seed}, path "${run.counterexamplePath}"). ` +
        `Replay: LOCKGATE_FAULT_SEED=${run.seed} LOCKGATE_FAULT_PATH=${run.counterexamplePath} ` +
        `npx jest test/faults/fault-suite.test.ts\n${cause}`,
    );
  },
};

describe(`fault suite (fast-check seed ${SEED}, ${RUNS} schedules per topology)`, () => {
  // The control: the same kind of workload with no fault holds every invariant, so a violation
  // below is the faults' doing, not the harness's.
  it('control, standalone without faults: every invariant holds', async () => {
    const topology = await standaloneTopology();
    try {
      await fc.assert(
        fc.asyncProperty(scenarioArb, (scenario) => runScenario(topology, { ...scenario, faults: [] })),
        { ...params, numRuns: 1 },
      );
    } finally {
      await topology.close();
    }
  }, 30_000);

  for (const make of [standaloneTopology, clusterTopology]) {
    const name = make === standaloneTopology ? 'standalone' : 'cluster';
    it(`${name}: faults never lock, never leave a user busy, leave nothing behind, count exactly`, async () => {
      const topology = await make();
      try {
        await fc.assert(
          fc.asyncProperty(scenarioArb, (scenario) => runScenario(topology, scenario)),
          params,
        );
      } finally {
        await topology.close();
      }
    }, 60_000);
  }
});
