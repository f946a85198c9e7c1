import { createHmac } from 'node:crypto';
import type { DeviceTokenConfig } from './device-token';
import type { StoreDefences } from './store';
import type { Subject } from './subjects';

/*
 * Opt-in defences against lockout abuse (issue 12), on top of ZITADEL's hard per-account lockout.
 * Every one is off by default, and with every one off lockgate does exactly what it did before:
 * the same answers, the same stored fields, the same Lua and the same round trips per check.
 *
 *   - temporaryLockout (Okta, Keycloak, Cognito): a lock made by failures ends by itself after
 *     durationMs × 2^(n−1) (n = consecutive locks, reset by a success, an admin unlock or a
 *     password change), at most maxDurationMs. Admin locks stay permanent.
 *   - deviceCookies (OWASP device cookies): after a success lockgate issues a device token bound
 *     to (instance, org, user) (core/device-token.ts); a check with a valid one counts on that
 *     device's own scope and locks only it; checks without one share the user's untrusted scope,
 *     whose lock locks only them. An admin lock locks every scope; an unlock clears every scope; a
 *     password change resets every scope. At most maxDevices device scopes per user.
 *   - repeatPassword (Entra smart lockout): a wrong password that is one of the user's last
 *     `remember` wrong passwords is not counted again. The store keeps keyed hashes
 *     (HMAC-SHA256 with the instance's key, truncated to 128 bits) — never the passwords.
 *
 * Where the settings live:
 *   - instance: the `defences` section of the sidecar config file or createLockout({ defences }),
 *     the only place for secrets (HMAC keys);
 *   - org: lockgate's own routes (/v1/policies/defences), without secrets. Each defence of an org
 *     is the org's own when it has one, else the instance's (per defence, so that a defence added
 *     later inherits from the instance until the org sets it).
 * Per-org settings are read (through the settings cache) only when the instance has a `defences`
 * section: without one, the engine never looks for them and every check is today's.
 */

/** Temporary lockout: how long a lock made by failures lasts. */
export interface TemporaryLockoutValues {
  readonly enabled: boolean;
  /** The first lock's length (ms). */
  readonly durationMs: number;
  /** The longest lock (ms): durationMs doubles with each consecutive lock up to this. */
  readonly maxDurationMs: number;
}

/** Repeat-password forgiveness: how many recent wrong passwords are remembered (as keyed hashes). */
export interface RepeatPasswordValues {
  readonly enabled: boolean;
  /** How many of the user's latest wrong passwords are remembered (1–MAX_REMEMBERED). */
  readonly remember: number;
}

/** Device cookies: a check with a valid device token counts on that device's own scope. */
export interface DeviceCookiesValues {
  readonly enabled: boolean;
  /** Most device scopes kept per user (the least recently used unlocked one is forgotten past it). */
  readonly maxDevices: number;
}

/** The non-secret values of the defences: what an org may set and what the API answers. */
export interface DefenceValues {
  readonly temporaryLockout?: TemporaryLockoutValues;
  readonly repeatPassword?: RepeatPasswordValues;
  readonly deviceCookies?: DeviceCookiesValues;
}

/** The instance's defences, resolved: the values and the secrets that go with them. */
export interface DefencesConfig {
  readonly values: DefenceValues;
  /** HMAC key of repeat-password forgiveness (from the instance configuration only). */
  readonly repeatPasswordKey?: Buffer;
  /** Device tokens' keys (the first signs, all verify) and their maximum age. */
  readonly deviceTokens?: DeviceTokenConfig;
  /** The device cookie's attributes (middleware and proxy). */
  readonly deviceCookie?: {
    readonly name: string;
    readonly secure: boolean;
    readonly sameSite: 'lax' | 'strict';
    readonly path: string;
  };
}

/** The defence names, in the order they are rendered. */
export const DEFENCE_NAMES = ['temporaryLockout', 'repeatPassword', 'deviceCookies'] as const;
export type DefenceName = (typeof DEFENCE_NAMES)[number];

export const DEFAULT_TEMPORARY_LOCKOUT: TemporaryLockoutValues = Object.freeze({
  enabled: false,
  durationMs: 900_000,
  maxDurationMs: 86_400_000,
});
export const DEFAULT_REPEAT_PASSWORD: RepeatPasswordValues = Object.freeze({ enabled: false, remember: 5 });
export const DEFAULT_DEVICE_COOKIES: DeviceCookiesValues = Object.freeze({ enabled: false, maxDevices: 10 });
/** The most device scopes a user may keep. */
export const MAX_DEVICES = 100;
/** The most wrong passwords remembered per user (bounded state: 22 bytes each). */
export const MAX_REMEMBERED = 20;
/** Bounds of a lock's length: 100 ms (tests use a few hundred) to 1 year. */
export const MIN_LOCK_MS = 100;
export const MAX_LOCK_MS = 31_536_000_000;

/** Stored per-org defence settings: canonical JSON of DefenceValues, with ZITADEL-like details. */
export interface DefenceRecord {
  readonly values: DefenceValues;
  readonly sequence: number;
  readonly creationDate: number;
  readonly changeDate: number;
}

/** The effective value of each defence of an org: the org's own, else the instance's. */
export function effectiveDefences(
  instance: DefenceValues,
  org: DefenceValues | undefined,
): Required<DefenceValues> {
  return {
    temporaryLockout: org?.temporaryLockout ?? instance.temporaryLockout ?? DEFAULT_TEMPORARY_LOCKOUT,
    repeatPassword: org?.repeatPassword ?? instance.repeatPassword ?? DEFAULT_REPEAT_PASSWORD,
    deviceCookies: org?.deviceCookies ?? instance.deviceCookies ?? DEFAULT_DEVICE_COOKIES,
  };
}

/**
 * What the store needs of the effective defences for one operation, or undefined when every one
 * is off (the store then runs exactly as without defences). A defence that needs a key the
 * instance does not have stays off.
 */
export function storeDefencesOf(
  values: Required<DefenceValues>,
  config: DefencesConfig,
): StoreDefences | undefined {
  const tl = values.temporaryLockout;
  const rp = values.repeatPassword;
  const lockMs = tl.enabled ? tl.durationMs : 0;
  const remember = rp.enabled && config.repeatPasswordKey !== undefined ? rp.remember : 0;
  const dc = values.deviceCookies;
  const maxDevices = dc.enabled && config.deviceTokens !== undefined ? dc.maxDevices : 0;
  if (lockMs === 0 && remember === 0 && maxDevices === 0) return undefined;
  const d = { lockMs, maxLockMs: tl.enabled ? Math.max(tl.durationMs, tl.maxDurationMs) : 0, remember };
  return maxDevices > 0 ? { ...d, maxDevices } : d;
}

/**
 * The keyed hash of a wrong password, as the store keeps it: HMAC-SHA256 over (instance, org,
 * user, password) with the instance's key, truncated to 128 bits, base64url (22 characters). Bound
 * to the user, so the same password of two users is two different hashes; without the key, the
 * hash cannot be tested against a dictionary.
 */
export function repeatKeyOf(key: Buffer, subject: Subject, password: string): string {
  const h = createHmac('sha256', key);
  for (const part of [subject.instance, subject.org, subject.user]) {
    h.update(`${Buffer.byteLength(part)}:`).update(part);
  }
  h.update(password);
  return h.digest().subarray(0, 16).toString('base64url');
}

/** DefenceValues as canonical JSON (fixed key order): what the stores keep and compare. */
export function canonicalDefences(values: DefenceValues): string {
  const out: Record<string, unknown> = {};
  if (values.temporaryLockout) {
    const t = values.temporaryLockout;
    out.temporaryLockout = { enabled: t.enabled, durationMs: t.durationMs, maxDurationMs: t.maxDurationMs };
  }
  if (values.repeatPassword) {
    const r = values.repeatPassword;
    out.repeatPassword = { enabled: r.enabled, remember: r.remember };
  }
  if (values.deviceCookies) {
    const d = values.deviceCookies;
    out.deviceCookies = { enabled: d.enabled, maxDevices: d.maxDevices };
  }
  return JSON.stringify(out);
}

/** Parses what canonicalDefences wrote (the stores' own data). */
export function parseStoredDefences(json: string): DefenceValues {
  return JSON.parse(json) as DefenceValues;
}
