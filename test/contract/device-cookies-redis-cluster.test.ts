import { describeDeviceCookies } from './device-cookies.contract';
import { cluster } from './redis-contexts';

describeDeviceCookies('redis (cluster)', cluster);
