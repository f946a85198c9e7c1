import { MemoryStore, type LockoutStore } from '../../src';
import type { StoreContext } from './lockout-store.contract';

/**
 * Contract context on memory. One MemoryStore is the shared backend: every "store" of the context
 * is that object, as two engines in one process would share it. Its clock is real time plus what
 * the tests advanced (memoryContext), or a frozen clock plus that (frozenMemoryContext). A store with other options is a new MemoryStore on the same clock.
 */
export async function memoryContext(): Promise<StoreContext> {
  return memoryContextWith(Date.now);
}

/** The same on a frozen clock: time passes only when a test advances it (exact time assertions). */
export async function frozenMemoryContext(): Promise<StoreContext> {
  const start = Date.now();
  return memoryContextWith(() => start);
}

async function memoryContextWith(base: () => number): Promise<StoreContext> {
  let skew = 0;
  const now = () => base() + skew;
  const store = new MemoryStore({ now });
  const others: MemoryStore[] = [];
  return {
    makeStore: async (options) => {
      if (!options) return store;
      const other = new MemoryStore({ now, ...options });
      others.push(other);
      return other;
    },
    stateOf: async (s: LockoutStore, instance, org, user) =>
      (s as MemoryStore).hasState({ instance, org, user }) ? 1 : 0,
    cleanup: async () => {
      await Promise.all([store, ...others].map((s) => s.close()));
    },
    advance: (ms) => {
      skew += ms;
    },
  };
}
