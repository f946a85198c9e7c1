/**
 * The sidecar's events and webhooks (issue 14), built from `events` and `webhooks` of the
 * configuration: the event log (a RedisEventLog on the Redis store's client, else a bounded
 * MemoryEventLog), and, when endpoints are configured, the WebhookSender with its queue (shared
 * on Redis, in process on memory).
 */
import type { DeadLetter, EventLog } from '../core/events';
import { MemoryEventLog } from '../events/memory-event-log';
import { RedisEventLog } from '../events/redis-event-log';
import {
  DELIVERY_GROUP,
  MemoryDeliveryQueue,
  RedisDeliveryQueue,
  WebhookSender,
  type DeliveryQueue,
} from '../events/webhooks';
import type { RedisClient } from '../store/redis/redis-store';
import type { SidecarConfig } from './config';
import type { Logger } from './logger';
import type { SidecarMetrics } from './metrics';

export interface SidecarEvents {
  readonly eventLog: EventLog | undefined;
  readonly sender: WebhookSender | undefined;
  readonly deadLetters: ((orgId: string, limit: number) => Promise<readonly DeadLetter[]>) | undefined;
  /** Starts delivering (after the server listens). */
  start(): void;
  /** Stops delivering (deliveries in flight are aborted: retried later) and closes the log. */
  close(): Promise<void>;
}

export function createSidecarEvents(
  config: SidecarConfig,
  client: RedisClient | undefined,
  metrics: SidecarMetrics,
  logger: Logger,
): SidecarEvents {
  if (!config.events.enabled) {
    return {
      eventLog: undefined,
      sender: undefined,
      deadLetters: undefined,
      start() {},
      close: () => Promise.resolve(),
    };
  }
  const endpoints = config.webhooks.endpoints;
  const webhooks = endpoints.length > 0;
  let eventLog: EventLog;
  let redisLog: RedisEventLog | undefined;
  if (client) {
    redisLog = new RedisEventLog({
      client,
      prefix: config.store.redis.prefix,
      instanceId: config.instance.id,
      maxLength: config.events.maxLength,
      maxAgeMs: config.events.maxAgeSeconds * 1000,
      ...(webhooks ? { deliveryGroup: DELIVERY_GROUP } : {}),
      onError: (error, record) => {
        metrics.eventLost();
        logger.error(
          { event: record, err: error instanceof Error ? { type: error.name } : undefined },
          'event could not be recorded',
        );
      },
    });
    eventLog = redisLog;
  } else {
    eventLog = new MemoryEventLog({ maxEvents: config.events.maxLength });
  }
  let queue: DeliveryQueue | undefined;
  let sender: WebhookSender | undefined;
  if (webhooks) {
    queue = redisLog
      ? new RedisDeliveryQueue({
          client: client!,
          keys: redisLog.keys,
          claimIdleMs: config.webhooks.claimIdleMs,
          deadLetterMax: config.webhooks.deadLetterMax,
        })
      : new MemoryDeliveryQueue(eventLog, config.webhooks.deadLetterMax);
    sender = new WebhookSender({
      endpoints: endpoints.map((e) => ({
        name: e.name,
        url: e.url,
        secret: e.secret,
        types: e.types.includes('*') ? '*' : e.types,
        orgs: e.orgs.includes('*') ? '*' : e.orgs,
        timeoutMs: e.timeoutMs,
      })),
      retry: config.webhooks.retry,
      queue,
      pollIntervalMs: config.webhooks.pollIntervalMs,
      claimIdleMs: config.webhooks.claimIdleMs,
      onAttempt: (a) => {
        metrics.webhookAttempt(a.endpoint, a.outcome);
        const line = {
          webhook: a.endpoint,
          eventId: a.eventId,
          type: a.type,
          attempt: a.attempt,
          outcome: a.outcome,
          ...(a.status !== undefined ? { status: a.status } : {}),
          ...(a.error !== undefined ? { error: a.error } : {}),
        };
        if (a.outcome === 'dead' || a.outcome === 'gone') logger.warn(line, `webhook ${a.outcome}`);
        else logger.debug(line, 'webhook attempt');
      },
      onError: (error) =>
        logger.warn(
          { webhooks: true, err: error instanceof Error ? { type: error.name } : undefined },
          'webhook round failed; retrying',
        ),
    });
    const q = queue;
    metrics.watchDeadLetters(() => q.deadLetterCount());
  }
  const q = queue;
  return {
    eventLog,
    sender,
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
