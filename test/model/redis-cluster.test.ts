/** Model-based test (issue 8) on a 3-node Redis Cluster; time-dependent answers with tolerance (harness.ts). */
import { createTestCluster } from '../helpers/redis-clients';
import { describeRedisModel } from './redis-contexts';

describeRedisModel('redis (3-node cluster)', () => createTestCluster(), 8008);
