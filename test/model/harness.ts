/**
 * Model-based test of the LockoutStore port (issue 8): random command sequences (fast-check
 * `fc.commands`) run against the reference model and a real store, and every answer the store
 * gives must be the model's.
 *
 * Time. The memory store takes an injected clock: the test moves it exactly as the model's
 * clock, so every time-dependent answer (expiresAt, lockedAt, retryAfterMs) is compared exactly.
 * Redis takes its time from the server (TIME), which a test cannot set. There the test moves
 * time by real, bounded sleeps and splits the run into *epochs*:
 *   - within an epoch no lease or tombstone may end: the model's partial advance (+70 ms) is a
 *     real 70 ms sleep, and before every command the harness checks that the epoch is younger
 *     than leaseMs − GUARD_MS; if not, it inserts a full advance (in model and store alike);
 *   - a full advance moves the model by leaseMs + 50 ms and sleeps until every lease and
 *     tombstone the store could hold has ended (leaseMs + 30 ms after the last operation).
 * So lease expiry happens at the same points of the sequence in model and store, and the
 * answers that depend on the exact instant are compared with tolerance: a new lease's expiresAt
 * must lie in [before, after] + leaseMs of the call, a busy retryAfterMs in the range given by
 * the same factor's earliest lease end (as the store reported it) against [before, after], and
 * lockedAt must be a time (exact only on memory).
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import type { LockoutStore } from '../../src/core/store';
import type { Factor, Limits, Subject } from '../../src/core/subjects';
import { clampRetry, ReferenceModel } from './reference-model';

/** Users of the one org the model drives: ASCII, a BMP letter above the surrogates, an id outside the BMP. */
export const USERS = ['alice', 'zoë', '\uFF3Aed', '\u{1F600}bob'] as const;
const MODEL_FACTORS: readonly Factor[] = ['password', 'totp', 'otp_sms'];
const STEP_KEYS = ['totp:k1', 'totp:k2'] as const;
const PARTIAL_MS = 70;
const FULL_EXTRA_MS = 50;
/** Real mode: the epoch ends (a full advance is inserted) this long before its first lease could. */
const GUARD_MS = 200;
/** Real mode: slack for the gap between the local clock read and Redis TIME (same host). */
const EPS_MS = 5;
const START = 1_700_000_000_000;

export interface StoreUnderTest {
  readonly store: LockoutStore;
  /** 'exact': the store's clock is `setNow`; 'real': the store reads its own clock (Redis). */
  readonly mode: 'exact' | 'real';
  setNow?(now: number): void;
}

export class Sut {
  readonly org = 'org-model';
  readonly instance = `model-${randomUUID()}`;
  /** Real mode: every lease's expiresAt as the store reported it, by user and id. */
  readonly expiry = new Map<string, number>();
  private epochStart = Date.now();
  private lastOp = Date.now();
  /** How many full advances the harness inserted itself (real mode). */
  inserted = 0;

  constructor(
    readonly target: StoreUnderTest,
    readonly leaseMs: number,
  ) {}

  get store(): LockoutStore {
    return this.target.store;
  }

  subject(user: string): Subject {
    return { instance: this.instance, org: this.org, user };
  }

  /** Runs one store call, answering its value and the time window it ran in. */
  async call<T>(
    m: ReferenceModel,
    op: () => Promise<T>,
  ): Promise<{ value: T; before: number; after: number }> {
    if (this.target.mode === 'exact') {
      const value = await op();
      return { value, before: m.now, after: m.now };
    }
    const before = Date.now() - EPS_MS;
    const value = await op();
    const after = Date.now() + EPS_MS;
    this.lastOp = after;
    return { value, before, after };
  }

  /** Before each command (real mode): end the epoch before any lease or tombstone of it can end. */
  async guard(m: ReferenceModel): Promise<void> {
    if (this.target.mode === 'real' && Date.now() - this.epochStart > this.leaseMs - GUARD_MS) {
      this.inserted++;
      await this.fullAdvance(m);
    }
  }

  async partialAdvance(m: ReferenceModel): Promise<void> {
    m.now += PARTIAL_MS;
    if (this.target.mode === 'exact') this.target.setNow?.(m.now);
    else await sleep(PARTIAL_MS);
  }

  async fullAdvance(m: ReferenceModel): Promise<void> {
    m.now += this.leaseMs + FULL_EXTRA_MS;
    if (this.target.mode === 'exact') {
      this.target.setNow?.(m.now);
      return;
    }
    const until = this.lastOp + this.leaseMs + 30;
    while (Date.now() < until) await sleep(until - Date.now());
    this.epochStart = Date.now();
  }

  /** lockedAt: exact on memory; a time on Redis. */
  expectLockedAt(op: string, actual: number | undefined, expected: number | undefined): void {
    op = `${op}: lockedAt`;
    if (expected === undefined || this.target.mode === 'exact') {
      expect({ op, lockedAt: actual }).toEqual({ op, lockedAt: expected });
      return;
    }
    const isTime = typeof actual === 'number' && Number.isFinite(actual) && actual > 0;
    expect({ op, lockedAt: actual, isTime }).toEqual({ op, lockedAt: actual, isTime: true });
  }
}

type Cmd = fc.AsyncCommand<ReferenceModel, Sut>;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));
const key = (user: string, id: string) => `${user}\u0000${id}`;

class Reserve implements Cmd {
  private desc = '';
  constructor(
    readonly user: string,
    readonly factor: Factor,
    readonly repeat: number | null,
  ) {}
  check = () => true;
  async run(m: ReferenceModel, r: Sut): Promise<void> {
    await r.guard(m);
    const known = m.user(this.user).ids;
    const pick = this.repeat === null || known.length === 0 ? undefined : known[this.repeat % known.length];
    const id = pick?.id ?? m.freshId();
    const factor = pick?.factor ?? this.factor;
    this.desc = `reserve(${this.user}, ${factor}, ${id}${pick ? ' again' : ''})`;
    const hadLease = m.user(this.user).leases.has(id);
    const { value, before, after } = await r.call(m, () =>
      r.store.reserve(r.subject(this.user), factor, m.limits, r.leaseMs, id),
    );
    const want = m.reserve(this.user, factor, id);
    expect({ op: this.desc, status: value.status }).toEqual({ op: this.desc, status: want.status });
    if (value.status === 'admitted' && want.status === 'admitted') {
      const recorded = r.expiry.get(key(this.user, id));
      const op = `${this.desc}: expiresAt`;
      if (hadLease && recorded !== undefined) {
        expect({ op, expiresAt: value.expiresAt }).toEqual({ op, expiresAt: recorded });
      } else if (r.target.mode === 'exact') {
        expect({ op, expiresAt: value.expiresAt }).toEqual({ op, expiresAt: want.expiresAt });
      } else {
        const lo = before + r.leaseMs;
        const hi = after + r.leaseMs;
        const inRange = value.expiresAt >= lo && value.expiresAt <= hi;
        expect({ op, expiresAt: value.expiresAt, inRange }).toEqual({
          op,
          expiresAt: value.expiresAt,
          inRange: true,
        });
      }
      r.expiry.set(key(this.user, id), value.expiresAt);
    } else if (value.status === 'locked' && want.status === 'locked') {
      r.expectLockedAt(this.desc, value.lockedAt, want.lockedAt);
    } else if (value.status === 'busy' && want.status === 'busy') {
      const ends = m
        .liveLeases(this.user)
        .filter(([, l]) => l.factor === factor)
        .map(([leaseId, l]) => r.expiry.get(key(this.user, leaseId)) ?? l.expiresAt);
      const earliest = Math.min(...ends);
      const lo = clampRetry(earliest - after);
      const hi = clampRetry(earliest - before);
      const msg = `${this.desc}: retryAfterMs ${value.retryAfterMs} in [${lo}, ${hi}]`;
      expect({ msg, ok: value.retryAfterMs >= lo && value.retryAfterMs <= hi }).toEqual({ msg, ok: true });
    }
  }
  toString = () =>
    this.repeat === null
      ? `reserve(${this.user}, ${this.factor}, new id)`
      : `reserve(${this.user}, known id #${this.repeat} else new ${this.factor} id)`;
}

class Settle implements Cmd {
  private desc = '';
  constructor(
    readonly user: string,
    readonly factor: Factor,
    readonly pick: number | null,
    readonly outcome: 'success' | 'failure' | 'release',
    /** Asks for a tombstone (the engine compensating a reserve whose outcome it could not learn). */
    readonly tombstone = false,
  ) {}
  check = () => true;
  async run(m: ReferenceModel, r: Sut): Promise<void> {
    await r.guard(m);
    const known = m.user(this.user).ids;
    const picked = this.pick === null || known.length === 0 ? undefined : known[this.pick % known.length];
    const id = picked?.id ?? m.freshId();
    const factor = picked?.factor ?? this.factor;
    const t = this.tombstone ? ', tombstone' : '';
    this.desc = `settle(${this.user}, ${factor}, ${id}${picked ? '' : ' unknown'}, ${this.outcome}${t})`;
    const { value } = await r.call(m, () =>
      r.store.settle(r.subject(this.user), factor, id, this.outcome, m.limits, r.leaseMs, this.tombstone),
    );
    const want = m.settle(this.user, factor, id, this.outcome, this.tombstone);
    expect({ op: this.desc, ...value }).toEqual({ op: this.desc, ...want });
  }
  toString = () =>
    (this.pick === null
      ? `settle(${this.user}, ${this.factor}, unknown id, ${this.outcome}`
      : `settle(${this.user}, known id #${this.pick} else unknown ${this.factor} id, ${this.outcome}`) +
    (this.tombstone ? ', tombstone)' : ')');
}

class Advance implements Cmd {
  constructor(readonly full: boolean) {}
  check = () => true;
  async run(m: ReferenceModel, r: Sut): Promise<void> {
    if (this.full) await r.fullAdvance(m);
    else {
      await r.guard(m);
      await r.partialAdvance(m);
    }
  }
  toString = () => (this.full ? 'advance(past every lease)' : `advance(${PARTIAL_MS} ms)`);
}

class GetUser implements Cmd {
  constructor(readonly user: string) {}
  check = () => true;
  async run(m: ReferenceModel, r: Sut): Promise<void> {
    await r.guard(m);
    const { value } = await r.call(m, () => r.store.getUser(r.subject(this.user), m.limits));
    const want = m.getUser(this.user);
    const op = this.toString();
    expect({ op, locked: value.locked, failed: value.failed }).toEqual({
      op,
      locked: want.locked,
      failed: want.failed,
    });
    r.expectLockedAt(op, value.lockedAt, want.lockedAt);
  }
  toString = () => `getUser(${this.user})`;
}

class Lock implements Cmd {
  constructor(readonly user: string) {}
  check = () => true;
  async run(m: ReferenceModel, r: Sut): Promise<void> {
    await r.guard(m);
    const { value } = await r.call(m, () => r.store.lock(r.subject(this.user), m.limits));
    const want = m.lock(this.user);
    const op = this.toString();
    expect({ op, changed: value.changed }).toEqual({ op, changed: want.changed });
    r.expectLockedAt(op, value.lockedAt, want.lockedAt);
  }
  toString = () => `lock(${this.user})`;
}

class Unlock implements Cmd {
  constructor(readonly user: string) {}
  check = () => true;
  async run(m: ReferenceModel, r: Sut): Promise<void> {
    await r.guard(m);
    const { value } = await r.call(m, () => r.store.unlock(r.subject(this.user), m.limits, r.leaseMs));
    const want = m.unlock(this.user);
    expect({ op: this.toString(), ...value }).toEqual({ op: this.toString(), ...want });
  }
  toString = () => `unlock(${this.user})`;
}

class ResetFactor implements Cmd {
  constructor(
    readonly user: string,
    readonly factor: Factor,
  ) {}
  check = () => true;
  async run(m: ReferenceModel, r: Sut): Promise<void> {
    await r.guard(m);
    await r.call(m, () => r.store.resetFactor(r.subject(this.user), this.factor, m.limits, r.leaseMs));
    m.resetFactor(this.user, this.factor);
  }
  toString = () => `resetFactor(${this.user}, ${this.factor})`;
}

class SetLimits implements Cmd {
  constructor(readonly limits: Limits) {}
  check = () => true;
  async run(m: ReferenceModel): Promise<void> {
    m.limits = this.limits;
  }
  toString = () => `limits(password ${this.limits.maxPasswordAttempts}, otp ${this.limits.maxOtpAttempts})`;
}

class ListLocked implements Cmd {
  constructor(readonly pageSize: number) {}
  check = () => true;
  async run(m: ReferenceModel, r: Sut): Promise<void> {
    await r.guard(m);
    const got: Array<{ userId: string; lockedAt: number }> = [];
    let cursor: string | undefined;
    for (let pages = 0; pages <= USERS.length + 1; pages++) {
      const { value } = await r.call(m, () =>
        r.store.listLocked(r.instance, r.org, m.limits, this.pageSize, cursor),
      );
      expect(value.users.length).toBeLessThanOrEqual(this.pageSize);
      got.push(...value.users);
      if (value.nextCursor === undefined) break;
      cursor = value.nextCursor;
    }
    const op = this.toString();
    // A store may leave out a user the model marks optional (locked only by a lease reserved under
    // a higher limit) when it does not track such leases (RedisStore); MemoryStore lists them all.
    const gotIds = new Set(got.map((u) => u.userId));
    const want = m
      .listLocked()
      .filter((u) => !(u.optional && r.store.kind === 'redis' && !gotIds.has(u.userId)));
    expect({ op, users: got.map((u) => u.userId) }).toEqual({ op, users: want.map((u) => u.userId) });
    got.forEach((u, i) => r.expectLockedAt(`${op} ${u.userId}`, u.lockedAt, want[i]?.lockedAt));
  }
  toString = () => `listLocked(pages of ${this.pageSize})`;
}

class UseStep implements Cmd {
  constructor(
    readonly user: string,
    readonly stepKey: string,
    readonly step: number,
  ) {}
  check = () => true;
  async run(m: ReferenceModel, r: Sut): Promise<void> {
    await r.guard(m);
    const { value } = await r.call(m, () =>
      r.store.useStep(r.subject(this.user), this.stepKey, this.step, 3_600_000),
    );
    const op = this.toString();
    expect({ op, fresh: value }).toEqual({ op, fresh: m.useStep(this.user, this.stepKey, this.step) });
  }
  toString = () => `useStep(${this.user}, ${this.stepKey}, ${this.step})`;
}

// Most commands go to the two users whose order differs between UTF-16 and UTF-8, so that
// several leases of one user and several locked users meet within one short sequence.
const user = fc.oneof(
  { weight: 3, arbitrary: fc.constant<string>(USERS[3]) },
  { weight: 3, arbitrary: fc.constant<string>(USERS[2]) },
  { weight: 1, arbitrary: fc.constantFrom<string>(USERS[0], USERS[1]) },
);
const factor = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom<Factor>('password', 'totp') },
  { weight: 1, arbitrary: fc.constantFrom(...MODEL_FACTORS) },
);
// Low limits (1 most often) make busy answers, locks and lowered-limit cases frequent.
const limit = fc.oneof(
  { weight: 2, arbitrary: fc.constant(1) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 3 }) },
);

/** The command mix: reserve and settle weigh most; every command of the brief is in it. */
export function commandArbitraries(): Array<fc.Arbitrary<Cmd>> {
  const reserveNew = fc.tuple(user, factor).map(([u, f]) => new Reserve(u, f, null));
  const reserveAgain = fc.tuple(user, factor, fc.nat()).map(([u, f, n]) => new Reserve(u, f, n));
  const settleKnown = fc
    .tuple(
      user,
      factor,
      fc.nat(),
      fc.constantFrom('success', 'failure', 'release') as fc.Arbitrary<'success' | 'failure' | 'release'>,
      fc.boolean(),
    )
    .map(([u, f, n, o, t]) => new Settle(u, f, n, o, t));
  const settleUnknown = fc
    .tuple(
      user,
      factor,
      fc.constantFrom('success', 'failure', 'release') as fc.Arbitrary<'success' | 'failure' | 'release'>,
    )
    .map(([u, f, o]) => new Settle(u, f, null, o));
  return [
    reserveNew,
    reserveNew,
    reserveNew,
    reserveAgain,
    reserveAgain,
    settleKnown,
    settleKnown,
    settleKnown,
    settleUnknown,
    fc.constant(new Advance(false)),
    fc.constant(new Advance(false)),
    fc.constant(new Advance(true)),
    user.map((u) => new GetUser(u)),
    user.map((u) => new Lock(u)),
    user.map((u) => new Lock(u)),
    user.map((u) => new Unlock(u)),
    fc.tuple(user, fc.constantFrom<Factor>('password', 'totp')).map(([u, f]) => new ResetFactor(u, f)),
    fc.record({ maxPasswordAttempts: limit, maxOtpAttempts: limit }).map((l) => new SetLimits(l)),
    fc.constantFrom(1, 2, 10).map((n) => new ListLocked(n)),
    fc
      .tuple(user, fc.constantFrom(...STEP_KEYS), fc.integer({ min: 0, max: 4 }))
      .map(([u, k, s]) => new UseStep(u, k, s)),
  ];
}

export interface ModelRunOptions {
  /** Makes the store for one run (a new MemoryStore; or the shared RedisStore, isolated by a new instance id). */
  makeStore(): Promise<StoreUnderTest>;
  leaseMs: number;
  numRuns: number;
  maxCommands: number;
  seed: number;
  /** Stop (and report what was found so far, shrunk as far as it got) after this long. */
  timeLimitMs: number;
}

/** Runs the model-based property; throws fast-check's report (seed, path, shrunk counterexample) on failure. */
export async function checkAgainstModel(
  options: ModelRunOptions,
): Promise<{ inserted: number; runs: number }> {
  let inserted = 0;
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.commands(commandArbitraries(), { maxCommands: options.maxCommands, size: 'max' }),
      async (cmds) => {
        runs++;
        const target = await options.makeStore();
        const model = new ReferenceModel(
          START,
          { maxPasswordAttempts: 2, maxOtpAttempts: 1 },
          options.leaseMs,
        );
        target.setNow?.(START);
        const sut = new Sut(target, options.leaseMs);
        try {
          await fc.asyncModelRun(() => ({ model, real: sut }), cmds);
        } finally {
          inserted += sut.inserted;
        }
      },
    ),
    {
      seed: options.seed,
      numRuns: options.numRuns,
      interruptAfterTimeLimit: options.timeLimitMs,
      markInterruptAsFailure: false,
    },
  );
  return { inserted, runs };
}
