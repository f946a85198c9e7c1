import type { Cluster, Redis } from 'ioredis';
import { RedisStore, type LockoutStore } from '../../src';
import { createTestCluster, createTestRedis } from '../helpers/redis-clients';
import type { StoreContext, StoreOptions } from './lockout-store.contract';

/** Contract context on a real Redis: every store gets its own new client, as another process would. */
export function redisContext(connect: () => Promise<Redis | Cluster>): () => Promise<StoreContext> {
  return async () => {
    const clients: Array<Redis | Cluster> = [];
    const stores: RedisStore[] = [];
    return {
      async makeStore(options: StoreOptions = {}): Promise<LockoutStore> {
        const client = await connect();
        clients.push(client);
        const store = new RedisStore({ client, ...options });
        stores.push(store);
        return store;
      },
      async stateOf(store, instance, org, user) {
        const s = store as RedisStore;
        return s.client.exists(...s.userKeys({ instance, org, user }));
      },
      async cleanup() {
        await Promise.all(stores.map((s) => s.close()));
        clients.forEach((c) => c.disconnect());
      },
    };
  };
}

export const standalone = redisContext(() => createTestRedis());
export const cluster = redisContext(() => createTestCluster());
