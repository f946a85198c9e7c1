import { describeDefences } from './defences.contract';
import { cluster } from './redis-contexts';

describeDefences('redis (cluster)', cluster);
