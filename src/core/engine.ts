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
  FailedPreconditionError,
  InvalidArgumentError,
  NotChangedError,
  NotFoundError,
  OptionError,
  StoreUnavailableError,
} from './errors';
import { toEventRecord, type Actor, type EventLog, type OperationContext } from './events';
import {
  effectiveDefences,
  repeatKeyOf,
  storeDefencesOf,
  type DefenceRecord,
  type DefencesConfig,
  type DefenceValues,
} from './defences';
import { describeOptionValue } from './option-checks';
import { parseSettingsValues, SHIPPED_DEFAULT, type Details, type EffectiveSettings } from './settings';
import { SettingsCache } from './settings-cache';
import type { ThrottleEvent } from './spray-throttle';
import {
  isDefenceSettingsStore,
  missingStoreMembers,
  type DefenceSettingsChange,
  type DefenceSettingsStore,
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
import { issueDeviceToken, verifyDeviceToken } from './device-token';
import {
  makeSubject,
  SCOPE,
  UNTRUSTED_SCOPE,
  validateFactor,
  validateId,
  type Factor,
  type Limits,
  type Subject,
} from './subjects';

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
   * Where lockout events are recorded (issue 14: the events API and webhooks): every event of a
   * type in EVENT_TYPES (core/events.ts) that is not `null` there, and every type not listed.
   */
  eventLog?: EventLog;
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
  /**
   * The instance's defences (issue 12; see core/defences.ts), resolved with their keys. Absent:
   * no defence is on and per-org defence settings are not read (every check is as before).
   */
  defences?: DefencesConfig;
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
  | {
      type: 'lock';
      org: string;
      user: string;
      reason: 'failures' | 'admin';
      factor?: Factor;
      /** The factor's failure count that reached the limit (reason `failures`). */
      failedAttempts?: number;
      /** Who locked (reason `admin`). */
      actor?: Actor;
      /** Temporary lockout: when this lock ends by itself (absent: permanent), and when it began. */
      lockedUntil?: number;
      lockedAt?: number;
      /** Device cookies: the scope locked (`untrusted`, `device:<id>`); absent: the user. */
      scope?: string;
      /** Who made the check that locked (CheckOptions.caller), for audit lines; not recorded as an event's data. */
      caller?: string;
    }
  /** `reason` 'automatic': a temporary lock ended (absent: an admin unlock, as before defences). */
  | { type: 'unlock'; org: string; user: string; actor?: Actor; reason?: 'automatic'; lockedAt?: number }
  | {
      type: 'settings';
      owner: Owner;
      op: SettingsChange['op'];
      actor?: Actor;
      /** The stored values the change replaced (null: none were stored), read atomically with it. */
      before?: SettingsValues | null;
      /** The stored values after it (null: removed, the org falls back to the instance's). */
      after?: SettingsValues | null;
    }
  | { type: 'password_changed'; org: string; user: string; actor?: Actor }
  /** Repeat-password forgiveness: a wrong password the user had tried before was not counted again. */
  | { type: 'forgiven'; org: string; user: string; factor: Factor; caller?: string }
  | { type: 'defences'; org: string; op: DefenceSettingsChange['op']; actor?: Actor }
  // Spray throttling (issue 12): an address block was throttled (core/spray-throttle.ts).
  | ThrottleEvent;

export type { Actor, OperationContext } from './events';

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
  | { readonly status: 'locked'; readonly lockedAt: number; readonly lockedUntil?: number }
  | { readonly status: 'busy'; readonly retryAfterMs: number };

export interface Settlement {
  readonly failedAttempts: number;
  readonly locked: boolean;
  /** Repeat-password forgiveness: this failure was not counted (defences only). */
  readonly forgiven?: true;
  /** Device cookies: a success's device token for the client. */
  readonly deviceToken?: string;
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
  | ({
      readonly outcome: 'success';
      readonly failedAttempts: 0;
      readonly locked: false;
      /** Device cookies: the device token to hand to the client (set it as a cookie). */
      readonly deviceToken?: string;
    } & Unenforced)
  | ({ readonly outcome: 'failure'; readonly failedAttempts: number; readonly locked: boolean } & Unenforced)
  | { readonly outcome: 'locked'; readonly lockedAt: number; readonly lockedUntil?: number }
  | { readonly outcome: 'busy'; readonly retryAfterMs: number };

/** What a check or settle may carry for the defences. */
export interface CheckOptions {
  /**
   * The password being checked (factor `password` only): with repeat-password forgiveness on, a
   * wrong one is remembered as a keyed hash, and trying it again is not counted again.
   */
  readonly password?: string;
  /**
   * Device cookies: the client's device token (a cookie, or a field the auth service passes). A
   * valid one for this user counts the check on that device's scope; anything else (absent,
   * invalid, expired, another user's) counts on the user's untrusted scope.
   */
  readonly deviceToken?: string;
  /**
   * Who makes the check (the sidecar: the token's name), told to onEvent on what the check
   * causes (a lock by failures, a forgiven failure) as the events' `caller`, for audit lines.
   * The event log does not record it (its actor of a lock by failures stays `system`).
   */
  readonly caller?: string;
}

/** The defence settings that apply to an org (no secrets), as lockout settings are rendered. */
export interface EffectiveDefences {
  readonly values: Required<DefenceValues>;
  /** Per defence: true when it is the instance's (the org has none of its own). */
  readonly inherited: Readonly<Record<keyof DefenceValues, boolean>>;
  /** true when the org has no custom defence settings at all. */
  readonly isDefault: boolean;
  readonly resourceOwnerType: 'RESOURCE_OWNER_TYPE_INSTANCE' | 'RESOURCE_OWNER_TYPE_ORG';
  readonly details: Details;
}

export interface ScopeStatus {
  /** `untrusted` (clients without a valid device token) or `device:<device id>`. */
  readonly scope: string;
  readonly locked: boolean;
  readonly lockedAt?: number;
  readonly lockedUntil?: number;
  readonly failedAttempts: Readonly<Record<Factor, number>>;
}

/** A store scope (`u`, `d<id>`) as the API names it (`untrusted`, `device:<id>`). */
export function scopeName(scope: string): string {
  return scope === UNTRUSTED_SCOPE ? 'untrusted' : `device:${scope.slice(1)}`;
}

export interface UserStatus {
  readonly userId: string;
  readonly orgId: string;
  readonly locked: boolean;
  readonly lockedAt?: number;
  /** Temporary lockout: when the lock ends by itself (absent: not locked, or locked for good). */
  readonly lockedUntil?: number;
  /** Device cookies: the user's scopes (`untrusted`, `device:<id>`) and their state. */
  readonly scopes?: readonly ScopeStatus[];
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
  private readonly observeEvent: (event: LockoutEvent) => void;
  private readonly eventLog: EventLog | undefined;
  private readonly onFailOpen: (notice: FailOpenNotice) => void;
  private readonly failOpen: boolean;
  private readonly compensation: CompensationQueue;
  /**
   * Fail-open attempt ids handed out (their attemptId was read, e.g. by POST /v1/attempts) →
   * their expiry and whether they were settled: each is settled at most once, by this process.
   * Insertion order is expiry order (one lease for all).
   */
  private readonly open = new Map<string, UnenforcedReservation>();
  /** The instance's defences (absent: none, and per-org defence settings are not read). */
  readonly defences?: DefencesConfig;
  private readonly defenceCache?: SettingsCache<DefenceRecord>;

  constructor(options: LockoutEngineOptions) {
    checkStore(options?.store);
    this.config = resolveEngineConfig(options);
    this.store = options.store;
    this.cache = new SettingsCache(this.config.settingsCacheTtlMs);
    if (options.defences !== undefined) {
      this.defences = options.defences;
      this.defenceCache = new SettingsCache<DefenceRecord>(this.config.settingsCacheTtlMs);
    }
    this.observeEvent = options.onEvent ?? (() => {});
    this.eventLog = options.eventLog;
    // Every event goes to the observer and, when one is set, to the event log (not awaited here:
    // the admin operations await theirs through emit()).
    this.onEvent = this.eventLog
      ? (event) => {
          void this.emit(event);
        }
      : this.observeEvent;
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
      if (instance !== this.config.instanceId) return;
      this.cache.invalidate(owner);
      this.defenceCache?.invalidate(owner);
    });
  }

  get instanceId(): string {
    return this.config.instanceId;
  }

  /** Where events are recorded (the eventLog option), if anywhere. */
  get events(): EventLog | undefined {
    return this.eventLog;
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
  async addOrgSettings(org: string, input: SettingsInput, context?: OperationContext): Promise<Details> {
    return this.writeSettings(
      { type: 'org', org: validateId(org, 'orgId') },
      { op: 'add', values: parseSettingsValues(input) },
      context,
    );
  }

  /** Changes `org`'s custom settings. NotFoundError when it has none, NotChangedError for the same values. */
  async updateOrgSettings(org: string, input: SettingsInput, context?: OperationContext): Promise<Details> {
    return this.writeSettings(
      { type: 'org', org: validateId(org, 'orgId') },
      { op: 'update', values: parseSettingsValues(input) },
      context,
    );
  }

  /** Removes `org`'s custom settings: it falls back to the instance's. NotFoundError when it has none. */
  async resetOrgSettings(org: string, context?: OperationContext): Promise<Details> {
    return this.writeSettings({ type: 'org', org: validateId(org, 'orgId') }, { op: 'remove' }, context);
  }

  /** Changes the instance settings. NotChangedError for the same values. */
  async updateInstanceSettings(input: SettingsInput, context?: OperationContext): Promise<Details> {
    return this.writeSettings(
      { type: 'instance' },
      { op: 'set', values: parseSettingsValues(input), fallback: this.config.defaults },
      context,
    );
  }

  private async writeSettings(
    owner: Owner,
    change: SettingsChange,
    context?: OperationContext,
  ): Promise<Details> {
    // The store answers the values the change replaced, read in the same atomic step (the
    // event's `before`; a store that does not answer them leaves before/after out).
    const result = await this.store.writeSettings(this.instanceId, owner, change);
    const resourceOwner = owner.type === 'org' ? owner.org : this.instanceId;
    switch (result.status) {
      case 'ok':
        this.cache.invalidate(owner);
        await this.emit({
          type: 'settings',
          owner,
          op: change.op,
          ...(context?.actor ? { actor: context.actor } : {}),
          ...(result.previous !== undefined
            ? {
                before: result.previous === null ? null : valuesOf(result.previous),
                after: change.op === 'remove' ? null : valuesOf(change.values),
              }
            : {}),
        });
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
    if (this.defences === undefined) {
      return { maxPasswordAttempts: values.maxPasswordAttempts, maxOtpAttempts: values.maxOtpAttempts };
    }
    const own = await this.defenceRecord(org);
    const defences = storeDefencesOf(effectiveDefences(this.defences.values, own?.values), this.defences);
    return defences === undefined
      ? { maxPasswordAttempts: values.maxPasswordAttempts, maxOtpAttempts: values.maxOtpAttempts }
      : { maxPasswordAttempts: values.maxPasswordAttempts, maxOtpAttempts: values.maxOtpAttempts, defences };
  }

  // ---- defence settings (issue 12) --------------------------------------------------------

  /** The store's defence settings port; FailedPrecondition-like NotFound when it has none. */
  private defenceStore(): DefenceSettingsStore {
    if (this.defences === undefined) {
      throw new FailedPreconditionError(
        'Errors.Defences.Disabled',
        'Defences are not enabled on this instance (name temporaryLockout, repeatPassword or deviceCookies in its defences section)',
      );
    }
    if (!isDefenceSettingsStore(this.store)) {
      throw new FailedPreconditionError(
        'Errors.Defences.Unsupported',
        'This store keeps no defence settings',
      );
    }
    return this.store;
  }

  private defenceRecord(org: string): Promise<DefenceRecord | null> {
    const cache = this.defenceCache;
    if (cache === undefined || !isDefenceSettingsStore(this.store)) return Promise.resolve(null);
    const store = this.store;
    return cache.get({ type: 'org', org }, () => store.getDefenceSettings(this.instanceId, org));
  }

  /** The defence settings that apply to `org`: per defence its own, else the instance's. */
  async getEffectiveDefences(org: string): Promise<EffectiveDefences> {
    validateId(org, 'orgId');
    this.defenceStore();
    const own = await this.defenceRecord(org);
    const instance = this.defences?.values ?? {};
    const values = effectiveDefences(instance, own?.values);
    const inherited = {
      temporaryLockout: own?.values.temporaryLockout === undefined,
      repeatPassword: own?.values.repeatPassword === undefined,
      deviceCookies: own?.values.deviceCookies === undefined,
    };
    if (own === null) return this.getInstanceDefences();
    return {
      values,
      inherited,
      isDefault: false,
      resourceOwnerType: 'RESOURCE_OWNER_TYPE_ORG',
      details: {
        sequence: own.sequence,
        creationDate: own.creationDate,
        changeDate: own.changeDate,
        resourceOwner: org,
      },
    };
  }

  /** The instance's defence settings (from its configuration). */
  async getInstanceDefences(): Promise<EffectiveDefences> {
    this.defenceStore();
    return {
      values: effectiveDefences(this.defences?.values ?? {}, undefined),
      inherited: { temporaryLockout: true, repeatPassword: true, deviceCookies: true },
      isDefault: true,
      resourceOwnerType: 'RESOURCE_OWNER_TYPE_INSTANCE',
      details: { sequence: 0, resourceOwner: this.instanceId },
    };
  }

  /**
   * Changes `org`'s own defence settings: add (AlreadyExistsError when it has some), update
   * (NotFoundError when none, NotChangedError for the same values) or remove (NotFoundError when
   * none): the org then inherits every defence from the instance. A defence that needs a key the
   * instance has not configured cannot be enabled (InvalidArgumentError).
   */
  async writeOrgDefences(
    org: string,
    change: DefenceSettingsChange,
    context?: OperationContext,
  ): Promise<Details> {
    validateId(org, 'orgId');
    const store = this.defenceStore();
    if (change.op !== 'remove' && change.values.deviceCookies?.enabled && !this.defences?.deviceTokens) {
      throw new FailedPreconditionError(
        'Errors.Defences.KeyMissing',
        'deviceCookies needs keys in the instance configuration (defences.deviceCookies.keys)',
      );
    }
    if (
      change.op !== 'remove' &&
      change.values.repeatPassword?.enabled &&
      !this.defences?.repeatPasswordKey
    ) {
      throw new FailedPreconditionError(
        'Errors.Defences.KeyMissing',
        'repeatPassword needs a key in the instance configuration (defences.repeatPassword.key)',
      );
    }
    const result = await store.writeDefenceSettings(this.instanceId, org, change);
    switch (result.status) {
      case 'ok':
        this.defenceCache?.invalidate({ type: 'org', org });
        await this.emit({
          type: 'defences',
          org,
          op: change.op,
          ...(context?.actor ? { actor: context.actor } : {}),
        });
        return {
          sequence: result.sequence,
          creationDate: result.creationDate,
          changeDate: result.changeDate,
          resourceOwner: org,
        };
      case 'exists':
        throw new AlreadyExistsError('Errors.Org.Defences.AlreadyExists', 'Defence settings already exist');
      case 'not_found':
        throw new NotFoundError('Errors.Org.Defences.NotFound', 'Defence settings not found');
      case 'not_changed':
        throw new NotChangedError('Errors.Org.Defences.NotChanged', 'Defence settings have not been changed');
    }
  }

  /** Tells onEvent of a temporary lock that ended during a store operation. */
  private endedLock(subject: Subject, expiredLockAt: number | undefined): void {
    if (expiredLockAt === undefined) return;
    this.onEvent({
      type: 'unlock',
      org: subject.org,
      user: subject.user,
      reason: 'automatic',
      lockedAt: expiredLockAt,
    });
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
  async reserve(
    orgId: string,
    userId: string,
    factor: Factor,
    options?: CheckOptions,
  ): Promise<ReserveOutcome> {
    const user = this.subject(orgId, userId);
    validateFactor(factor);
    let limits: Limits;
    try {
      limits = await this.limits(user.org);
    } catch (error) {
      // Nothing was sent to the store: nothing to compensate.
      return this.reserveWithoutStore(user, factor, error);
    }
    // Device cookies: the check counts on the device's scope, or on the untrusted one.
    const subject = (limits.defences?.maxDevices ?? 0) > 0 ? this.scopeOf(user, options?.deviceToken) : user;
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
    this.endedLock(subject, r.expiredLockAt);
    if (r.status === 'admitted') {
      return {
        status: 'admitted',
        reservation: new AdmittedReservation(subject, factor, nonce, r.expiresAt),
      };
    }
    this.onEvent({ type: 'check', org: subject.org, user: subject.user, factor, outcome: r.status });
    if (r.status === 'locked') {
      return r.lockedUntil === undefined
        ? { status: 'locked', lockedAt: r.lockedAt }
        : { status: 'locked', lockedAt: r.lockedAt, lockedUntil: r.lockedUntil };
    }
    return { status: 'busy', retryAfterMs: r.retryAfterMs };
  }

  /** Device cookies: the scope a check of `user` counts on, from its device token. */
  private scopeOf(user: Subject, deviceToken: string | undefined): Subject {
    const tokens = this.defences?.deviceTokens;
    const device =
      tokens && deviceToken !== undefined ? verifyDeviceToken(tokens, user, deviceToken) : undefined;
    return { ...user, scope: device === undefined ? UNTRUSTED_SCOPE : `d${device}` };
  }

  /** Device cookies: the token a success of `subject` hands out (the same device id, refreshed). */
  private deviceTokenFor(subject: Subject): string | undefined {
    const tokens = this.defences?.deviceTokens;
    if (tokens === undefined || subject.scope === undefined) return undefined;
    const user = { instance: subject.instance, org: subject.org, user: subject.user };
    const device = subject.scope === UNTRUSTED_SCOPE ? undefined : subject.scope.slice(1);
    return issueDeviceToken(tokens, user, device).token;
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
  async settle(
    attempt: Reservation | string,
    outcome: SettleOutcome,
    options?: CheckOptions,
  ): Promise<Settlement> {
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
    const s = await this.settleRef(ref, outcome, expiresAt, options?.password, options?.caller);
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
    password?: string,
    caller?: string,
  ): Promise<Settlement | undefined> {
    const subject = this.refSubject(ref);
    let r: SettleResult;
    try {
      // writeSettle inlined: every check settles here, and each extra async hop costs a tick.
      const limits = await this.limits(subject.org);
      const key = this.defences?.repeatPasswordKey;
      r =
        // repeat-password forgiveness: a wrong password travels as its keyed hash, never itself
        outcome === 'failure' &&
        password !== undefined &&
        ref.factor === 'password' &&
        key !== undefined &&
        (limits.defences?.remember ?? 0) > 0
          ? await this.store.settle(
              subject,
              ref.factor,
              ref.nonce,
              outcome,
              limits,
              this.config.leaseMs,
              false,
              {
                repeatKey: repeatKeyOf(key, subject, password),
              },
            )
          : await this.store.settle(subject, ref.factor, ref.nonce, outcome, limits, this.config.leaseMs);
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
    this.endedLock(subject, r.expiredLockAt);
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
    if (r.forgiven === true) {
      this.onEvent({
        type: 'forgiven',
        org: subject.org,
        user: subject.user,
        factor: ref.factor,
        ...(caller !== undefined ? { caller } : {}),
      });
    }
    // Awaited: the check that locks is answered once its event is recorded (one more round trip
    // on Redis, for that check only), so an answered lock is never an unrecorded one.
    if (r.lockedNow)
      await this.emit({
        type: 'lock',
        org: subject.org,
        user: subject.user,
        reason: 'failures',
        factor: ref.factor,
        failedAttempts: r.failedAttempts,
        ...(r.lockedUntil !== undefined ? { lockedAt: r.lockedAt, lockedUntil: r.lockedUntil } : {}),
        ...(subject.scope !== undefined ? { scope: scopeName(subject.scope) } : {}),
        ...(caller !== undefined ? { caller } : {}),
      });
    if (r.forgiven === true) return { failedAttempts: r.failedAttempts, locked: r.locked, forgiven: true };
    if (outcome === 'success' && !r.locked && subject.scope !== undefined) {
      const deviceToken = this.deviceTokenFor(subject);
      if (deviceToken !== undefined)
        return { failedAttempts: r.failedAttempts, locked: r.locked, deviceToken };
    }
    return { failedAttempts: r.failedAttempts, locked: r.locked };
  }

  /** The subject of an attempt: its user, and its scope (device cookies) when it has one. */
  private refSubject(ref: AttemptRef): Subject {
    const user = this.subject(ref.org, ref.user);
    return ref.scope === undefined ? user : { ...user, scope: ref.scope };
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
      await this.settleCompensated(this.refSubject(ref), ref.factor, ref.nonce, 'release', expiresAt);
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
    options?: CheckOptions,
  ): Promise<CheckResult> {
    const r = await this.reserve(orgId, userId, factor, options);
    if (r.status === 'locked') {
      return r.lockedUntil === undefined
        ? { outcome: 'locked', lockedAt: r.lockedAt }
        : { outcome: 'locked', lockedAt: r.lockedAt, lockedUntil: r.lockedUntil };
    }
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
    const s = await this.settleRef(
      admitted.ref,
      ok ? 'success' : 'failure',
      admitted.expiresAt,
      ok ? undefined : options?.password,
      options?.caller,
    );
    if (s === undefined) throw new CheckAbortedError();
    if (s.enforced === false) {
      return ok
        ? { outcome: 'success', failedAttempts: 0, locked: false, enforced: false, storeError: s.storeError }
        : { outcome: 'failure', failedAttempts: 0, locked: false, enforced: false, storeError: s.storeError };
    }
    if (ok) {
      if (s.locked) {
        const status = await this.getUserStatus(orgId, userId);
        return status.lockedUntil === undefined
          ? { outcome: 'locked', lockedAt: status.lockedAt ?? 0 }
          : { outcome: 'locked', lockedAt: status.lockedAt ?? 0, lockedUntil: status.lockedUntil };
      }
      return s.deviceToken !== undefined
        ? { outcome: 'success', failedAttempts: 0, locked: false, deviceToken: s.deviceToken }
        : { outcome: 'success', failedAttempts: 0, locked: false };
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
    const limits = this.defences === undefined ? settings : await this.limits(subject.org);
    const state = await this.store.getUser(subject, limits);
    this.endedLock(subject, state.expiredLockAt);
    const scopes =
      state.scopes === undefined
        ? undefined
        : await Promise.all(
            state.scopes
              .filter((sc) => SCOPE.test(sc))
              .map(async (sc): Promise<ScopeStatus> => {
                const scoped = { ...subject, scope: sc };
                const st = await this.store.getUser(scoped, limits);
                this.endedLock(subject, st.expiredLockAt);
                return {
                  scope: scopeName(sc),
                  locked: st.locked,
                  ...(st.lockedAt !== undefined ? { lockedAt: st.lockedAt } : {}),
                  ...(st.lockedUntil !== undefined ? { lockedUntil: st.lockedUntil } : {}),
                  failedAttempts: st.failed,
                };
              }),
          );
    return {
      userId: subject.user,
      orgId: subject.org,
      locked: state.locked,
      ...(state.lockedAt !== undefined ? { lockedAt: state.lockedAt } : {}),
      ...(state.lockedUntil !== undefined ? { lockedUntil: state.lockedUntil } : {}),
      failedAttempts: state.failed,
      settings,
      ...(scopes !== undefined ? { scopes } : {}),
    };
  }

  /**
   * Device cookies: the user's scopes recorded in the store, and the untrusted scope always (it
   * needs no record to be found, so an unlock or a password change reaches it even if the record
   * of the scopes was lost, e.g. a MemoryStore evicting it under maxUsers). None without device cookies.
   */
  private async scopesOf(subject: Subject, limits: Limits): Promise<Subject[]> {
    if (this.defences?.deviceTokens === undefined) return [];
    const state = await this.store.getUser(subject, limits);
    const scopes = new Set([UNTRUSTED_SCOPE, ...(state.scopes ?? []).filter((sc) => SCOPE.test(sc))]);
    return [...scopes].map((sc) => ({ ...subject, scope: sc }));
  }

  /** Admin lock. NotChangedError when the user is locked already. */
  async lockUser(orgId: string, userId: string, context?: OperationContext): Promise<{ lockedAt: number }> {
    const subject = this.subject(orgId, userId);
    const r = await this.store.lock(subject, await this.limits(subject.org));
    if (!r.changed) throw new NotChangedError('Errors.User.AlreadyLocked', 'User is already locked');
    await this.emit({
      type: 'lock',
      org: subject.org,
      user: subject.user,
      reason: 'admin',
      ...(context?.actor ? { actor: context.actor } : {}),
    });
    return { lockedAt: r.lockedAt };
  }

  /** Admin unlock: clears the lock and resets all counters. NotChangedError when not locked. */
  async unlockUser(orgId: string, userId: string, context?: OperationContext): Promise<void> {
    const subject = this.subject(orgId, userId);
    const limits = await this.limits(subject.org);
    // Device cookies: an unlock clears every scope (a locked scope counts as the user locked).
    const scopes = await this.scopesOf(subject, limits);
    const r = await this.store.unlock(subject, limits, this.config.leaseMs);
    let changed = r.changed;
    for (const scoped of scopes) {
      if ((await this.store.unlock(scoped, limits, this.config.leaseMs, true)).changed) changed = true;
    }
    if (!changed) throw new NotChangedError('Errors.User.NotLocked', 'User is not locked');
    await this.emit({
      type: 'unlock',
      org: subject.org,
      user: subject.user,
      ...(context?.actor ? { actor: context.actor } : {}),
    });
  }

  /** The user's password was changed or reset: its password counter restarts; a lock stays. */
  async passwordChanged(orgId: string, userId: string, context?: OperationContext): Promise<void> {
    const subject = this.subject(orgId, userId);
    const limits = await this.limits(subject.org);
    await this.store.resetFactor(subject, 'password', limits, this.config.leaseMs);
    // Device cookies: every scope's password counter restarts too.
    for (const scoped of await this.scopesOf(subject, limits)) {
      await this.store.resetFactor(scoped, 'password', limits, this.config.leaseMs);
    }
    await this.emit({
      type: 'password_changed',
      org: subject.org,
      user: subject.user,
      ...(context?.actor ? { actor: context.actor } : {}),
    });
  }

  /**
   * Reports an event that happened beside the engine (a client address block throttled by spray
   * throttling) to the same observer and event log as the engine's own events. Never throws.
   */
  publish(event: LockoutEvent): void {
    try {
      this.onEvent(event);
    } catch {
      // an observer must not change what was done
    }
  }

  /**
   * Tells the observer of `event` and, when an event log is set, records it (resolves once
   * recorded; never rejects: the log reports its own failures, and an operation that committed
   * in the store is not failed by its event).
   */
  private emit(event: LockoutEvent): Promise<void> {
    this.observeEvent(event);
    if (!this.eventLog) return Promise.resolve();
    const record = toEventRecord(event, this.instanceId);
    if (!record) return Promise.resolve();
    try {
      return Promise.resolve(this.eventLog.append(record)).catch(() => undefined);
    } catch {
      return Promise.resolve();
    }
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
    const page = await this.store.listLocked(
      this.instanceId,
      org,
      await this.limits(org),
      limit,
      options.cursor,
    );
    if (!page.users.some((u) => u.scope !== undefined)) return page;
    return {
      ...page,
      users: page.users.map((u) => (u.scope === undefined ? u : { ...u, scope: scopeName(u.scope) })),
    };
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
    this.ref =
      subject.scope === undefined
        ? { org: subject.org, user: subject.user, factor, nonce }
        : { org: subject.org, user: subject.user, factor, nonce, scope: subject.scope };
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

function valuesOf(v: SettingsValues): SettingsValues {
  return { maxPasswordAttempts: v.maxPasswordAttempts, maxOtpAttempts: v.maxOtpAttempts };
}

function detailsOf(r: SettingsRecord, resourceOwner: string): Details {
  return { sequence: r.sequence, creationDate: r.creationDate, changeDate: r.changeDate, resourceOwner };
}
