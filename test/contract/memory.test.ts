import { MemoryStore, type LockoutStore } from '../../src';
import { describeLockoutStore } from './lockout-store.contract';

describeLockoutStore('memory', async () => {
  // One MemoryStore is the shared backend: every "store" of the context is that object, as two
  // engines in one process would share it. Its clock is real time plus what the tests advanced.
  // A store with other options is a new MemoryStore on the same clock.
  let skew = 0;
  const now = () => Date.now() + skew;
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
});
