import { createActivity } from '../../src/core/activity';
import type { LockoutEvent } from '../../src/core/engine';

const MINUTE = 60_000;
const failure = (org: string): LockoutEvent => ({
  type: 'check',
  org,
  user: 'u',
  factor: 'password',
  outcome: 'failure',
});

describe('activity: per-minute counts of one process', () => {
  it('counts failures, locks and unlocks per org and minute; successes and settings changes are not counted', () => {
    let now = 100 * MINUTE + 5_000;
    const activity = createActivity({ now: () => now });
    activity.record(failure('a'));
    activity.record(failure('a'));
    activity.record({ type: 'check', org: 'a', user: 'u', factor: 'totp', outcome: 'success' });
    activity.record({ type: 'lock', org: 'a', user: 'u', reason: 'failures', factor: 'password' });
    activity.record({ type: 'settings', owner: { type: 'org', org: 'a' }, op: 'add' } as LockoutEvent);
    now += MINUTE;
    activity.record({ type: 'unlock', org: 'a', user: 'u' });
    activity.record(failure('b'));
    expect(activity.read('a', 3)).toEqual([
      { start: 99 * MINUTE, failures: 0, locks: 0, unlocks: 0 },
      { start: 100 * MINUTE, failures: 2, locks: 1, unlocks: 0 },
      { start: 101 * MINUTE, failures: 0, locks: 0, unlocks: 1 },
    ]);
    expect(activity.read('b', 1)).toEqual([{ start: 101 * MINUTE, failures: 1, locks: 0, unlocks: 0 }]);
    expect(activity.read('nobody', 2).every((m) => m.failures === 0)).toBe(true);
  });

  it('keeps only the window: a slot reused a window later starts from zero', () => {
    let now = 0;
    const activity = createActivity({ windowMinutes: 3, now: () => now });
    activity.record(failure('a'));
    now = 3 * MINUTE; // the same slot, three minutes on
    activity.record(failure('a'));
    expect(activity.read('a')).toEqual([
      { start: 1 * MINUTE, failures: 0, locks: 0, unlocks: 0 },
      { start: 2 * MINUTE, failures: 0, locks: 0, unlocks: 0 },
      { start: 3 * MINUTE, failures: 1, locks: 0, unlocks: 0 },
    ]);
    // More minutes than kept: the window.
    expect(activity.read('a', 100)).toHaveLength(3);
  });

  it('keeps at most maxOrgs orgs, dropping the one counted least recently', () => {
    const activity = createActivity({ maxOrgs: 2, now: () => 0 });
    activity.record(failure('a'));
    activity.record(failure('b'));
    activity.record(failure('a')); // a is now the most recent
    activity.record(failure('c')); // drops b
    expect(activity.read('a', 1)[0]!.failures).toBe(2);
    expect(activity.read('b', 1)[0]!.failures).toBe(0);
    expect(activity.read('c', 1)[0]!.failures).toBe(1);
  });

  it('refuses a window outside 1 to 1440 minutes', () => {
    expect(() => createActivity({ windowMinutes: 0 })).toThrow(RangeError);
    expect(() => createActivity({ windowMinutes: 1441 })).toThrow(RangeError);
  });
});
