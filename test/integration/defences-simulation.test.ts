/**
 * Attack simulations of issue 12 with their figures, on a MemoryStore whose clock the test moves
 * (so every figure is exact and the run takes milliseconds):
 *   - temporary lockout: an attacker who guesses one account without pause for 24 h gets a bounded
 *     number of evaluated guesses, the locks growing 15 min, 30 min, 1 h … up to the cap; the real
 *     user is locked out only until each lock ends, not for good;
 *   - repeat-password forgiveness: a user (or a client retrying) sending the same wrong password
 *     20 times is counted once.
 */
import { randomBytes } from 'node:crypto';
import { LockoutEngine, MemoryStore, type LockoutEvent } from '../../src';

describe('attack simulations', () => {
  it('temporary lockout: a day of non-stop guessing against one account, 10 attempts, 15 min doubling to 4 h', async () => {
    let now = 1_800_000_000_000;
    const store = new MemoryStore({ now: () => now, purgeIntervalMs: 0 });
    const events: LockoutEvent[] = [];
    const engine = new LockoutEngine({
      store,
      instanceId: 'sim',
      defaults: { maxPasswordAttempts: 10, maxOtpAttempts: 10 },
      onEvent: (e) => events.push(e),
      defences: {
        values: { temporaryLockout: { enabled: true, durationMs: 900_000, maxDurationMs: 14_400_000 } },
      },
    });
    const end = now + 86_400_000;
    let evaluated = 0;
    let refused = 0;
    // one guess a second, all day
    while (now < end) {
      const r = await engine.check('o', 'victim', 'password', () => {
        evaluated++;
        return false;
      });
      if (r.outcome === 'locked') refused++;
      now += 1000;
    }
    const locks = events.filter((e): e is Extract<LockoutEvent, { type: 'lock' }> => e.type === 'lock');
    const lengths = locks.map((l) => (l.lockedUntil! - l.lockedAt!) / 60_000);
    const unlocks = events.filter((e) => e.type === 'unlock').length;
    console.log(
      `temporary lockout, 24 h at 1 guess/s: ${evaluated} guesses evaluated (permanent lockout: 10), ${refused} refused unevaluated; ` +
        `${locks.length} locks of ${lengths.join(', ')} min; ${unlocks} automatic unlocks`,
    );
    // 15, 30, 60, 120, 240, 240, … minutes: each lock after 10 evaluated guesses
    expect(lengths.slice(0, 6)).toEqual([15, 30, 60, 120, 240, 240]);
    expect(evaluated).toBe(10 * locks.length);
    // 15 + 30 + 60 + 120 = 225 min, then 240-min locks: 4 + ceil((1440 − 225 − ε) / 240) locks in a day
    expect(locks.length).toBe(10);
    expect(unlocks).toBe(locks.length - 1);
    engine.close();
    await store.close();
  });

  it('repeat-password forgiveness: the same wrong password 20 times counts once, 20 different count up to the limit', async () => {
    const store = new MemoryStore({ purgeIntervalMs: 0 });
    const engine = new LockoutEngine({
      store,
      instanceId: 'sim',
      defaults: { maxPasswordAttempts: 10, maxOtpAttempts: 10 },
      defences: {
        values: { repeatPassword: { enabled: true, remember: 5 } },
        repeatPasswordKey: randomBytes(32),
      },
    });
    for (let i = 0; i < 20; i++)
      await engine.check('o', 'same', 'password', () => false, { password: 'Summer2026!' });
    const outcomes: string[] = [];
    for (let i = 0; i < 20; i++) {
      outcomes.push(
        (await engine.check('o', 'diff', 'password', () => false, { password: `guess-${i}` })).outcome,
      );
    }
    const same = (await engine.getUserStatus('o', 'same')).failedAttempts.password;
    const diff = (await engine.getUserStatus('o', 'diff')).failedAttempts.password;
    console.log(
      `repeat-password: same wrong password x20 counted ${same}; 20 different counted ${diff}, ${outcomes.filter((o) => o === 'locked').length} refused as locked`,
    );
    expect(same).toBe(1);
    expect(diff).toBe(10);
    expect(outcomes.filter((o) => o === 'locked')).toHaveLength(10);
    engine.close();
    await store.close();
  });
});
