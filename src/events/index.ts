/**
 * Events and webhooks (issue 14) for the middleware and the sidecar alike: `createEvents` makes the
 * event log (a RedisEventLog on an ioredis client, else a bounded MemoryEventLog) and, when
 * endpoints are given, the WebhookSender with its queue (shared on Redis, in process on memory).
 *
 * ```ts
 * const events = createEvents({ redis: client, instanceId: 'default', webhooks: { endpoints: [...] } });
 * const lockout = createLockout({ store: new RedisStore({ client }), eventLog: events.eventLog });
 * events.start();
 * app.use('/admin', lockout.routers.users({ deadLetters: events.deadLetters }));
 * ```
 */
import type { DeadLetter, EventLog } from '../core/events';
import { invalidOption } from '../core/option-checks';
import { MemoryEventLog } from './memory-event-log';
import { RedisEventLog, type RedisEventClient } from './redis-event-log';
import {
  DELIVERY_GROUP,
  MemoryDeliveryQueue,
  RedisDeliveryQueue,
  WebhookSender,
  type DeliveryQueue,
  type WebhookEndpoint,
  type WebhookRetryOptions,
  type WebhookSenderOptions,
} from './webhooks';

export * from './memory-event-log';
export * from './redis-event-log';
export * from './webhooks';

export interface EventsOptions {
  /** An ioredis client (the Redis store's): events go to per-org Redis Streams. Absent: an in-process ring. */
  readonly redis?: RedisEventClient;
  /** Key prefix (the Redis store's; default "lg"). */
  readonly prefix?: string;
  /** The engine's instance id (default "default"). */
  readonly instanceId?: string;
  /** Most events kept per org stream (Redis) or in all (memory). Default 10 000. */
  readonly maxLength?: number;
  /** Redis: events older than this are trimmed as new ones arrive (0 = by length only). */
  readonly maxAgeMs?: number;
  /** Told of an event that could not be recorded (Redis did not take it within its retries). */
  readonly onLost?: (error: unknown, event: { id: string; org: string; type: string }) => void;
  readonly webhooks?: {
    readonly endpoints: ReadonlyArray<
      Pick<WebhookEndpoint, 'name' | 'url' | 'secret'> &
        Partial<Pick<WebhookEndpoint, 'types' | 'orgs' | 'timeoutMs'>>
    >;
    readonly retry?: Partial<WebhookRetryOptions>;
    /** Default 500 ms. */
    readonly pollIntervalMs?: number;
    /** Default 60 000 ms; above every endpoint's timeoutMs. */
    readonly claimIdleMs?: number;
    /** Default 1000. */
    readonly deadLetterMax?: number;
    readonly onAttempt?: WebhookSenderOptions['onAttempt'];
    readonly onError?: WebhookSenderOptions['onError'];
  };
}

export interface Events {
  readonly eventLog: EventLog;
  readonly sender: WebhookSender | undefined;
  readonly queue: DeliveryQueue | undefined;
  /** The dead letters of an org (for the routers' `deadLetters`); undefined without webhooks. */
  readonly deadLetters: ((orgId: string, limit: number) => Promise<readonly DeadLetter[]>) | undefined;
  /** Starts delivering. */
  start(): void;
  /** Stops delivering (deliveries in flight are aborted: retried later) and closes the log. Does not close the client. */
  close(): Promise<void>;
}

export function createEvents(options: EventsOptions = {}): Events {
  const instanceId = options.instanceId ?? 'default';
  const endpoints = options.webhooks?.endpoints ?? [];
  const w = options.webhooks;
  let eventLog: EventLog;
  let redisLog: RedisEventLog | undefined;
  if (options.redis) {
    redisLog = new RedisEventLog({
      client: options.redis,
      ...(options.prefix !== undefined ? { prefix: options.prefix } : {}),
      instanceId,
      ...(options.maxLength !== undefined ? { maxLength: options.maxLength } : {}),
      ...(options.maxAgeMs !== undefined ? { maxAgeMs: options.maxAgeMs } : {}),
      ...(endpoints.length > 0 ? { deliveryGroup: DELIVERY_GROUP } : {}),
      ...(options.onLost ? { onError: options.onLost } : {}),
    });
    eventLog = redisLog;
  } else {
    eventLog = new MemoryEventLog({
      ...(options.maxLength !== undefined ? { maxEvents: options.maxLength } : {}),
    });
  }
  let queue: DeliveryQueue | undefined;
  let sender: WebhookSender | undefined;
  if (w && endpoints.length > 0) {
    const claimIdleMs = w.claimIdleMs ?? 60_000;
    const deadLetterMax = w.deadLetterMax ?? 1000;
    const resolved: WebhookEndpoint[] = endpoints.map((e, i) => {
      const timeoutMs = e.timeoutMs ?? 5000;
      if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs >= claimIdleMs) {
        throw invalidOption(
          `webhooks.endpoints[${i}].timeoutMs`,
          `must be an integer from 1 to below claimIdleMs (${claimIdleMs})`,
        );
      }
      return {
        name: e.name,
        url: e.url,
        secret: e.secret,
        types: e.types === undefined || e.types.includes('*') ? '*' : e.types,
        orgs: e.orgs === undefined || e.orgs.includes('*') ? '*' : e.orgs,
        timeoutMs,
      };
    });
    queue = redisLog
      ? new RedisDeliveryQueue({ client: options.redis!, keys: redisLog.keys, claimIdleMs, deadLetterMax })
      : new MemoryDeliveryQueue(eventLog, deadLetterMax);
    sender = new WebhookSender({
      endpoints: resolved,
      retry: { initialDelayMs: 1000, maxDelayMs: 300_000, maxAttempts: 12, ...w.retry },
      queue,
      pollIntervalMs: w.pollIntervalMs ?? 500,
      claimIdleMs,
      ...(w.onAttempt ? { onAttempt: w.onAttempt } : {}),
      ...(w.onError ? { onError: w.onError } : {}),
    });
  }
  const q = queue;
  return {
    eventLog,
    sender,
    queue,
    deadLetters: q ? (org, limit) => q.deadLetters(org, limit) : undefined,
    start() {
      sender?.start();
    },
    async close() {
      await sender?.stop();
      await q?.close();
      await eventLog.close();
    },
  };
}
