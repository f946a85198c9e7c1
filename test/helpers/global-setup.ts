/**
 * Jest global setup: one standalone Redis and one 3-node Redis Cluster for the whole run,
 * published to the test workers through the environment (workers inherit it).
 */
import { TEST_CLUSTER_NODES_ENV, TEST_REDIS_URL_ENV } from './redis-clients';
import {
  findRedisBinaries,
  startCluster,
  startStandalone,
  sweepStaleServers,
  type ClusterHandle,
  type RedisServerHandle,
} from './redis-servers';

/** The servers this run owns, kept on `globalThis` for `global-teardown.ts`. */
export interface SharedTestServers {
  standalone: RedisServerHandle;
  cluster: ClusterHandle;
}

const SHARED_KEY = '__lockgateTestRedisServers';
type GlobalWithServers = typeof globalThis & { [SHARED_KEY]?: SharedTestServers };

/** Remove and return the shared servers (for teardown). */
export function takeSharedTestServers(): SharedTestServers | undefined {
  const scope = globalThis as GlobalWithServers;
  const servers = scope[SHARED_KEY];
  delete scope[SHARED_KEY];
  return servers;
}

export default async function globalSetup(): Promise<void> {
  findRedisBinaries(); // throws a message that says how to install Redis
  await sweepStaleServers();

  const [standalone, cluster] = await Promise.allSettled([startStandalone(), startCluster(3)]);
  if (standalone.status === 'rejected' || cluster.status === 'rejected') {
    await Promise.allSettled([
      standalone.status === 'fulfilled' ? standalone.value.stop() : undefined,
      cluster.status === 'fulfilled' ? cluster.value.stop() : undefined,
    ]);
    throw standalone.status === 'rejected' ? standalone.reason : (cluster as PromiseRejectedResult).reason;
  }

  (globalThis as GlobalWithServers)[SHARED_KEY] = { standalone: standalone.value, cluster: cluster.value };
  process.env[TEST_REDIS_URL_ENV] = standalone.value.url;
  process.env[TEST_CLUSTER_NODES_ENV] = cluster.value.nodes.map((n) => `${n.host}:${n.port}`).join(',');
}
