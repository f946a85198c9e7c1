/**
 * ioredis clients for tests, connected to the servers that `global-setup.ts` started and
 * published through the environment. Each call makes a new client; `quit()` it in `afterAll`.
 *
 * The shared servers are used by every test file and jest runs files in parallel
 * (`maxWorkers`), so prefer keys unique to the test (a random instance id in the hash tag)
 * over `flushAll()` on the shared servers; flush only servers the test started itself.
 */
import type { EventEmitter } from 'node:events';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisNodeAddress } from './redis-servers';

/** `redis://127.0.0.1:PORT` of the shared standalone server. */
export const TEST_REDIS_URL_ENV = 'LOCKGATE_TEST_REDIS_URL';
/** `host:port,host:port,…` of the shared cluster's masters. */
export const TEST_CLUSTER_NODES_ENV = 'LOCKGATE_TEST_CLUSTER_NODES';

const READY_TIMEOUT_MS = 10_000;

function requireEnv(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: the shared test Redis servers are started by test/helpers/global-setup.ts, ` +
        `so run the tests through jest (npm test / npx jest), which loads it via jest.config.js.`,
    );
  }
  return value;
}

/** URL of the shared standalone server. */
export function testRedisUrl(): string {
  return requireEnv(TEST_REDIS_URL_ENV);
}

/** Addresses of the shared cluster's masters. */
export function testClusterNodes(): RedisNodeAddress[] {
  return requireEnv(TEST_CLUSTER_NODES_ENV)
    .split(',')
    .map((entry) => {
      const colon = entry.lastIndexOf(':');
      const host = entry.slice(0, colon);
      const port = Number(entry.slice(colon + 1));
      if (colon <= 0 || !Number.isInteger(port)) {
        throw new Error(`${TEST_CLUSTER_NODES_ENV} has a malformed entry ${JSON.stringify(entry)}`);
      }
      return { host, port };
    });
}

type Connectable = EventEmitter & { status: string; disconnect(): void };

/** Resolve once `client` is ready; reject (and disconnect it) if it ends or times out first. */
function waitForReady(client: Connectable, what: string): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    let lastError: Error | undefined;
    const onError = (error: Error): void => {
      lastError = error;
    };
    const fail = (reason: string): void => {
      cleanup();
      client.disconnect();
      const cause = lastError ? `: ${lastError.message}` : '';
      reject(new Error(`${what} ${reason}${cause}`, { cause: lastError }));
    };
    const onReady = (): void => {
      cleanup();
      resolve();
    };
    const onEnd = (): void => fail('closed before it was ready');
    const timer = setTimeout(() => fail(`was not ready within ${READY_TIMEOUT_MS} ms`), READY_TIMEOUT_MS);
    const cleanup = (): void => {
      clearTimeout(timer);
      client.off('error', onError);
      client.off('node error', onError);
      client.off('ready', onReady);
      client.off('end', onEnd);
    };
    client.on('error', onError);
    client.on('node error', onError);
    client.once('ready', onReady);
    client.once('end', onEnd);
  });
}

/** Options of {@link createTestRedis}: ioredis options plus the server to use. */
export type TestRedisOptions = RedisOptions & {
  /** Defaults to the shared standalone server. */
  url?: string;
};

/** A new, ready ioredis client for the shared standalone server (or `options.url`). */
export async function createTestRedis(options: TestRedisOptions = {}): Promise<Redis> {
  const { url = testRedisUrl(), ...redisOptions } = options;
  const client = new Redis(url, { ...redisOptions, lazyConnect: false });
  await waitForReady(client, `ioredis client for ${url}`);
  return client;
}

/** Options of {@link createTestCluster}: ioredis Cluster options plus the nodes to use. */
export type TestClusterOptions = ClusterOptions & {
  /** Defaults to the shared cluster. */
  nodes?: RedisNodeAddress[];
};

/** A new, ready ioredis Cluster client for the shared cluster (or `options.nodes`). */
export async function createTestCluster(options: TestClusterOptions = {}): Promise<Cluster> {
  const { nodes = testClusterNodes(), ...clusterOptions } = options;
  const client = new Cluster(nodes, { ...clusterOptions, lazyConnect: false });
  const list = nodes.map((n) => `${n.host}:${n.port}`).join(',');
  await waitForReady(client, `ioredis Cluster client for ${list}`);
  return client;
}

/** FLUSHALL on a standalone server, or on every master of a cluster. */
export async function flushAll(client: Redis | Cluster): Promise<void> {
  if (client instanceof Cluster) {
    const masters = client.nodes('master');
    if (masters.length === 0) throw new Error('flushAll: the Cluster client knows no masters (is it ready?)');
    await Promise.all(masters.map((master) => master.flushall()));
    return;
  }
  await client.flushall();
}
