import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { intOption } from './options';
// otplib v13's own packages, without the `otplib` umbrella: its entry point loads the noble/scure
// plugins, which are ESM-only and so cannot be require()d by Jest or by Node < 20.19 (our CJS build).
// Here HMAC and randomness come from node:crypto and the Base32 codec is below.
import { createCryptoPlugin, createGuardrails, type CryptoPlugin, type OTPGuardrails } from '@otplib/core';
import { generateSync, verify as otpVerify } from '@otplib/totp';
import { InvalidArgumentError } from '../core/errors';
import type { OneTimeStore } from '../core/store';
import type { Subject } from '../core/subjects';
import { VerifyErrorCodes } from './errors';

/** RFC 4226 §4: a shared secret of at least 128 bits (otplib's guardrail too). */
export const DEFAULT_MIN_TOTP_SECRET_BYTES = 16;
const MAX_SECRET_BYTES = 64;
const CODE = /^[0-9]{6}$/;
const BASE32_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const BASE32 = /^[A-Z2-7]+$/;

const toBytes = (value: string | Uint8Array): Buffer =>
  typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value);

/** otplib crypto plugin on node:crypto (HMAC-SHA1/256/512, CSPRNG, timingSafeEqual). */
const nodeCrypto: CryptoPlugin = createCryptoPlugin({
  name: 'node',
  algorithms: ['sha1', 'sha256', 'sha512'],
  hmac: (algorithm, key, data) => new Uint8Array(createHmac(algorithm, key).update(data).digest()),
  randomBytes: (length) => new Uint8Array(randomBytes(length)),
  constantTimeEqual: (a, b) => {
    const x = toBytes(a);
    const y = toBytes(b);
    return x.length === y.length && timingSafeEqual(x, y);
  },
});

/** RFC 4648 Base32, upper case, without padding. */
function base32Encode(bytes: Uint8Array): string {
  let out = '';
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32_ALPHABET[(buffer >>> (bits - 5)) & 31];
      bits -= 5;
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32_ALPHABET[(buffer << (5 - bits)) & 31];
  return out;
}

/** Decodes normalized Base32 (A–Z, 2–7, no padding); undefined for an impossible length. */
function base32Decode(text: string): Uint8Array | undefined {
  // 8 characters carry 5 bytes; a final group of 1, 3 or 6 characters cannot come from whole bytes.
  if ([1, 3, 6].includes(text.length % 8)) return undefined;
  const out = new Uint8Array(Math.floor((text.length * 5) / 8));
  let buffer = 0;
  let bits = 0;
  let i = 0;
  for (const char of text) {
    buffer = ((buffer << 5) | BASE32_ALPHABET.indexOf(char)) & 0xfff;
    bits += 5;
    if (bits >= 8) {
      out[i++] = (buffer >>> (bits - 8)) & 0xff;
      bits -= 8;
    }
  }
  return out;
}

export interface TotpVerifierOptions {
  /**
   * Where used time steps are recorded (`useStep` of the OneTimeStore port; any LockoutStore): a
   * code is accepted once per user.
   */
  readonly store: Pick<OneTimeStore, 'useStep'>;
  /** Steps accepted either side of the current one. Default 1 (±30 s), at most 10. */
  readonly window?: number;
  /** Time step in seconds. Default 30 (RFC 6238 and every authenticator app). */
  readonly step?: number;
  /** Current time in milliseconds since the epoch. Default Date.now. */
  readonly clock?: () => number;
  /**
   * Fewest bytes a decoded secret may have. Default 16 (RFC 4226's minimum). Lower it (down to
   * 10) only to accept legacy 80-bit secrets such as `JBSWY3DPEHPK3PXP`.
   */
  readonly minSecretBytes?: number;
}

export interface TotpVerifier {
  /**
   * Verifies a 6-digit RFC 6238 code (HMAC-SHA1) against a Base32 `secret` (case, spaces and `=`
   * padding are ignored). Accepts the current step ± `window`. A code accepted once for the
   * subject is refused the second time, and so is any code of that step or an earlier one
   * (RFC 6238 §5.2; the matched step is recorded with `store.useStep`).
   * A code that is not 6 digits answers false (a wrong credential). Throws InvalidArgumentError
   * (Errors.Totp.SecretInvalid, field `secret`) for a missing or malformed secret.
   */
  verify(subject: Subject, secret: string, code: string): Promise<boolean>;
}

/** Decodes a Base32 secret, tolerating lower case, white space and `=` padding. */
function decodeSecret(secret: unknown, minBytes: number): Uint8Array {
  const invalid = (why: string): InvalidArgumentError =>
    new InvalidArgumentError(VerifyErrorCodes.TotpSecretInvalid, `secret ${why}`, 'secret');
  if (typeof secret !== 'string') throw invalid('must be a Base32 string');
  const normalized = secret.replace(/\s+/g, '').replace(/=+$/, '').toUpperCase();
  if (normalized.length === 0) throw invalid('is required');
  if (!BASE32.test(normalized)) throw invalid('must be a Base32 string (A–Z, 2–7)');
  const bytes = base32Decode(normalized);
  if (!bytes) throw invalid('is not valid Base32 (impossible length)');
  if (bytes.length < minBytes || bytes.length > MAX_SECRET_BYTES) {
    throw invalid(`must decode to ${minBytes}–${MAX_SECRET_BYTES} bytes, got ${bytes.length}`);
  }
  return bytes;
}

export function createTotpVerifier(options: TotpVerifierOptions): TotpVerifier {
  const store = options?.store;
  if (!store || typeof store.useStep !== 'function') {
    throw new InvalidArgumentError(
      VerifyErrorCodes.OptionInvalid,
      'store must be a LockoutStore (useStep)',
      'store',
    );
  }
  const window = intOption(options.window, 1, 'window', 0, 10);
  const step = intOption(options.step, 30, 'step', 1, 3600);
  const minSecretBytes = intOption(
    options.minSecretBytes,
    DEFAULT_MIN_TOTP_SECRET_BYTES,
    'minSecretBytes',
    10,
    MAX_SECRET_BYTES,
  );
  const clock = options.clock ?? Date.now;
  if (typeof clock !== 'function') {
    throw new InvalidArgumentError(
      VerifyErrorCodes.OptionInvalid,
      'clock must be a function returning milliseconds',
      'clock',
    );
  }
  const guardrails: OTPGuardrails | undefined =
    minSecretBytes === DEFAULT_MIN_TOTP_SECRET_BYTES
      ? undefined
      : createGuardrails({ MIN_SECRET_BYTES: minSecretBytes });
  // A code of step T is accepted while the current step is within T ± window: at most
  // (2·window + 1) steps after the first moment it could have been accepted.
  const usedTtlMs = (2 * window + 1) * step * 1000;

  return {
    async verify(subject: Subject, secret: string, code: string): Promise<boolean> {
      const key = decodeSecret(secret, minSecretBytes);
      if (typeof code !== 'string' || !CODE.test(code)) return false;
      // otplib compares each candidate in constant time (nodeCrypto.constantTimeEqual).
      const result = await otpVerify({
        secret: key,
        crypto: nodeCrypto,
        token: code,
        period: step,
        epoch: Math.floor(clock() / 1000),
        epochTolerance: window * step,
        ...(guardrails ? { guardrails } : {}),
      });
      if (!result.valid) return false;
      return store.useStep(subject, 'totp', result.timeStep, usedTtlMs);
    },
  };
}

/** A new random TOTP secret: 20 bytes (160 bits, RFC 4226's recommendation), Base32 without padding. */
export function generateTotpSecret(): string {
  return base32Encode(randomBytes(20));
}

/**
 * The 6-digit TOTP code of `secret` at `timeMs` (default now) with a `step`-second step: for
 * tests and examples (an authenticator app computes it on the user's side).
 */
export function totpCode(secret: string, timeMs: number = Date.now(), step = 30): string {
  return generateSync({
    secret: decodeSecret(secret, 1),
    crypto: nodeCrypto,
    period: step,
    epoch: Math.floor(timeMs / 1000),
    guardrails: createGuardrails({ MIN_SECRET_BYTES: 1 }),
  });
}
