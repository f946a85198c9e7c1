/**
 * The sidecar's events and webhooks (issue 14): createEvents (src/events) from the `events` and
 * `webhooks` sections of the configuration, on the Redis store's client when there is one, with
 * metrics and log lines (never a secret or an event's body).
 */
import { createEvents, type Events } from '../events';
import type { RedisClient } from '../store/redis/redis-store';
import type { SidecarConfig } from './config';
import type { Logger } from './logger';
import type { SidecarMetrics } from './metrics';

/** createEvents' answer, without an event log when events are off. */
export type SidecarEvents = Omit<Events, 'eventLog'> & { readonly eventLog: Events['eventLog'] | undefined };

/** The sidecar's events; `eventLog` is undefined when `events.enabled` is false. */
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
      queue: undefined,
      deadLetters: undefined,
      start() {},
      close: () => Promise.resolve(),
    };
  }
  const errorType = (error: unknown) => (error instanceof Error ? { type: error.name } : undefined);
  const events = createEvents({
    ...(client ? { redis: client } : {}),
    prefix: config.store.redis.prefix,
    instanceId: config.instance.id,
    maxLength: config.events.maxLength,
    maxAgeMs: config.events.maxAgeSeconds * 1000,
    onLost: (error, event) => {
      metrics.eventLost();
      logger.error({ event, err: errorType(error) }, 'event could not be recorded');
    },
    ...(config.webhooks.endpoints.length > 0
      ? {
          webhooks: {
            endpoints: config.webhooks.endpoints,
            retry: config.webhooks.retry,
            pollIntervalMs: config.webhooks.pollIntervalMs,
            claimIdleMs: config.webhooks.claimIdleMs,
            deadLetterMax: config.webhooks.deadLetterMax,
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
              logger.warn({ webhooks: true, err: errorType(error) }, 'webhook round failed; retrying'),
          },
        }
      : {}),
  });
  const queue = events.queue;
  if (queue) metrics.watchDeadLetters(() => queue.deadLetterCount());
  return events;
}
