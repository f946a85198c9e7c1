import type { Cluster, Redis } from 'ioredis';
import { RedisStore } from '../../src';
import { checkAgainstModel } from './harness';

/** Lease on Redis: short, because the model moves Redis time by real sleeps (see harness.ts). */
export const REDIS_LEASE_MS = 600;

/**
 * Model-based test on a real Redis (one client and one store for the whole property; every run
 * isolated by its own instance id, so no flush of the shared server is needed).
 */
export function describeRedisModel(
  name: string,
  connect: () => Promise<Redis | Cluster>,
  seed: number,
): void {
  describe(`LockoutStore model: ${name}`, () => {
    let client: Redis | Cluster;
    let store: RedisStore;
    beforeAll(async () => {
      client = await connect();
      store = new RedisStore({ client });
    });
    afterAll(async () => {
      await store.close();
      client.disconnect();
    });

    it('answers every random sequence of store operations as the reference model does', async () => {
      await checkAgainstModel({
        makeStore: async () => ({ store, mode: 'real' }),
        leaseMs: REDIS_LEASE_MS,
        numRuns: 80,
        maxCommands: 30,
        seed,
        timeLimitMs: 25_000,
      });
    }, 60_000);
  });
}
