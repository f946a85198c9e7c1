import { describeDefences } from './defences.contract';
import { standalone } from './redis-contexts';

describeDefences('redis (standalone)', standalone);
