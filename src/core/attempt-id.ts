import { randomFillSync } from 'node:crypto';
import { InvalidArgumentError } from './errors';
import { isFactor, SCOPE, type Factor } from './subjects';

/**
 * An attempt id names one reservation and carries what is needed to settle it from the id alone
 * (org, user, factor) — the sidecar's `/v1/attempts/{attemptId}/…` routes get nothing else.
 * Form: base64url(JSON [org, user, factor]) "." 22 chars of base64url randomness (128 bits).
 * The random part is the reservation's key in the store, so a forged or guessed id finds nothing.
 */
export interface AttemptRef {
  readonly org: string;
  readonly user: string;
  readonly factor: Factor;
  /** The reservation's key in the store. */
  readonly nonce: string;
  /** Device cookies: the scope the attempt counts on (then a fourth element of the id). */
  readonly scope?: string;
}

// 16 random bytes per nonce, sliced from a pool refilled from the CSPRNG 256 nonces at a time
// (as Node does for randomUUID): one randomFillSync call per reserve was 8% of a check's CPU.
const POOL = Buffer.alloc(4096);
let poolOffset = POOL.length;

/** 128 bits from the CSPRNG, base64url (22 characters). */
export function newNonce(): string {
  if (poolOffset + 16 > POOL.length) {
    randomFillSync(POOL);
    poolOffset = 0;
  }
  const nonce = POOL.toString('base64url', poolOffset, poolOffset + 16);
  poolOffset += 16;
  return nonce;
}

export function encodeAttemptId(ref: AttemptRef): string {
  const parts =
    ref.scope === undefined ? [ref.org, ref.user, ref.factor] : [ref.org, ref.user, ref.factor, ref.scope];
  return `${Buffer.from(JSON.stringify(parts)).toString('base64url')}.${ref.nonce}`;
}

const MAX_ATTEMPT_ID = 2048;

/** Decodes an attempt id; anything malformed is an InvalidArgumentError. */
export function decodeAttemptId(id: string): AttemptRef {
  const bad = () => new InvalidArgumentError('Errors.Attempt.Invalid', 'attemptId is malformed', 'attemptId');
  if (typeof id !== 'string' || id.length > MAX_ATTEMPT_ID) throw bad();
  const dot = id.indexOf('.');
  if (dot <= 0) throw bad();
  const nonce = id.slice(dot + 1);
  if (!/^[A-Za-z0-9_-]{22}$/.test(nonce)) throw bad();
  let parts: unknown;
  try {
    parts = JSON.parse(Buffer.from(id.slice(0, dot), 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  if (!Array.isArray(parts) || (parts.length !== 3 && parts.length !== 4)) throw bad();
  const [org, user, factor, scope] = parts as unknown[];
  if (typeof org !== 'string' || typeof user !== 'string' || !isFactor(factor)) throw bad();
  if (parts.length === 3) return { org, user, factor, nonce };
  if (typeof scope !== 'string' || !SCOPE.test(scope)) throw bad();
  return { org, user, factor, nonce, scope };
}
