import { InvalidArgumentError } from './errors';
import type { StoreDefences } from './store';

/** The credential factors lockgate counts, each with its own counter. */
export const FACTORS = ['password', 'totp', 'otp_sms', 'otp_email', 'recovery_code'] as const;
export type Factor = (typeof FACTORS)[number];

/** Who a counter belongs to: (instance, org, user). Ids are opaque and case-sensitive. */
export interface Subject {
  readonly instance: string;
  readonly org: string;
  readonly user: string;
  /**
   * Device cookies (issue 12): the user's scope whose state this is — `u` (clients without a
   * valid device token) or `d<deviceId>` (one device). Absent: the user's own state, as always.
   */
  readonly scope?: string;
}

/** The scope of clients without a valid device token. */
export const UNTRUSTED_SCOPE = 'u';
/** A scope: `u`, or `d` followed by a device id (22 base64url characters). */
export const SCOPE = /^(u|d[A-Za-z0-9_-]{22})$/;

/** The lockout limits that apply to one check: 0 means "never lock" (counts still count). */
export interface Limits {
  readonly maxPasswordAttempts: number;
  readonly maxOtpAttempts: number;
  /**
   * The defences in force for this operation (issue 12; see core/defences.ts and the store port).
   * Absent: every defence is off, and the store does exactly what it did before they existed.
   */
  readonly defences?: StoreDefences;
}

/** The limit of one factor: password against maxPasswordAttempts, every OTP kind (and recovery codes) against maxOtpAttempts. */
export function limitOf(factor: Factor, limits: Limits): number {
  return factor === 'password' ? limits.maxPasswordAttempts : limits.maxOtpAttempts;
}

export function isFactor(value: unknown): value is Factor {
  return typeof value === 'string' && (FACTORS as readonly string[]).includes(value);
}

export const MAX_ID_LENGTH = 256;
/** C0 and C1 control characters and DEL: refused in ids and configured names. */
// eslint-disable-next-line no-control-regex
export const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/;
// A high surrogate not followed by a low one, or a low surrogate not preceded by a high one:
// such a string is not well-formed Unicode (String.prototype.isWellFormed), cannot be encoded as
// UTF-8 or by encodeURIComponent, and so cannot name a user in a key, a URL or a log line.
export const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Validates an org, user or instance id: a well-formed Unicode string (no lone UTF-16 surrogate)
 * of 1–256 characters (UTF-16 code units) with no control characters. Throws
 * InvalidArgumentError naming the field.
 */
export function validateId(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw new InvalidArgumentError('Errors.Id.Missing', `${field} is required`, field);
  }
  if (value.length > MAX_ID_LENGTH) {
    throw new InvalidArgumentError(
      'Errors.Id.TooLong',
      `${field} must be at most ${MAX_ID_LENGTH} characters`,
      field,
    );
  }
  if (CONTROL_CHARACTERS.test(value)) {
    throw new InvalidArgumentError(
      'Errors.Id.Invalid',
      `${field} must not contain control characters`,
      field,
    );
  }
  if (LONE_SURROGATE.test(value)) {
    throw new InvalidArgumentError(
      'Errors.Id.Invalid',
      `${field} must be well-formed Unicode (no lone surrogate)`,
      field,
    );
  }
  return value;
}

export function validateFactor(value: unknown, field = 'factor'): Factor {
  if (!isFactor(value)) {
    throw new InvalidArgumentError(
      'Errors.Factor.Invalid',
      `${field} must be one of ${FACTORS.join(', ')}`,
      field,
    );
  }
  return value;
}

export function makeSubject(instance: string, org: unknown, user: unknown): Subject {
  return { instance, org: validateId(org, 'orgId'), user: validateId(user, 'userId') };
}

/** All factors at zero, for stores building a UserState. */
export function zeroCounters(): Record<Factor, number> {
  return { password: 0, totp: 0, otp_sms: 0, otp_email: 0, recovery_code: 0 };
}
