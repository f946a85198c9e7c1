import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { RateLimiterAbstract } from 'rate-limiter-flexible';
import { StoreUnavailableError } from '../core/errors';
import type { SprayCounter } from '../core/spray-throttle';

/**
 * The spray throttle's counter on rate-limiter-flexible: RateLimiterRedis on the engine's own
 * ioredis client (a Redis or a Cluster: one key per address block, each operation on that key
 * alone) or RateLimiterMemory in process. `points` is the throttle's `failures`, `duration` its
 * window (rate-limiter-flexible's fixed window, opened by the key's first point).
 *
 * - take: `consume` (one atomic Lua script in Redis: SET NX EX, INCRBY, PTTL; synchronous in
 *   memory). Refused (over `points`): the point it added is given back (`reward`) unless the key
 *   is blocked — so points held are exactly the failures of the window plus the checks in flight.
 * - give: `reward`; a reward that lands after the window ended (a new key at −1) is undone by a
 *   `penalty`, so no window starts in credit.
 * - block: `set` the key to BLOCKED points for the block's duration (a refused take adds to it,
 *   a late give takes from it: it stays far above `points` until it expires).
 */

/** Points of a blocked key: far above any limit, and above anything given back while blocked. */
const BLOCKED = 2 ** 40;

export interface SprayCounterOptions {
  /** The engine's ioredis client (Redis or Cluster). Omitted: in process (one process only). */
  readonly redis?: object;
  /** Key prefix, e.g. `lg:spray`. */
  readonly keyPrefix: string;
  /** Failed checks per window (the throttle's `failures`). */
  readonly points: number;
  /** The window in seconds. */
  readonly windowSeconds: number;
  /** How long one Redis operation may take before it is an outage (ms). Default 2000. */
  readonly timeoutMs?: number;
}

export function createSprayCounter(options: SprayCounterOptions): SprayCounter {
  const { points, keyPrefix } = options;
  const duration = options.windowSeconds;
  const timeoutMs = options.timeoutMs ?? 2000;
  const limiter: RateLimiterAbstract =
    options.redis === undefined
      ? new RateLimiterMemory({ points, duration, keyPrefix })
      : new RateLimiterRedis({ storeClient: options.redis, points, duration, keyPrefix });
  const inMemory = options.redis === undefined;

  /** One limiter operation, bounded in time; a store error (not a RateLimiterRes) is StoreUnavailableError. */
  const run = <T>(operation: () => Promise<T>): Promise<T> => {
    if (inMemory) return operation();
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new StoreUnavailableError('Spray throttle counter timed out')),
        timeoutMs,
      );
      // It never keeps a process alive (as the engine's compensation timers).
      timer.unref();
      operation().then(
        (value) => {
          clearTimeout(timer);
          resolve(value);
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  };
  const unavailable = (error: unknown): StoreUnavailableError =>
    error instanceof StoreUnavailableError
      ? error
      : new StoreUnavailableError('Spray throttle counter unavailable', { cause: error });

  return {
    async take(key) {
      let res: RateLimiterRes;
      try {
        res = await run(() => limiter.consume(key, 1));
      } catch (error) {
        if (!(error instanceof RateLimiterRes)) throw unavailable(error);
        // Refused: the point it added is not kept (unless the key is blocked, where it does not matter).
        if (error.consumedPoints < BLOCKED) {
          await run(() => limiter.reward(key, 1)).catch(() => undefined);
        }
        return { taken: false, count: error.consumedPoints - 1, msLeft: Math.max(0, error.msBeforeNext) };
      }
      return { taken: true, count: res.consumedPoints, msLeft: Math.max(0, res.msBeforeNext) };
    },

    async give(key) {
      let res: RateLimiterRes;
      try {
        res = await run(() => limiter.reward(key, 1));
      } catch (error) {
        throw unavailable(error);
      }
      // The window had ended: the reward opened a new one at −1. Back to 0.
      if (res.consumedPoints < 0) {
        await run(() => limiter.penalty(key, -res.consumedPoints)).catch((error: unknown) => {
          throw unavailable(error);
        });
      }
    },

    async block(key, ms) {
      try {
        await run(() => limiter.set(key, BLOCKED, Math.max(1, Math.ceil(ms / 1000))));
      } catch (error) {
        throw unavailable(error);
      }
    },
  };
}
