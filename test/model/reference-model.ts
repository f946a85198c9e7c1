/**
 * A reference model of the LockoutStore port's observable behaviour, written from the port's doc
 * comments (src/core/store.ts) and the shared semantics of the helpers' brief — not from either
 * store's code. One org of one instance; time is the model's own clock (`now`), moved only by
 * the test.
 *
 * Choices where the port is silent (kept as few as possible, and named here):
 *   - an expired lease is applied (counted, maybe locking with lockedAt = the applying
 *     operation's time) by the first operation on that user, and by listLocked for every user
 *     of the org (listLocked "lists users locked by expired leases nobody read yet");
 *   - the id of an expired lease is tombstoned until (time it was applied) + leaseMs;
 *   - a lease is expired when expiresAt <= now; a tombstone is live while now < until.
 */
import { FACTORS, limitOf, zeroCounters, type Factor, type Limits } from '../../src/core/subjects';
import type { ReserveResult, SettleOutcome, SettleResult, UserState } from '../../src/core/store';

export interface ModelLease {
  readonly factor: Factor;
  readonly expiresAt: number;
  /**
   * Whether its failure could lock the user under the limits in force when it was reserved
   * (failures + in flight, itself included, >= limit > 0). listLocked must list a user locked by
   * such a lease; a lock that comes only from leases that could not lock when reserved (the limit
   * was lowered meanwhile) may be listed only once something reads the user (src/core/store.ts).
   */
  readonly mayLock: boolean;
}

export interface ModelUser {
  failed: Record<Factor, number>;
  lockedAt?: number;
  /** id → in-flight reservation */
  leases: Map<string, ModelLease>;
  /** id → tombstone end */
  tombstones: Map<string, number>;
  /** useStep key → last accepted step */
  steps: Map<string, number>;
  /** Locked by listLocked applying only leases that could not lock when reserved, and not read since. */
  hiddenLock?: boolean;
  /** Every reservation id this user has seen, with its factor (for "repeat an id" commands). */
  ids: Array<{ id: string; factor: Factor }>;
}

export class ReferenceModel {
  now: number;
  limits: Limits;
  readonly users = new Map<string, ModelUser>();
  private nextId = 0;

  constructor(
    start: number,
    limits: Limits,
    readonly leaseMs: number,
  ) {
    this.now = start;
    this.limits = limits;
  }

  /** A new reservation id, unique in this model run. */
  freshId(): string {
    return `a${this.nextId++}`;
  }

  user(id: string): ModelUser {
    let u = this.users.get(id);
    if (!u) {
      u = { failed: zeroCounters(), leases: new Map(), tombstones: new Map(), steps: new Map(), ids: [] };
      this.users.set(id, u);
    }
    return u;
  }

  /** Leases of `user` that are in flight right now (after applying expired ones, which the caller did). */
  liveLeases(user: string): Array<[string, ModelLease]> {
    return [...this.user(user).leases.entries()];
  }

  reserve(user: string, factor: Factor, id: string): ReserveResult {
    const u = this.user(user);
    this.applyExpired(u);
    if (!u.ids.some((x) => x.id === id)) u.ids.push({ id, factor });
    if (this.tombstoned(u, id)) return { status: 'gone' };
    const existing = u.leases.get(id);
    if (existing) return { status: 'admitted', expiresAt: existing.expiresAt };
    if (u.lockedAt !== undefined) return { status: 'locked', lockedAt: u.lockedAt };
    const max = limitOf(factor, this.limits);
    if (max > 0) {
      const same = [...u.leases.values()].filter((l) => l.factor === factor);
      if (same.length >= Math.max(1, max - u.failed[factor])) {
        const earliest = Math.min(...same.map((l) => l.expiresAt));
        return { status: 'busy', retryAfterMs: clampRetry(earliest - this.now) };
      }
    }
    const expiresAt = this.now + this.leaseMs;
    const inFlight = [...u.leases.values()].filter((l) => l.factor === factor).length + 1;
    u.leases.set(id, { factor, expiresAt, mayLock: max > 0 && u.failed[factor] + inFlight >= max });
    return { status: 'admitted', expiresAt };
  }

  settle(user: string, factor: Factor, id: string, outcome: SettleOutcome, tombstone: boolean): SettleResult {
    const u = this.user(user);
    this.applyExpired(u);
    const lease = u.leases.get(id);
    if (!lease || lease.factor !== factor) {
      this.tombstone(u, id);
      return { status: 'unknown' };
    }
    u.leases.delete(id);
    if (tombstone) this.tombstone(u, id);
    let lockedNow = false;
    if (outcome === 'failure') lockedNow = this.fail(u, factor);
    else if (outcome === 'success' && u.lockedAt === undefined) u.failed[factor] = 0;
    return {
      status: 'settled',
      failedAttempts: u.failed[factor],
      locked: u.lockedAt !== undefined,
      lockedNow,
    };
  }

  getUser(user: string): UserState {
    const u = this.user(user);
    this.applyExpired(u);
    const failed = { ...u.failed };
    return u.lockedAt === undefined
      ? { locked: false, failed }
      : { locked: true, lockedAt: u.lockedAt, failed };
  }

  lock(user: string): { changed: boolean; lockedAt: number } {
    const u = this.user(user);
    this.applyExpired(u);
    if (u.lockedAt !== undefined) return { changed: false, lockedAt: u.lockedAt };
    u.lockedAt = this.now;
    return { changed: true, lockedAt: u.lockedAt };
  }

  unlock(user: string): { changed: boolean } {
    const u = this.user(user);
    this.applyExpired(u);
    if (u.lockedAt === undefined) return { changed: false };
    delete u.lockedAt;
    u.failed = zeroCounters();
    for (const id of [...u.leases.keys()]) {
      u.leases.delete(id);
      this.tombstone(u, id);
    }
    return { changed: true };
  }

  resetFactor(user: string, factor: Factor): void {
    const u = this.user(user);
    this.applyExpired(u);
    u.failed[factor] = 0;
    for (const [id, lease] of [...u.leases.entries()]) {
      if (lease.factor !== factor) continue;
      u.leases.delete(id);
      this.tombstone(u, id);
    }
  }

  /**
   * Every locked user of the org, ordered by user id as UTF-8 bytes, after applying expired leases;
   * `optional` marks users locked only now, only by leases that could not lock when reserved.
   */
  listLocked(): Array<{ userId: string; lockedAt: number; optional: boolean }> {
    const out: Array<{ userId: string; lockedAt: number; optional: boolean }> = [];
    for (const [userId, u] of this.users) {
      const wasLocked = u.lockedAt !== undefined;
      const applied = this.applyExpired(u, true);
      if (u.lockedAt === undefined) continue;
      if (!wasLocked && applied.length > 0 && applied.every((l) => !l.mayLock)) u.hiddenLock = true;
      out.push({ userId, lockedAt: u.lockedAt, optional: u.hiddenLock === true });
    }
    return out.sort((a, b) => compareUtf8(a.userId, b.userId));
  }

  useStep(user: string, key: string, step: number): boolean {
    const u = this.user(user);
    const last = u.steps.get(key);
    if (last !== undefined && step <= last) return false;
    u.steps.set(key, step);
    return true;
  }

  /**
   * Applies the user's expired leases (each a failure); answers the ones it applied. Any operation
   * on the user but a listing reads it, so a lock hidden from listings is listed from then on.
   */
  private applyExpired(u: ModelUser, listing = false): ModelLease[] {
    if (!listing) u.hiddenLock = false;
    const applied: ModelLease[] = [];
    for (const [id, lease] of [...u.leases.entries()]) {
      if (lease.expiresAt > this.now) continue;
      u.leases.delete(id);
      this.tombstone(u, id);
      this.fail(u, lease.factor);
      applied.push(lease);
    }
    return applied;
  }

  private fail(u: ModelUser, factor: Factor): boolean {
    u.failed[factor] += 1;
    const max = limitOf(factor, this.limits);
    if (max > 0 && u.failed[factor] >= max && u.lockedAt === undefined) {
      u.lockedAt = this.now;
      return true;
    }
    return false;
  }

  private tombstone(u: ModelUser, id: string): void {
    u.tombstones.set(id, this.now + this.leaseMs);
  }

  private tombstoned(u: ModelUser, id: string): boolean {
    const until = u.tombstones.get(id);
    return until !== undefined && this.now < until;
  }
}

/** A busy answer's retry hint: [1, 1000] ms. */
export function clampRetry(ms: number): number {
  return Math.max(1, Math.min(1000, ms));
}

/** Order of user ids as UTF-8 bytes (Redis's lexicographic order), not JavaScript's UTF-16 order. */
export function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export { FACTORS };
