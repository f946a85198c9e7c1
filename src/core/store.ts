import type { DefenceRecord, DefenceValues } from './defences';
import type { Factor, Limits, Subject } from './subjects';

/*
 * The store port: everything the engine and the verifiers need from a place that keeps lockout
 * state, split by concern into three narrow ports and the lifecycle every store has:
 *   - AttemptStore: attempts (reservations, their leases and tombstones), failure counters and locks;
 *   - SettingsStore: lockout settings and the notices of their changes;
 *   - OneTimeStore: one-time material, i.e. issued SMS/Email codes and used TOTP steps;
 *   - StoreLifecycle: the store's name, its health probe and close.
 * One class may implement several; LockoutStore is all of them (MemoryStore and RedisStore
 * implement it). The members of each port are listed in ATTEMPT_STORE_MEMBERS,
 * SETTINGS_STORE_MEMBERS, ONE_TIME_STORE_MEMBERS and STORE_LIFECYCLE_MEMBERS; LockoutEngine
 * refuses, when it is made, a store that lacks any member of LockoutStore (missingStoreMembers).
 *
 * The rules common to every port (clock, outages, bounded state) are on LockoutStore.
 */

/**
 * Attempts and locks: the reservation protocol (reserve → settle), the failure counters and the
 * lock of each user, and the locked-users listing. This is what the engine's hot path calls.
 *
 * Each operation is ONE atomic step in the store (one Lua script, one round trip, on Redis),
 * and every one of them first applies expired leases: a reservation whose lease has passed is
 * removed and counted as a failure of its factor (and may lock the user), exactly once.
 * The lockout rules are applied inside the store, because they must be atomic with the counters:
 *   - failure: counter + 1; if the factor's limit is > 0 and the new count >= limit, lock (lockedAt = now);
 *   - success: the factor's counter is reset (unless the user is locked by then: nothing changes);
 *   - release: the reservation goes away, nothing is counted.
 *
 * Idempotence (G5). A command may run twice (a client resends it after a reconnect) or run
 * although its caller saw a timeout. So every reserve, settle and release is keyed by its id
 * (the nonce): reserve twice = once, settle twice = once. An id whose reserve may still arrive
 * leaves a *tombstone* until its lease would have ended (`leaseMs` after the settle), so that a
 * reserve of that id arriving late is refused (`gone`) instead of creating a reservation nobody
 * will settle: an id settled or released with `tombstone` (the engine compensating a reserve whose
 * outcome it could not learn), an id the store does not know (never arrived yet), and an id
 * dropped by expiry, unlock or a password change. An ordinary settle leaves none: its reserve was
 * answered, and a client resends only commands that got no answer, so no copy of it can follow
 * (and the hot path stays as small as before: no tombstone per check).
 *
 * An operation that committed never fails afterwards: secondary writes (the locked-users index)
 * are made so that they converge (a locked user is listed, an unlocked one is not) without
 * failing the operation that caused them.
 *
 * Defences (issue 12, opt-in; `limits.defences`, see StoreDefences and core/defences.ts). With
 * `limits.defences` absent every operation is exactly as above: no other field is read or written.
 * With it, each operation stays ONE atomic step (the same script, no extra round trip):
 *   - temporary lockout (`lockMs` > 0): a failure that locks the user also records `lockedUntil`
 *     = now + min(lockMs × 2^(n−1), maxLockMs), n = the user's consecutive locks (kept, +1 at each
 *     such lock). Every operation first ends a lock whose `lockedUntil` has passed — whatever the
 *     current policy, the lock's own end is what counts: the lock, every counter and the
 *     remembered wrong passwords are cleared (`expiredLockAt` in the answer, and the user leaves
 *     the locked-users listing), in-flight reservations stay. n is reset by a success, an unlock
 *     and resetFactor. An admin lock has no end; an admin lock of a temporarily locked user makes
 *     the lock permanent (`changed: true`). A temporarily locked user's state expires `idleTtlMs`
 *     after its end (bounded state; 0 = never).
 *   - repeat-password forgiveness (`remember` > 0): a failure settle of `password` may carry
 *     `repeatKey` (a keyed hash of the wrong password). When it is one of the user's last
 *     `remember` remembered keys, nothing is counted (`forgiven: true`; the reservation is settled
 *     all the same); else the failure counts and the key is remembered (the oldest dropped past
 *     `remember`). Decided in the settle's own step, so two parallel repeats count once. Cleared
 *     by a password success, an unlock (admin or automatic) and resetFactor('password').
 *   - device cookies (`maxDevices` > 0; `subject.scope` set by the engine): a scoped operation acts
 *     on the scope's own state — its counters, lock, reservations, tombstones, temporary lock and
 *     remembered keys, under every rule above, so G1 holds per scope — and, in the same step,
 *     reads the user's own state: a reserve of any scope is refused `locked` while the user is
 *     locked (an admin lock locks every scope). A scoped reserve also records the scope in the
 *     user's own state (getUser of the user answers `scopes`), keeping at most `maxDevices` device
 *     scopes: past it the least recently used device scope that is not locked is forgotten with
 *     its state (the untrusted scope `u` is never forgotten). Locked scopes are listed by
 *     listLocked with their scope. unlock with `force` clears a scope's state even when it is not
 *     locked (an admin unlock of the user clears every scope).
 */
export interface AttemptStore {
  /**
   * Reserves one attempt of `factor` for `subject` under id `id` (unique, made by the engine).
   * Admitted only when the user is not locked and (limit = 0 or failures + in-flight < limit).
   * Idempotent: a reserve of an id that is already reserved answers `admitted` with the same
   * expiry and counts nothing more; a reserve of an id that was settled or released (tombstone)
   * answers `gone` and changes nothing.
   * Busy: `retryAfterMs` is the time until the earliest lease of the SAME factor ends, clamped to
   * [1, 1000] ms (both stores alike).
   */
  reserve(
    subject: Subject,
    factor: Factor,
    limits: Limits,
    leaseMs: number,
    id: string,
  ): Promise<ReserveResult>;

  /**
   * Settles reservation `id` of `factor`. With `tombstone` (default false), `id` is tombstoned for
   * `leaseMs` (a late reserve of it is refused). A reservation that does not exist (never made,
   * already settled, cleared by unlock or a password change, or expired and so already counted as
   * a failure) answers `{ status: 'unknown' }`, changes no counter, and is always tombstoned (its
   * reserve may still be on its way). Settling twice is settling once: the second answers `unknown`.
   */
  settle(
    subject: Subject,
    factor: Factor,
    id: string,
    outcome: SettleOutcome,
    limits: Limits,
    leaseMs: number,
    tombstone?: boolean,
    extra?: SettleExtra,
  ): Promise<SettleResult>;

  /** The user's state (after applying expired leases). */
  getUser(subject: Subject, limits: Limits): Promise<UserState>;

  /**
   * Locks the user (admin lock), after applying expired leases. `changed: false` when it was
   * locked already (by an expired lease too).
   */
  lock(subject: Subject, limits: Limits): Promise<{ changed: boolean; lockedAt: number }>;

  /**
   * Unlocks the user, after applying expired leases: clears the lock, every counter and every
   * in-flight reservation (their ids are tombstoned for `leaseMs`: a later settle answers
   * `unknown`). Afterwards the user is active with nothing counted or in flight.
   * `changed: false` when it was not locked (nothing is cleared then).
   */
  unlock(subject: Subject, limits: Limits, leaseMs: number, force?: boolean): Promise<{ changed: boolean }>;

  /**
   * Resets one factor's counter without touching the lock (password changed), after applying
   * expired leases; in-flight reservations of that factor are dropped uncounted (tombstoned for
   * `leaseMs`), so no stale failure of the old credential follows the reset.
   */
  resetFactor(subject: Subject, factor: Factor, limits: Limits, leaseMs: number): Promise<void>;

  /**
   * Locked users of an org, `limit` at a time from after `cursor`, ordered by user id compared as
   * UTF-8 bytes (Redis's lexicographic order; memory sorts the same way). Lists every user locked
   * at the time of the listing, including users whose expired leases lock them but whom nobody
   * has read since (`limits` are the org's effective limits, used to apply those leases). One
   * narrow exception is allowed: a lease whose failure could not lock the user under the limits in
   * force when it was reserved (the limit was lowered while it was in flight) may lock the user
   * only when something reads the user (RedisStore tracks just the leases that could lock, to
   * keep the hot path at one round trip; MemoryStore lists those users too).
   */
  listLocked(
    instance: string,
    org: string,
    limits: Limits,
    limit: number,
    cursor?: string,
  ): Promise<LockedPage>;
}

/**
 * Settings and their change notices: the stored lockout settings of the instance and of each
 * org, written atomically with a sequence per owner, and the notices that tell every process
 * (the engines' settings caches) that they changed.
 */
export interface SettingsStore {
  /** Stored settings of an owner, or null when it has none (an org without custom settings). */
  getSettings(instance: string, owner: Owner): Promise<SettingsRecord | null>;

  /**
   * Changes an owner's settings atomically and, when something changed, tells every process
   * (onSettingsChanged) — its own included.
   *   - add: only when there are none (else `exists`);
   *   - update: only when there are some (else `not_found`), and only to other values (else `not_changed`);
   *   - remove: only when there are some (else `not_found`);
   *   - set: upsert, compared against the stored values or, when none are stored, `fallback`
   *     (the configured instance default); same values: `not_changed`.
   * The owner's sequence increases by 1 at every change and survives `remove`.
   */
  writeSettings(instance: string, owner: Owner, change: SettingsChange): Promise<WriteSettingsResult>;

  /** Calls `listener` when any process changed settings of `instance`. Returns an unsubscribe function. */
  onSettingsChanged(listener: (instance: string, owner: Owner) => void): () => void;
}

/**
 * One-time material: issued SMS/Email codes (stored as hashes, single use) and the TOTP time
 * steps already used (RFC 6238 §5.2 replay protection). Records expire after their own `ttlMs`.
 */
export interface OneTimeStore {
  /**
   * Records that time step `step` of counter `key` was used by the user, and answers true only when
   * `step` is greater than every step recorded for that key before (RFC 6238 §5.2: once a step
   * was accepted, that step and every earlier one are refused). The record lasts `ttlMs`.
   */
  useStep(subject: Subject, key: string, step: number, ttlMs: number): Promise<boolean>;

  /** Stores an issued one-time code's hash for `channel`, replacing any earlier one. */
  putCode(subject: Subject, channel: CodeChannel, codeHash: string, ttlMs: number): Promise<void>;

  /**
   * Compares `codeHash` with the stored hash of `channel`: `match` deletes it (single use),
   * `mismatch` keeps it, `missing` when none is stored (never issued, used or expired).
   */
  takeCode(
    subject: Subject,
    channel: CodeChannel,
    codeHash: string,
  ): Promise<'match' | 'mismatch' | 'missing'>;
}

/**
 * Per-org defence settings (issue 12): an optional port beside LockoutStore (not one of its
 * member lists, so that stores written before it keep working; the engine asks for it only when
 * the instance has defences). Values are stored as canonical JSON (canonicalDefences), written
 * atomically with a sequence per org that survives `remove`, and a change tells every process
 * through onSettingsChanged with the org as owner (the engines drop both cached settings of it).
 * Same rules as writeSettings: add only when there are none (`exists`), update only when there
 * are some (`not_found`) and only to other values (`not_changed`), remove only when there are some.
 */
export interface DefenceSettingsStore {
  /** The org's stored defence settings, or null when it has none. */
  getDefenceSettings(instance: string, org: string): Promise<DefenceRecord | null>;
  /** Changes the org's defence settings (see the port's comment). */
  writeDefenceSettings(
    instance: string,
    org: string,
    change: DefenceSettingsChange,
  ): Promise<WriteSettingsResult>;
}

export type DefenceSettingsChange =
  { readonly op: 'add' | 'update'; readonly values: DefenceValues } | { readonly op: 'remove' };

/** Whether `store` also keeps per-org defence settings. */
export function isDefenceSettingsStore(store: unknown): store is DefenceSettingsStore {
  const s = store as Partial<DefenceSettingsStore> | null;
  return typeof s?.getDefenceSettings === 'function' && typeof s.writeDefenceSettings === 'function';
}

/**
 * The defences in force for one store operation (`limits.defences`). Absent: all off.
 *   lockMs, maxLockMs: temporary lockout (0 = locks are permanent);
 *   remember: how many wrong-password keys are remembered per user (0 = no forgiveness).
 */
export interface StoreDefences {
  readonly lockMs: number;
  readonly maxLockMs: number;
  readonly remember: number;
  /** Device cookies: most device scopes kept per user (0 or absent = off; see AttemptStore). */
  readonly maxDevices?: number;
}

/** What a settle may carry for the defences. */
export interface SettleExtra {
  /** A failure of `password`: the keyed hash of the wrong password (repeat-password forgiveness). */
  readonly repeatKey?: string;
}

/** Fields any answer may carry when defences are on (absent otherwise). */
export interface DefenceAnswer {
  /** The lockedAt of a temporary lock that ended during this operation. */
  readonly expiredLockAt?: number;
}

/** What every store has whatever its concerns: a name, a health probe and close. */
export interface StoreLifecycle {
  /** A short name for logs and metrics ("memory", "redis"). */
  readonly kind: string;

  /** Resolves when the store answers; rejects with StoreUnavailableError otherwise. */
  ping(): Promise<void>;

  /** Releases the store's own resources (subscriptions, timers). Does not close a client it was given. */
  close(): Promise<void>;
}

/**
 * The whole store port: attempts and locks, settings and their change notices, one-time material,
 * and the lifecycle. What LockoutEngine takes (and checks member by member when it is made),
 * and what MemoryStore and RedisStore implement.
 *
 * Common to every port:
 *   - Times are milliseconds since the epoch, taken from the store's own clock (Redis TIME), so
 *     that processes with skewed clocks agree on lease and record expiry.
 *   - Every method that answers a Promise rejects with StoreUnavailableError when the store cannot
 *     be reached; the outcome of a write that rejected is unknown (it may have been applied).
 *   - Bounded state. State of a user that is not locked expires `idleTtlMs` after the user's last
 *     write (a store option; 0 = never, ZITADEL's strict semantics); in-flight reservations and
 *     tombstones keep the user's state at least until their lease ends. Locked users keep their
 *     lock. State of a user with no failures, no lock, no reservation, no tombstone and no codes
 *     takes no space.
 */
export interface LockoutStore extends AttemptStore, SettingsStore, OneTimeStore, StoreLifecycle {}

/** The members of AttemptStore, in declaration order. */
export const ATTEMPT_STORE_MEMBERS = [
  'reserve',
  'settle',
  'getUser',
  'lock',
  'unlock',
  'resetFactor',
  'listLocked',
] as const satisfies readonly (keyof AttemptStore)[];

/** The members of SettingsStore, in declaration order. */
export const SETTINGS_STORE_MEMBERS = [
  'getSettings',
  'writeSettings',
  'onSettingsChanged',
] as const satisfies readonly (keyof SettingsStore)[];

/** The members of OneTimeStore, in declaration order. */
export const ONE_TIME_STORE_MEMBERS = [
  'useStep',
  'putCode',
  'takeCode',
] as const satisfies readonly (keyof OneTimeStore)[];

/** The members of StoreLifecycle, in declaration order (`kind` is a string, the others methods). */
export const STORE_LIFECYCLE_MEMBERS = [
  'kind',
  'ping',
  'close',
] as const satisfies readonly (keyof StoreLifecycle)[];

/** Compiles only when `T` is `never`: used below to prove that the member lists are complete. */
type ExpectNever<T extends never> = T;
// Each list names every member of its port, and together they name every member of LockoutStore:
// a member added to a port (or to LockoutStore itself) without adding it to a list fails to compile.
type _AttemptStoreListed = ExpectNever<Exclude<keyof AttemptStore, (typeof ATTEMPT_STORE_MEMBERS)[number]>>;
type _SettingsStoreListed = ExpectNever<
  Exclude<keyof SettingsStore, (typeof SETTINGS_STORE_MEMBERS)[number]>
>;
type _OneTimeStoreListed = ExpectNever<Exclude<keyof OneTimeStore, (typeof ONE_TIME_STORE_MEMBERS)[number]>>;
type _StoreLifecycleListed = ExpectNever<
  Exclude<keyof StoreLifecycle, (typeof STORE_LIFECYCLE_MEMBERS)[number]>
>;
type _LockoutStoreListed = ExpectNever<Exclude<keyof LockoutStore, LockoutStoreMember>>;

/** The name of a member of LockoutStore. */
export type LockoutStoreMember =
  | (typeof ATTEMPT_STORE_MEMBERS)[number]
  | (typeof SETTINGS_STORE_MEMBERS)[number]
  | (typeof ONE_TIME_STORE_MEMBERS)[number]
  | (typeof STORE_LIFECYCLE_MEMBERS)[number];

/** One port of LockoutStore: its interface's name, its concern, its members. */
export interface StorePort {
  readonly port: 'AttemptStore' | 'SettingsStore' | 'OneTimeStore' | 'StoreLifecycle';
  readonly concern: string;
  readonly members: readonly LockoutStoreMember[];
}

/** The ports that make LockoutStore, in the order their members are checked and named. */
export const STORE_PORTS: readonly StorePort[] = [
  { port: 'AttemptStore', concern: 'attempts and locks', members: ATTEMPT_STORE_MEMBERS },
  { port: 'SettingsStore', concern: 'settings and their change notices', members: SETTINGS_STORE_MEMBERS },
  { port: 'OneTimeStore', concern: 'one-time codes and used TOTP steps', members: ONE_TIME_STORE_MEMBERS },
  { port: 'StoreLifecycle', concern: 'name, health and close', members: STORE_LIFECYCLE_MEMBERS },
];

/** Every member of LockoutStore, port by port. */
export const LOCKOUT_STORE_MEMBERS: readonly LockoutStoreMember[] = STORE_PORTS.flatMap((p) => p.members);

/** Whether `value` is a usable `member` of a store: `kind` a string, every other member a function. */
function hasMember(value: unknown, member: LockoutStoreMember): boolean {
  const v = (value as Record<string, unknown>)[member];
  return member === 'kind' ? typeof v === 'string' : typeof v === 'function';
}

/**
 * The members of LockoutStore that `store` lacks, grouped by port (ports it lacks nothing of are
 * left out): every member of every port when `store` is not an object. Empty: a complete store.
 */
export function missingStoreMembers(store: unknown): StorePort[] {
  const isObject = typeof store === 'object' && store !== null;
  const missing: StorePort[] = [];
  for (const port of STORE_PORTS) {
    const members = isObject ? port.members.filter((m) => !hasMember(store, m)) : port.members;
    if (members.length > 0) missing.push({ ...port, members });
  }
  return missing;
}

export type Owner = { readonly type: 'instance' } | { readonly type: 'org'; readonly org: string };
export type CodeChannel = 'sms' | 'email';

export type ReserveResult = (
  | { readonly status: 'admitted'; readonly expiresAt: number }
  /** The id was settled or released already (tombstone): nothing was reserved. */
  | { readonly status: 'gone' }
  /** `lockedUntil`: when a temporary lock ends (absent: permanent). */
  | { readonly status: 'locked'; readonly lockedAt: number; readonly lockedUntil?: number }
  | { readonly status: 'busy'; readonly retryAfterMs: number }
) &
  DefenceAnswer;

export type SettleOutcome = 'success' | 'failure' | 'release';

export type SettleResult =
  | {
      readonly status: 'settled';
      /** The factor's counter after settling. */
      readonly failedAttempts: number;
      /** Whether the user is locked after settling. */
      readonly locked: boolean;
      /** Whether this settle locked the user (its failure reached the limit). */
      readonly lockedNow: boolean;
      /** When the lock ends, if it is temporary (defences only; then with its lockedAt). */
      readonly lockedUntil?: number;
      readonly lockedAt?: number;
      /** The failure repeated a remembered wrong password and was not counted (defences only). */
      readonly forgiven?: boolean;
      readonly expiredLockAt?: number;
    }
  | { readonly status: 'unknown' };

export interface UserState extends DefenceAnswer {
  readonly locked: boolean;
  readonly lockedAt?: number;
  /** When a temporary lock ends (absent: not locked, or locked for good). */
  readonly lockedUntil?: number;
  /** Device cookies: the user's scopes (getUser of the user's own state only). */
  readonly scopes?: readonly string[];
  readonly failed: Readonly<Record<Factor, number>>;
}

export interface LockedPage {
  /** `scope`: device cookies, the locked scope (absent: the user's own lock). */
  readonly users: ReadonlyArray<{
    readonly userId: string;
    readonly lockedAt: number;
    readonly scope?: string;
  }>;
  readonly nextCursor?: string;
}

export interface SettingsValues {
  readonly maxPasswordAttempts: number;
  readonly maxOtpAttempts: number;
}

export interface SettingsRecord extends SettingsValues {
  readonly sequence: number;
  readonly creationDate: number;
  readonly changeDate: number;
}

export type SettingsChange =
  | { readonly op: 'add' | 'update'; readonly values: SettingsValues }
  | { readonly op: 'remove' }
  | { readonly op: 'set'; readonly values: SettingsValues; readonly fallback: SettingsValues };

export type WriteSettingsResult =
  | {
      readonly status: 'ok';
      readonly sequence: number;
      readonly creationDate: number;
      readonly changeDate: number;
      /**
       * writeSettings: the values this change replaced, read in the same atomic step (null: none
       * were stored). Absent from writeDefenceSettings' answers.
       */
      readonly previous?: SettingsValues | null;
    }
  | { readonly status: 'exists' | 'not_found' | 'not_changed' };

/**
 * Device cookies: the member of the org's locked-users index (and pending set) that stands for a
 * subject — its user id, and `\u0000<scope>` for a scope (an id never holds a control character,
 * so members cannot collide, and a user's members sort together, right after its own).
 */
export function indexMember(s: Subject): string {
  return s.scope === undefined ? s.user : `${s.user}\u0000${s.scope}`;
}

/** The subject an index member of (instance, org) stands for. */
export function subjectOfMember(instance: string, org: string, member: string): Subject {
  const { user, scope } = parseIndexMember(member);
  return scope === undefined ? { instance, org, user } : { instance, org, user, scope };
}

/** The user id and scope of an index member. */
export function parseIndexMember(member: string): { user: string; scope?: string } {
  const i = member.indexOf('\u0000');
  return i < 0 ? { user: member } : { user: member.slice(0, i), scope: member.slice(i + 1) };
}

/**
 * A page of the locked-users listing from sorted index members (those after the cursor): the
 * first `limit`, never splitting one user's members (its own lock and its scopes') across pages —
 * a page ends before the user that straddles it, or, when that user alone fills it, with all of
 * that user's members. `more`: members remain after the page. Without scopes this is exactly the
 * first `limit` members.
 */
export function pageOfMembers(members: readonly string[], limit: number): { page: string[]; more: boolean } {
  if (members.length <= limit) return { page: [...members], more: false };
  const userAt = (i: number) => parseIndexMember(members[i]!).user;
  const boundary = userAt(limit);
  let end = limit;
  if (userAt(limit - 1) === boundary) {
    const start = members.findIndex((m) => parseIndexMember(m).user === boundary);
    if (start > 0) end = start;
    else while (end < members.length && userAt(end) === boundary) end++;
  }
  return { page: members.slice(0, end), more: end < members.length };
}
