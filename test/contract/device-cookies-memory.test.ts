import { describeDeviceCookies } from './device-cookies.contract';
import { frozenMemoryContext } from './memory-context';

describeDeviceCookies('memory', frozenMemoryContext);
