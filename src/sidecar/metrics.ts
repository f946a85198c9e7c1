/**
 * Prometheus metrics of one sidecar, on a registry of its own (never prom-client's global one, so
 * several sidecars in one process — tests, embedding — do not collide).
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { CompensationEvent, CompensationStats, LockoutEvent } from '../core/engine';

/** What /metrics reads of a store that keeps its users in process (MemoryStore's `stats()`). */
interface StoreWithStats {
  stats(): { users: number; maxUsers: number; evictions: number };
}

function hasStats(store: unknown): store is StoreWithStats {
  return typeof (store as Partial<StoreWithStats> | null)?.stats === 'function';
}

export interface SidecarMetrics {
  readonly registry: Registry;
  /** Engine events: checks by factor and outcome, locks, unlocks, busy answers, settings changes. */
  onEvent(event: LockoutEvent): void;
  /** One check or attempt request answered: its latency, by factor and outcome. */
  observeCheckLatency(factor: string, outcome: string, seconds: number): void;
  /** A store operation failed (StoreUnavailableError). */
  storeError(operation: string): void;
  /** A check answered without lockout because the store was down (onStoreError: fail-open). */
  failOpen(factor: string): void;
  /** Readiness of the store as last seen by /readyz (1 up, 0 down). */
  setStoreUp(up: boolean): void;
  /** Reverse-proxy mode: one login request answered. */
  proxyLogin(factor: string, outcome: string, seconds: number): void;
  /** A compensation event of the engine (queued, retried, compensated, abandoned). */
  compensation(event: CompensationEvent): void;
  /** Spray throttling is on and a check or attempt request came without `clientIp` (not throttled). */
  noClientIp(route: string): void;
  /** Reads the engine's pending compensations at every scrape. */
  watchEngine(engine: { compensationStats(): CompensationStats }): void;
  /**
   * Reads the store's `stats()` at every scrape, when it has one (MemoryStore: users kept, its
   * maxUsers bound, evictions). A store without stats() adds nothing.
   */
  watchStore(store: unknown): void;
  /** Issue 14: one webhook delivery attempt, by endpoint name and outcome. */
  webhookAttempt(endpoint: string, outcome: string): void;
  /** Issue 14: an event that could not be recorded (its retries ran out). */
  eventLost(): void;
  /** Issue 14: reads the dead-letter count at every scrape. */
  watchDeadLetters(count: () => Promise<number>): void;
}

export interface MetricsOptions {
  /** Also collect Node's process metrics (CPU, memory, event loop), prefixed `lockgate_`. Default true. */
  readonly processMetrics?: boolean;
}

export function createMetrics(options: MetricsOptions = {}): SidecarMetrics {
  const registry = new Registry();
  const checks = new Counter({
    name: 'lockgate_checks_total',
    help: 'Credential checks settled or refused, by factor and outcome (success, failure, locked, busy).',
    labelNames: ['factor', 'outcome'] as const,
    registers: [registry],
  });
  const locks = new Counter({
    name: 'lockgate_locks_total',
    help: 'Users locked, by reason (failures: the limit was reached; admin: the lock route).',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  const unlocks = new Counter({
    name: 'lockgate_unlocks_total',
    help: 'Users unlocked by an admin.',
    registers: [registry],
  });
  const busy = new Counter({
    name: 'lockgate_busy_total',
    help: 'Checks answered busy (429): more checks of the user in flight than attempts remain.',
    labelNames: ['factor'] as const,
    registers: [registry],
  });
  const settings = new Counter({
    name: 'lockgate_settings_changes_total',
    help: 'Lockout settings changes, by resource owner type and operation.',
    labelNames: ['owner', 'op'] as const,
    registers: [registry],
  });
  const storeErrors = new Counter({
    name: 'lockgate_store_errors_total',
    help: 'Store operations that failed because the store was unreachable or timed out, by operation.',
    labelNames: ['operation'] as const,
    registers: [registry],
  });
  const failOpen = new Counter({
    name: 'lockgate_fail_open_total',
    help: 'Checks answered without lockout enforcement because the store was unreachable (fail-open).',
    labelNames: ['factor'] as const,
    registers: [registry],
  });
  const storeUp = new Gauge({
    name: 'lockgate_store_up',
    help: 'Whether the store answered the last readiness probe (1) or not (0).',
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'lockgate_check_duration_seconds',
    help: 'Latency of check and attempt requests, credential evaluation included, by factor and outcome.',
    labelNames: ['factor', 'outcome'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const proxyLogins = new Counter({
    name: 'lockgate_proxy_logins_total',
    help: 'Reverse-proxy mode: login requests, by factor and outcome (success, failure, release, locked, busy, store_unavailable, fail_open, …).',
    labelNames: ['factor', 'outcome'] as const,
    registers: [registry],
  });
  const proxyLatency = new Histogram({
    name: 'lockgate_proxy_login_duration_seconds',
    help: 'Reverse-proxy mode: latency of login requests, the upstream included, by factor and outcome.',
    labelNames: ['factor', 'outcome'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const compensations = new Counter({
    name: 'lockgate_compensations_total',
    help: 'Store writes of unknown outcome (a reserve or settle that failed) made again by nonce, by event: queued, retried (a try failed), compensated (the store took it), abandoned (its lease ended first, the queue was full, or the engine stopped).',
    labelNames: ['event'] as const,
    registers: [registry],
  });
  for (const event of ['queued', 'retried', 'compensated', 'abandoned']) compensations.inc({ event }, 0);
  const throttleBlocks = new Counter({
    name: 'lockgate_spray_throttle_blocks_total',
    help: 'Spray throttling: client address blocks (IPv4 address, IPv6 /64) throttled after reaching the failure limit across users. Checks refused meanwhile are counted with outcome "throttled" in lockgate_check_duration_seconds and lockgate_proxy_logins_total.',
    registers: [registry],
  });
  const noClientIp = new Counter({
    name: 'lockgate_spray_throttle_no_client_ip_total',
    help: 'Spray throttling: check and attempt requests without clientIp in the body, which could not be throttled, by route.',
    labelNames: ['route'] as const,
    registers: [registry],
  });
  let engineStats: (() => CompensationStats) | undefined;
  new Gauge({
    name: 'lockgate_compensations_pending',
    help: 'Compensations waiting to be written now (bounded queue, in this process).',
    registers: [registry],
    collect() {
      this.set(engineStats?.().pending ?? 0);
    },
  });
  let storeStats: (() => { users: number; maxUsers: number; evictions: number }) | undefined;
  const memoryMetrics = (): void => {
    new Gauge({
      name: 'lockgate_memory_store_users',
      help: 'Users whose state the memory store keeps now.',
      registers: [registry],
      collect() {
        this.set(storeStats?.().users ?? 0);
      },
    });
    new Gauge({
      name: 'lockgate_memory_store_max_users',
      help: 'Most users the memory store keeps (store.memory.maxUsers); past it idle users are evicted.',
      registers: [registry],
      collect() {
        this.set(storeStats?.().maxUsers ?? 0);
      },
    });
    new Counter({
      name: 'lockgate_memory_store_evictions_total',
      help: 'Idle users (not locked, nothing in flight) the memory store evicted to stay under maxUsers.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(storeStats?.().evictions ?? 0);
      },
    });
  };
  const webhookAttempts = new Counter({
    name: 'lockgate_webhook_attempts_total',
    help: 'Webhook delivery attempts, by endpoint and outcome: delivered, retry (failed, retried later), dead (failed, dead-lettered), gone (410: endpoint disabled), skipped (endpoint disabled).',
    labelNames: ['endpoint', 'outcome'] as const,
    registers: [registry],
  });
  const eventsLost = new Counter({
    name: 'lockgate_events_lost_total',
    help: 'Events that could not be recorded in the event log (the store did not take them within their retries).',
    registers: [registry],
  });
  let deadLetters: (() => Promise<number>) | undefined;
  new Gauge({
    name: 'lockgate_webhook_dead_letters',
    help: 'Webhook deliveries given up after their last attempt, kept in the dead-letter list (GET /v1/webhooks/dead-letters).',
    registers: [registry],
    async collect() {
      this.set(deadLetters ? await deadLetters().catch(() => 0) : 0);
    },
  });
  if (options.processMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'lockgate_' });

  return {
    registry,
    onEvent(event) {
      switch (event.type) {
        case 'check':
          checks.inc({ factor: event.factor, outcome: event.outcome });
          if (event.outcome === 'busy') busy.inc({ factor: event.factor });
          break;
        case 'lock':
          locks.inc({ reason: event.reason });
          break;
        case 'unlock':
          unlocks.inc();
          break;
        case 'settings':
          settings.inc({ owner: event.owner.type, op: event.op });
          break;
        case 'throttle':
          throttleBlocks.inc();
          break;
      }
    },
    observeCheckLatency(factor, outcome, seconds) {
      latency.observe({ factor, outcome }, seconds);
    },
    storeError(operation) {
      storeErrors.inc({ operation });
    },
    failOpen(factor) {
      failOpen.inc({ factor });
    },
    setStoreUp(up) {
      storeUp.set(up ? 1 : 0);
    },
    proxyLogin(factor, outcome, seconds) {
      proxyLogins.inc({ factor, outcome });
      proxyLatency.observe({ factor, outcome }, seconds);
    },
    compensation(event) {
      compensations.inc({ event: event.type });
    },
    noClientIp(route) {
      noClientIp.inc({ route });
    },
    watchEngine(engine) {
      engineStats = () => engine.compensationStats();
    },
    webhookAttempt(endpoint, outcome) {
      webhookAttempts.inc({ endpoint, outcome });
    },
    eventLost() {
      eventsLost.inc();
    },
    watchDeadLetters(count) {
      deadLetters = count;
    },
    watchStore(store) {
      if (!hasStats(store) || storeStats) return;
      storeStats = () => store.stats();
      memoryMetrics();
    },
  };
}
