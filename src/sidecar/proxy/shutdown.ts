/**
 * Shutdown: once closing, new requests are refused (503); the logins in flight are settled
 * first, then the upstream's connections are closed (waiting for responses still streaming, up to
 * a bound, after which they are destroyed).
 */
import type { Dispatcher } from 'undici';
import { noop } from './forward';

const CLOSE_GRACE_MS = 1000;

export interface Shutdown {
  /** True once close() was called: new requests are refused. */
  readonly closing: boolean;
  /** Keeps a login in flight until it is settled. */
  track(work: Promise<void>): void;
  /** Idempotent. */
  close(): Promise<void>;
}

export function createShutdown(pool: Dispatcher, timeoutMs: number): Shutdown {
  const inFlight = new Set<Promise<void>>();
  let closing = false;
  let closed: Promise<void> | undefined;
  return {
    get closing() {
      return closing;
    },
    track(work) {
      inFlight.add(work);
      void work.finally(() => inFlight.delete(work));
    },
    close: () =>
      (closed ??= (async () => {
        closing = true;
        await Promise.allSettled([...inFlight]);
        let timer: NodeJS.Timeout | undefined;
        const graceful = pool.close().then(() => true);
        const late = new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), Math.min(timeoutMs, 30_000) + CLOSE_GRACE_MS);
          timer.unref();
        });
        const ok = await Promise.race([graceful, late]);
        clearTimeout(timer);
        if (!ok) await pool.destroy().catch(noop);
      })()),
  };
}
