import { MemoryStore, type LockoutStore } from '../../src';
import { describeLockoutStore } from './lockout-store.contract';

describeLockoutStore('memory', async () => {
  // One MemoryStore is the shared backend: every "store" of the context is that object, as two
  // engines in one process would share it. Its clock is real time plus what the tests advanced.
  let skew = 0;
  const store = new MemoryStore({ now: () => Date.now() + skew });
  return {
    makeStore: async () => store,
    stateOf: async (s: LockoutStore, instance, org, user) =>
      (s as MemoryStore).hasState({ instance, org, user }) ? 1 : 0,
    cleanup: () => store.close(),
    advance: (ms) => {
      skew += ms;
    },
  };
});
