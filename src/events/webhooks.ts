import { createHash, randomBytes } from 'node:crypto';
import os from 'node:os';
import { Webhook } from 'standardwebhooks';
import { renderEvent, type DeadLetter, type EventLog, type EventRecord } from '../core/events';
import { invalidOption } from '../core/option-checks';
import { createGroup, parseEntry, type EventKeys, type RedisEventClient } from './redis-event-log';

/*
 * Webhooks (issue 14): every recorded event is delivered to the endpoints subscribed to its type
 * and org, following the Standard Webhooks specification (webhook-id = the event id,
 * webhook-timestamp, webhook-signature = v1 HMAC-SHA256, made by the `standardwebhooks` package),
 * at least once, with exponential backoff up to a cap, then to a dead-letter list. An endpoint
 * that answers 410 Gone is disabled: nothing more is sent to it. Delivery runs in the background,
 * never on a request's path.
 *
 * Who delivers what (DeliveryQueue): on Redis, the org streams are read through one consumer
 * group (XREADGROUP: each new event goes to one process; XAUTOCLAIM: the entries of a process
 * that died before acknowledging them go to another after `claimIdleMs`); retries sit in a
 * sorted set claimed atomically (a Lua script leases due entries to one process); the dead
 * letters and the disabled endpoints are shared. In memory: one process's queue, lost with it.
 */

/** One subscription. */
export interface WebhookEndpoint {
  /** A name for logs, metrics and the dead-letter list (never the secret). */
  readonly name: string;
  readonly url: string;
  /** `whsec_` + base64 of the key (Standard Webhooks). */
  readonly secret: string;
  /** Recorded types (e.g. `user.locked`), or '*' for all. */
  readonly types: readonly string[] | '*';
  /** Orgs, or '*' for all. */
  readonly orgs: readonly string[] | '*';
  /** How long one delivery may take (connect, send, answer). */
  readonly timeoutMs: number;
}

export interface WebhookRetryOptions {
  /** Delay before the second attempt; doubled at each further one. */
  readonly initialDelayMs: number;
  /** Cap of the delay. */
  readonly maxDelayMs: number;
  /** Attempts in all (the first included); past it the event goes to the dead-letter list. */
  readonly maxAttempts: number;
}

/** A retry, as queued: which endpoint, which event, which attempt comes next. */
export interface RetryJob {
  readonly endpoint: string;
  readonly event: EventRecord;
  /** The attempt this job makes (2 for the first retry). */
  readonly attempt: number;
}

/** An event read from the log for its first attempts; `ack` once every endpoint had its first try. */
export interface FreshItem {
  readonly event: EventRecord | undefined;
  ack(): Promise<void>;
}

/** Where deliveries wait: Redis (shared by every process) or memory (this process). */
export interface DeliveryQueue {
  /** New events (and, on Redis, those of a consumer that died), at most `max`. */
  fresh(max: number): Promise<FreshItem[]>;
  /** Retries due now, at most `max`, leased to this process for `leaseMs`. */
  due(max: number, leaseMs: number): Promise<RetryJob[]>;
  /** Queues `next` for `dueAt`, removing the claimed `current` (if any) in the same step. */
  schedule(next: RetryJob, dueAt: number, current?: RetryJob): Promise<void>;
  /** Removes a claimed retry (delivered, or its endpoint is gone). */
  complete(job: RetryJob): Promise<void>;
  /** Records a dead letter (bounded list), removing the claimed `current` (if any). */
  dead(letter: DeadLetter, current?: RetryJob): Promise<void>;
  /** Marks an endpoint disabled (it answered 410). */
  disable(endpointKey: string): Promise<void>;
  /** The disabled endpoints' keys. */
  disabled(): Promise<ReadonlySet<string>>;
  /** The newest dead letters of `org` (at most `limit`), newest first. */
  deadLetters(org: string, limit: number): Promise<DeadLetter[]>;
  /** How many dead letters are kept. */
  deadLetterCount(): Promise<number>;
  close(): Promise<void>;
}

/** An endpoint's key in the disabled set: its name and a digest of its URL (a new URL re-enables it). */
export function endpointKey(e: Pick<WebhookEndpoint, 'name' | 'url'>): string {
  return `${e.name}:${createHash('sha256').update(e.url).digest('hex').slice(0, 16)}`;
}

const SECRET = /^whsec_[A-Za-z0-9+/]{32,}={0,2}$/;

/** Whether `secret` is a Standard Webhooks secret: `whsec_` + base64 of at least 24 bytes. */
export function isWebhookSecret(secret: unknown): secret is string {
  return typeof secret === 'string' && SECRET.test(secret);
}

/** The body of a delivery (Standard Webhooks: type, timestamp, data). */
export function webhookPayload(event: EventRecord): string {
  return JSON.stringify({
    type: event.type,
    timestamp: new Date(event.time).toISOString(),
    data: renderEvent(event),
  });
}

export type { DeadLetter } from '../core/events';

export type DeliveryOutcome = 'delivered' | 'retry' | 'dead' | 'gone' | 'skipped';

export interface WebhookSenderOptions {
  readonly endpoints: readonly WebhookEndpoint[];
  readonly retry: WebhookRetryOptions;
  readonly queue: DeliveryQueue;
  /** Pause between two rounds of reading the queue. */
  readonly pollIntervalMs: number;
  /** How long a claimed retry stays leased to this process (longer than any endpoint's timeout). */
  readonly claimIdleMs: number;
  /** Told of each attempt's outcome (metrics, logs). Never given the secret or the body. */
  readonly onAttempt?: (attempt: {
    endpoint: string;
    eventId: string;
    type: string;
    attempt: number;
    outcome: DeliveryOutcome;
    status?: number;
    error?: string;
  }) => void;
  /** Told of a round that failed (the queue's store unreachable). */
  readonly onError?: (error: unknown) => void;
}

/** Delivers recorded events to webhook endpoints in the background. */
export class WebhookSender {
  private readonly endpoints: ReadonlyArray<WebhookEndpoint & { key: string; signer: Webhook }>;
  private readonly options: WebhookSenderOptions;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  private readonly inflight = new Set<AbortController>();

  constructor(options: WebhookSenderOptions) {
    options.endpoints.forEach((e, i) => {
      if (!isWebhookSecret(e.secret)) {
        throw invalidOption(
          `endpoints[${i}].secret`,
          'must be whsec_ followed by the base64 of at least 24 random bytes',
        );
      }
    });
    this.options = options;
    this.endpoints = options.endpoints.map((e) => ({
      ...e,
      key: endpointKey(e),
      signer: new Webhook(e.secret),
    }));
  }

  /** Starts the background loop (idempotent). */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.schedule(0);
  }

  /** Stops the loop, aborts deliveries in flight (they are retried later) and waits for the round. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    for (const c of this.inflight) c.abort();
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.round()
        .catch((error: unknown) => this.options.onError?.(error))
        .finally(() => {
          this.running = undefined;
          this.schedule(this.options.pollIntervalMs);
        });
    }, ms);
    this.timer.unref();
  }

  /** One round: the first attempts of new events, then the retries that are due. */
  async round(): Promise<void> {
    const { queue } = this.options;
    const disabled = await queue.disabled();
    const fresh = await queue.fresh(100);
    await Promise.all(
      fresh.map(async (item) => {
        const event = item.event;
        if (event) {
          await Promise.all(
            this.endpoints
              .filter((e) => subscribed(e, event))
              .map((e) =>
                disabled.has(e.key)
                  ? this.report(e.name, event, 1, 'skipped')
                  : this.attempt(e, { endpoint: e.name, event, attempt: 1 }, undefined),
              ),
          );
        }
        await item.ack();
      }),
    );
    const due = await queue.due(100, this.options.claimIdleMs);
    await Promise.all(
      due.map(async (job) => {
        const e = this.endpoints.find((x) => x.name === job.endpoint);
        if (!e || disabled.has(e.key)) {
          // Its endpoint is gone from the configuration, or answered 410: dropped.
          this.report(job.endpoint, job.event, job.attempt, 'skipped');
          await queue.complete(job);
          return;
        }
        await this.attempt(e, job, job);
      }),
    );
  }

  /** One attempt; then done, retry later, dead letter, or the endpoint disabled (410). */
  private async attempt(
    e: WebhookEndpoint & { key: string; signer: Webhook },
    job: RetryJob,
    claimed: RetryJob | undefined,
  ): Promise<void> {
    const { queue, retry } = this.options;
    const result = await this.post(e, job.event);
    if (result.status !== undefined && result.status >= 200 && result.status < 300) {
      if (claimed) await queue.complete(claimed);
      this.report(e.name, job.event, job.attempt, 'delivered', result.status);
      return;
    }
    if (result.status === 410) {
      await queue.disable(e.key);
      if (claimed) await queue.complete(claimed);
      this.report(e.name, job.event, job.attempt, 'gone', 410);
      return;
    }
    if (job.attempt >= retry.maxAttempts) {
      await queue.dead(
        {
          endpoint: e.name,
          event: job.event,
          attempts: job.attempt,
          ...(result.status !== undefined ? { lastStatus: result.status } : {}),
          ...(result.error !== undefined ? { lastError: result.error } : {}),
          time: Date.now(),
        },
        claimed,
      );
      this.report(e.name, job.event, job.attempt, 'dead', result.status, result.error);
      return;
    }
    await queue.schedule(
      { endpoint: e.name, event: job.event, attempt: job.attempt + 1 },
      Date.now() + backoff(retry, job.attempt),
      claimed,
    );
    this.report(e.name, job.event, job.attempt, 'retry', result.status, result.error);
  }

  private async post(
    e: WebhookEndpoint & { signer: Webhook },
    event: EventRecord,
  ): Promise<{ status?: number; error?: string }> {
    const body = webhookPayload(event);
    const now = new Date();
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), e.timeoutMs);
    this.inflight.add(controller);
    try {
      const res = await fetch(e.url, {
        method: 'POST',
        redirect: 'manual',
        signal: controller.signal,
        headers: {
          'content-type': 'application/json',
          'user-agent': 'lockgate-webhooks',
          'webhook-id': event.id,
          'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
          'webhook-signature': e.signer.sign(event.id, now, body),
        },
        body,
      });
      // The answer's body is not read (bounded work per attempt).
      await res.body?.cancel().catch(() => {});
      return { status: res.status };
    } catch {
      return { error: controller.signal.aborted ? 'timeout' : 'network' };
    } finally {
      clearTimeout(timer);
      this.inflight.delete(controller);
    }
  }

  private report(
    endpoint: string,
    event: EventRecord,
    attempt: number,
    outcome: DeliveryOutcome,
    status?: number,
    error?: string,
  ): void {
    try {
      this.options.onAttempt?.({
        endpoint,
        eventId: event.id,
        type: event.type,
        attempt,
        outcome,
        ...(status !== undefined ? { status } : {}),
        ...(error !== undefined ? { error } : {}),
      });
    } catch {
      // an observer must not stop deliveries
    }
  }
}

/** The delay after attempt `n` (1-based): initial × 2^(n−1), at most maxDelayMs. */
export function backoff(retry: WebhookRetryOptions, n: number): number {
  return Math.min(retry.maxDelayMs, retry.initialDelayMs * 2 ** Math.min(n - 1, 30));
}

function subscribed(e: WebhookEndpoint, event: EventRecord): boolean {
  return (e.types === '*' || e.types.includes(event.type)) && (e.orgs === '*' || e.orgs.includes(event.org));
}

// ---- queues -----------------------------------------------------------------------------

/** The in-process queue (memory store): fed by the event log's subscription; lost with the process. */
export class MemoryDeliveryQueue implements DeliveryQueue {
  private readonly incoming: EventRecord[] = [];
  private readonly retries = new Map<string, { job: RetryJob; due: number }>();
  private readonly letters: DeadLetter[] = [];
  private readonly gone = new Set<string>();
  private readonly unsubscribe: () => void;

  constructor(
    log: EventLog,
    private readonly deadLetterMax = 1000,
    private readonly maxQueued = 100_000,
  ) {
    if (!log.subscribe) throw invalidOption('eventLog', 'must be an event log that tells its appends');
    this.unsubscribe = log.subscribe((r) => {
      if (this.incoming.length < this.maxQueued) this.incoming.push(r);
    });
  }

  fresh(max: number): Promise<FreshItem[]> {
    const taken = this.incoming.splice(0, max);
    return Promise.resolve(taken.map((event) => ({ event, ack: () => Promise.resolve() })));
  }

  due(max: number, leaseMs: number): Promise<RetryJob[]> {
    const now = Date.now();
    const out: RetryJob[] = [];
    for (const entry of this.retries.values()) {
      if (out.length >= max) break;
      if (entry.due > now) continue;
      entry.due = now + leaseMs;
      out.push(entry.job);
    }
    return Promise.resolve(out);
  }

  schedule(next: RetryJob, dueAt: number, current?: RetryJob): Promise<void> {
    if (current) this.retries.delete(jobKey(current));
    if (this.retries.size < this.maxQueued) this.retries.set(jobKey(next), { job: next, due: dueAt });
    return Promise.resolve();
  }

  complete(job: RetryJob): Promise<void> {
    this.retries.delete(jobKey(job));
    return Promise.resolve();
  }

  dead(letter: DeadLetter, current?: RetryJob): Promise<void> {
    if (current) this.retries.delete(jobKey(current));
    this.letters.unshift(letter);
    if (this.letters.length > this.deadLetterMax) this.letters.length = this.deadLetterMax;
    return Promise.resolve();
  }

  disable(key: string): Promise<void> {
    this.gone.add(key);
    return Promise.resolve();
  }

  disabled(): Promise<ReadonlySet<string>> {
    return Promise.resolve(this.gone);
  }

  deadLetters(org: string, limit: number): Promise<DeadLetter[]> {
    return Promise.resolve(this.letters.filter((l) => l.event.org === org).slice(0, limit));
  }

  deadLetterCount(): Promise<number> {
    return Promise.resolve(this.letters.length);
  }

  close(): Promise<void> {
    this.unsubscribe();
    return Promise.resolve();
  }
}

function jobKey(job: RetryJob): string {
  return `${job.endpoint}\u0000${job.event.id}\u0000${job.attempt}`;
}

/** Leases due retries to one caller: KEYS[1] the retry zset; ARGV now, count, lease end. */
const CLAIM_DUE = `
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[3], m) end
return due
`;

/** The consumer group of the webhook workers on every org stream. */
export const DELIVERY_GROUP = 'lockgate-webhooks';

export interface RedisDeliveryQueueOptions {
  readonly client: RedisEventClient;
  readonly keys: EventKeys;
  /** Entries a dead consumer left unacknowledged are taken over after this long. */
  readonly claimIdleMs: number;
  readonly deadLetterMax: number;
  /** This process's consumer name (default host-pid-random). */
  readonly consumer?: string;
}

/** The shared queue on Redis (see the file comment). Retry members are JSON of the RetryJob. */
export class RedisDeliveryQueue implements DeliveryQueue {
  readonly consumer: string;
  private readonly client: RedisEventClient;
  private readonly keys: EventKeys;
  private readonly groups = new Set<string>();
  /** When this process last looked for a dead consumer's entries, per stream. */
  private readonly claimedAt = new Map<string, number>();
  private rotation = 0;

  constructor(private readonly options: RedisDeliveryQueueOptions) {
    this.client = options.client;
    this.keys = options.keys;
    this.consumer = options.consumer ?? `${os.hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`;
  }

  async fresh(max: number): Promise<FreshItem[]> {
    const orgs = await this.client.smembers(this.keys.orgs());
    const out: FreshItem[] = [];
    let failed: unknown;
    // A different org first at each round, so that one org's backlog does not starve the others.
    const first = orgs.length > 0 ? this.rotation++ % orgs.length : 0;
    for (let i = 0; i < orgs.length && out.length < max; i += 1) {
      const key = this.keys.stream(orgs[(first + i) % orgs.length]!);
      try {
        await this.freshOf(key, max, out);
      } catch (error) {
        // One org's stream failing (its group deleted: NOGROUP) does not stop the others.
        this.groups.delete(key);
        failed ??= error;
      }
    }
    if (out.length === 0 && failed !== undefined) throw failed;
    return out;
  }

  /** The new and the abandoned entries of one org's stream, appended to `out` (up to `max` in all). */
  private async freshOf(key: string, max: number, out: FreshItem[]): Promise<void> {
    if (!this.groups.has(key)) {
      // Made by the appender before its first event; made here too for a stream deleted since.
      await createGroup(this.client, key, DELIVERY_GROUP, '0');
      this.groups.add(key);
    }
    const ack = (id: string) => async () => {
      await this.client.xack(key, DELIVERY_GROUP, id);
    };
    // Entries of a consumer that died (or stopped) before acknowledging them: looked for a few
    // times per claimIdleMs, not at every round (one command less per org and round).
    const now = Date.now();
    if (now - (this.claimedAt.get(key) ?? 0) >= this.options.claimIdleMs / 4) {
      this.claimedAt.set(key, now);
      const claimed = (await this.client.xautoclaim(
        key,
        DELIVERY_GROUP,
        this.consumer,
        this.options.claimIdleMs,
        '0-0',
        'COUNT',
        max - out.length,
      )) as [string, Array<[string, string[] | null]>, string[]?];
      for (const [id, fields] of claimed[1] ?? []) out.push({ event: parseEntry(fields), ack: ack(id) });
      if (out.length >= max) return;
    }
    const read = (await this.client.xreadgroup(
      'GROUP',
      DELIVERY_GROUP,
      this.consumer,
      'COUNT',
      max - out.length,
      'STREAMS',
      key,
      '>',
    )) as Array<[string, Array<[string, string[] | null]>]> | null;
    for (const [, entries] of read ?? []) {
      for (const [id, fields] of entries) out.push({ event: parseEntry(fields), ack: ack(id) });
    }
  }

  async due(max: number, leaseMs: number): Promise<RetryJob[]> {
    const now = Date.now();
    const members = (await this.client.eval(
      CLAIM_DUE,
      1,
      this.keys.webhook('retry'),
      now,
      max,
      now + leaseMs,
    )) as string[];
    return members.flatMap((m) => {
      try {
        return [JSON.parse(m) as RetryJob];
      } catch {
        return [];
      }
    });
  }

  async schedule(next: RetryJob, dueAt: number, current?: RetryJob): Promise<void> {
    const key = this.keys.webhook('retry');
    const m = this.client.multi();
    if (current) m.zrem(key, member(current));
    m.zadd(key, dueAt, member(next));
    await m.exec();
  }

  async complete(job: RetryJob): Promise<void> {
    await this.client.zrem(this.keys.webhook('retry'), member(job));
  }

  async dead(letter: DeadLetter, current?: RetryJob): Promise<void> {
    const key = this.keys.webhook('dead');
    const m = this.client.multi();
    if (current) m.zrem(this.keys.webhook('retry'), member(current));
    m.lpush(key, JSON.stringify(letter));
    m.ltrim(key, 0, this.options.deadLetterMax - 1);
    await m.exec();
  }

  async disable(endpoint: string): Promise<void> {
    await this.client.hset(this.keys.webhook('gone'), endpoint, Date.now());
  }

  async disabled(): Promise<ReadonlySet<string>> {
    return new Set(await this.client.hkeys(this.keys.webhook('gone')));
  }

  async deadLetters(org: string, limit: number): Promise<DeadLetter[]> {
    const raw = await this.client.lrange(this.keys.webhook('dead'), 0, this.options.deadLetterMax - 1);
    const out: DeadLetter[] = [];
    for (const r of raw) {
      try {
        const letter = JSON.parse(r) as DeadLetter;
        if (letter.event?.org === org) out.push(letter);
      } catch {
        // not a letter of ours
      }
      if (out.length >= limit) break;
    }
    return out;
  }

  deadLetterCount(): Promise<number> {
    return this.client.llen(this.keys.webhook('dead'));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A retry's zset member: the job's JSON with its fields in a fixed order (so ZREM finds it). */
function member(job: RetryJob): string {
  return JSON.stringify({ endpoint: job.endpoint, event: job.event, attempt: job.attempt });
}
