import { describeDeviceCookies } from './device-cookies.contract';
import { standalone } from './redis-contexts';

describeDeviceCookies('redis (standalone)', standalone);
