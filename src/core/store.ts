import type { Factor, Limits, Subject } from './subjects';

/**
 * The store port: everything the engine needs from a place that keeps lockout state.
 *
 * Each user operation is ONE atomic step in the store (one Lua script, one round trip, on Redis),
 * and every one of them first applies expired leases: a reservation whose lease has passed is
 * removed and counted as a failure of its factor (and may lock the user), exactly once.
 * The lockout rules are applied inside the store, because they must be atomic with the counters:
 *   - failure: counter + 1; if the factor's limit is > 0 and the new count >= limit, lock (lockedAt = now);
 *   - success: the factor's counter is reset (unless the user is locked by then: nothing changes);
 *   - release: the reservation goes away, nothing is counted.
 * Times are milliseconds since the epoch, taken from the store's own clock (Redis TIME), so that
 * processes with skewed clocks agree on lease expiry.
 *
 * Every method rejects with StoreUnavailableError when the store cannot be reached.
 * State of a user with no failures, no lock, no reservation and no codes takes no space.
 */
export interface LockoutStore {
  /** A short name for logs and metrics ("memory", "redis"). */
  readonly kind: string;

  /**
   * Reserves one attempt of `factor` for `subject` under id `id` (unique, made by the engine).
   * Admitted only when the user is not locked and (limit = 0 or failures + in-flight < limit).
   */
  reserve(
    subject: Subject,
    factor: Factor,
    limits: Limits,
    leaseMs: number,
    id: string,
  ): Promise<ReserveResult>;

  /**
   * Settles reservation `id` of `factor`. A reservation that does not exist (never made, already
   * settled, or expired and so already counted as a failure) answers `{ status: 'unknown' }` and
   * changes nothing.
   */
  settle(
    subject: Subject,
    factor: Factor,
    id: string,
    outcome: SettleOutcome,
    limits: Limits,
  ): Promise<SettleResult>;

  /** The user's state (after applying expired leases). */
  getUser(subject: Subject, limits: Limits): Promise<UserState>;

  /** Locks the user (admin lock). `changed: false` when it was locked already. */
  lock(subject: Subject): Promise<{ changed: boolean; lockedAt: number }>;

  /** Unlocks the user and resets all its counters. `changed: false` when it was not locked. */
  unlock(subject: Subject): Promise<{ changed: boolean }>;

  /** Resets one factor's counter without touching the lock (password changed). */
  resetFactor(subject: Subject, factor: Factor): Promise<void>;

  /** Locked users of an org, ordered by user id, `limit` at a time from after `cursor`. */
  listLocked(instance: string, org: string, limit: number, cursor?: string): Promise<LockedPage>;

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

  /**
   * Records `key` for the user for `ttlMs` and answers true if it was not recorded already
   * (used to refuse a TOTP code the second time).
   */
  useOnce(subject: Subject, key: string, ttlMs: number): Promise<boolean>;

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

  /** Resolves when the store answers; rejects with StoreUnavailableError otherwise. */
  ping(): Promise<void>;

  /** Releases the store's own resources (subscriptions, timers). Does not close a client it was given. */
  close(): Promise<void>;
}

export type Owner = { readonly type: 'instance' } | { readonly type: 'org'; readonly org: string };
export type CodeChannel = 'sms' | 'email';

export type ReserveResult =
  | { readonly status: 'admitted'; readonly expiresAt: number }
  | { readonly status: 'locked'; readonly lockedAt: number }
  | { readonly status: 'busy'; readonly retryAfterMs: number };

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
    }
  | { readonly status: 'unknown' };

export interface UserState {
  readonly locked: boolean;
  readonly lockedAt?: number;
  readonly failed: Readonly<Record<Factor, number>>;
}

export interface LockedPage {
  readonly users: ReadonlyArray<{ readonly userId: string; readonly lockedAt: number }>;
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
    }
  | { readonly status: 'exists' | 'not_found' | 'not_changed' };
