/** Jest global teardown: stop the Redis servers that `global-setup.ts` started. */
import { takeSharedTestServers } from './global-setup';
import { TEST_CLUSTER_NODES_ENV, TEST_REDIS_URL_ENV } from './redis-clients';

export default async function globalTeardown(): Promise<void> {
  const servers = takeSharedTestServers();
  delete process.env[TEST_REDIS_URL_ENV];
  delete process.env[TEST_CLUSTER_NODES_ENV];
  if (!servers) return;
  const results = await Promise.allSettled([servers.standalone.stop(), servers.cluster.stop()]);
  const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  if (errors.length > 0) throw new AggregateError(errors, 'stopping the test Redis servers failed');
}
