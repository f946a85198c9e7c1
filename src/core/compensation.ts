import type { SettleOutcome, SettleResult } from './store';
import type { Factor, Subject } from './subjects';

/**
 * Compensation of store writes whose outcome is unknown (G5).
 *
 * A reserve or settle that rejected with StoreUnavailableError (a timeout, a lost connection)
 * may still have been applied by the store. The engine answers such a check 503 and hands the
 * write to this queue, which makes its outcome known by writing it again, keyed by the same
 * nonce (the store port makes both idempotent):
 *   - a reserve is compensated by a `release` of its nonce (an admitted reservation goes away
 *     uncounted; one never made leaves a tombstone, so a late reserve of it is refused);
 *   - a settle is compensated by the same settle again (same outcome; settling twice = once).
 * Each task is retried with jittered exponential backoff (25 ms doubling to 1 s by default) until
 * its lease ends: after that the store has applied the lease (counted it as a failure) and a
 * release could not undo it. The queue is bounded (drop-oldest, reported), its timers are
 * unref'd (it never keeps a process alive) and close() stops it.
 */

export interface CompensationTask {
  readonly subject: Subject;
  readonly factor: Factor;
  /** The reservation's nonce (its key in the store). */
  readonly nonce: string;
  /** `release` compensates a reserve; `success` / `failure` / `release` repeat a settle. */
  readonly outcome: SettleOutcome;
  /** What is compensated: a reserve or a settle whose outcome is unknown. */
  readonly origin: 'reserve' | 'settle';
  /** When the lease ends (ms since the epoch, this process's clock): the last moment it helps. */
  readonly deadline: number;
}

export type CompensationEvent =
  | { readonly type: 'queued'; readonly task: CompensationTask }
  | {
      readonly type: 'retried';
      readonly task: CompensationTask;
      readonly attempt: number;
      readonly error: unknown;
    }
  | { readonly type: 'compensated'; readonly task: CompensationTask; readonly result: SettleResult }
  | {
      readonly type: 'abandoned';
      readonly task: CompensationTask;
      /** expired: the lease ended first; dropped: the queue was full; closed: the engine was closed. */
      readonly reason: 'expired' | 'dropped' | 'closed';
      readonly error?: unknown;
    };

export interface CompensationStats {
  /** Tasks waiting or running now. */
  readonly pending: number;
  /** Tasks ever queued. */
  readonly queued: number;
  /** Writes that failed and were tried again. */
  readonly retried: number;
  /** Tasks whose write the store accepted. */
  readonly compensated: number;
  /** Tasks given up (lease ended, queue full, engine closed). */
  readonly abandoned: number;
}

export interface CompensationOptions {
  /** Performs the write (the engine's store.settle with the task's subject, nonce and outcome). */
  readonly run: (task: CompensationTask) => Promise<SettleResult>;
  /** Told of every event (metrics, logs). Must not throw. */
  readonly onEvent?: (event: CompensationEvent) => void;
  /** Most tasks kept; a new one past it drops the oldest (default 10 000). */
  readonly maxPending?: number;
  /** First retry delay (default 25 ms); it doubles up to `maxDelayMs` (default 1000 ms). */
  readonly initialDelayMs?: number;
  readonly maxDelayMs?: number;
  /** Clock (ms since the epoch). Default Date.now. */
  readonly now?: () => number;
  /** Random number in [0, 1) for the jitter. Default Math.random. */
  readonly random?: () => number;
}

interface Entry {
  readonly task: CompensationTask;
  attempt: number;
  timer?: NodeJS.Timeout;
  running: boolean;
  done: boolean;
  /** The last write's error. */
  error?: unknown;
}

export class CompensationQueue {
  private readonly entries = new Set<Entry>();
  private readonly waiters: Array<() => void> = [];
  private readonly run: CompensationOptions['run'];
  private readonly notify: (event: CompensationEvent) => void;
  private readonly maxPending: number;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly now: () => number;
  private readonly random: () => number;
  private closed = false;
  private counts = { queued: 0, retried: 0, compensated: 0, abandoned: 0 };

  constructor(options: CompensationOptions) {
    this.run = options.run;
    const onEvent = options.onEvent;
    this.notify = onEvent
      ? (event) => {
          try {
            onEvent(event);
          } catch {
            // an observer must not change what is compensated
          }
        }
      : () => undefined;
    this.maxPending = options.maxPending ?? 10_000;
    this.initialDelayMs = options.initialDelayMs ?? 25;
    this.maxDelayMs = options.maxDelayMs ?? 1000;
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
  }

  /** Queues a write to be made (first try after the initial delay). After close(): abandoned at once. */
  enqueue(task: CompensationTask): void {
    this.counts.queued += 1;
    this.notify({ type: 'queued', task });
    if (this.closed) {
      this.abandon({ task, attempt: 0, running: false, done: false }, 'closed');
      return;
    }
    while (this.entries.size >= this.maxPending) {
      const oldest = this.entries.values().next().value as Entry | undefined;
      if (!oldest) break;
      this.abandon(oldest, 'dropped');
    }
    const entry: Entry = { task, attempt: 0, running: false, done: false };
    this.entries.add(entry);
    this.schedule(entry);
  }

  stats(): CompensationStats {
    return { pending: this.entries.size, ...this.counts };
  }

  /** Resolves when no task is pending (every one compensated or abandoned). */
  idle(): Promise<void> {
    if (this.entries.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Stops: pending tasks are abandoned (reason `closed`), later ones too. Idempotent. */
  close(): void {
    this.closed = true;
    for (const entry of [...this.entries]) this.abandon(entry, 'closed');
  }

  private delay(attempt: number): number {
    const base = Math.min(this.maxDelayMs, this.initialDelayMs * 2 ** attempt);
    // "Equal jitter": half fixed, half random, so that retries of many tasks spread out.
    return Math.max(1, Math.round(base / 2 + (this.random() * base) / 2));
  }

  private schedule(entry: Entry): void {
    const wait = this.delay(entry.attempt);
    const timer = setTimeout(() => {
      entry.timer = undefined;
      void this.attempt(entry);
    }, wait);
    timer.unref();
    entry.timer = timer;
  }

  private async attempt(entry: Entry): Promise<void> {
    if (entry.done) return;
    if (this.now() >= entry.task.deadline) {
      this.abandon(entry, 'expired', entry.error);
      return;
    }
    entry.running = true;
    let result: SettleResult;
    try {
      result = await this.run(entry.task);
    } catch (error) {
      entry.running = false;
      if (entry.done) return;
      entry.attempt += 1;
      entry.error = error;
      this.counts.retried += 1;
      this.notify({ type: 'retried', task: entry.task, attempt: entry.attempt, error });
      this.schedule(entry);
      return;
    }
    entry.running = false;
    if (entry.done) return;
    this.counts.compensated += 1;
    this.finish(entry);
    this.notify({ type: 'compensated', task: entry.task, result });
  }

  private abandon(entry: Entry, reason: 'expired' | 'dropped' | 'closed', error?: unknown): void {
    if (entry.done) return;
    this.counts.abandoned += 1;
    this.finish(entry);
    this.notify({
      type: 'abandoned',
      task: entry.task,
      reason,
      ...(error !== undefined ? { error } : {}),
    });
  }

  private finish(entry: Entry): void {
    entry.done = true;
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    this.entries.delete(entry);
    if (this.entries.size === 0) for (const resolve of this.waiters.splice(0)) resolve();
  }
}
