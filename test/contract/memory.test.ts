import { describeLockoutStore } from './lockout-store.contract';
import { memoryContext } from './memory-context';

describeLockoutStore('memory', memoryContext);
