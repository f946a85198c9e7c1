import { decodeAttemptId, encodeAttemptId, newNonce, type AttemptRef } from './attempt-id';
import {
  CompensationQueue,
  type CompensationEvent,
  type CompensationStats,
  type CompensationTask,
} from './compensation';
import {
  AlreadyExistsError,
  CheckAbortedError,
  CheckTimeoutError,
  InvalidArgumentError,
  NotChangedError,
  NotFoundError,
  OptionError,
  StoreUnavailableError,
} from './errors';
import { describeOptionValue } from './option-checks';
import { parseSettingsValues, SHIPPED_DEFAULT, type Details, type EffectiveSettings } from './settings';
import { SettingsCache } from './settings-cache';
import type { ThrottleEvent } from './spray-throttle';
import {
  missingStoreMembers,
  type LockedPage,
  type LockoutStore,
  type Owner,
  type ReserveResult,
  type SettingsChange,
  type SettingsRecord,
  type SettingsValues,
  type SettleOutcome,
  type SettleResult,
} from './store';
import { makeSubject, validateFactor, validateId, type Factor, type Limits, type Subject } from './subjects';

export interface LockoutEngineOptions {
  /** Where state is kept. */
  store: LockoutStore;
  /** The instance id (default "default"). */
  instanceId?: string;
  /** The instance default settings used until changed at run time (default 10 / 10). */
  defaults?: Partial<SettingsValues>;
  /** How long a reservation may stay unsettled before it counts as a failure (default 30 000 ms). */
  leaseMs?: number;
  /** How long settings are cached in process at most (default 500 ms; changes also invalidate at once). */
  settingsCacheTtlMs?: number;
  /** Observer of lockout events (metrics, audit logs). Must not throw. */
  onEvent?: (event: LockoutEvent) => void;
  /**
   * How long check() lets `evaluate` run (default min(leaseMs / 2, 10 000) ms; at most
   * leaseMs − 500, so that a check is settled before its lease ends). Past it the attempt is
   * released uncounted and check() rejects with CheckTimeoutError (503).
   */
  evaluationTimeoutMs?: number;
  /**
   * G4, while the store cannot be reached: `fail-closed` (default) rejects with
   * StoreUnavailableError; `fail-open` admits an unenforced reservation (`enforced: false`, its
   * settle is a no-op) so that the credential is still evaluated, without lockout. A verifier
   * that needs the store itself still fails (its StoreUnavailableError is rethrown by check()):
   * SMS/Email codes, and TOTP codes, whose replay protection (RFC 6238 §5.2) is part of
   * verifying them — so they answer 503 under fail-open too.
   */
  onStoreError?: StoreErrorPolicy;
  /** Told of every attempt answered without lockout (fail-open): log a warning, count it. Must not throw. */
  onFailOpen?: (notice: FailOpenNotice) => void;
  /** Told of every compensation event (queued, retried, compensated, abandoned). Must not throw. */
  onCompensation?: (event: CompensationEvent) => void;
  /** Bounds of the compensation queue (most pending tasks, backoff). */
  compensation?: { maxPending?: number; initialDelayMs?: number; maxDelayMs?: number };
}

export type { CompensationEvent, CompensationStats, CompensationTask } from './compensation';

/** What reserve, settle and check do while the store cannot be reached (G4). */
export type StoreErrorPolicy = 'fail-closed' | 'fail-open';

/** An attempt answered without lockout because the store could not be reached (fail-open). */
export interface FailOpenNotice {
  /** reserve: admitted unenforced; settle: a real reservation whose settle failed (compensated). */
  readonly operation: 'reserve' | 'settle';
  readonly org: string;
  readonly user: string;
  readonly factor: Factor;
  /** The store's error (a StoreUnavailableError). */
  readonly error: unknown;
}

/** Resolved engine configuration. */
export interface LockoutEngineConfig {
  readonly instanceId: string;
  readonly defaults: SettingsValues;
  readonly leaseMs: number;
  readonly settingsCacheTtlMs: number;
  readonly evaluationTimeoutMs: number;
  readonly onStoreError: StoreErrorPolicy;
}

export type LockoutEvent =
  | { type: 'check'; org: string; user: string; factor: Factor; outcome: CheckOutcome }
  | { type: 'lock'; org: string; user: string; reason: 'failures' | 'admin'; factor?: Factor }
  | { type: 'unlock'; org: string; user: string }
  | { type: 'settings'; owner: Owner; op: SettingsChange['op'] }
  // Spray throttling (issue 12): an address block was throttled (core/spray-throttle.ts).
  | ThrottleEvent;

export type CheckOutcome = 'success' | 'failure' | 'locked' | 'busy';

/** An admitted attempt, to be settled exactly once. */
export interface Reservation {
  /** Opaque id that names this reservation (used by the sidecar's /v1/attempts routes). */
  readonly attemptId: string;
  readonly orgId: string;
  readonly userId: string;
  readonly factor: Factor;
  readonly expiresAt: number;
  /**
   * false: admitted without the store (fail-open): nothing is reserved or counted, and settling
   * it changes nothing. Absent or true: a real reservation.
   */
  readonly enforced?: boolean;
  /** The store error that made it unenforced (fail-open only). */
  readonly storeError?: unknown;
}

export type ReserveOutcome =
  | { readonly status: 'admitted'; readonly reservation: Reservation }
  | { readonly status: 'locked'; readonly lockedAt: number }
  | { readonly status: 'busy'; readonly retryAfterMs: number };

export interface Settlement {
  readonly failedAttempts: number;
  readonly locked: boolean;
  /** false: nothing was counted because the store could not be reached (fail-open). */
  readonly enforced?: false;
  /** The store error (fail-open only). */
  readonly storeError?: unknown;
}

/**
 * The fields of a check answered without lockout (fail-open): `enforced: false` and the store's
 * error; `failedAttempts` is 0 and `locked` false then (nothing could be counted or read).
 */
interface Unenforced {
  readonly enforced?: false;
  readonly storeError?: unknown;
}

export type CheckResult =
  | ({ readonly outcome: 'success'; readonly failedAttempts: 0; readonly locked: false } & Unenforced)
  | ({ readonly outcome: 'failure'; readonly failedAttempts: number; readonly locked: boolean } & Unenforced)
  | { readonly outcome: 'locked'; readonly lockedAt: number }
  | { readonly outcome: 'busy'; readonly retryAfterMs: number };

export interface UserStatus {
  readonly userId: string;
  readonly orgId: string;
  readonly locked: boolean;
  readonly lockedAt?: number;
  readonly failedAttempts: Readonly<Record<Factor, number>>;
  readonly settings: EffectiveSettings;
}

const DEFAULT_LEASE_MS = 30_000;
/** A lease shorter than this leaves no time to evaluate a credential and settle it. */
export const MIN_LEASE_MS = 1000;
const MAX_LEASE_MS = 3_600_000;
/** Time kept between the end of an evaluation and the end of its lease, for the settle. */
export const SETTLE_MARGIN_MS = 500;
const MAX_LIST_LIMIT = 1000;
/** Most fail-open attempt ids kept for settling by id (the sidecar's /v1/attempts routes). */
const MAX_OPEN_ATTEMPTS = 100_000;

/**
 * Checks the engine's options and fills in their defaults. A bad one throws an OptionError
 * (`Errors.Options.Invalid`) whose `check` is `LockoutEngine.<option>`.
 */
export function resolveEngineConfig(options: Omit<LockoutEngineOptions, 'store'>): LockoutEngineConfig {
  const instanceId = validateId(options.instanceId ?? 'default', 'instanceId');
  const defaults = parseSettingsValues({ ...SHIPPED_DEFAULT, ...options.defaults });
  const leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
  if (!Number.isInteger(leaseMs) || leaseMs < MIN_LEASE_MS || leaseMs > MAX_LEASE_MS) {
    throw new OptionError(
      'LockoutEngine.leaseMs',
      'leaseMs',
      `leaseMs must be an integer from ${MIN_LEASE_MS} to ${MAX_LEASE_MS} (ms): a check needs time to evaluate a credential and settle it within its lease; got ${describeOptionValue(leaseMs)}, omit it for ${DEFAULT_LEASE_MS}`,
    );
  }
  const maxEvaluation = leaseMs - SETTLE_MARGIN_MS;
  const evaluationTimeoutMs = options.evaluationTimeoutMs ?? Math.min(Math.floor(leaseMs / 2), 10_000);
  if (
    !Number.isInteger(evaluationTimeoutMs) ||
    evaluationTimeoutMs < 1 ||
    evaluationTimeoutMs > maxEvaluation
  ) {
    throw new OptionError(
      'LockoutEngine.evaluationTimeoutMs',
      'evaluationTimeoutMs',
      `evaluationTimeoutMs must be an integer from 1 to leaseMs − ${SETTLE_MARGIN_MS} (${maxEvaluation} with leaseMs ${leaseMs}), so that a check is settled before its lease ends; got ${describeOptionValue(evaluationTimeoutMs)}: lower it or raise leaseMs`,
    );
  }
  const onStoreError = options.onStoreError ?? 'fail-closed';
  if (onStoreError !== 'fail-closed' && onStoreError !== 'fail-open') {
    throw new OptionError(
      'LockoutEngine.onStoreError',
      'onStoreError',
      `onStoreError must be 'fail-closed' (answer 503 while the store is down) or 'fail-open' (evaluate without lockout), got ${describeOptionValue(onStoreError)}`,
    );
  }
  const settingsCacheTtlMs = options.settingsCacheTtlMs ?? 500;
  if (!Number.isInteger(settingsCacheTtlMs) || settingsCacheTtlMs < 0 || settingsCacheTtlMs > 1000) {
    throw new OptionError(
      'LockoutEngine.settingsCacheTtlMs',
      'settingsCacheTtlMs',
      `settingsCacheTtlMs must be an integer from 0 to 1000 (settings changes must be seen within 1 s), got ${describeOptionValue(settingsCacheTtlMs)}; 0 reads the store every time`,
    );
  }
  return { instanceId, defaults, leaseMs, settingsCacheTtlMs, evaluationTimeoutMs, onStoreError };
}

/**
 * Throws an OptionError (`LockoutEngine.store`) unless `store` has every member of LockoutStore
 * (all four ports: attempts and locks, settings, one-time material, lifecycle); the message names
 * each missing member with the port and concern it belongs to.
 */
function checkStore(store: unknown): void {
  const missing = missingStoreMembers(store);
  if (missing.length === 0) return;
  const lacks =
    store === undefined
      ? ''
      : ` (it lacks ${missing.map((p) => `${p.members.join(', ')} (${p.port}: ${p.concern})`).join('; ')}), got ${describeOptionValue(store)}`;
  throw new OptionError(
    'LockoutEngine.store',
    'store',
    `store must be a LockoutStore (e.g. new MemoryStore() or new RedisStore({ client }))${lacks}`,
  );
}

/**
 * The lockout engine: settings resolution, the reservation protocol (reserve → evaluate →
 * settle) and admin actions, on any LockoutStore. It holds no per-user state of its own, so any
 * number of engines in any number of processes can share one store.
 */
export class LockoutEngine {
  readonly config: LockoutEngineConfig;
  readonly store: LockoutStore;
  private readonly cache: SettingsCache;
  private readonly unsubscribe: () => void;
  private readonly onEvent: (event: LockoutEvent) => void;
  private readonly onFailOpen: (notice: FailOpenNotice) => void;
  private readonly failOpen: boolean;
  private readonly compensation: CompensationQueue;
  /**
   * Fail-open attempt ids handed out (their attemptId was read, e.g. by POST /v1/attempts) →
   * their expiry and whether they were settled: each is settled at most once, by this process.
   * Insertion order is expiry order (one lease for all).
   */
  private readonly open = new Map<string, UnenforcedReservation>();

  constructor(options: LockoutEngineOptions) {
    checkStore(options?.store);
    this.config = resolveEngineConfig(options);
    this.store = options.store;
    this.cache = new SettingsCache(this.config.settingsCacheTtlMs);
    this.onEvent = options.onEvent ?? (() => {});
    const onFailOpen = options.onFailOpen;
    this.onFailOpen = (notice) => {
      try {
        onFailOpen?.(notice);
      } catch {
        // an observer must not change the answer
      }
    };
    this.failOpen = this.config.onStoreError === 'fail-open';
    this.compensation = new CompensationQueue({
      ...options.compensation,
      // A reserve whose outcome is unknown may still arrive: its release leaves a tombstone.
      run: (task) =>
        this.writeSettle(task.subject, task.factor, task.nonce, task.outcome, task.origin === 'reserve'),
      ...(options.onCompensation ? { onEvent: options.onCompensation } : {}),
    });
    this.unsubscribe = this.store.onSettingsChanged((instance, owner) => {
      if (instance === this.config.instanceId) this.cache.invalidate(owner);
    });
  }

  get instanceId(): string {
    return this.config.instanceId;
  }

  // ---- settings -------------------------------------------------------------------------

  /** The settings that apply to `org`: its custom settings, else the instance's. */
  async getEffectiveSettings(org: string): Promise<EffectiveSettings> {
    validateId(org, 'orgId');
    const custom = await this.record({ type: 'org', org });
    if (custom) {
      return {
        maxPasswordAttempts: custom.maxPasswordAttempts,
        maxOtpAttempts: custom.maxOtpAttempts,
        isDefault: false,
        resourceOwnerType: 'RESOURCE_OWNER_TYPE_ORG',
        details: detailsOf(custom, org),
      };
    }
    return this.getInstanceSettings();
  }

  /** The instance settings: changed at run time, else the configured default. */
  async getInstanceSettings(): Promise<EffectiveSettings> {
    const stored = await this.record({ type: 'instance' });
    const values = stored ?? this.config.defaults;
    return {
      maxPasswordAttempts: values.maxPasswordAttempts,
      maxOtpAttempts: values.maxOtpAttempts,
      isDefault: true,
      resourceOwnerType: 'RESOURCE_OWNER_TYPE_INSTANCE',
      details: stored ? detailsOf(stored, this.instanceId) : { sequence: 0, resourceOwner: this.instanceId },
    };
  }

  /** Gives `org` custom settings. AlreadyExistsError when it has some. */
  async addOrgSettings(org: string, input: SettingsInput): Promise<Details> {
    return this.writeSettings(
      { type: 'org', org: validateId(org, 'orgId') },
      { op: 'add', values: parseSettingsValues(input) },
    );
  }

  /** Changes `org`'s custom settings. NotFoundError when it has none, NotChangedError for the same values. */
  async updateOrgSettings(org: string, input: SettingsInput): Promise<Details> {
    return this.writeSettings(
      { type: 'org', org: validateId(org, 'orgId') },
      { op: 'update', values: parseSettingsValues(input) },
    );
  }

  /** Removes `org`'s custom settings: it falls back to the instance's. NotFoundError when it has none. */
  async resetOrgSettings(org: string): Promise<Details> {
    return this.writeSettings({ type: 'org', org: validateId(org, 'orgId') }, { op: 'remove' });
  }

  /** Changes the instance settings. NotChangedError for the same values. */
  async updateInstanceSettings(input: SettingsInput): Promise<Details> {
    return this.writeSettings(
      { type: 'instance' },
      { op: 'set', values: parseSettingsValues(input), fallback: this.config.defaults },
    );
  }

  private async writeSettings(owner: Owner, change: SettingsChange): Promise<Details> {
    const result = await this.store.writeSettings(this.instanceId, owner, change);
    const resourceOwner = owner.type === 'org' ? owner.org : this.instanceId;
    switch (result.status) {
      case 'ok':
        this.cache.invalidate(owner);
        this.onEvent({ type: 'settings', owner, op: change.op });
        return {
          sequence: result.sequence,
          creationDate: result.creationDate,
          changeDate: result.changeDate,
          resourceOwner,
        };
      case 'exists':
        throw new AlreadyExistsError(
          'Errors.Org.LockoutPolicy.AlreadyExists',
          'Lockout settings already exist',
        );
      case 'not_found':
        throw new NotFoundError('Errors.Org.LockoutPolicy.NotFound', 'Lockout settings not found');
      case 'not_changed':
        throw new NotChangedError(
          'Errors.Org.LockoutPolicy.NotChanged',
          'Lockout settings have not been changed',
        );
    }
  }

  private record(owner: Owner): Promise<SettingsRecord | null> {
    return this.cache.get(owner, () => this.store.getSettings(this.instanceId, owner));
  }

  /**
   * The limits of getEffectiveSettings(org) — the org's custom settings, else the instance's —
   * read the same way (org validated by the caller), without building the settings' details.
   */
  private async limits(org: string): Promise<Limits> {
    const values =
      (await this.record({ type: 'org', org })) ??
      (await this.record({ type: 'instance' })) ??
      this.config.defaults;
    return { maxPasswordAttempts: values.maxPasswordAttempts, maxOtpAttempts: values.maxOtpAttempts };
  }

  // ---- the reservation protocol ---------------------------------------------------------

  /**
   * Reserves one attempt of `factor` for the user before its credential is evaluated (G1).
   * Answers `locked` (never evaluate), `busy` (G2: as many checks in flight as attempts remain)
   * or `admitted` with a reservation to settle exactly once.
   *
   * A store reserve that fails has an unknown outcome (it may have been applied): it is
   * compensated by a release of the same nonce, retried until its lease ends. Then, fail-closed:
   * StoreUnavailableError; fail-open: an unenforced reservation (`enforced: false`).
   */
  async reserve(orgId: string, userId: string, factor: Factor): Promise<ReserveOutcome> {
    const subject = this.subject(orgId, userId);
    validateFactor(factor);
    let limits: Limits;
    try {
      limits = await this.limits(subject.org);
    } catch (error) {
      // Nothing was sent to the store: nothing to compensate.
      return this.reserveWithoutStore(subject, factor, error);
    }
    const nonce = newNonce();
    let r: ReserveResult;
    try {
      r = await this.store.reserve(subject, factor, limits, this.config.leaseMs, nonce);
    } catch (error) {
      // Unknown outcome: released by its nonce until its lease (at most leaseMs from now) ends.
      const deadline = Date.now() + this.config.leaseMs;
      this.compensate({ subject, factor, nonce, outcome: 'release', origin: 'reserve', deadline });
      return this.reserveWithoutStore(subject, factor, error);
    }
    if (r.status === 'gone') {
      // A fresh nonce cannot have a tombstone; a store answering so is not to be trusted.
      throw new StoreUnavailableError('The store answered a new attempt as already settled');
    }
    if (r.status === 'admitted') {
      return {
        status: 'admitted',
        reservation: new AdmittedReservation(subject, factor, nonce, r.expiresAt),
      };
    }
    this.onEvent({ type: 'check', org: subject.org, user: subject.user, factor, outcome: r.status });
    return r;
  }

  /** G4 for a reserve that failed: rethrow (fail-closed), or admit an unenforced reservation. */
  private reserveWithoutStore(subject: Subject, factor: Factor, error: unknown): ReserveOutcome {
    if (!this.failOpen || !(error instanceof StoreUnavailableError)) throw error;
    this.onFailOpen({ operation: 'reserve', org: subject.org, user: subject.user, factor, error });
    return {
      status: 'admitted',
      reservation: new UnenforcedReservation(subject, factor, Date.now() + this.config.leaseMs, error, (r) =>
        this.remember(r),
      ),
    };
  }

  /** Keeps a fail-open attempt whose id was handed out, so that settling it by id works. */
  private remember(r: UnenforcedReservation): void {
    const now = Date.now();
    for (const [id, open] of this.open) {
      if (open.expiresAt >= now && this.open.size < MAX_OPEN_ATTEMPTS) break;
      this.open.delete(id);
    }
    this.open.set(r.attemptId, r);
  }

  /**
   * Settles a reservation (or an attempt id): `success` resets the factor's counter, `failure`
   * counts (and may lock), `release` forgets it uncounted. NotFoundError when the reservation is
   * unknown, already settled, or its lease expired (it was counted as a failure then).
   *
   * A store settle that fails has an unknown outcome: the same settle is compensated (retried
   * until the lease ends); then, fail-closed: StoreUnavailableError; fail-open: a settlement
   * with `enforced: false`. An unenforced (fail-open) reservation's settle changes nothing.
   */
  async settle(attempt: Reservation | string, outcome: SettleOutcome): Promise<Settlement> {
    if (outcome !== 'success' && outcome !== 'failure' && outcome !== 'release') {
      throw new InvalidArgumentError(
        'Errors.Attempt.Outcome',
        'outcome must be success, failure or release',
        'outcome',
      );
    }
    const unenforced =
      attempt instanceof UnenforcedReservation
        ? attempt
        : this.open.size > 0
          ? this.open.get(typeof attempt === 'string' ? attempt : attempt.attemptId)
          : undefined;
    if (unenforced !== undefined) {
      // By id, it lasts its lease (as a real one); the object itself settles once, whenever.
      if (!unenforced.take(attempt !== unenforced)) {
        throw new NotFoundError('Errors.Attempt.NotFound', 'Attempt not found, expired or already settled');
      }
      return unenforced.settlement;
    }
    // A reservation this engine made carries its parts; an id (or a copied object) is decoded.
    const ref =
      attempt instanceof AdmittedReservation
        ? attempt.ref
        : decodeAttemptId(typeof attempt === 'string' ? attempt : attempt.attemptId);
    const expiresAt = attempt instanceof AdmittedReservation ? attempt.expiresAt : undefined;
    const s = await this.settleRef(ref, outcome, expiresAt);
    if (s === undefined) {
      throw new NotFoundError('Errors.Attempt.NotFound', 'Attempt not found, expired or already settled');
    }
    return s;
  }

  /** Settles in the store (compensated, G4 applied, events told); undefined when the store did not know it. */
  private async settleRef(
    ref: AttemptRef,
    outcome: SettleOutcome,
    expiresAt: number | undefined,
  ): Promise<Settlement | undefined> {
    const subject = this.subject(ref.org, ref.user);
    let r: SettleResult;
    try {
      // writeSettle inlined: every check settles here, and each extra async hop costs a tick.
      const limits = await this.limits(subject.org);
      r = await this.store.settle(subject, ref.factor, ref.nonce, outcome, limits, this.config.leaseMs);
    } catch (error) {
      // Unknown outcome (or never sent): the same settle is written again until the lease ends.
      const deadline = this.leaseEnd(expiresAt);
      this.compensate({ subject, factor: ref.factor, nonce: ref.nonce, outcome, origin: 'settle', deadline });
      if (!this.failOpen || !(error instanceof StoreUnavailableError)) throw error;
      if (outcome !== 'release') {
        this.onFailOpen({
          operation: 'settle',
          org: subject.org,
          user: subject.user,
          factor: ref.factor,
          error,
        });
      }
      return { failedAttempts: 0, locked: false, enforced: false, storeError: error };
    }
    if (r.status === 'unknown') return undefined;
    if (outcome !== 'release') {
      const reported: CheckOutcome = outcome === 'success' && r.locked ? 'locked' : outcome;
      this.onEvent({
        type: 'check',
        org: subject.org,
        user: subject.user,
        factor: ref.factor,
        outcome: reported,
      });
    }
    if (r.lockedNow)
      this.onEvent({
        type: 'lock',
        org: subject.org,
        user: subject.user,
        reason: 'failures',
        factor: ref.factor,
      });
    return { failedAttempts: r.failedAttempts, locked: r.locked };
  }

  /** One settle in the store; when it fails, the same settle is queued for compensation and the error rethrown. */
  private async settleCompensated(
    subject: Subject,
    factor: Factor,
    nonce: string,
    outcome: SettleOutcome,
    expiresAt: number | undefined,
  ): Promise<SettleResult> {
    const leaseEnd = this.leaseEnd(expiresAt);
    try {
      return await this.writeSettle(subject, factor, nonce, outcome, false);
    } catch (error) {
      this.compensate({ subject, factor, nonce, outcome, origin: 'settle', deadline: leaseEnd });
      throw error;
    }
  }

  /** The store settle (with the org's current limits): what a compensation writes again. */
  private async writeSettle(
    subject: Subject,
    factor: Factor,
    nonce: string,
    outcome: SettleOutcome,
    tombstone: boolean,
  ): Promise<SettleResult> {
    const limits = await this.limits(subject.org);
    return this.store.settle(subject, factor, nonce, outcome, limits, this.config.leaseMs, tombstone);
  }

  /**
   * When a reservation's lease ends, on this process's clock: its expiry (the store's clock) when
   * known, kept within [now + SETTLE_MARGIN_MS, now + leaseMs] against clock skew.
   */
  private leaseEnd(expiresAt: number | undefined): number {
    const now = Date.now();
    const latest = now + this.config.leaseMs;
    if (expiresAt === undefined) return latest;
    return Math.min(latest, Math.max(expiresAt, now + SETTLE_MARGIN_MS));
  }

  private compensate(task: CompensationTask): void {
    this.compensation.enqueue(task);
  }

  /** Releases a reservation whose credential was not evaluated; a failure is compensated, not thrown. */
  private async release(reservation: Reservation): Promise<void> {
    if (reservation instanceof UnenforcedReservation) {
      reservation.take();
      return;
    }
    const { ref, expiresAt } = reservation as AdmittedReservation;
    try {
      await this.settleCompensated(
        this.subject(ref.org, ref.user),
        ref.factor,
        ref.nonce,
        'release',
        expiresAt,
      );
    } catch {
      // Queued for compensation by settleCompensated: it is retried until the lease ends.
    }
  }

  /** Runs `evaluate`, bounded by evaluationTimeoutMs (CheckTimeoutError past it). */
  private evaluate(evaluate: () => Promise<boolean> | boolean): Promise<boolean> | boolean {
    const result = evaluate();
    if (typeof (result as PromiseLike<boolean> | null)?.then !== 'function') return result === true;
    const timeoutMs = this.config.evaluationTimeoutMs;
    return new Promise<boolean>((resolve, reject) => {
      const timer = setTimeout(() => reject(new CheckTimeoutError(timeoutMs)), timeoutMs);
      Promise.resolve(result).then(
        (ok) => {
          clearTimeout(timer);
          resolve(ok === true);
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }

  /**
   * A whole check: reserve, evaluate the credential with `evaluate` (true = correct), settle.
   * If `evaluate` throws, the reservation is released uncounted and the error is rethrown; if it
   * outlives `evaluationTimeoutMs`, it is released and CheckTimeoutError (503) is thrown. A
   * reservation gone by the time it is settled (an admin unlock, a password change) answers
   * CheckAbortedError (503). A correct credential of a user locked while it was being evaluated
   * answers `locked`. Fail-open: a result with `enforced: false` when the store could not be
   * reached (the credential alone decides; nothing counted).
   */
  async check(
    orgId: string,
    userId: string,
    factor: Factor,
    evaluate: () => Promise<boolean> | boolean,
  ): Promise<CheckResult> {
    const r = await this.reserve(orgId, userId, factor);
    if (r.status === 'locked') return { outcome: 'locked', lockedAt: r.lockedAt };
    if (r.status === 'busy') return { outcome: 'busy', retryAfterMs: r.retryAfterMs };
    const reservation = r.reservation;
    let ok: boolean;
    try {
      ok = await this.evaluate(evaluate);
    } catch (error) {
      await this.release(reservation);
      throw error;
    }
    if (reservation instanceof UnenforcedReservation) {
      reservation.take();
      return ok
        ? {
            outcome: 'success',
            failedAttempts: 0,
            locked: false,
            enforced: false,
            storeError: reservation.storeError,
          }
        : {
            outcome: 'failure',
            failedAttempts: 0,
            locked: false,
            enforced: false,
            storeError: reservation.storeError,
          };
    }
    const admitted = reservation as AdmittedReservation;
    const s = await this.settleRef(admitted.ref, ok ? 'success' : 'failure', admitted.expiresAt);
    if (s === undefined) throw new CheckAbortedError();
    if (s.enforced === false) {
      return ok
        ? { outcome: 'success', failedAttempts: 0, locked: false, enforced: false, storeError: s.storeError }
        : { outcome: 'failure', failedAttempts: 0, locked: false, enforced: false, storeError: s.storeError };
    }
    if (ok) {
      if (s.locked)
        return { outcome: 'locked', lockedAt: (await this.getUserStatus(orgId, userId)).lockedAt ?? 0 };
      return { outcome: 'success', failedAttempts: 0, locked: false };
    }
    return { outcome: 'failure', failedAttempts: s.failedAttempts, locked: s.locked };
  }

  /** Counts of the compensation queue (for /metrics). */
  compensationStats(): CompensationStats {
    return this.compensation.stats();
  }

  /**
   * Resolves when no compensation is pending (true), or after `timeoutMs` (false) with some still
   * pending (a graceful stop: every task ends by its lease end at the latest).
   */
  async flushCompensations(timeoutMs = Infinity): Promise<boolean> {
    if (timeoutMs === Infinity) {
      await this.compensation.idle();
      return true;
    }
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.compensation.idle().then(() => true),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), Math.max(0, timeoutMs));
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- users ----------------------------------------------------------------------------

  async getUserStatus(orgId: string, userId: string): Promise<UserStatus> {
    const subject = this.subject(orgId, userId);
    const settings = await this.getEffectiveSettings(subject.org);
    const state = await this.store.getUser(subject, settings);
    return {
      userId: subject.user,
      orgId: subject.org,
      locked: state.locked,
      ...(state.lockedAt !== undefined ? { lockedAt: state.lockedAt } : {}),
      failedAttempts: state.failed,
      settings,
    };
  }

  /** Admin lock. NotChangedError when the user is locked already. */
  async lockUser(orgId: string, userId: string): Promise<{ lockedAt: number }> {
    const subject = this.subject(orgId, userId);
    const r = await this.store.lock(subject, await this.limits(subject.org));
    if (!r.changed) throw new NotChangedError('Errors.User.AlreadyLocked', 'User is already locked');
    this.onEvent({ type: 'lock', org: subject.org, user: subject.user, reason: 'admin' });
    return { lockedAt: r.lockedAt };
  }

  /** Admin unlock: clears the lock and resets all counters. NotChangedError when not locked. */
  async unlockUser(orgId: string, userId: string): Promise<void> {
    const subject = this.subject(orgId, userId);
    const r = await this.store.unlock(subject, await this.limits(subject.org), this.config.leaseMs);
    if (!r.changed) throw new NotChangedError('Errors.User.NotLocked', 'User is not locked');
    this.onEvent({ type: 'unlock', org: subject.org, user: subject.user });
  }

  /** The user's password was changed or reset: its password counter restarts; a lock stays. */
  async passwordChanged(orgId: string, userId: string): Promise<void> {
    const subject = this.subject(orgId, userId);
    await this.store.resetFactor(subject, 'password', await this.limits(subject.org), this.config.leaseMs);
  }

  /** Locked users of an org, by user id. */
  async listLocked(orgId: string, options: { limit?: number; cursor?: string } = {}): Promise<LockedPage> {
    const org = validateId(orgId, 'orgId');
    const limit = options.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) {
      throw new InvalidArgumentError(
        'Errors.List.Limit',
        `limit must be an integer from 1 to ${MAX_LIST_LIMIT}`,
        'limit',
      );
    }
    if (options.cursor !== undefined) validateId(options.cursor, 'cursor');
    return this.store.listLocked(this.instanceId, org, await this.limits(org), limit, options.cursor);
  }

  /**
   * Stops listening for settings changes and stops the compensation queue (writes still pending
   * are abandoned, reported to onCompensation). Does not close the store.
   */
  close(): void {
    this.unsubscribe();
    this.compensation.close();
  }

  private subject(orgId: string, userId: string): Subject {
    return makeSubject(this.instanceId, orgId, userId);
  }
}

/** A reservation made by reserve(); its attempt id is encoded only when someone asks for it. */
class AdmittedReservation implements Reservation {
  readonly ref: AttemptRef;
  private id?: string;

  constructor(
    subject: Subject,
    readonly factor: Factor,
    nonce: string,
    readonly expiresAt: number,
  ) {
    this.ref = { org: subject.org, user: subject.user, factor, nonce };
  }

  get orgId(): string {
    return this.ref.org;
  }

  get userId(): string {
    return this.ref.user;
  }

  get attemptId(): string {
    return (this.id ??= encodeAttemptId(this.ref));
  }

  toJSON(): Reservation {
    return {
      attemptId: this.attemptId,
      orgId: this.orgId,
      userId: this.userId,
      factor: this.factor,
      expiresAt: this.expiresAt,
    };
  }
}

/** A reservation admitted without the store (fail-open): settling it changes nothing. */
class UnenforcedReservation implements Reservation {
  readonly enforced = false;
  readonly orgId: string;
  readonly userId: string;
  readonly settlement: Settlement;
  private settled = false;
  private id?: string;

  constructor(
    subject: Subject,
    readonly factor: Factor,
    readonly expiresAt: number,
    readonly storeError: unknown,
    private readonly remember: (r: UnenforcedReservation) => void,
  ) {
    this.orgId = subject.org;
    this.userId = subject.user;
    this.settlement = Object.freeze({ failedAttempts: 0, locked: false, enforced: false, storeError });
  }

  /** Its id; once read (handed out), the engine keeps it so that it can be settled by id. */
  get attemptId(): string {
    if (this.id === undefined) {
      this.id = encodeAttemptId({
        org: this.orgId,
        user: this.userId,
        factor: this.factor,
        nonce: newNonce(),
      });
      this.remember(this);
    }
    return this.id;
  }

  /** Marks it settled: false when it was settled already (or, `expiring`, its lease is over). */
  take(expiring = false): boolean {
    if (this.settled || (expiring && this.expiresAt < Date.now())) return false;
    this.settled = true;
    return true;
  }

  toJSON(): Reservation {
    return {
      attemptId: this.attemptId,
      orgId: this.orgId,
      userId: this.userId,
      factor: this.factor,
      expiresAt: this.expiresAt,
      enforced: false,
    };
  }
}

export interface SettingsInput {
  maxPasswordAttempts?: unknown;
  maxOtpAttempts?: unknown;
}

function detailsOf(r: SettingsRecord, resourceOwner: string): Details {
  return { sequence: r.sequence, creationDate: r.creationDate, changeDate: r.changeDate, resourceOwner };
}
