import { InvalidArgumentError } from '../core/errors';
import { VerifyErrorCodes } from './errors';

/** An integer option from `min` to `max`, `fallback` when not given; else a coded error naming `field`. */
export function intOption(
  value: number | undefined,
  fallback: number,
  field: string,
  min: number,
  max: number,
): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(
      VerifyErrorCodes.OptionInvalid,
      `${field} must be an integer from ${min} to ${max}, got ${String(value)}`,
      field,
    );
  }
  return value;
}
