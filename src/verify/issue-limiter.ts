import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { RateLimiterAbstract } from 'rate-limiter-flexible';
import { InvalidArgumentError, StoreUnavailableError } from '../core/errors';
import { RateLimitedError, VerifyErrorCodes } from './errors';

/**
 * Limits how often one-time codes are issued. `consume` takes one point for `key` and rejects
 * with RateLimitedError when the key has none left (or StoreUnavailableError when its store fails).
 */
export interface IssueLimiter {
  consume(key: string): Promise<void>;
}

/**
 * An ioredis `Redis` or `Cluster` client, typed loosely so that this module does not depend on
 * ioredis. The limiter uses one key per user and channel (a single-key Lua script), so a Cluster works.
 */
export type IssueLimiterRedisClient = object;

export interface IssueLimiterOptions {
  /** Shared Redis client (every process then shares the limit). Omitted: an in-process memory limiter. */
  readonly redis?: IssueLimiterRedisClient;
  /** Codes that may be issued per key within `durationSec`. Default 5. */
  readonly points?: number;
  /** The window in seconds (fixed, starting at the first issue). Default 900 (15 minutes). */
  readonly durationSec?: number;
  /** Prefix of the limiter's keys. Default `lg:otp-issue`. */
  readonly keyPrefix?: string;
}

function positiveInt(value: number | undefined, fallback: number, field: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1 || value > 2 ** 31 - 1) {
    throw new InvalidArgumentError(
      VerifyErrorCodes.OptionInvalid,
      `${field} must be a positive integer, got ${String(value)}`,
      field,
    );
  }
  return value;
}

/**
 * Creates the issue limiter: rate-limiter-flexible's RateLimiterRedis when a client is given,
 * RateLimiterMemory otherwise (which limits per process only: with several sidecar processes give
 * them the shared Redis client).
 */
export function createIssueLimiter(options: IssueLimiterOptions = {}): IssueLimiter {
  const points = positiveInt(options.points, 5, 'points');
  const duration = positiveInt(options.durationSec, 900, 'durationSec');
  const keyPrefix = options.keyPrefix ?? 'lg:otp-issue';
  if (typeof keyPrefix !== 'string' || keyPrefix.length === 0) {
    throw new InvalidArgumentError(
      VerifyErrorCodes.OptionInvalid,
      'keyPrefix must be a non-empty string',
      'keyPrefix',
    );
  }
  const { redis } = options;
  if (redis !== undefined && (typeof redis !== 'object' || redis === null)) {
    throw new InvalidArgumentError(
      VerifyErrorCodes.OptionInvalid,
      'redis must be an ioredis client or cluster',
      'redis',
    );
  }
  const limiter: RateLimiterAbstract =
    redis === undefined
      ? new RateLimiterMemory({ points, duration, keyPrefix })
      : new RateLimiterRedis({ storeClient: redis, points, duration, keyPrefix });

  return {
    async consume(key: string): Promise<void> {
      try {
        await limiter.consume(key, 1);
      } catch (e) {
        if (e instanceof RateLimiterRes)
          throw new RateLimitedError(Math.max(0, Math.ceil(e.msBeforeNext)), { cause: e });
        throw new StoreUnavailableError('Issue limiter store unavailable', { cause: e });
      }
    },
  };
}
