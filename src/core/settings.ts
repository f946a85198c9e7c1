import { InvalidArgumentError } from './errors';
import type { Limits } from './subjects';
import type { SettingsValues } from './store';

/** The largest settings value: uint32 (API.md: a value above 2^32−1 is a 400). */
export const MAX_SETTING_VALUE = 4294967295;

/** The shipped instance default (ZITADEL's: 10 and 10). */
export const SHIPPED_DEFAULT: SettingsValues = Object.freeze({ maxPasswordAttempts: 10, maxOtpAttempts: 10 });

export type ResourceOwnerType = 'RESOURCE_OWNER_TYPE_INSTANCE' | 'RESOURCE_OWNER_TYPE_ORG';

/** `details` of a settings object or change, as ZITADEL renders them. */
export interface Details {
  /** Per resource owner, +1 at each change. 0 for instance settings never changed at run time. */
  readonly sequence: number;
  readonly creationDate?: number;
  readonly changeDate?: number;
  /** The org id, or the instance id for instance settings. */
  readonly resourceOwner: string;
}

/** The settings that apply to an org: its custom settings, else the instance's. */
export interface EffectiveSettings extends Limits {
  readonly isDefault: boolean;
  readonly resourceOwnerType: ResourceOwnerType;
  readonly details: Details;
}

/** A settings value given as a string: 1–10 decimal digits (its value is then checked against MAX_SETTING_VALUE). */
export const SETTING_VALUE_STRING = /^[0-9]{1,10}$/;

/**
 * Parses one settings value: a non-negative integer up to 2^32−1, given as a number or a
 * numeric string (uint64 values travel as strings in JSON).
 */
export function parseSettingValue(value: unknown, field: string): number {
  let n: number;
  if (typeof value === 'number') n = value;
  else if (typeof value === 'string' && SETTING_VALUE_STRING.test(value)) n = Number(value);
  else
    throw new InvalidArgumentError('Errors.Settings.Invalid', `${field} must be an unsigned integer`, field);
  if (!Number.isInteger(n) || n < 0 || n > MAX_SETTING_VALUE) {
    throw new InvalidArgumentError(
      'Errors.Settings.Invalid',
      `${field} must be an integer from 0 to ${MAX_SETTING_VALUE}`,
      field,
    );
  }
  return n;
}

/** Parses both settings values; a missing value is 0 (as ZITADEL's proto3 defaults). */
export function parseSettingsValues(input: {
  maxPasswordAttempts?: unknown;
  maxOtpAttempts?: unknown;
}): SettingsValues {
  return {
    maxPasswordAttempts: parseSettingValue(input.maxPasswordAttempts ?? 0, 'maxPasswordAttempts'),
    maxOtpAttempts: parseSettingValue(input.maxOtpAttempts ?? 0, 'maxOtpAttempts'),
  };
}
