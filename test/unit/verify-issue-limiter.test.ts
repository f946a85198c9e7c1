import { randomUUID } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { StoreUnavailableError } from '../../src/core/errors';
import { createIssueLimiter, RateLimitedError, type IssueLimiterRedisClient } from '../../src/verify';
import { createTestCluster, createTestRedis } from '../helpers/redis-clients';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

type MakeClient = () => Promise<IssueLimiterRedisClient | undefined>;

function describeIssueLimiter(
  name: string,
  makeClient: MakeClient,
  closeClient: (c: unknown) => Promise<void>,
): void {
  describe(`issue limiter (${name})`, () => {
    let client: IssueLimiterRedisClient | undefined;
    beforeAll(async () => {
      client = await makeClient();
    });
    afterAll(() => closeClient(client));

    // A fresh prefix per test: runs never see each other's keys.
    const make = (points: number, durationSec: number) =>
      createIssueLimiter({ redis: client, points, durationSec, keyPrefix: `lg-test:${randomUUID()}` });

    it('allows `points` per key, then rejects with RateLimitedError and retryAfterMs', async () => {
      const limiter = make(2, 60);
      await limiter.consume('{default:org-a:alice}:sms');
      await limiter.consume('{default:org-a:alice}:sms');
      const error = await limiter.consume('{default:org-a:alice}:sms').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RateLimitedError);
      expect(error).toMatchObject({ code: 'Errors.Otp.TooManyCodes', grpcCode: 8 });
      const retryAfterMs = (error as RateLimitedError).retryAfterMs;
      expect(retryAfterMs).toBeGreaterThan(55_000);
      expect(retryAfterMs).toBeLessThanOrEqual(60_000);
      await expect(limiter.consume('{default:org-a:alice}:email')).resolves.toBeUndefined();
      await expect(limiter.consume('{default:org-a:bob}:sms')).resolves.toBeUndefined();
    });

    it('frees the key after the window', async () => {
      const limiter = make(1, 1);
      await limiter.consume('k');
      await expect(limiter.consume('k')).rejects.toBeInstanceOf(RateLimitedError);
      await sleep(1_100);
      await expect(limiter.consume('k')).resolves.toBeUndefined();
    });

    it('counts exactly under concurrency', async () => {
      const limiter = make(5, 60);
      const results = await Promise.allSettled(Array.from({ length: 20 }, () => limiter.consume('k')));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(5);
      for (const r of results.filter((r) => r.status === 'rejected')) {
        expect((r as PromiseRejectedResult).reason).toBeInstanceOf(RateLimitedError);
      }
    });
  });
}

describeIssueLimiter(
  'memory',
  async () => undefined,
  async () => undefined,
);
describeIssueLimiter(
  'redis standalone',
  () => createTestRedis(),
  async (c) => void (await (c as Redis).quit()),
);
describeIssueLimiter(
  'redis cluster',
  () => createTestCluster(),
  async (c) => void (await (c as Cluster).quit()),
);

describe('issue limiter store failures', () => {
  it('maps a Redis error to StoreUnavailableError', async () => {
    const client = await createTestRedis({ enableOfflineQueue: false, maxRetriesPerRequest: 0 });
    const limiter = createIssueLimiter({ redis: client, keyPrefix: `lg-test:${randomUUID()}` });
    await limiter.consume('k');
    client.disconnect();
    const error = await limiter.consume('k').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect(error).toMatchObject({ code: 'Errors.Store.Unavailable', grpcCode: 14 });
  });

  it('validates its options', () => {
    expect(() => createIssueLimiter({ points: 0 })).toThrow(/points/);
    expect(() => createIssueLimiter({ durationSec: 1.5 })).toThrow(/durationSec/);
    expect(() => createIssueLimiter({ keyPrefix: '' })).toThrow(/keyPrefix/);
    expect(() => createIssueLimiter({ redis: 'redis://localhost' as unknown as object })).toThrow(/redis/);
  });
});
