/**
 * Model-based test (issue 8) on the memory store, whose clock the test sets: every answer,
 * time-dependent ones included, must be exactly the reference model's.
 */
import { MemoryStore } from '../../src';
import { checkAgainstModel } from './harness';

describe('LockoutStore model: memory', () => {
  it('answers every random sequence of store operations as the reference model does', async () => {
    await checkAgainstModel({
      makeStore: async () => {
        let now = 0;
        const store = new MemoryStore({ now: () => now, purgeIntervalMs: 0 });
        return { store, mode: 'exact', setNow: (t) => (now = t) };
      },
      leaseMs: 600,
      numRuns: 1500,
      maxCommands: 40,
      seed: 8008,
      timeLimitMs: 20_000,
    });
  });
});
