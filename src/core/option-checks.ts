import bytes from 'bytes';
import { OptionError } from './errors';

/**
 * Helpers of the option checks of the engine and the stores (internal: not exported by the
 * package). Each check throws an OptionError with its own `check` code and a corrective message.
 */

/**
 * An invalid option of the HTTP faces: an OptionError (code `Errors.Options.Invalid`) whose check
 * is `<where>.<field>` (or `<field>`), with the message `<where>: <field> <message>` (or
 * `<field> <message>` without `where`).
 */
export function invalidOption(field: string, message: string, where?: string): OptionError {
  const text = `${field} ${message}`;
  return new OptionError(where ? `${where}.${field}` : field, field, where ? `${where}: ${text}` : text);
}

/** A mapping (not null, not an array). */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A received option value as an option error shows it: `"text"`, `1.5`, `a function`, `an object`. */
export function describeOptionValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  return String(value);
}

/**
 * An integer option of at least `min`, or `fallback` when it is absent. Anything else is an
 * OptionError `<where>.<field>` whose message ends with `fix`, the corrective advice.
 */
export function integerOption(
  where: string,
  field: string,
  value: unknown,
  rule: { fallback: number; min: number; fix: string },
): number {
  if (value === undefined) return rule.fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < rule.min) {
    throw new OptionError(
      `${where}.${field}`,
      field,
      `${where}: ${field} must be an integer of at least ${rule.min}, got ${describeOptionValue(value)}; ${rule.fix}`,
    );
  }
  return value;
}

const SIZE = /^([0-9]+(?:\.[0-9]+)?)\s*(b|kb|mb)?$/i;

/**
 * Bytes of a size: a number of bytes, or "64kb", "1mb", "512b" (1 kb = 1024 bytes, counted by
 * `bytes` as express.json's limit is). Anything else is refused, not read leniently.
 */
export function parseSize(value: number | string): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value > 0 ? value : undefined;
  const m = SIZE.exec(value.trim());
  if (!m) return undefined;
  const unit = (m[2] ?? 'b').toLowerCase();
  const count = bytes.parse(unit === 'b' ? m[1]! : `${m[1]!}${unit}`);
  return count !== null && count > 0 ? count : undefined;
}

/**
 * Checks a JSON body limit option (`bodyLimit` of createLockout and the routers): a size that
 * `parseSize` reads. Anything else — '16 kilobytes', 'abc' — would leave express.json unbounded
 * (bytes.parse answers null), so it is refused.
 */
export function checkBodyLimit(value: unknown, where?: string): void {
  if (value === undefined) return;
  if ((typeof value === 'number' || typeof value === 'string') && parseSize(value) !== undefined) return;
  throw invalidOption(
    'bodyLimit',
    `must be a size such as '16kb' or a positive number of bytes, got ${describeOptionValue(value)}`,
    where,
  );
}
