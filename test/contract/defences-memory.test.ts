import { describeDefences } from './defences.contract';
import { frozenMemoryContext } from './memory-context';

describeDefences('memory', frozenMemoryContext);
