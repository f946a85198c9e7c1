import { describeLockoutStore } from './lockout-store.contract';
import { standalone } from './redis-contexts';

describeLockoutStore('redis (standalone)', standalone);
