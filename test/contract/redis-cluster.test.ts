import { describeLockoutStore } from './lockout-store.contract';
import { cluster } from './redis-contexts';

describeLockoutStore('redis (3-node cluster)', cluster);
