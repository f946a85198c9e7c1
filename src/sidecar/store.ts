/**
 * The sidecar's store: MemoryStore, or RedisStore on an ioredis client made here from the
 * configuration (standalone URL, Cluster or Sentinel), wrapped so that every failed operation is
 * counted in the metrics.
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { StoreUnavailableError } from '../core/errors';
import type { LockoutStore } from '../core/store';
import { MemoryStore } from '../store/memory/memory-store';
import { RedisStore, type RedisClient } from '../store/redis/redis-store';
import type { RedisConnectionConfig, SidecarConfig } from './config';

/** Reconnect delay: grows 100 ms per attempt up to 2 s, and never gives up (G4: recover by itself). */
export function reconnectDelay(times: number): number {
  return Math.min(100 * Math.max(1, times), 2000);
}

/**
 * Options every client gets: commands fail at once while Redis is down (no offline queue, one
 * retry per request), so a check answers 503 (or fails open) quickly instead of waiting, and
 * no queued reservation runs after its caller has given up. No blind resend after a reconnect
 * (`autoResendUnfulfilledCommands: false`): the caller of a command that was unanswered when the
 * connection dropped already got StoreUnavailableError (an unknown outcome) and the engine
 * compensates it by nonce; the store's scripts are idempotent, so a resend would be harmless,
 * but it would only replay work nobody waits for.
 */
const FAIL_FAST = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  autoResendUnfulfilledCommands: false,
} as const;

/** Makes the ioredis client for a Redis store configuration. It connects in the background. */
export function createRedisClient(redis: RedisConnectionConfig, connectionName = 'lockgate'): RedisClient {
  const auth = {
    ...(redis.username !== undefined ? { username: redis.username } : {}),
    ...(redis.password !== undefined ? { password: redis.password } : {}),
    ...(redis.tls ? { tls: {} } : {}),
  };
  if (redis.cluster) {
    const options: ClusterOptions = {
      ...FAIL_FAST,
      clusterRetryStrategy: (times) => reconnectDelay(times),
      // ioredis 6 does not reconnect a cluster node's connection by itself (its default waits for
      // a topology refresh); reconnect it as the standalone client does.
      clusterNodeRetryStrategy: (times) => reconnectDelay(times),
      redisOptions: {
        ...auth,
        connectionName,
        maxRetriesPerRequest: 1,
        autoResendUnfulfilledCommands: false,
      },
    };
    return new Cluster(
      redis.cluster.nodes.map((n) => ({ host: n.host, port: n.port })),
      options,
    );
  }
  if (redis.sentinel) {
    const options: RedisOptions = {
      ...FAIL_FAST,
      ...auth,
      connectionName,
      sentinels: redis.sentinel.sentinels.map((n) => ({ host: n.host, port: n.port })),
      name: redis.sentinel.name,
      ...(redis.sentinel.password !== undefined ? { sentinelPassword: redis.sentinel.password } : {}),
      retryStrategy: reconnectDelay,
      sentinelRetryStrategy: reconnectDelay,
    };
    return new Redis(options);
  }
  if (redis.url === undefined) throw new TypeError('store.redis needs url, cluster or sentinel');
  return new Redis(redis.url, { ...FAIL_FAST, connectionName, retryStrategy: reconnectDelay });
}

/** Resolves once `client` is ready, or after `timeoutMs` (false then; it keeps connecting). */
export function waitForRedis(client: RedisClient, timeoutMs: number): Promise<boolean> {
  if (client.status === 'ready') return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      client.off('ready', onReady);
      resolve(ok);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(false), timeoutMs);
    client.once('ready', onReady);
  });
}

export interface SidecarStore {
  readonly store: LockoutStore;
  /** The ioredis client, when the store is Redis. */
  readonly client?: RedisClient;
  /** Closes the store, then the client. */
  close(): Promise<void>;
}

/** Hooks of the stores the sidecar makes. */
export interface SidecarStoreHooks {
  /** The memory store's warnings (evictions past store.memory.maxUsers). */
  readonly onWarning?: (message: string) => void;
}

/** Builds the configured store. `onStoreError` is told the operation of every StoreUnavailableError. */
export function createSidecarStore(
  config: SidecarConfig,
  onStoreError: (operation: string, error: StoreUnavailableError) => void,
  hooks: SidecarStoreHooks = {},
): SidecarStore {
  if (config.store.type === 'memory') {
    const store = new MemoryStore({
      idleTtlMs: config.store.idleTtlMs,
      maxUsers: config.store.memory.maxUsers,
      ...(hooks.onWarning ? { onWarning: hooks.onWarning } : {}),
    });
    return { store: observeStore(store, onStoreError), close: () => store.close() };
  }
  const client = createRedisClient(config.store.redis);
  // Connection errors are expected while Redis is away; they surface as 503 and in /readyz.
  client.on('error', () => undefined);
  const store = new RedisStore({
    client,
    prefix: config.store.redis.prefix,
    commandTimeoutMs: config.store.redis.commandTimeoutMs,
    idleTtlMs: config.store.idleTtlMs,
  });
  return {
    store: observeStore(store, onStoreError),
    client,
    async close() {
      await store.close().catch(() => undefined);
      await client.quit().catch(() => client.disconnect());
    },
  };
}

/** A view of `store` that reports every StoreUnavailableError (for metrics) and rethrows it. */
export function observeStore(
  store: LockoutStore,
  onStoreError: (operation: string, error: StoreUnavailableError) => void,
): LockoutStore {
  return new Proxy(store, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof value !== 'function' || property === 'onSettingsChanged' || property === 'close')
        return value;
      const operation = String(property);
      return (...args: unknown[]) => {
        const result: unknown = (value as (...a: unknown[]) => unknown).apply(target, args);
        if (result instanceof Promise) {
          return result.catch((error: unknown) => {
            if (error instanceof StoreUnavailableError) {
              try {
                onStoreError(operation, error);
              } catch {
                // an observer must not change the answer
              }
            }
            throw error;
          });
        }
        return result;
      };
    },
  });
}
