import { InvalidArgumentError } from '../core/errors';
import type { EventLog, EventPage, EventQuery, EventRecord } from '../core/events';
import { invalidOption } from '../core/option-checks';

export interface MemoryEventLogOptions {
  /** Most events kept (all orgs together); the oldest go first. Default 10 000. */
  readonly maxEvents?: number;
}

/** How many entries a page may look at past its cursor while filtering (bounded work per request). */
export const MAX_SCAN_FACTOR = 10;

/**
 * The event log of the memory store: a bounded in-process ring (one process's history; gone when
 * the process ends). Cursors are the sequence numbers of the ring, as decimal strings.
 */
export class MemoryEventLog implements EventLog {
  private readonly max: number;
  private readonly ring: Array<{ seq: number; record: EventRecord }> = [];
  private seq = 0;
  private readonly listeners = new Set<(record: EventRecord) => void>();

  constructor(options: MemoryEventLogOptions = {}) {
    const max = options.maxEvents ?? 10_000;
    if (!Number.isInteger(max) || max < 1 || max > 10_000_000) {
      throw invalidOption('maxEvents', 'must be an integer from 1 to 10 000 000');
    }
    this.max = max;
  }

  append(record: EventRecord): Promise<void> {
    this.seq += 1;
    this.ring.push({ seq: this.seq, record });
    if (this.ring.length > this.max) this.ring.splice(0, this.ring.length - this.max);
    for (const listener of this.listeners) {
      try {
        listener(record);
      } catch {
        // a listener must not lose the event for the others
      }
    }
    return Promise.resolve();
  }

  async list(org: string, query: EventQuery): Promise<EventPage> {
    const limit = query.limit ?? 100;
    let before = Infinity;
    if (query.cursor !== undefined) {
      if (!/^[0-9]{1,15}$/.test(query.cursor)) throw badCursor();
      before = Number(query.cursor);
    }
    const events: EventRecord[] = [];
    let scanned = 0;
    let last: number | undefined;
    for (let i = this.ring.length - 1; i >= 0; i -= 1) {
      const entry = this.ring[i]!;
      if (entry.seq >= before) continue;
      if (scanned >= limit * MAX_SCAN_FACTOR || events.length >= limit) break;
      scanned += 1;
      last = entry.seq;
      const r = entry.record;
      if (r.org !== org) continue;
      if (query.user !== undefined && r.user !== query.user) continue;
      if (query.type !== undefined && r.type !== query.type) continue;
      events.push(r);
    }
    const more = last !== undefined && this.ring.length > 0 && this.ring[0]!.seq < last;
    return { events, ...(more ? { nextCursor: String(last) } : {}) };
  }

  subscribe(listener: (record: EventRecord) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): Promise<void> {
    this.listeners.clear();
    return Promise.resolve();
  }
}

export function badCursor(): InvalidArgumentError {
  return new InvalidArgumentError('Errors.List.Cursor', 'cursor is not a cursor of this list', 'cursor');
}
