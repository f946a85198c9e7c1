import { ReplyError, type Cluster, type Redis } from 'ioredis';
import { StoreUnavailableError } from '../core/errors';
import type { EventLog, EventPage, EventQuery, EventRecord } from '../core/events';
import { invalidOption } from '../core/option-checks';
import { badCursor, MAX_SCAN_FACTOR } from './memory-event-log';

export type RedisEventClient = Redis | Cluster;

export interface RedisEventLogOptions {
  readonly client: RedisEventClient;
  /** Key prefix (the store's; default "lg"). */
  readonly prefix?: string;
  readonly instanceId: string;
  /** Most events kept per org stream (XADD MAXLEN ~). Default 10 000. */
  readonly maxLength?: number;
  /** Events older than this are trimmed (XTRIM MINID ~) as new ones arrive. Default: none (0). */
  readonly maxAgeMs?: number;
  /**
   * The consumer group of the webhook workers: created on an org's stream (at its end, `$`)
   * before this process first appends to it, and the org is listed for the workers. Without it
   * no group is made (no webhooks).
   */
  readonly deliveryGroup?: string;
  /** An event that could not be recorded after its retries (never holds the event's data). */
  readonly onError?: (error: unknown, record: { id: string; org: string; type: string }) => void;
  /** How long an append is retried in the background when Redis does not take it. Default 30 000 ms. */
  readonly retryForMs?: number;
}

/** Key names of the event streams and the webhook state, in one place. */
export class EventKeys {
  constructor(
    readonly prefix: string,
    readonly instanceId: string,
  ) {}

  /** The org's stream (the org's slot, as its locked-users index). */
  stream(org: string): string {
    return `${this.prefix}:{${enc(this.instanceId)}:${enc(org)}}:events`;
  }

  /** The orgs that have a stream (the instance's slot): what the webhook workers read. */
  orgs(): string {
    return `${this.instanceTag()}:events:orgs`;
  }

  /** A webhook key in the instance's slot: retry (zset), dead (list), gone (hash). */
  webhook(name: 'retry' | 'dead' | 'gone'): string {
    return `${this.instanceTag()}:webhooks:${name}`;
  }

  private instanceTag(): string {
    return `${this.prefix}:{${enc(this.instanceId)}}`;
  }
}

function enc(part: string): string {
  return encodeURIComponent(part);
}

const STREAM_ID = /^[0-9]{1,20}-[0-9]{1,20}$/;

/**
 * The event log of the Redis store: one Redis Stream per org (`<prefix>:{<instance>:<org>}:events`),
 * capped by length (XADD MAXLEN ~) and optionally age (XTRIM MINID ~), so every process sees one
 * ordered history. Cursors are stream ids. An append that Redis does not take is retried in the
 * background for `retryForMs` (then reported to onError): it never fails the operation that
 * caused the event.
 */
export class RedisEventLog implements EventLog {
  readonly keys: EventKeys;
  private readonly client: RedisEventClient;
  private readonly maxLength: number;
  private readonly maxAgeMs: number;
  private readonly group: string | undefined;
  private readonly retryForMs: number;
  private readonly onError: NonNullable<RedisEventLogOptions['onError']>;
  /** Orgs whose group and listing this process has made. */
  private readonly prepared = new Map<string, Promise<void>>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(options: RedisEventLogOptions) {
    this.client = options.client;
    this.keys = new EventKeys(options.prefix ?? 'lg', options.instanceId);
    this.maxLength = options.maxLength ?? 10_000;
    if (!Number.isInteger(this.maxLength) || this.maxLength < 1) {
      throw invalidOption('maxLength', 'must be a positive integer');
    }
    this.maxAgeMs = options.maxAgeMs ?? 0;
    this.group = options.deliveryGroup;
    this.retryForMs = options.retryForMs ?? 30_000;
    this.onError = options.onError ?? (() => {});
  }

  async append(record: EventRecord): Promise<void> {
    const deadline = Date.now() + this.retryForMs;
    try {
      await this.write(record);
    } catch (error) {
      this.retry(record, deadline, 1, error);
    }
  }

  private retry(record: EventRecord, deadline: number, attempt: number, error: unknown): void {
    const delay = Math.min(100 * 2 ** attempt, 2000);
    if (this.closed || Date.now() + delay > deadline) {
      this.report(error, record);
      return;
    }
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.write(record).catch((e: unknown) => this.retry(record, deadline, attempt + 1, e));
    }, delay);
    timer.unref();
    this.timers.add(timer);
  }

  private report(error: unknown, record: EventRecord): void {
    try {
      this.onError(error, { id: record.id, org: record.org, type: record.type });
    } catch {
      // a failing reporter must not throw into the engine
    }
  }

  /**
   * One XADD (after, the first time for an org, the group and the org listing). A retried XADD
   * may record the event twice: both copies carry the same event id.
   */
  private async write(record: EventRecord): Promise<void> {
    const key = this.keys.stream(record.org);
    if (this.group !== undefined) await this.prepare(record.org, key);
    await this.client.xadd(key, 'MAXLEN', '~', this.maxLength, '*', 'e', JSON.stringify(record));
    if (this.maxAgeMs > 0) {
      await this.client.xtrim(key, 'MINID', '~', Math.max(0, Date.now() - this.maxAgeMs));
    }
  }

  private prepare(org: string, key: string): Promise<void> {
    let p = this.prepared.get(org);
    if (!p) {
      p = (async () => {
        await createGroup(this.client, key, this.group!, '$');
        await this.client.sadd(this.keys.orgs(), org);
      })();
      p.catch(() => this.prepared.delete(org));
      this.prepared.set(org, p);
    }
    return p;
  }

  async list(org: string, query: EventQuery): Promise<EventPage> {
    const limit = query.limit ?? 100;
    if (query.cursor !== undefined && !STREAM_ID.test(query.cursor)) throw badCursor();
    const key = this.keys.stream(org);
    const events: EventRecord[] = [];
    let end = query.cursor === undefined ? '+' : `(${query.cursor}`;
    let scanned = 0;
    let last: string | undefined;
    let exhausted = false;
    const budget = limit * MAX_SCAN_FACTOR;
    while (events.length < limit && scanned < budget) {
      const count = Math.min(budget - scanned, Math.max(limit - events.length, 100));
      let entries: Array<[string, string[]]>;
      try {
        entries = (await this.client.xrevrange(key, end, '-', 'COUNT', count)) as Array<[string, string[]]>;
      } catch (error) {
        throw new StoreUnavailableError('Redis command failed', { cause: error });
      }
      if (entries.length === 0) {
        exhausted = true;
        break;
      }
      let stopped = false;
      for (const [id, fields] of entries) {
        if (events.length >= limit) {
          stopped = true;
          break;
        }
        scanned += 1;
        last = id;
        const record = parseEntry(fields);
        if (!record) continue;
        if (query.user !== undefined && record.user !== query.user) continue;
        if (query.type !== undefined && record.type !== query.type) continue;
        events.push(record);
      }
      if (!stopped && entries.length < count) {
        exhausted = true;
        break;
      }
      end = `(${last}`;
    }
    return { events, ...(!exhausted && last !== undefined ? { nextCursor: last } : {}) };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }
}

/** The record of a stream entry's fields (`e` → JSON), or undefined for anything else. */
export function parseEntry(fields: readonly string[] | null | undefined): EventRecord | undefined {
  if (!fields) return undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === 'e') {
      try {
        const r = JSON.parse(fields[i + 1]!) as EventRecord;
        return typeof r?.id === 'string' && typeof r.type === 'string' ? r : undefined;
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

/** XGROUP CREATE … MKSTREAM; a group that exists already is fine. */
export async function createGroup(
  client: RedisEventClient,
  key: string,
  group: string,
  from: '$' | '0',
): Promise<void> {
  try {
    await client.xgroup('CREATE', key, group, from, 'MKSTREAM');
  } catch (error) {
    if (error instanceof ReplyError && String((error as Error).message).startsWith('BUSYGROUP')) return;
    throw error;
  }
}
