import { createHmac, randomBytes, randomInt } from 'node:crypto';
import { InvalidArgumentError } from '../core/errors';
import type { CodeChannel, OneTimeStore } from '../core/store';
import type { Subject } from '../core/subjects';
import { VerifyErrorCodes } from './errors';
import { createIssueLimiter, type IssueLimiter } from './issue-limiter';

export const CODE_CHANNELS: readonly CodeChannel[] = ['sms', 'email'];
/** Default lifetimes of an issued code: 5 minutes by SMS, 10 by email. */
export const DEFAULT_CODE_TTL_MS: Readonly<Record<CodeChannel, number>> = {
  sms: 5 * 60_000,
  email: 10 * 60_000,
};
const CODE = /^[0-9]{6}$/;
const MIN_PEPPER_LENGTH = 16;

export interface OtpCodesOptions {
  /** Where code hashes are kept (`putCode`, `takeCode` of the OneTimeStore port; any LockoutStore). */
  readonly store: Pick<OneTimeStore, 'putCode' | 'takeCode'>;
  /** Lifetime of an issued code per channel, in milliseconds. Default sms 5 min, email 10 min. */
  readonly ttlMs?: Partial<Record<CodeChannel, number>>;
  /**
   * Secret key of the HMAC-SHA256 under which codes are stored (at least 16 characters).
   * Omitted: a random one per process, so a code issued by one process cannot be verified by
   * another. **With several processes sharing a store (sidecars behind a load balancer), configure
   * the same pepper on all of them.** Changing it invalidates the codes outstanding.
   */
  readonly pepper?: string;
  /**
   * Limits issuance per user and channel. Default: `createIssueLimiter()`, 5 codes per 15
   * minutes in process memory; with several processes pass `createIssueLimiter({ redis })`.
   */
  readonly limiter?: IssueLimiter;
  /** Current time in milliseconds (for `expiresAt`). Default Date.now. */
  readonly clock?: () => number;
}

export interface OtpCodes {
  /**
   * Issues a new 6-digit code for `subject` on `channel` (the caller delivers it). It replaces any
   * earlier code of that channel. Rejects with RateLimitedError (Errors.Otp.TooManyCodes, with
   * `retryAfterMs`) when too many codes were issued; the earlier code then stays valid.
   */
  issue(subject: Subject, channel: CodeChannel): Promise<{ code: string; expiresAt: number }>;
  /**
   * Verifies a code: true once for the code last issued (it is then used up); false for a wrong,
   * malformed, expired, used or never issued code. A wrong code leaves the issued one valid.
   */
  verify(subject: Subject, channel: CodeChannel, code: string): Promise<boolean>;
}

function invalidOption(field: string, message: string): InvalidArgumentError {
  return new InvalidArgumentError(VerifyErrorCodes.OptionInvalid, `${field} ${message}`, field);
}

function checkChannel(channel: unknown): CodeChannel {
  if (channel !== 'sms' && channel !== 'email') {
    throw new InvalidArgumentError(
      VerifyErrorCodes.OtpChannelInvalid,
      'channel must be sms or email',
      'channel',
    );
  }
  return channel;
}

/** The limiter key of a user's channel: ids URI-encoded (unambiguous, no `{}`), one Redis Cluster hash tag per user. */
function issueKey(subject: Subject, channel: CodeChannel): string {
  const e = encodeURIComponent;
  return `{${e(subject.instance)}:${e(subject.org)}:${e(subject.user)}}:${channel}`;
}

export function createOtpCodes(options: OtpCodesOptions): OtpCodes {
  const store = options?.store;
  if (!store || typeof store.putCode !== 'function' || typeof store.takeCode !== 'function') {
    throw invalidOption('store', 'must be a LockoutStore (putCode, takeCode)');
  }
  const ttlMs: Record<CodeChannel, number> = { ...DEFAULT_CODE_TTL_MS };
  for (const channel of CODE_CHANNELS) {
    const value = options.ttlMs?.[channel];
    if (value === undefined) continue;
    if (!Number.isInteger(value) || value < 1 || value > 24 * 3_600_000) {
      throw invalidOption(
        `ttlMs.${channel}`,
        `must be an integer number of milliseconds from 1 to 86400000, got ${String(value)}`,
      );
    }
    ttlMs[channel] = value;
  }
  if (
    options.pepper !== undefined &&
    (typeof options.pepper !== 'string' || options.pepper.length < MIN_PEPPER_LENGTH)
  ) {
    throw invalidOption(
      'pepper',
      `must be a string of at least ${MIN_PEPPER_LENGTH} characters (share one secret across processes)`,
    );
  }
  const pepper: string | Buffer = options.pepper ?? randomBytes(32);
  const limiter = options.limiter ?? createIssueLimiter();
  if (typeof limiter.consume !== 'function') throw invalidOption('limiter', 'must have consume(key)');
  const clock = options.clock ?? Date.now;

  // The hash binds the code to its user and channel; JSON keeps the fields unambiguous.
  const hashOf = (subject: Subject, channel: CodeChannel, code: string): string =>
    createHmac('sha256', pepper)
      .update(JSON.stringify(['lockgate-otp-v1', subject.instance, subject.org, subject.user, channel, code]))
      .digest('hex');

  return {
    async issue(subject: Subject, rawChannel: CodeChannel): Promise<{ code: string; expiresAt: number }> {
      const channel = checkChannel(rawChannel);
      await limiter.consume(issueKey(subject, channel));
      const code = randomInt(0, 1_000_000).toString().padStart(6, '0');
      const ttl = ttlMs[channel];
      const expiresAt = clock() + ttl;
      await store.putCode(subject, channel, hashOf(subject, channel, code), ttl);
      return { code, expiresAt };
    },

    async verify(subject: Subject, rawChannel: CodeChannel, code: string): Promise<boolean> {
      const channel = checkChannel(rawChannel);
      if (typeof code !== 'string' || !CODE.test(code)) return false;
      // The store compares the hashes; a match deletes the code (single use).
      return (await store.takeCode(subject, channel, hashOf(subject, channel, code))) === 'match';
    },
  };
}
