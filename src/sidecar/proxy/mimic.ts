/**
 * Mimic mode: a locked user is answered as the upstream answers a wrong password, in content
 * and in time. Per route, the proxy keeps the upstream's most recent failure answer and a
 * reservoir of its recent failure latencies (the last `samples`); a lock answer replays that
 * answer after a latency drawn uniformly from the reservoir.
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';

/** An upstream failure answer as relayed to the client. */
export interface RecordedAnswer {
  readonly status: number;
  readonly statusText: string;
  /** The relayed headers (hop-by-hop removed); `date` is given a fresh value on replay. */
  readonly headers: Readonly<OutgoingHttpHeaders>;
  readonly body: Buffer;
}

export interface Mimic {
  /**
   * Records a failure answer and its latency (ms, from the reservation to the answer). An answer
   * that names the user, or sets a cookie, is not kept as the replay (it would leak one client's
   * answer to another); its latency still is.
   */
  record(answer: RecordedAnswer, latencyMs: number, userId: string): void;
  /** The answer to replay, or undefined before the first failure. */
  answer(): RecordedAnswer | undefined;
  /** Waits a latency drawn from the reservoir (resolves early when the client goes away). */
  wait(res: ServerResponse): Promise<void>;
}

/** Headers never replayed: they belong to one client's answer. */
const PRIVATE_HEADERS = new Set(['set-cookie', 'set-cookie2']);

export function createMimic(samples: number, randomInt: (n: number) => number): Mimic {
  const latencies: number[] = [];
  let next = 0;
  let last: RecordedAnswer | undefined;
  let lateness = 0;
  return {
    record(answer, latencyMs, userId) {
      if (latencies.length < samples) latencies.push(latencyMs);
      else latencies[next] = latencyMs;
      next = (next + 1) % samples;
      if (Object.keys(answer.headers).some((h) => PRIVATE_HEADERS.has(h))) return;
      if (userId.length >= 3 && answer.body.toString('utf8').toLowerCase().includes(userId)) return;
      last = answer;
    },
    answer: () => last,
    wait(res) {
      if (latencies.length === 0) return Promise.resolve();
      const ms = latencies[randomInt(latencies.length)]!;
      // A timer fires late (more so on a loaded machine); the recorded latencies already carry the
      // upstream's own lateness, so the replay's is subtracted (a running mean of it).
      const scheduled = Math.max(0, ms - lateness);
      const started = performance.now();
      return new Promise((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          res.off('close', done);
          resolve();
        };
        const timer = setTimeout(() => {
          const late = performance.now() - started - scheduled;
          lateness += (Math.max(0, late) - lateness) / 16;
          done();
        }, scheduled);
        res.once('close', done);
      });
    },
  };
}
