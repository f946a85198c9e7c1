import type { LockedPage } from '../core/store';
import type { Details, EffectiveSettings } from '../core/settings';
import type { CheckResult, EffectiveDefences, Settlement, UserStatus } from '../core/engine';
import type { DefenceSettingsBody } from './defence-schemas';
import type { Factor } from '../core/subjects';
import type { z } from 'zod';
import type {
  CheckSuccessBody,
  DetailsBody,
  DetailsV2Body,
  LockedUsersBody,
  PolicyBody,
  SettingsV2ResponseBody,
  SettlementBody,
  UserLockoutBody,
} from './schemas';

/**
 * JSON renderers of the HTTP API, in ZITADEL's shapes: uint64 values as strings, times as
 * RFC 3339 UTC with milliseconds, absent times omitted. Each answers the output type of the zod
 * schema (src/http/schemas.ts) that the OpenAPI document's schema of its body is generated from.
 */

/** RFC 3339 UTC with milliseconds (`2024-06-17T09:46:07.958Z`). */
export function rfc3339(ms: number): string {
  return new Date(ms).toISOString();
}

export type DetailsJson = z.output<typeof DetailsBody>;

/** `details` of a settings object or change (management and admin API, v1). */
export function renderDetails(details: Details): DetailsJson {
  return {
    sequence: String(details.sequence),
    ...(details.creationDate !== undefined ? { creationDate: rfc3339(details.creationDate) } : {}),
    ...(details.changeDate !== undefined ? { changeDate: rfc3339(details.changeDate) } : {}),
    resourceOwner: details.resourceOwner,
  };
}

/** `details` of the v2 settings API: sequence, changeDate, resourceOwner (no creationDate, as ZITADEL's v2). */
export function renderDetailsV2(details: Details): z.output<typeof DetailsV2Body> {
  return {
    sequence: String(details.sequence),
    ...(details.changeDate !== undefined ? { changeDate: rfc3339(details.changeDate) } : {}),
    resourceOwner: details.resourceOwner,
  };
}

export type PolicyJson = z.output<typeof PolicyBody>;

/** A lockout policy (management and admin API, v1). */
export function renderPolicy(settings: EffectiveSettings): PolicyJson {
  return {
    details: renderDetails(settings.details),
    maxPasswordAttempts: String(settings.maxPasswordAttempts),
    maxOtpAttempts: String(settings.maxOtpAttempts),
    isDefault: settings.isDefault,
  };
}

export type SettingsV2Json = z.output<typeof SettingsV2ResponseBody>;

/** `GET /v2/settings/lockout`. */
export function renderSettingsV2(settings: EffectiveSettings): SettingsV2Json {
  return {
    details: renderDetailsV2(settings.details),
    settings: {
      maxPasswordAttempts: String(settings.maxPasswordAttempts),
      maxOtpAttempts: String(settings.maxOtpAttempts),
      resourceOwnerType: settings.resourceOwnerType,
    },
  };
}

export type UserStatusJson = z.output<typeof UserLockoutBody>;
export type UserStateJson = UserStatusJson['state'];

/** `GET /v1/users/{userId}/lockout`. */
export function renderUserStatus(status: UserStatus): UserStatusJson {
  const f = status.failedAttempts;
  return {
    userId: status.userId,
    orgId: status.orgId,
    state: status.locked ? 'USER_STATE_LOCKED' : 'USER_STATE_ACTIVE',
    ...(status.locked && status.lockedAt !== undefined ? { lockedAt: rfc3339(status.lockedAt) } : {}),
    ...(status.locked && status.lockedUntil !== undefined
      ? { lockedUntil: rfc3339(status.lockedUntil) }
      : {}),
    ...(status.scopes !== undefined
      ? {
          scopes: status.scopes.map((sc) => ({
            scope: sc.scope,
            state: sc.locked ? ('USER_STATE_LOCKED' as const) : ('USER_STATE_ACTIVE' as const),
            ...(sc.locked && sc.lockedAt !== undefined ? { lockedAt: rfc3339(sc.lockedAt) } : {}),
            ...(sc.locked && sc.lockedUntil !== undefined ? { lockedUntil: rfc3339(sc.lockedUntil) } : {}),
            failedAttempts: renderCounters(sc.failedAttempts),
          })),
        }
      : {}),
    failedAttempts: {
      password: String(f.password),
      totp: String(f.totp),
      otpSms: String(f.otp_sms),
      otpEmail: String(f.otp_email),
      recoveryCode: String(f.recovery_code),
    },
    settings: { ...renderPolicy(status.settings), resourceOwnerType: status.settings.resourceOwnerType },
  };
}

/** `GET /v1/lockouts`. */
/** The defence settings of an org or of the instance (issue 12): values only, never a key. */
export function renderDefences(d: EffectiveDefences): z.output<typeof DefenceSettingsBody> {
  const t = d.values.temporaryLockout;
  const r = d.values.repeatPassword;
  return {
    defences: {
      temporaryLockout: {
        enabled: t.enabled,
        durationMs: t.durationMs,
        maxDurationMs: t.maxDurationMs,
        isDefault: d.inherited.temporaryLockout,
      },
      repeatPassword: { enabled: r.enabled, remember: r.remember, isDefault: d.inherited.repeatPassword },
      deviceCookies: {
        enabled: d.values.deviceCookies.enabled,
        maxDevices: d.values.deviceCookies.maxDevices,
        isDefault: d.inherited.deviceCookies,
      },
    },
    isDefault: d.isDefault,
    resourceOwnerType: d.resourceOwnerType,
    details: renderDetails(d.details),
  };
}

function renderCounters(f: Readonly<Record<Factor, number>>) {
  return {
    password: String(f.password),
    totp: String(f.totp),
    otpSms: String(f.otp_sms),
    otpEmail: String(f.otp_email),
    recoveryCode: String(f.recovery_code),
  };
}

export function renderLockedPage(page: LockedPage): z.output<typeof LockedUsersBody> {
  return {
    users: page.users.map((u) =>
      u.scope === undefined
        ? { userId: u.userId, lockedAt: rfc3339(u.lockedAt) }
        : { userId: u.userId, lockedAt: rfc3339(u.lockedAt), scope: u.scope },
    ),
    ...(page.nextCursor !== undefined ? { nextCursor: page.nextCursor } : {}),
  };
}

/** A successful check: `{"userId", "factor", "failedAttempts": "0", "locked": false}`. */
export function renderCheckSuccess(
  userId: string,
  factor: Factor,
  result: Extract<CheckResult, { outcome: 'success' }>,
): z.output<typeof CheckSuccessBody> {
  // `${0}` is the string '0' as String(0), typed as the literal the schema declares.
  const body = { userId, factor, failedAttempts: `${result.failedAttempts}` as const, locked: result.locked };
  // device cookies: the token for the auth service to hand to the client
  return result.deviceToken === undefined ? body : { ...body, deviceToken: result.deviceToken };
}

/** A settled attempt: `{"failedAttempts", "locked"}`. */
export function renderSettlement(s: Settlement): z.output<typeof SettlementBody> {
  const body = { failedAttempts: String(s.failedAttempts), locked: s.locked };
  return s.deviceToken === undefined ? body : { ...body, deviceToken: s.deviceToken };
}
