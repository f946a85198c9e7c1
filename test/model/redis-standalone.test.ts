/** Model-based test (issue 8) on a standalone Redis; time-dependent answers with tolerance (harness.ts). */
import { createTestRedis } from '../helpers/redis-clients';
import { describeRedisModel } from './redis-contexts';

describeRedisModel('redis (standalone)', () => createTestRedis(), 8008);
