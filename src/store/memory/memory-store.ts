import { timingSafeEqual } from 'node:crypto';
import type {
  CodeChannel,
  LockedPage,
  LockoutStore,
  Owner,
  ReserveResult,
  SettingsChange,
  SettingsRecord,
  SettleOutcome,
  SettleResult,
  UserState,
  WriteSettingsResult,
} from '../../core/store';
import { limitOf, zeroCounters, type Factor, type Limits, type Subject } from '../../core/subjects';

export interface MemoryStoreOptions {
  /** Clock in ms since the epoch (tests). Default Date.now. */
  now?: () => number;
  /** How often expired one-time codes and TOTP replay marks are purged (default 60 000 ms; 0 = never). */
  purgeIntervalMs?: number;
}

interface UserRecord {
  failed: Partial<Record<Factor, number>>;
  lockedAt?: number;
  /** nonce → reservation */
  reservations: Map<string, { factor: Factor; expiresAt: number }>;
  /** counter key → the last step used and until when it is kept */
  once: Map<string, { step: number; until: number }>;
  codes: Map<CodeChannel, { hash: Buffer; expiresAt: number }>;
}

interface SettingsSlot {
  record: SettingsRecord | null;
  sequence: number;
}

/**
 * The in-process store: the default, for one process (tests, a single login app, the
 * quick start). Every operation is synchronous inside, so it is atomic in Node's event loop.
 * A user with no failures, no lock, no reservation, no code takes no space.
 */
export class MemoryStore implements LockoutStore {
  readonly kind = 'memory';
  private readonly users = new Map<string, UserRecord>();
  /** instance+org → locked user ids */
  private readonly lockedIndex = new Map<string, Set<string>>();
  private readonly settings = new Map<string, SettingsSlot>();
  private readonly listeners = new Set<(instance: string, owner: Owner) => void>();
  private readonly now: () => number;
  private readonly timer?: NodeJS.Timeout;

  constructor(options: MemoryStoreOptions = {}) {
    this.now = options.now ?? Date.now;
    const every = options.purgeIntervalMs ?? 60_000;
    if (every > 0) {
      this.timer = setInterval(() => this.purge(), every);
      this.timer.unref();
    }
  }

  /** How many users have state. */
  get size(): number {
    return this.users.size;
  }

  /** Whether the user takes any space. */
  hasState(subject: Subject): boolean {
    return this.users.has(userKey(subject));
  }

  async reserve(
    subject: Subject,
    factor: Factor,
    limits: Limits,
    leaseMs: number,
    id: string,
  ): Promise<ReserveResult> {
    const now = this.now();
    const key = userKey(subject);
    const rec = this.users.get(key) ?? newRecord();
    this.sweep(subject, rec, limits, now);
    try {
      if (rec.lockedAt !== undefined) return { status: 'locked', lockedAt: rec.lockedAt };
      const max = limitOf(factor, limits);
      if (max > 0) {
        let inflight = 0;
        let earliest = Infinity;
        for (const r of rec.reservations.values()) {
          if (r.factor !== factor) continue;
          inflight++;
          earliest = Math.min(earliest, r.expiresAt);
        }
        // failures + in-flight < limit; one at a time once a lowered limit is already reached
        if (inflight >= Math.max(1, max - (rec.failed[factor] ?? 0))) {
          return { status: 'busy', retryAfterMs: retryAfter(earliest, now) };
        }
      }
      const expiresAt = now + leaseMs;
      rec.reservations.set(id, { factor, expiresAt });
      return { status: 'admitted', expiresAt };
    } finally {
      this.keep(key, rec);
    }
  }

  async settle(
    subject: Subject,
    factor: Factor,
    id: string,
    outcome: SettleOutcome,
    limits: Limits,
    _leaseMs: number,
  ): Promise<SettleResult> {
    const now = this.now();
    const key = userKey(subject);
    const rec = this.users.get(key);
    if (!rec) return { status: 'unknown' };
    this.sweep(subject, rec, limits, now);
    try {
      const r = rec.reservations.get(id);
      if (!r || r.factor !== factor) return { status: 'unknown' };
      rec.reservations.delete(id);
      let lockedNow = false;
      if (outcome === 'failure') lockedNow = this.fail(subject, rec, factor, limits, now);
      else if (outcome === 'success' && rec.lockedAt === undefined) delete rec.failed[factor];
      return {
        status: 'settled',
        failedAttempts: rec.failed[factor] ?? 0,
        locked: rec.lockedAt !== undefined,
        lockedNow,
      };
    } finally {
      this.keep(key, rec);
    }
  }

  async getUser(subject: Subject, limits: Limits): Promise<UserState> {
    const key = userKey(subject);
    const rec = this.users.get(key);
    const failed = zeroCounters();
    if (!rec) return { locked: false, failed };
    this.sweep(subject, rec, limits, this.now());
    this.keep(key, rec);
    for (const [f, n] of Object.entries(rec.failed)) failed[f as Factor] = n;
    return rec.lockedAt === undefined
      ? { locked: false, failed }
      : { locked: true, lockedAt: rec.lockedAt, failed };
  }

  async lock(subject: Subject, _limits: Limits): Promise<{ changed: boolean; lockedAt: number }> {
    const key = userKey(subject);
    const rec = this.users.get(key) ?? newRecord();
    if (rec.lockedAt !== undefined) return { changed: false, lockedAt: rec.lockedAt };
    this.setLocked(subject, rec, this.now());
    this.keep(key, rec);
    return { changed: true, lockedAt: rec.lockedAt ?? 0 };
  }

  async unlock(subject: Subject, _limits: Limits, _leaseMs: number): Promise<{ changed: boolean }> {
    const key = userKey(subject);
    const rec = this.users.get(key);
    if (!rec || rec.lockedAt === undefined) return { changed: false };
    delete rec.lockedAt;
    rec.failed = {};
    this.lockedIndex.get(orgKey(subject.instance, subject.org))?.delete(subject.user);
    this.keep(key, rec);
    return { changed: true };
  }

  async resetFactor(subject: Subject, factor: Factor, _limits: Limits, _leaseMs: number): Promise<void> {
    const key = userKey(subject);
    const rec = this.users.get(key);
    if (!rec) return;
    delete rec.failed[factor];
    this.keep(key, rec);
  }

  async listLocked(
    instance: string,
    org: string,
    _limits: Limits,
    limit: number,
    cursor?: string,
  ): Promise<LockedPage> {
    const ids = [...(this.lockedIndex.get(orgKey(instance, org)) ?? [])]
      .filter((u) => cursor === undefined || u > cursor)
      .sort();
    const page = ids.slice(0, limit);
    const users = page.map((userId) => ({
      userId,
      lockedAt: this.users.get(userKey({ instance, org, user: userId }))?.lockedAt ?? 0,
    }));
    const last = page[page.length - 1];
    return ids.length > limit && last !== undefined ? { users, nextCursor: last } : { users };
  }

  async getSettings(instance: string, owner: Owner): Promise<SettingsRecord | null> {
    return this.settings.get(ownerKey(instance, owner))?.record ?? null;
  }

  async writeSettings(instance: string, owner: Owner, change: SettingsChange): Promise<WriteSettingsResult> {
    const key = ownerKey(instance, owner);
    const slot = this.settings.get(key) ?? { record: null, sequence: 0 };
    const cur = slot.record;
    const now = this.now();
    switch (change.op) {
      case 'add':
        if (cur) return { status: 'exists' };
        break;
      case 'update':
        if (!cur) return { status: 'not_found' };
        if (sameValues(cur, change.values)) return { status: 'not_changed' };
        break;
      case 'remove':
        if (!cur) return { status: 'not_found' };
        break;
      case 'set':
        if (sameValues(cur ?? change.fallback, change.values)) return { status: 'not_changed' };
        break;
    }
    slot.sequence++;
    const creationDate = change.op === 'remove' || !cur ? now : cur.creationDate;
    slot.record =
      change.op === 'remove'
        ? null
        : { ...change.values, sequence: slot.sequence, creationDate, changeDate: now };
    this.settings.set(key, slot);
    for (const l of this.listeners) l(instance, owner);
    return { status: 'ok', sequence: slot.sequence, creationDate, changeDate: now };
  }

  onSettingsChanged(listener: (instance: string, owner: Owner) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async useStep(subject: Subject, key: string, step: number, ttlMs: number): Promise<boolean> {
    const now = this.now();
    const ukey = userKey(subject);
    const rec = this.users.get(ukey) ?? newRecord();
    const used = rec.once.get(key);
    const fresh = used === undefined || used.until <= now || step > used.step;
    if (fresh) rec.once.set(key, { step, until: now + ttlMs });
    this.keep(ukey, rec);
    return fresh;
  }

  async putCode(subject: Subject, channel: CodeChannel, codeHash: string, ttlMs: number): Promise<void> {
    const ukey = userKey(subject);
    const rec = this.users.get(ukey) ?? newRecord();
    rec.codes.set(channel, { hash: Buffer.from(codeHash), expiresAt: this.now() + ttlMs });
    this.keep(ukey, rec);
  }

  async takeCode(
    subject: Subject,
    channel: CodeChannel,
    codeHash: string,
  ): Promise<'match' | 'mismatch' | 'missing'> {
    const ukey = userKey(subject);
    const rec = this.users.get(ukey);
    const stored = rec?.codes.get(channel);
    if (!rec || !stored) return 'missing';
    if (stored.expiresAt <= this.now()) {
      rec.codes.delete(channel);
      this.keep(ukey, rec);
      return 'missing';
    }
    const given = Buffer.from(codeHash);
    if (given.length !== stored.hash.length || !timingSafeEqual(given, stored.hash)) return 'mismatch';
    rec.codes.delete(channel);
    this.keep(ukey, rec);
    return 'match';
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.listeners.clear();
  }

  /** Applies expired leases: each counts as a failure of its factor. */
  private sweep(subject: Subject, rec: UserRecord, limits: Limits, now: number): void {
    for (const [id, r] of rec.reservations) {
      if (r.expiresAt > now) continue;
      rec.reservations.delete(id);
      this.fail(subject, rec, r.factor, limits, now);
    }
  }

  /** Counts one failure; locks when the limit is reached. Answers whether it locked the user now. */
  private fail(subject: Subject, rec: UserRecord, factor: Factor, limits: Limits, now: number): boolean {
    const count = (rec.failed[factor] ?? 0) + 1;
    rec.failed[factor] = count;
    const max = limitOf(factor, limits);
    if (max > 0 && count >= max && rec.lockedAt === undefined) {
      this.setLocked(subject, rec, now);
      return true;
    }
    return false;
  }

  private setLocked(subject: Subject, rec: UserRecord, now: number): void {
    rec.lockedAt = now;
    const k = orgKey(subject.instance, subject.org);
    let set = this.lockedIndex.get(k);
    if (!set) this.lockedIndex.set(k, (set = new Set()));
    set.add(subject.user);
  }

  /** Stores the record, or drops it when it holds nothing. */
  private keep(key: string, rec: UserRecord): void {
    const empty =
      rec.lockedAt === undefined &&
      Object.keys(rec.failed).length === 0 &&
      rec.reservations.size === 0 &&
      rec.once.size === 0 &&
      rec.codes.size === 0;
    if (empty) this.users.delete(key);
    else this.users.set(key, rec);
  }

  private purge(): void {
    const now = this.now();
    for (const [key, rec] of this.users) {
      for (const [k, used] of rec.once) if (used.until <= now) rec.once.delete(k);
      for (const [c, code] of rec.codes) if (code.expiresAt <= now) rec.codes.delete(c);
      this.keep(key, rec);
    }
  }
}

function newRecord(): UserRecord {
  return { failed: {}, reservations: new Map(), once: new Map(), codes: new Map() };
}

function userKey(s: Subject): string {
  return JSON.stringify([s.instance, s.org, s.user]);
}

function orgKey(instance: string, org: string): string {
  return JSON.stringify([instance, org]);
}

function ownerKey(instance: string, owner: Owner): string {
  return owner.type === 'instance' ? JSON.stringify([instance]) : orgKey(instance, owner.org);
}

function sameValues(a: { maxPasswordAttempts: number; maxOtpAttempts: number }, b: typeof a): boolean {
  return a.maxPasswordAttempts === b.maxPasswordAttempts && a.maxOtpAttempts === b.maxOtpAttempts;
}

/** A busy answer's retry hint: when the earliest in-flight lease ends, at most 1 s, at least 1 ms. */
export function retryAfter(earliestExpiry: number, now: number): number {
  return Math.max(1, Math.min(1000, earliestExpiry - now));
}
