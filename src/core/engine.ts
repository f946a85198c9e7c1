import { decodeAttemptId, encodeAttemptId, newNonce, type AttemptRef } from './attempt-id';
import {
  AlreadyExistsError,
  InvalidArgumentError,
  NotChangedError,
  NotFoundError,
  StoreUnavailableError,
} from './errors';
import { parseSettingsValues, SHIPPED_DEFAULT, type Details, type EffectiveSettings } from './settings';
import { SettingsCache } from './settings-cache';
import type {
  LockedPage,
  LockoutStore,
  Owner,
  SettingsChange,
  SettingsRecord,
  SettingsValues,
  SettleOutcome,
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
}

/** Resolved engine configuration. */
export interface LockoutEngineConfig {
  readonly instanceId: string;
  readonly defaults: SettingsValues;
  readonly leaseMs: number;
  readonly settingsCacheTtlMs: number;
}

export type LockoutEvent =
  | { type: 'check'; org: string; user: string; factor: Factor; outcome: CheckOutcome }
  | { type: 'lock'; org: string; user: string; reason: 'failures' | 'admin'; factor?: Factor }
  | { type: 'unlock'; org: string; user: string }
  | { type: 'settings'; owner: Owner; op: SettingsChange['op'] };

export type CheckOutcome = 'success' | 'failure' | 'locked' | 'busy';

/** An admitted attempt, to be settled exactly once. */
export interface Reservation {
  /** Opaque id that names this reservation (used by the sidecar's /v1/attempts routes). */
  readonly attemptId: string;
  readonly orgId: string;
  readonly userId: string;
  readonly factor: Factor;
  readonly expiresAt: number;
}

export type ReserveOutcome =
  | { readonly status: 'admitted'; readonly reservation: Reservation }
  | { readonly status: 'locked'; readonly lockedAt: number }
  | { readonly status: 'busy'; readonly retryAfterMs: number };

export interface Settlement {
  readonly failedAttempts: number;
  readonly locked: boolean;
}

export type CheckResult =
  | { readonly outcome: 'success'; readonly failedAttempts: 0; readonly locked: false }
  | { readonly outcome: 'failure'; readonly failedAttempts: number; readonly locked: boolean }
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
const MAX_LIST_LIMIT = 1000;

export function resolveEngineConfig(options: LockoutEngineOptions): LockoutEngineConfig {
  const instanceId = validateId(options.instanceId ?? 'default', 'instanceId');
  const defaults = parseSettingsValues({ ...SHIPPED_DEFAULT, ...options.defaults });
  const leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
  if (!Number.isInteger(leaseMs) || leaseMs < 1 || leaseMs > 3_600_000) {
    throw new InvalidArgumentError(
      'Errors.Options.Invalid',
      'leaseMs must be an integer from 1 to 3600000',
      'leaseMs',
    );
  }
  const settingsCacheTtlMs = options.settingsCacheTtlMs ?? 500;
  if (!Number.isInteger(settingsCacheTtlMs) || settingsCacheTtlMs < 0 || settingsCacheTtlMs > 1000) {
    throw new InvalidArgumentError(
      'Errors.Options.Invalid',
      'settingsCacheTtlMs must be an integer from 0 to 1000 (settings changes must be seen within 1 s)',
      'settingsCacheTtlMs',
    );
  }
  return { instanceId, defaults, leaseMs, settingsCacheTtlMs };
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

  constructor(options: LockoutEngineOptions) {
    if (!options || typeof options.store?.reserve !== 'function') {
      throw new InvalidArgumentError(
        'Errors.Options.Invalid',
        'store must be a LockoutStore (e.g. new MemoryStore())',
        'store',
      );
    }
    this.config = resolveEngineConfig(options);
    this.store = options.store;
    this.cache = new SettingsCache(this.config.settingsCacheTtlMs);
    this.onEvent = options.onEvent ?? (() => {});
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
   */
  async reserve(orgId: string, userId: string, factor: Factor): Promise<ReserveOutcome> {
    const subject = this.subject(orgId, userId);
    validateFactor(factor);
    const limits = await this.limits(subject.org);
    const nonce = newNonce();
    const r = await this.store.reserve(subject, factor, limits, this.config.leaseMs, nonce);
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

  /**
   * Settles a reservation (or an attempt id): `success` resets the factor's counter, `failure`
   * counts (and may lock), `release` forgets it uncounted. NotFoundError when the reservation is
   * unknown, already settled, or its lease expired (it was counted as a failure then).
   */
  async settle(attempt: Reservation | string, outcome: SettleOutcome): Promise<Settlement> {
    if (outcome !== 'success' && outcome !== 'failure' && outcome !== 'release') {
      throw new InvalidArgumentError(
        'Errors.Attempt.Outcome',
        'outcome must be success, failure or release',
        'outcome',
      );
    }
    // A reservation this engine made carries its parts; an id (or a copied object) is decoded.
    const ref =
      attempt instanceof AdmittedReservation
        ? attempt.ref
        : decodeAttemptId(typeof attempt === 'string' ? attempt : attempt.attemptId);
    const subject = this.subject(ref.org, ref.user);
    const limits = await this.limits(subject.org);
    const r = await this.store.settle(subject, ref.factor, ref.nonce, outcome, limits, this.config.leaseMs);
    if (r.status === 'unknown') {
      throw new NotFoundError('Errors.Attempt.NotFound', 'Attempt not found, expired or already settled');
    }
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

  /**
   * A whole check: reserve, evaluate the credential with `evaluate` (true = correct), settle.
   * If `evaluate` throws, the reservation is released uncounted and the error is rethrown.
   * A correct credential of a user locked while it was being evaluated answers `locked`.
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
    let ok: boolean;
    try {
      ok = (await evaluate()) === true;
    } catch (error) {
      await this.settle(r.reservation, 'release').catch(() => undefined);
      throw error;
    }
    const s = await this.settle(r.reservation, ok ? 'success' : 'failure');
    if (ok) {
      if (s.locked)
        return { outcome: 'locked', lockedAt: (await this.getUserStatus(orgId, userId)).lockedAt ?? 0 };
      return { outcome: 'success', failedAttempts: 0, locked: false };
    }
    return { outcome: 'failure', failedAttempts: s.failedAttempts, locked: s.locked };
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

  /** Stops listening for settings changes. Does not close the store. */
  close(): void {
    this.unsubscribe();
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

export interface SettingsInput {
  maxPasswordAttempts?: unknown;
  maxOtpAttempts?: unknown;
}

function detailsOf(r: SettingsRecord, resourceOwner: string): Details {
  return { sequence: r.sequence, creationDate: r.creationDate, changeDate: r.changeDate, resourceOwner };
}
