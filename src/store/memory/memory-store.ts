import { timingSafeEqual } from 'node:crypto';
import { canonicalDefences, parseStoredDefences, type DefenceRecord } from '../../core/defences';
import { StoreUnavailableError } from '../../core/errors';
import { integerOption } from '../../core/option-checks';
import { indexMember, pageOfMembers, parseIndexMember, subjectOfMember } from '../../core/store';
import type {
  CodeChannel,
  DefenceSettingsChange,
  DefenceSettingsStore,
  LockedPage,
  LockoutStore,
  Owner,
  ReserveResult,
  SettingsChange,
  SettingsRecord,
  SettleExtra,
  SettleOutcome,
  SettleResult,
  StoreDefences,
  UserState,
  WriteSettingsResult,
} from '../../core/store';
import {
  limitOf,
  UNTRUSTED_SCOPE,
  zeroCounters,
  type Factor,
  type Limits,
  type Subject,
} from '../../core/subjects';

export interface MemoryStoreOptions {
  /** Clock in ms since the epoch (tests). Default Date.now. */
  now?: () => number;
  /**
   * How often expired state is purged: idle users, tombstones, one-time codes, TOTP replay marks,
   * and leases that ended (default 60 000 ms; 0 = never, state then only expires when it is read).
   */
  purgeIntervalMs?: number;
  /**
   * State of a user that is not locked and has nothing in flight disappears this long after the
   * user's last write (default 86 400 000 = 24 h; 0 = never, ZITADEL's strict semantics).
   */
  idleTtlMs?: number;
  /**
   * At most this many users are tracked (default 100 000). Past it, the least recently used users
   * that are neither locked nor have a check in flight are forgotten; when none can be, an
   * operation that would track one more user rejects with StoreUnavailableError (fail-closed).
   */
  maxUsers?: number;
  /** Told when users are evicted or refused for lack of room (at most once a minute). Must not throw. */
  onWarning?: (message: string) => void;
}

export interface MemoryStoreStats {
  /** Users that have state now. */
  readonly users: number;
  /** The bound (option maxUsers). */
  readonly maxUsers: number;
  /** Users forgotten since the start because the bound was reached. */
  readonly evictions: number;
}

interface Reservation {
  readonly factor: Factor;
  readonly expiresAt: number;
  /** The lease's length, for the tombstone left when it is applied. */
  readonly leaseMs: number;
  /** The factor's limit when reserved: used only by the purge timer, which has no limits of its own. */
  readonly max: number;
  /** The defences when reserved (issue 12), for the purge timer likewise. */
  readonly def?: StoreDefences;
}

/**
 * One user's state. Kept small (a spray of unknown names creates one each): a class with every
 * field set in the constructor keeps one hidden class (a `delete` would turn the object into a
 * slow dictionary of ~400 bytes), and the maps exist only while they hold something.
 */
class UserRecord {
  /** failure counters, undefined while all are 0 */
  failed: Record<Factor, number> | undefined = undefined;
  lockedAt: number | undefined = undefined;
  /** Locked or with a reservation in flight: never evicted, never idle-expired. */
  pinned = false;
  /** Listed in the org's in-flight index (has reservations). */
  pending = false;
  /** nonce → reservation in flight */
  res: Map<string, Reservation> | undefined = undefined;
  /** nonce → until when a settled, released or applied id is refused (see Tombs) */
  tomb: Tombs | undefined = undefined;
  /** counter key → the last step used and until when it is kept */
  once: Map<string, { step: number; until: number }> | undefined = undefined;
  codes: Map<CodeChannel, { hash: Buffer; expiresAt: number }> | undefined = undefined;
  /** Defences (issue 12), undefined while unused: see the store port. */
  def: DefenceState | undefined = undefined;
  /** Device cookies, on the user's own record: scope → last use, least recently used first. */
  scopes: Map<string, number> | undefined = undefined;

  /** `lastWrite`: when the state was last written (idle expiry). */
  constructor(public lastWrite: number) {}
}

/** A user's defence state: temporary lockout and repeat-password forgiveness. */
interface DefenceState {
  /** When the current (temporary) lock ends; undefined: not locked, or locked for good. */
  lockedUntil: number | undefined;
  /** Consecutive locks made by failures (temporary lockout); 0 when reset. */
  streak: number;
  /** Keys of the latest wrong passwords, oldest first. */
  seen: string[] | undefined;
}

interface SettingsSlot {
  record: SettingsRecord | null;
  sequence: number;
}

const WARNING_INTERVAL_MS = 60_000;

/**
 * The in-process store: the default, for one process (tests, a single login app, the
 * quick start). Every operation is synchronous inside, so it is atomic in Node's event loop.
 * A user with no failures, no lock, no reservation, no tombstone and no code takes no space;
 * unlocked idle users expire (`idleTtlMs`) and at most `maxUsers` users are tracked.
 */
export class MemoryStore implements LockoutStore, DefenceSettingsStore {
  readonly kind = 'memory';
  /** user key → state, in least-recently-used-first order (a touched user is moved to the end). */
  private readonly users = new Map<string, UserRecord>();
  /** instance+org → locked user ids */
  private readonly lockedIndex = new Map<string, Set<string>>();
  /** instance+org → ids of users with reservations in flight (their leases may lock them) */
  private readonly pendingIndex = new Map<string, Set<string>>();
  private readonly settings = new Map<string, SettingsSlot>();
  /** instance+org → stored defence settings (canonical JSON) and their sequence */
  private readonly defenceSettings = new Map<
    string,
    { json: string | null; sequence: number; creationDate: number; changeDate: number }
  >();
  /** The lockedAt of a temporary lock that ended during the current operation (0: none). */
  private ended = 0;
  private readonly listeners = new Set<(instance: string, owner: Owner) => void>();
  private readonly now: () => number;
  private readonly timer?: NodeJS.Timeout;
  private readonly idleTtlMs: number;
  private readonly maxUsers: number;
  private readonly onWarning?: (message: string) => void;
  /** How many records are pinned (locked or in flight). */
  private pinnedCount = 0;
  private evictions = 0;
  private lastWarningAt = -Infinity;

  constructor(options: MemoryStoreOptions = {}) {
    this.now = options.now ?? Date.now;
    this.idleTtlMs = integerOption('MemoryStore', 'idleTtlMs', options.idleTtlMs, {
      fallback: 86_400_000,
      min: 0,
      fix: 'omit it for 86400000 (24 h), or pass 0 to keep an idle user until a success, an unlock or a password change',
    });
    this.maxUsers = integerOption('MemoryStore', 'maxUsers', options.maxUsers, {
      fallback: 100_000,
      min: 1,
      fix: 'omit it for 100000 users (about 400 B each)',
    });
    this.onWarning = options.onWarning;
    const every = integerOption('MemoryStore', 'purgeIntervalMs', options.purgeIntervalMs, {
      fallback: 60_000,
      min: 0,
      fix: 'omit it for 60000 (ms), or pass 0 to expire state only when it is read',
    });
    if (every > 0) {
      this.timer = setInterval(() => this.purge(), every);
      this.timer.unref();
    }
  }

  /** How many users have state. */
  get size(): number {
    return this.users.size;
  }

  /** Users tracked, the bound, and how many were evicted. */
  stats(): MemoryStoreStats {
    return { users: this.users.size, maxUsers: this.maxUsers, evictions: this.evictions };
  }

  /** Whether the user takes any space (after dropping what has expired). */
  hasState(subject: Subject): boolean {
    const key = userKey(subject);
    const rec = this.load(key, this.now());
    if (!rec) return false;
    this.commit(subject, key, rec, false, false);
    return this.users.has(key);
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
    let rec = this.load(key, now);
    const applied = rec ? this.sweep(subject, rec, limits, now) : false;
    if (rec) {
      const result = this.refuse(rec, factor, limits, id, now);
      if (result) {
        this.commit(subject, key, rec, applied);
        return this.answer(result);
      }
    }
    if (subject.scope !== undefined) {
      // Device cookies: the user's own lock (an admin lock) locks every scope.
      const ended = this.ended;
      const lockedAt = this.userLock(subject, limits, now);
      this.ended = ended;
      if (lockedAt !== undefined) {
        if (rec) this.commit(subject, key, rec, applied);
        return this.answer({ status: 'locked', lockedAt });
      }
    }
    rec ??= this.create(key, now);
    const expiresAt = now + leaseMs;
    const max = limitOf(factor, limits);
    (rec.res ??= new Map()).set(
      id,
      limits.defences
        ? { factor, expiresAt, leaseMs, max, def: limits.defences }
        : { factor, expiresAt, leaseMs, max },
    );
    this.commit(subject, key, rec, true);
    if (subject.scope !== undefined) {
      const ended = this.ended;
      this.useScope(subject, limits.defences?.maxDevices ?? 0, now);
      this.ended = ended;
    }
    return this.answer({ status: 'admitted', expiresAt });
  }

  async settle(
    subject: Subject,
    factor: Factor,
    id: string,
    outcome: SettleOutcome,
    limits: Limits,
    leaseMs: number,
    tombstone = false,
    extra?: SettleExtra,
  ): Promise<SettleResult> {
    const now = this.now();
    const key = userKey(subject);
    let rec = this.load(key, now);
    const applied = rec ? this.sweep(subject, rec, limits, now) : false;
    const r = rec?.res?.get(id);
    if (rec && r && r.factor !== factor) {
      // In flight under another factor: a forged attempt id; leave the real one alone.
      this.commit(subject, key, rec, applied);
      return { status: 'unknown' };
    }
    rec ??= this.create(key, now);
    // Its reserve may still arrive (unknown id, or the engine compensating a reserve): refuse it.
    if (!r || tombstone) addTomb(rec, id, now + leaseMs);
    if (!r) {
      this.commit(subject, key, rec, true);
      this.ended = 0;
      return { status: 'unknown' };
    }
    this.dropReservation(rec, id);
    let lockedNow = false;
    let forgiven = false;
    const d = limits.defences;
    if (outcome === 'failure') {
      const repeatKey = d && d.remember > 0 && factor === 'password' ? extra?.repeatKey : undefined;
      if (repeatKey !== undefined && rec.def?.seen?.includes(repeatKey)) forgiven = true;
      else lockedNow = this.fail(subject, rec, factor, limitOf(factor, limits), now, d);
      if (repeatKey !== undefined && !forgiven) {
        const seen = (defOf(rec).seen ??= []);
        seen.push(repeatKey);
        if (seen.length > (d?.remember ?? 0)) seen.splice(0, seen.length - (d?.remember ?? 0));
      }
    } else if (outcome === 'success' && rec.lockedAt === undefined) {
      this.clearCounter(rec, factor);
      if (rec.def) {
        rec.def.streak = 0;
        if (factor === 'password') rec.def.seen = undefined;
        tidyDef(rec);
      }
    }
    this.commit(subject, key, rec, true);
    const settled = {
      status: 'settled' as const,
      failedAttempts: rec.failed?.[factor] ?? 0,
      locked: rec.lockedAt !== undefined,
      lockedNow,
    };
    if (!d && this.ended === 0) return settled;
    const until = rec.def?.lockedUntil;
    return this.answer({
      ...settled,
      ...(until !== undefined ? { lockedUntil: until, lockedAt: rec.lockedAt } : {}),
      ...(forgiven ? { forgiven } : {}),
    });
  }

  async getUser(subject: Subject, limits: Limits): Promise<UserState> {
    const now = this.now();
    const key = userKey(subject);
    const rec = this.load(key, now);
    if (!rec) return { locked: false, failed: zeroCounters() };
    this.commit(subject, key, rec, this.sweep(subject, rec, limits, now));
    const failed = { ...(rec.failed ?? zeroCounters()) };
    const until = rec.def?.lockedUntil;
    const state: UserState =
      rec.lockedAt === undefined
        ? { locked: false, failed }
        : until !== undefined
          ? { locked: true, lockedAt: rec.lockedAt, lockedUntil: until, failed }
          : { locked: true, lockedAt: rec.lockedAt, failed };
    return this.answer(rec.scopes ? { ...state, scopes: [...rec.scopes.keys()] } : state);
  }

  async lock(subject: Subject, limits: Limits): Promise<{ changed: boolean; lockedAt: number }> {
    const now = this.now();
    const key = userKey(subject);
    let rec = this.load(key, now);
    const applied = rec ? this.sweep(subject, rec, limits, now) : false;
    this.ended = 0;
    if (rec?.lockedAt !== undefined) {
      // An admin lock is permanent: it turns a temporary lock into one.
      const temporary = rec.def?.lockedUntil !== undefined;
      if (rec.def) rec.def.lockedUntil = undefined;
      this.commit(subject, key, rec, applied || temporary);
      return { changed: temporary, lockedAt: rec.lockedAt };
    }
    rec ??= this.create(key, now);
    this.setLocked(subject, rec, now);
    this.commit(subject, key, rec, true);
    return { changed: true, lockedAt: now };
  }

  async unlock(
    subject: Subject,
    limits: Limits,
    leaseMs: number,
    force = false,
  ): Promise<{ changed: boolean }> {
    const now = this.now();
    const key = userKey(subject);
    const rec = this.load(key, now);
    if (!rec) return { changed: false };
    const applied = this.sweep(subject, rec, limits, now);
    this.ended = 0;
    const changed = rec.lockedAt !== undefined;
    if (!changed && !force) {
      this.commit(subject, key, rec, applied);
      return { changed: false };
    }
    if (changed) removeFrom(this.lockedIndex, orgKey(subject.instance, subject.org), memberOf(subject));
    rec.lockedAt = undefined;
    rec.failed = undefined;
    rec.def = undefined;
    for (const id of [...(rec.res?.keys() ?? [])]) this.dropReservation(rec, id, now + leaseMs);
    this.commit(subject, key, rec, true);
    return { changed };
  }

  async resetFactor(subject: Subject, factor: Factor, limits: Limits, leaseMs: number): Promise<void> {
    const now = this.now();
    const key = userKey(subject);
    const rec = this.load(key, now);
    if (!rec) return;
    this.sweep(subject, rec, limits, now);
    this.ended = 0;
    this.clearCounter(rec, factor);
    if (rec.def) {
      rec.def.streak = 0;
      if (factor === 'password') rec.def.seen = undefined;
      tidyDef(rec);
    }
    for (const [id, r] of [...(rec.res ?? [])]) {
      if (r.factor === factor) this.dropReservation(rec, id, now + leaseMs);
    }
    this.commit(subject, key, rec, true);
  }

  async listLocked(
    instance: string,
    org: string,
    limits: Limits,
    limit: number,
    cursor?: string,
  ): Promise<LockedPage> {
    const now = this.now();
    const ok = orgKey(instance, org);
    // Users whose expired leases may lock them although nobody read them since.
    for (const member of [...(this.pendingIndex.get(ok) ?? [])]) {
      const subject = subjectOfMember(instance, org, member);
      const key = userKey(subject);
      const rec = this.load(key, now);
      if (rec) this.commit(subject, key, rec, this.sweep(subject, rec, limits, now), false);
      else removeFrom(this.pendingIndex, ok, member);
      if (rec?.pending && !rec.res) this.unlistPending(subject, rec);
    }
    // Temporary locks that have ended leave the listing (their users are unlocked now).
    for (const member of [...(this.lockedIndex.get(ok) ?? [])]) {
      const subject = subjectOfMember(instance, org, member);
      const key = userKey(subject);
      const rec = this.users.get(key);
      const until = rec?.def?.lockedUntil;
      if (rec && until !== undefined && until <= now) {
        this.load(key, now);
        this.commit(subject, key, rec, this.sweep(subject, rec, limits, now), false);
      }
    }
    this.ended = 0;
    // After the cursor's user and all of its scopes (members "<user>\u0000<scope>").
    const after = cursor === undefined ? undefined : Buffer.from(`${cursor}\u0001`, 'utf8');
    const ids = [...(this.lockedIndex.get(ok) ?? [])]
      .map((u) => ({ u, b: Buffer.from(u, 'utf8') }))
      .filter((x) => after === undefined || Buffer.compare(x.b, after) >= 0)
      .sort((x, y) => Buffer.compare(x.b, y.b))
      .map((x) => x.u);
    const { page, more } = pageOfMembers(ids, limit);
    const users = page.map((member) => {
      const subject = subjectOfMember(instance, org, member);
      const lockedAt = this.users.get(userKey(subject))?.lockedAt ?? 0;
      return subject.scope === undefined
        ? { userId: member, lockedAt }
        : { userId: subject.user, lockedAt, scope: subject.scope };
    });
    const last = page[page.length - 1];
    return more && last !== undefined ? { users, nextCursor: parseIndexMember(last).user } : { users };
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
    return {
      status: 'ok',
      sequence: slot.sequence,
      creationDate,
      changeDate: now,
      previous: cur && { maxPasswordAttempts: cur.maxPasswordAttempts, maxOtpAttempts: cur.maxOtpAttempts },
    };
  }

  onSettingsChanged(listener: (instance: string, owner: Owner) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async getDefenceSettings(instance: string, org: string): Promise<DefenceRecord | null> {
    const slot = this.defenceSettings.get(orgKey(instance, org));
    if (!slot || slot.json === null) return null;
    return {
      values: parseStoredDefences(slot.json),
      sequence: slot.sequence,
      creationDate: slot.creationDate,
      changeDate: slot.changeDate,
    };
  }

  async writeDefenceSettings(
    instance: string,
    org: string,
    change: DefenceSettingsChange,
  ): Promise<WriteSettingsResult> {
    const key = orgKey(instance, org);
    const slot = this.defenceSettings.get(key) ?? { json: null, sequence: 0, creationDate: 0, changeDate: 0 };
    const json = change.op === 'remove' ? null : canonicalDefences(change.values);
    if (change.op === 'add' && slot.json !== null) return { status: 'exists' };
    if (change.op !== 'add' && slot.json === null) return { status: 'not_found' };
    if (change.op === 'update' && slot.json === json) return { status: 'not_changed' };
    const now = this.now();
    slot.sequence++;
    if (change.op !== 'update') slot.creationDate = now;
    slot.changeDate = now;
    slot.json = json;
    this.defenceSettings.set(key, slot);
    for (const l of this.listeners) l(instance, { type: 'org', org });
    return { status: 'ok', sequence: slot.sequence, creationDate: slot.creationDate, changeDate: now };
  }

  async useStep(subject: Subject, key: string, step: number, ttlMs: number): Promise<boolean> {
    const now = this.now();
    const ukey = userKey(subject);
    let rec = this.load(ukey, now);
    const used = rec?.once?.get(key);
    if (rec && used !== undefined && step <= used.step) {
      this.commit(subject, ukey, rec, false);
      return false;
    }
    rec ??= this.create(ukey, now);
    (rec.once ??= new Map()).set(key, { step, until: now + ttlMs });
    this.commit(subject, ukey, rec, true);
    return true;
  }

  async putCode(subject: Subject, channel: CodeChannel, codeHash: string, ttlMs: number): Promise<void> {
    const now = this.now();
    const ukey = userKey(subject);
    const rec = this.load(ukey, now) ?? this.create(ukey, now);
    (rec.codes ??= new Map()).set(channel, { hash: Buffer.from(codeHash), expiresAt: now + ttlMs });
    this.commit(subject, ukey, rec, true);
  }

  async takeCode(
    subject: Subject,
    channel: CodeChannel,
    codeHash: string,
  ): Promise<'match' | 'mismatch' | 'missing'> {
    const ukey = userKey(subject);
    const rec = this.load(ukey, this.now());
    if (!rec) return 'missing';
    const stored = rec.codes?.get(channel);
    if (!stored) {
      this.commit(subject, ukey, rec, false);
      return 'missing';
    }
    const given = Buffer.from(codeHash);
    if (given.length !== stored.hash.length || !timingSafeEqual(given, stored.hash)) {
      this.commit(subject, ukey, rec, false);
      return 'mismatch';
    }
    rec.codes?.delete(channel);
    this.commit(subject, ukey, rec, true);
    return 'match';
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.listeners.clear();
  }

  // ---- reservations and counters -------------------------------------------------------

  /** Why `id` is not admitted (tombstone, already in flight, locked, busy), or undefined to admit. */
  private refuse(
    rec: UserRecord,
    factor: Factor,
    limits: Limits,
    id: string,
    now: number,
  ): ReserveResult | undefined {
    if (tombEnd(rec.tomb, id) > now) return { status: 'gone' };
    const existing = rec.res?.get(id);
    if (existing) return { status: 'admitted', expiresAt: existing.expiresAt };
    if (rec.lockedAt !== undefined) {
      const until = rec.def?.lockedUntil;
      return until !== undefined
        ? { status: 'locked', lockedAt: rec.lockedAt, lockedUntil: until }
        : { status: 'locked', lockedAt: rec.lockedAt };
    }
    const max = limitOf(factor, limits);
    if (max <= 0) return undefined;
    let inflight = 0;
    let earliest = Infinity;
    for (const r of rec.res?.values() ?? []) {
      if (r.factor !== factor) continue;
      inflight++;
      earliest = Math.min(earliest, r.expiresAt);
    }
    // failures + in-flight < limit; one at a time once a lowered limit is already reached
    if (inflight >= Math.max(1, max - (rec.failed?.[factor] ?? 0))) {
      return { status: 'busy', retryAfterMs: retryAfter(earliest, now) };
    }
    return undefined;
  }

  /**
   * Applies expired leases: each counts one failure of its factor (and may lock), and its id is
   * tombstoned for the lease's length. `limits` undefined: the limit recorded at reserve time
   * (the purge timer). Answers whether anything was applied.
   */
  private sweep(subject: Subject, rec: UserRecord, limits: Limits | undefined, now: number): boolean {
    this.ended = 0;
    const ended = rec.def !== undefined && this.endLock(subject, rec, now);
    if (!rec.res) return ended;
    let applied = ended;
    for (const [id, r] of [...rec.res]) {
      if (r.expiresAt > now) continue;
      this.dropReservation(rec, id, now + r.leaseMs);
      this.fail(
        subject,
        rec,
        r.factor,
        limits ? limitOf(r.factor, limits) : r.max,
        now,
        limits ? limits.defences : r.def,
      );
      applied = true;
    }
    return applied;
  }

  /**
   * Temporary lockout: ends the user's lock when its time has passed (whatever the policy now),
   * with the counters and remembered wrong passwords of that lock; in-flight reservations stay.
   * Answers whether it did (the ended lock's lockedAt is kept in `ended` for the answer).
   */
  private endLock(subject: Subject, rec: UserRecord, now: number): boolean {
    const def = rec.def;
    if (!def || def.lockedUntil === undefined || def.lockedUntil > now || rec.lockedAt === undefined) {
      return false;
    }
    this.ended = rec.lockedAt;
    rec.lockedAt = undefined;
    rec.failed = undefined;
    def.lockedUntil = undefined;
    def.seen = undefined;
    tidyDef(rec);
    removeFrom(this.lockedIndex, orgKey(subject.instance, subject.org), memberOf(subject));
    return true;
  }

  /** Device cookies: the lockedAt of the user's own lock (the scope's user), else undefined. */
  private userLock(scoped: Subject, limits: Limits, now: number): number | undefined {
    const user = unscoped(scoped);
    const key = userKey(user);
    const rec = this.load(key, now);
    if (!rec) return undefined;
    this.commit(user, key, rec, this.sweep(user, rec, limits, now), false);
    return rec.lockedAt;
  }

  /**
   * Device cookies: records the scope's use on the user's own record, and forgets the least
   * recently used device scope that is not locked when there are more than `maxDevices`.
   */
  private useScope(scoped: Subject, maxDevices: number, now: number): void {
    const user = unscoped(scoped);
    const key = userKey(user);
    const rec = this.load(key, now) ?? this.create(key, now);
    const scopes = (rec.scopes ??= new Map());
    scopes.delete(scoped.scope!);
    scopes.set(scoped.scope!, now);
    let devices = 0;
    for (const s of scopes.keys()) if (s !== UNTRUSTED_SCOPE) devices++;
    for (const s of [...scopes.keys()]) {
      if (devices <= maxDevices) break;
      if (s === UNTRUSTED_SCOPE || s === scoped.scope) continue;
      const victim = { ...user, scope: s };
      const vkey = userKey(victim);
      const vrec = this.users.get(vkey);
      if (vrec?.lockedAt !== undefined || vrec?.res !== undefined) continue;
      if (vrec) this.drop(victim, vkey, vrec);
      scopes.delete(s);
      devices--;
    }
    this.commit(user, key, rec, true);
  }

  /** Adds to an answer the lockedAt of a temporary lock that ended during this operation. */
  private answer<T extends object>(result: T): T & { expiredLockAt?: number } {
    const ended = this.ended;
    if (ended === 0) return result;
    this.ended = 0;
    return { ...result, expiredLockAt: ended };
  }

  /** Removes a reservation, tombstoning its id until `tombUntil` when given. */
  private dropReservation(rec: UserRecord, id: string, tombUntil?: number): void {
    rec.res?.delete(id);
    if (rec.res?.size === 0) rec.res = undefined;
    if (tombUntil !== undefined) addTomb(rec, id, tombUntil);
  }

  /** Counts one failure; locks when the limit is reached. Answers whether it locked the user now. */
  private fail(
    subject: Subject,
    rec: UserRecord,
    factor: Factor,
    max: number,
    now: number,
    defences?: StoreDefences,
  ): boolean {
    const count = (rec.failed?.[factor] ?? 0) + 1;
    (rec.failed ??= zeroCounters())[factor] = count;
    if (max > 0 && count >= max && rec.lockedAt === undefined) {
      this.setLocked(subject, rec, now);
      if (defences && defences.lockMs > 0) {
        const def = defOf(rec);
        def.streak += 1;
        def.lockedUntil = now + lockLength(defences, def.streak);
      }
      return true;
    }
    return false;
  }

  private clearCounter(rec: UserRecord, factor: Factor): void {
    if (!rec.failed) return;
    rec.failed[factor] = 0;
    if (Object.values(rec.failed).every((n) => n === 0)) rec.failed = undefined;
  }

  private setLocked(subject: Subject, rec: UserRecord, now: number): void {
    rec.lockedAt = now;
    addTo(this.lockedIndex, orgKey(subject.instance, subject.org), memberOf(subject));
  }

  // ---- records: expiry, bound, eviction ------------------------------------------------

  /** The user's record with what has expired dropped (not yet stored back), or undefined. */
  private load(key: string, now: number): UserRecord | undefined {
    const rec = this.users.get(key);
    if (rec) this.expire(rec, now);
    return rec;
  }

  /**
   * Drops ended tombstones, codes and replay marks, and the counters of an idle user (not locked,
   * nothing in flight, last written at least idleTtlMs ago). Leases are applied by sweep().
   */
  private expire(rec: UserRecord, now: number): void {
    if (rec.tomb) {
      rec.tomb = pruneTombs(rec.tomb, now);
    }
    if (rec.once) {
      for (const [k, used] of rec.once) if (used.until <= now) rec.once.delete(k);
      if (rec.once.size === 0) rec.once = undefined;
    }
    if (rec.codes) {
      for (const [c, code] of rec.codes) if (code.expiresAt <= now) rec.codes.delete(c);
      if (rec.codes.size === 0) rec.codes = undefined;
    }
    if (
      this.idleTtlMs > 0 &&
      rec.failed &&
      rec.lockedAt === undefined &&
      !rec.res &&
      now - rec.lastWrite >= this.idleTtlMs
    ) {
      rec.failed = undefined;
    }
    if (
      this.idleTtlMs > 0 &&
      rec.def &&
      rec.lockedAt === undefined &&
      !rec.res &&
      now - rec.lastWrite >= this.idleTtlMs
    ) {
      rec.def = undefined;
    }
  }

  /** A new record for a user not tracked yet, after making room for it (or rejecting). */
  private create(key: string, now: number): UserRecord {
    if (this.users.size >= this.maxUsers) this.evictOne(key);
    return new UserRecord(now);
  }

  /**
   * Forgets the least recently used user that is neither locked nor in flight. Rejects with
   * StoreUnavailableError (nothing changed) when every tracked user is.
   */
  private evictOne(forKey: string): void {
    if (this.pinnedCount >= this.users.size) {
      this.warn(
        `MemoryStore: ${this.users.size} users tracked (maxUsers ${this.maxUsers}), all locked or with a check in flight; refusing new users (503)`,
      );
      throw new StoreUnavailableError('The memory store is full (maxUsers) of locked or busy users');
    }
    const skipped: Array<[string, UserRecord]> = [];
    let victim: string | undefined;
    for (const [k, r] of this.users) {
      if (k !== forKey && !r.pinned) {
        victim = k;
        break;
      }
      skipped.push([k, r]);
    }
    // Pinned users met on the way go to the end, so that the next eviction does not scan them again.
    for (const [k, r] of skipped) {
      this.users.delete(k);
      this.users.set(k, r);
    }
    if (victim === undefined) {
      throw new StoreUnavailableError('The memory store is full (maxUsers) of locked or busy users');
    }
    const evicted = this.users.get(victim);
    if (evicted?.pending) this.unlistPending(subjectOf(victim), evicted);
    this.users.delete(victim);
    this.evictions++;
    this.warn(
      `MemoryStore: ${this.maxUsers} users tracked (maxUsers); forgetting the least recently used unlocked users (${this.evictions} so far)`,
    );
  }

  private warn(message: string): void {
    const now = this.now();
    if (!this.onWarning || now - this.lastWarningAt < WARNING_INTERVAL_MS) return;
    this.lastWarningAt = now;
    try {
      this.onWarning(message);
    } catch {
      // an observer must not fail a store operation
    }
  }

  /**
   * Stores the record back (as the most recently used unless `touch` is false), or drops it when it
   * holds nothing; keeps the pinned count and the in-flight index in step.
   */
  private commit(subject: Subject, key: string, rec: UserRecord, wrote: boolean, touch = true): void {
    if (wrote) rec.lastWrite = this.now();
    const pinned = rec.lockedAt !== undefined || rec.res !== undefined;
    if (pinned !== rec.pinned) {
      rec.pinned = pinned;
      this.pinnedCount += pinned ? 1 : -1;
    }
    // A user joins the org's in-flight index at its first reservation and leaves it lazily (when
    // the record goes, or when a listing finds nothing in flight): not twice per check.
    if (rec.res !== undefined && !rec.pending) {
      rec.pending = true;
      addTo(this.pendingIndex, orgKey(subject.instance, subject.org), memberOf(subject));
    }
    if (isEmpty(rec)) this.drop(subject, key, rec);
    else if (touch || !this.users.has(key)) {
      this.users.delete(key);
      this.users.set(key, rec);
    }
  }

  /** Forgets a record (and its entry in the org's in-flight index). */
  private drop(subject: Subject, key: string, rec: UserRecord): void {
    if (rec.pending) this.unlistPending(subject, rec);
    this.users.delete(key);
  }

  private unlistPending(subject: Subject, rec: UserRecord): void {
    rec.pending = false;
    removeFrom(this.pendingIndex, orgKey(subject.instance, subject.org), memberOf(subject));
  }

  /** The purge timer: applies ended leases, drops expired state and empty records. */
  private purge(): void {
    const now = this.now();
    for (const [key, rec] of [...this.users]) {
      if (rec.res || rec.def?.lockedUntil !== undefined) {
        const subject = subjectOf(key);
        this.expire(rec, now); // before the sweep: a failure it counts now is a write, not idle
        const applied = this.sweep(subject, rec, undefined, now);
        this.commit(subject, key, rec, applied, false);
      } else {
        this.expire(rec, now);
        if (isEmpty(rec)) this.drop(subjectOf(key), key, rec);
      }
    }
    this.ended = 0;
  }
}

/**
 * Tombstones: a flat list [id, until, id, until, …] while there are few (a Map costs ~200 bytes
 * and a sprayed user has exactly one), a Map once there are more than TOMB_LIST_MAX.
 */
type Tombs = Array<string | number> | Map<string, number>;
const TOMB_LIST_MAX = 8;

function tombEnd(tombs: Tombs | undefined, id: string): number {
  if (tombs === undefined) return 0;
  if (tombs instanceof Map) return tombs.get(id) ?? 0;
  for (let i = 0; i < tombs.length; i += 2) if (tombs[i] === id) return tombs[i + 1] as number;
  return 0;
}

function addTomb(rec: UserRecord, id: string, until: number): void {
  const tombs = rec.tomb;
  if (tombs === undefined) {
    rec.tomb = [id, until];
  } else if (tombs instanceof Map) {
    tombs.set(id, until);
  } else {
    for (let i = 0; i < tombs.length; i += 2) {
      if (tombs[i] === id) {
        tombs[i + 1] = until;
        return;
      }
    }
    if (tombs.length < 2 * TOMB_LIST_MAX) {
      tombs.push(id, until);
      return;
    }
    const map = new Map<string, number>();
    for (let i = 0; i < tombs.length; i += 2) map.set(tombs[i] as string, tombs[i + 1] as number);
    map.set(id, until);
    rec.tomb = map;
  }
}

/** The tombstones still in force at `now`, or undefined when none are. */
function pruneTombs(tombs: Tombs, now: number): Tombs | undefined {
  if (tombs instanceof Map) {
    for (const [id, until] of tombs) if (until <= now) tombs.delete(id);
    return tombs.size === 0 ? undefined : tombs;
  }
  let kept = 0;
  for (let i = 0; i < tombs.length; i += 2) {
    if ((tombs[i + 1] as number) <= now) continue;
    tombs[kept] = tombs[i] as string;
    tombs[kept + 1] = tombs[i + 1] as number;
    kept += 2;
  }
  tombs.length = kept;
  return kept === 0 ? undefined : tombs;
}

function isEmpty(rec: UserRecord): boolean {
  return (
    rec.lockedAt === undefined &&
    !rec.failed &&
    !rec.res &&
    !rec.tomb &&
    !rec.once &&
    !rec.codes &&
    !rec.def &&
    !rec.scopes
  );
}

function memberOf(s: Subject): string {
  return indexMember(s);
}

/** The user a scope belongs to. */
function unscoped(s: Subject): Subject {
  return { instance: s.instance, org: s.org, user: s.user };
}

function defOf(rec: UserRecord): DefenceState {
  return (rec.def ??= { lockedUntil: undefined, streak: 0, seen: undefined });
}

/** Drops a user's defence state once it holds nothing. */
function tidyDef(rec: UserRecord): void {
  const d = rec.def;
  if (d && d.lockedUntil === undefined && d.streak === 0 && (d.seen === undefined || d.seen.length === 0)) {
    rec.def = undefined;
  }
}

/** Temporary lockout: the length of the `streak`-th consecutive lock, lockMs × 2^(streak−1), at most maxLockMs. */
export function lockLength(d: StoreDefences, streak: number): number {
  return Math.min(d.maxLockMs, d.lockMs * 2 ** Math.min(streak - 1, 52));
}

function addTo(index: Map<string, Set<string>>, key: string, member: string): void {
  let set = index.get(key);
  if (!set) index.set(key, (set = new Set()));
  set.add(member);
}

function removeFrom(index: Map<string, Set<string>>, key: string, member: string): void {
  const set = index.get(key);
  if (!set?.delete(member)) return;
  if (set.size === 0) index.delete(key);
}

// Keys are length-prefixed ("<instance length>:<org length>:<instance><org><user>"): unambiguous
// for any strings, and several times cheaper than JSON on the hot path.
function userKey(s: Subject): string {
  const key = `${s.instance.length}:${s.org.length}:${s.instance}${s.org}${s.user}`;
  // ids never hold a control character: a scope's key cannot be a user's
  return s.scope === undefined ? key : `${key}\u0000${s.scope}`;
}

function subjectOf(key: string): Subject {
  const a = key.indexOf(':');
  const b = key.indexOf(':', a + 1);
  const i = Number(key.slice(0, a));
  const o = Number(key.slice(a + 1, b));
  const start = b + 1;
  return subjectOfMember(
    key.slice(start, start + i),
    key.slice(start + i, start + i + o),
    key.slice(start + i + o),
  );
}

function orgKey(instance: string, org: string): string {
  return `${instance.length}:${instance}${org}`;
}

function ownerKey(instance: string, owner: Owner): string {
  return owner.type === 'instance' ? `i:${instance}` : `o:${orgKey(instance, owner.org)}`;
}

function sameValues(a: { maxPasswordAttempts: number; maxOtpAttempts: number }, b: typeof a): boolean {
  return a.maxPasswordAttempts === b.maxPasswordAttempts && a.maxOtpAttempts === b.maxOtpAttempts;
}

/** A busy answer's retry hint: when the earliest in-flight lease ends, at most 1 s, at least 1 ms. */
export function retryAfter(earliestExpiry: number, now: number): number {
  return Math.max(1, Math.min(1000, earliestExpiry - now));
}
