import type { EventLog } from '../core/events';
import type { Request, Response } from 'express';
import {
  resolveEngineConfig,
  type CompensationEvent,
  type FailOpenNotice,
  type LockoutEvent,
  type StoreErrorPolicy,
} from '../core/engine';
import {
  InvalidArgumentError,
  OptionError,
  type BusyError,
  type StoreUnavailableError,
  type UserLockedError,
} from '../core/errors';
import { checkBodyLimit, invalidOption, isPlainObject } from '../core/option-checks';
import { MAX_SETTING_VALUE } from '../core/settings';
import {
  resolveSprayThrottle,
  type SprayThrottleConfig,
  type SprayThrottleOptions,
} from '../core/spray-throttle';
import { missingStoreMembers, type LockoutStore, type SettingsValues } from '../core/store';
import { validateId, type Factor } from '../core/subjects';
import type { Authorize, TokenOptions } from '../http/auth';
import type { HttpError } from '../http/errors';
import type { OtpCodesOptions } from '../verify/otp-codes';
import type { PasswordVerifierOptions } from '../verify/password';
import type { TotpVerifierOptions } from '../verify/totp';
import type { AuditEntry } from '../http/routers';
import type { DefencesConfig } from '../core/defences';
import { resolveDefences, type DefencesOptions as EngineDefencesOptions } from '../http/defence-schemas';

/**
 * Options of `createLockout` and their validation. Every option is checked when `createLockout` is
 * called; a bad one throws an InvalidArgumentError (code `Errors.Options.Invalid`) whose `field`
 * names it and whose message says what to pass instead (as helmet does).
 */

/** What a guard or a check does while the store cannot be reached (G4): the engine applies it. */
export type { StoreErrorPolicy } from '../core/engine';

/** Why a guard refused a request before its handler ran. */
export type RefusalReason = 'locked' | 'busy' | 'unavailable';

/** A refusal, as handed to a custom response function. */
export interface GuardRefusal {
  readonly reason: RefusalReason;
  /** locked: UserLockedError, busy: BusyError (`retryAfterMs`), unavailable: StoreUnavailableError. */
  readonly error: UserLockedError | BusyError | StoreUnavailableError;
  readonly factor: Factor;
  readonly orgId: string;
  readonly userId: string;
  /** The answer lockgate gives by default (423, 429 with Retry-After, 503; ZITADEL's error body). */
  readonly standard: HttpError;
}

/**
 * How a guard answers a refusal, instead of its standard answer. Either an object, whose fields
 * replace those of the standard answer (omitted fields keep it), or a function that answers
 * itself. A `Retry-After` header is kept only while the status is the standard one (429), so that
 * a disguised answer (`{ status: 401 }`) does not tell that the account is busy or locked.
 */
export type RefusalResponse =
  | {
      /** HTTP status (400–599). */
      readonly status?: number;
      /** The body: a string or Buffer is sent as is, anything else as JSON. */
      readonly body?: unknown;
      /** Extra response headers. */
      readonly headers?: Readonly<Record<string, string>>;
    }
  | ((req: Request, res: Response, refusal: GuardRefusal) => void | Promise<void>);

/** Where an error reported to `onError` happened, and what lockgate did about it. */
export interface LockoutErrorContext {
  /**
   * reserve: a guard's reservation; settle: settling a guarded request; check, issue: a
   * `checks.*` call; router: an error a mounted router answered with 500.
   */
  readonly operation: 'reserve' | 'settle' | 'check' | 'issue' | 'router';
  /**
   * refused: the request or call was refused (503 / StoreUnavailableError, 500 for routers);
   * unguarded: fail-open, it went on without lockout (nothing counted, locks not seen);
   * unsettled: the answer was given but its attempt could not be settled now — the same settle
   * is retried in the background (compensation) until its lease ends; if every try fails, the
   * lease counts it as a failure;
   * uncompensated: a reserve or settle whose outcome was unknown could not be written again
   * before its lease ended (or the queue was full or closed): the lease may count it as a failure.
   */
  readonly outcome: 'refused' | 'unguarded' | 'unsettled' | 'uncompensated';
  readonly factor?: Factor;
  readonly orgId?: string;
  readonly userId?: string;
  /** The request, for guards and routers. */
  readonly req?: Request;
}

/** The lockout settings of the instance, used until they are changed at run time (admin API). */
export interface InstanceSettingsOptions {
  /** Failed password checks that lock a user (0 = never lock). Default 10. */
  readonly maxPasswordAttempts?: number;
  /** Failed one-time-code checks (TOTP, SMS, Email, recovery codes) that lock a user (0 = never). Default 10. */
  readonly maxOtpAttempts?: number;
}

export interface LockoutOptions {
  /** Where lockout state is kept. Default: a new MemoryStore (one process only). */
  readonly store?: LockoutStore;
  /** The instance id (counters are keyed by instance, org and user). Default `"default"`. */
  readonly instanceId?: string;
  /** The instance's default lockout settings. Default 10 and 10. */
  readonly instance?: InstanceSettingsOptions;
  /** The org of guards that are given no `org` extractor. Default `"default"`. */
  readonly defaultOrg?: string;
  /** How long a reservation may stay unsettled before it counts as a failure (ms, at least 1000). Default 30 000. */
  readonly leaseMs?: number;
  /**
   * How long `checks.*` and the routers' check routes may evaluate a credential (ms, at most
   * leaseMs − 500). Past it the attempt is released uncounted and the check throws
   * CheckTimeoutError (503). Default min(leaseMs / 2, 10 000).
   */
  readonly evaluationTimeoutMs?: number;
  /** How long settings are cached in process at most (ms, 0–1000). Default 500. */
  readonly settingsCacheTtlMs?: number;
  /**
   * While the store cannot be reached: `fail-closed` (default) answers 503 / throws
   * StoreUnavailableError; `fail-open` lets guarded requests through unguarded and evaluates
   * checks without counting (each such pass is reported to `onError`). Credentials that need the
   * store to be verified still answer 503 / throw StoreUnavailableError: SMS/Email codes (kept in
   * the store) and TOTP codes (their replay protection, RFC 6238 §5.2, is part of verifying them).
   */
  readonly onStoreError?: StoreErrorPolicy;
  /** A guard's answer to a locked user, instead of 423. E.g. `{ status: 401, body: {...} }`. */
  readonly lockedResponse?: RefusalResponse;
  /** A guard's answer when too many checks of the user are in flight, instead of 429. */
  readonly busyResponse?: RefusalResponse;
  /** A guard's answer while the store cannot be reached (fail-closed), instead of 503. */
  readonly unavailableResponse?: RefusalResponse;
  /** Told of store errors, fail-open passes and lost settlements. Must not throw. Default: console.warn. */
  readonly onError?: (error: unknown, context: LockoutErrorContext) => void;
  /** Told of every lockout event (checks, locks, unlocks, settings changes). Must not throw. */
  readonly onEvent?: (event: LockoutEvent) => void;
  /**
   * Where lock, unlock, settings and password-changed events are recorded (issue 14): a
   * MemoryEventLog, or a RedisEventLog (per-org Redis Streams, which a WebhookSender delivers
   * from). Also serves GET /v1/events of the routers. Default: none (not recorded).
   */
  readonly eventLog?: EventLog;
  /**
   * Told of every pass without lockout under `fail-open`, from guards, checks and routers alike
   * (for metrics; the engine's notice). Must not throw.
   */
  readonly onFailOpen?: (notice: FailOpenNotice) => void;
  /**
   * Told of every event of the engine's compensation queue (queued, retried, compensated,
   * abandoned: store writes of unknown outcome, G5), for metrics. An abandoned one is also
   * reported to `onError` (outcome `uncompensated`). Must not throw.
   */
  readonly onCompensation?: (event: CompensationEvent) => void;
  /**
   * Cost of the dummy argon2 hash verified for unknown users by `checks.password` (set it to your
   * users' hash parameters) and bounds on stored hashes. Default: argon2's defaults.
   */
  readonly password?: PasswordVerifierOptions;
  /** TOTP verification options of `checks.totp` (window, step, minSecretBytes). */
  readonly totp?: Omit<TotpVerifierOptions, 'store'>;
  /** Issued SMS/Email code options (`ttlMs`, `pepper` — the same on every process —, `limiter`). */
  readonly codes?: Omit<OtpCodesOptions, 'store'>;
  /** Bearer tokens of the admin routers (API.md 4). Give these or `authorize` to use `routers`. */
  readonly tokens?: readonly TokenOptions[];
  /** The routers' authorization hook (sessions, JWTs…), instead of `tokens`. */
  readonly authorize?: Authorize;
  /** Told of every admin action and settings change made through the routers. Must not throw. */
  readonly audit?: (entry: AuditEntry) => void;
  /** Largest JSON body the routers accept. Default `16kb`. */
  readonly bodyLimit?: string | number;
  /**
   * Opt-in defences against lockout abuse and spraying (issue 12; README "Defences"), all off by
   * default: `temporaryLockout`, `repeatPassword` (with its HMAC `key`), `deviceCookies` (with its
   * keys) and `sprayThrottle`. Per-org defence settings are read (and their routes answered) only
   * when one of the first three is named.
   */
  readonly defences?: DefencesOptions;
}

/** The defences of issue 12 (README "Defences"): the engine's, and spray throttling. */
export interface DefencesOptions extends EngineDefencesOptions {
  /**
   * Spray throttling: failed checks per client address block (IPv4 address, IPv6 /64) across all
   * users and orgs; over `failures` in the window, that block's checks answer 429 with
   * Retry-After, unevaluated. On when given (`enabled` defaults to true here).
   */
  readonly sprayThrottle?: SprayThrottleOptions;
}

/** The resolved options. */
export interface LockoutConfig {
  readonly instanceId: string;
  readonly defaults: SettingsValues;
  readonly defaultOrg: string;
  readonly leaseMs: number | undefined;
  readonly evaluationTimeoutMs: number | undefined;
  readonly settingsCacheTtlMs: number | undefined;
  readonly onStoreError: StoreErrorPolicy;
  readonly failOpen: boolean;
  readonly lockedResponse: RefusalResponse | undefined;
  readonly busyResponse: RefusalResponse | undefined;
  readonly unavailableResponse: RefusalResponse | undefined;
  /** The engine's defences (temporary lockout, repeat password, device cookies); absent: none. */
  readonly defences?: DefencesConfig;
  /** Spray throttling (`enabled: false` when not given). */
  readonly sprayThrottle: SprayThrottleConfig;
}

/** The keys of the `defences` option. */
const DEFENCE_NAMES = ['sprayThrottle', 'temporaryLockout', 'repeatPassword', 'deviceCookies'];

const KNOWN_OPTIONS = new Set<string>([
  'store',
  'instanceId',
  'instance',
  'defaultOrg',
  'leaseMs',
  'evaluationTimeoutMs',
  'settingsCacheTtlMs',
  'onStoreError',
  'lockedResponse',
  'busyResponse',
  'unavailableResponse',
  'onError',
  'onEvent',
  'eventLog',
  'onFailOpen',
  'onCompensation',
  'password',
  'totp',
  'codes',
  'tokens',
  'authorize',
  'audit',
  'bodyLimit',
  'defences',
]);

/** A short description of a value for error messages ("a string", "null", "3"). */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (Array.isArray(value)) return 'an array';
  switch (typeof value) {
    case 'string':
      return value.length > 40 ? 'a string' : JSON.stringify(value);
    case 'number':
    case 'boolean':
    case 'bigint':
      return String(value);
    case 'function':
      return 'a function';
    default:
      return `an ${typeof value}`;
  }
}

/** An option error of `where` (e.g. `createLockout`) naming the option. */
export function optionError(where: string, field: string, message: string): OptionError {
  return invalidOption(field, message, where);
}

/**
 * Runs `make`, turning an InvalidArgumentError it throws into an OptionError of `where`: code
 * `Errors.Options.Invalid`, message prefixed with `where`, field prefixed with `fieldPrefix`.
 */
export function withPrefix<T>(where: string, make: () => T, fieldPrefix?: string): T {
  try {
    return make();
  } catch (error) {
    if (error instanceof InvalidArgumentError) {
      const field = fieldPrefix && error.field !== undefined ? `${fieldPrefix}.${error.field}` : error.field;
      let message = error.message.startsWith(`${where}:`)
        ? error.message.slice(where.length + 1).trim()
        : error.message;
      if (
        field !== undefined &&
        error.field !== undefined &&
        field !== error.field &&
        message.startsWith(error.field)
      ) {
        message = field + message.slice(error.field.length);
      }
      // The check that failed: the inner one when it names its owner (`LockoutEngine.leaseMs`),
      // else `<where>.<field>`.
      const qualified = error instanceof OptionError && error.check !== error.field;
      const check = qualified ? error.check : `${where}.${field ?? 'options'}`;
      throw new OptionError(check, field, `${where}: ${message}`);
    }
    throw error;
  }
}

function optionalFunction(where: string, value: unknown, field: string, shape: string): void {
  if (value !== undefined && typeof value !== 'function') {
    throw optionError(where, field, `must be a function ${shape}, got ${describe(value)}`);
  }
}

function optionalObject(where: string, value: unknown, field: string, example: string): void {
  if (value !== undefined && !isPlainObject(value)) {
    throw optionError(where, field, `must be an object such as ${example}, got ${describe(value)}`);
  }
}

function limit(where: string, value: unknown, field: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_SETTING_VALUE) {
    throw optionError(
      where,
      field,
      `must be an integer from 0 (never lock) to ${MAX_SETTING_VALUE}, got ${describe(value)}`,
    );
  }
  return value;
}

/** Validates a refusal response option (an object with status/body/headers, or a function). */
export function validateRefusalResponse(
  where: string,
  value: unknown,
  field: string,
): RefusalResponse | undefined {
  if (value === undefined || typeof value === 'function') return value as RefusalResponse | undefined;
  if (!isPlainObject(value)) {
    throw optionError(
      where,
      field,
      `must be { status?, body?, headers? } or a function (req, res, refusal) => void, got ${describe(value)}`,
    );
  }
  for (const key of Object.keys(value)) {
    if (key !== 'status' && key !== 'body' && key !== 'headers') {
      throw optionError(where, `${field}.${key}`, 'is not an option: give status, body and/or headers');
    }
  }
  const { status, headers } = value;
  if (
    status !== undefined &&
    (typeof status !== 'number' || !Number.isInteger(status) || status < 400 || status > 599)
  ) {
    throw optionError(
      where,
      `${field}.status`,
      `must be an HTTP error status from 400 to 599, got ${describe(status)}`,
    );
  }
  if (headers !== undefined) {
    if (!isPlainObject(headers)) {
      throw optionError(
        where,
        `${field}.headers`,
        `must be an object of header names to strings, got ${describe(headers)}`,
      );
    }
    for (const [name, v] of Object.entries(headers)) {
      if (typeof v !== 'string') {
        throw optionError(where, `${field}.headers.${name}`, `must be a string, got ${describe(v)}`);
      }
    }
  }
  return value as RefusalResponse;
}

/** Validates the options of createLockout and resolves the ones it keeps. */
export function resolveLockoutOptions(options: LockoutOptions | undefined): LockoutConfig {
  const where = 'createLockout';
  if (options === undefined) options = {};
  if (!isPlainObject(options)) {
    throw optionError(
      where,
      'options',
      `must be an object such as { store, instance: { maxPasswordAttempts: 5 } }, got ${describe(options)}`,
    );
  }
  for (const key of Object.keys(options)) {
    if (KNOWN_OPTIONS.has(key)) continue;
    if (key === 'maxPasswordAttempts' || key === 'maxOtpAttempts') {
      throw optionError(
        where,
        key,
        `is not a top-level option: pass instance: { ${key}: ${describe(options[key as never])} }`,
      );
    }
    if (key === 'client' || key === 'redis') {
      throw optionError(where, key, 'is not an option: pass store: new RedisStore({ client })');
    }
    throw optionError(
      where,
      key,
      `is not an option of createLockout (known options: ${[...KNOWN_OPTIONS].join(', ')})`,
    );
  }
  const o = options;

  if (o.store !== undefined) {
    // Every member of the port (the engine checks the same, by concern).
    const missing = missingStoreMembers(o.store).flatMap((port) => port.members);
    if (missing.length > 0) {
      throw optionError(
        where,
        'store',
        `must be a LockoutStore such as new MemoryStore() or new RedisStore({ client }) (it lacks ${missing.join(', ')}), got ${describe(o.store)}; omit it for an in-process MemoryStore`,
      );
    }
  }

  const instanceId = withPrefix(where, () => validateId(o.instanceId ?? 'default', 'instanceId'));
  const defaultOrg = withPrefix(where, () => validateId(o.defaultOrg ?? 'default', 'defaultOrg'));

  optionalObject(where, o.instance, 'instance', '{ maxPasswordAttempts: 5, maxOtpAttempts: 5 }');
  const instance = (o.instance ?? {}) as Record<string, unknown>;
  for (const key of Object.keys(instance)) {
    if (key !== 'maxPasswordAttempts' && key !== 'maxOtpAttempts') {
      throw optionError(
        where,
        `instance.${key}`,
        'is not a setting: give maxPasswordAttempts and/or maxOtpAttempts',
      );
    }
  }
  const defaults: SettingsValues = {
    maxPasswordAttempts: limit(where, instance.maxPasswordAttempts, 'instance.maxPasswordAttempts') ?? 10,
    maxOtpAttempts: limit(where, instance.maxOtpAttempts, 'instance.maxOtpAttempts') ?? 10,
  };

  // leaseMs, evaluationTimeoutMs, settingsCacheTtlMs and onStoreError are the engine's options:
  // checked by the engine's own checks (resolveEngineConfig), one place for both faces.
  const engineConfig = withPrefix(where, () =>
    resolveEngineConfig({
      instanceId,
      defaults,
      ...(o.leaseMs !== undefined ? { leaseMs: o.leaseMs as number } : {}),
      ...(o.evaluationTimeoutMs !== undefined
        ? { evaluationTimeoutMs: o.evaluationTimeoutMs as number }
        : {}),
      ...(o.settingsCacheTtlMs !== undefined ? { settingsCacheTtlMs: o.settingsCacheTtlMs as number } : {}),
      ...(o.onStoreError !== undefined ? { onStoreError: o.onStoreError as StoreErrorPolicy } : {}),
    }),
  );
  const policy = engineConfig.onStoreError;

  const lockedResponse = validateRefusalResponse(where, o.lockedResponse, 'lockedResponse');
  const busyResponse = validateRefusalResponse(where, o.busyResponse, 'busyResponse');
  const unavailableResponse = validateRefusalResponse(where, o.unavailableResponse, 'unavailableResponse');

  optionalFunction(where, o.onError, 'onError', '(error, context) => void');
  optionalFunction(where, o.onEvent, 'onEvent', '(event) => void');
  if (
    o.eventLog !== undefined &&
    (typeof (o.eventLog as Partial<EventLog> | null)?.append !== 'function' ||
      typeof (o.eventLog as Partial<EventLog> | null)?.list !== 'function')
  ) {
    throw optionError(
      where,
      'eventLog',
      `must be an EventLog (new MemoryEventLog() or new RedisEventLog({ client, instanceId })), got ${describe(o.eventLog)}`,
    );
  }
  optionalFunction(where, o.onFailOpen, 'onFailOpen', '(notice) => void');
  optionalFunction(where, o.onCompensation, 'onCompensation', '(event) => void');
  optionalFunction(where, o.audit, 'audit', '(entry) => void');
  optionalFunction(
    where,
    o.authorize,
    'authorize',
    '(req, permission, target?) => Promise<{ principal, orgId }>',
  );
  optionalObject(where, o.password, 'password', '{ memoryCost: 65536, timeCost: 3, parallelism: 4 }');
  optionalObject(where, o.totp, 'totp', '{ window: 1 }');
  optionalObject(where, o.codes, 'codes', '{ pepper: process.env.OTP_PEPPER, ttlMs: { sms: 300000 } }');
  // tokens are checked once, by resolveTokens (src/http/auth.ts), when createLockout reads them.
  if (o.tokens !== undefined && o.authorize !== undefined) {
    throw optionError(
      where,
      'tokens',
      'and authorize cannot both be given: authorize replaces the token model',
    );
  }
  checkBodyLimit(o.bodyLimit, where);
  optionalObject(where, o.defences, 'defences', '{ temporaryLockout: { enabled: true } }');
  for (const key of Object.keys(o.defences ?? {})) {
    if (!DEFENCE_NAMES.includes(key)) {
      throw optionError(where, `defences.${key}`, `is not a defence (known: ${DEFENCE_NAMES.join(', ')})`);
    }
  }
  // Spray throttling is resolved by its own module; the other defences by the engine's schema.
  // The engine's defences (and the per-org defence routes) are on when any of them is named.
  const { sprayThrottle: sprayOption, ...engineDefences } = (o.defences ?? {}) as DefencesOptions;
  const named = Object.values(engineDefences).some((d) => d !== undefined);
  const defences = named ? withPrefix(where, () => resolveDefences(engineDefences)) : undefined;
  const sprayThrottle = withPrefix(where, () => resolveSprayThrottle(sprayOption));

  return {
    instanceId,
    defaults,
    defaultOrg,
    leaseMs: engineConfig.leaseMs,
    evaluationTimeoutMs: engineConfig.evaluationTimeoutMs,
    settingsCacheTtlMs: engineConfig.settingsCacheTtlMs,
    onStoreError: policy,
    failOpen: policy === 'fail-open',
    lockedResponse,
    busyResponse,
    unavailableResponse,
    ...(defences !== undefined ? { defences } : {}),
    sprayThrottle,
  };
}
