/**
 * The defences of issue 12 (temporary lockout, repeat-password forgiveness, per-org defence
 * settings), one suite for every store: called with the contexts of the LockoutStore contract
 * (memory with an injected clock, standalone Redis and a Redis Cluster with real time). Times on
 * Redis are a few hundred ms, and what is asserted is state (lockedUntil − lockedAt, counters,
 * listings), never how long something took.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import {
  LockoutEngine,
  type CheckResult,
  type LockoutEngineOptions,
  type LockoutEvent,
  type LockoutStore,
} from '../../src';
import type { DefencesConfig, DefenceValues } from '../../src/core/defences';
import type { StoreContext } from './lockout-store.contract';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function describeDefences(name: string, makeContext: () => Promise<StoreContext>): void {
  describe(`defences: ${name}`, () => {
    let ctx: StoreContext;
    let instanceId: string;
    const engines: LockoutEngine[] = [];
    const key = randomBytes(32);

    beforeAll(async () => {
      ctx = await makeContext();
    });
    afterAll(async () => {
      await ctx.cleanup();
    });
    beforeEach(() => {
      instanceId = `inst-${randomUUID()}`;
    });
    afterEach(() => {
      for (const e of engines.splice(0)) e.close();
    });

    /** A lock's first length: 60 s on memory (the clock is moved), 300 ms on Redis (real time). */
    const lockMs = () => (ctx.advance ? 60_000 : 300);

    function defences(values: DefenceValues): DefencesConfig {
      return { values, repeatPasswordKey: key };
    }

    async function engine(
      options: Partial<LockoutEngineOptions> = {},
      store?: LockoutStore,
    ): Promise<{ e: LockoutEngine; events: LockoutEvent[] }> {
      const events: LockoutEvent[] = [];
      const e = new LockoutEngine({
        store: store ?? (await ctx.makeStore()),
        instanceId,
        defaults: { maxPasswordAttempts: 3, maxOtpAttempts: 3 },
        onEvent: (ev) => events.push(ev),
        ...options,
      });
      engines.push(e);
      return { e, events };
    }

    const temporary = (): DefencesConfig =>
      defences({
        temporaryLockout: { enabled: true, durationMs: lockMs(), maxDurationMs: 4 * lockMs() },
      });

    /** Lets `ms` of store time pass (memory: the clock jumps; Redis: polls until `holds`). */
    async function elapse(ms: number, holds: () => Promise<boolean>): Promise<void> {
      if (ctx.advance) {
        ctx.advance(ms);
        expect(await holds()).toBe(true);
        return;
      }
      const deadline = Date.now() + ms + 15_000;
      while (!(await holds())) {
        if (Date.now() > deadline) throw new Error(`condition still false ${ms} ms + 15 s later`);
        await sleep(50);
      }
    }

    /** `n` wrong password checks in a row; the last result. */
    async function wrong(e: LockoutEngine, user: string, n: number, password?: string): Promise<CheckResult> {
      let r: CheckResult | undefined;
      for (let i = 0; i < n; i++) {
        r = await e.check('o', user, 'password', () => false, password === undefined ? {} : { password });
      }
      return r!;
    }

    const lockEvents = (events: LockoutEvent[]) =>
      events.filter((ev): ev is Extract<LockoutEvent, { type: 'lock' }> => ev.type === 'lock');

    describe('temporary lockout', () => {
      it('unlocks at lockedUntil, clears the counters of that lock, and doubles on each consecutive lock up to the cap', async () => {
        const { e, events } = await engine({ defences: temporary() });
        const L = lockMs();
        const lengths: number[] = [];
        for (let round = 1; round <= 4; round++) {
          await wrong(e, 'u', 3);
          const lock = lockEvents(events).at(-1)!;
          expect(lock).toMatchObject({ reason: 'failures', factor: 'password' });
          const status = await e.getUserStatus('o', 'u');
          if (status.locked) {
            // read before the lock ended (always on memory): the status shows its end
            expect(status.lockedUntil).toBe(lock.lockedUntil);
            expect((await e.listLocked('o')).users.map((u) => u.userId)).toEqual(['u']);
            if (ctx.advance) {
              ctx.advance(lock.lockedUntil! - lock.lockedAt! - 1);
              expect((await e.getUserStatus('o', 'u')).locked).toBe(true);
              expect(await e.check('o', 'u', 'password', () => true)).toMatchObject({ outcome: 'locked' });
            }
          }
          await elapse(ctx.advance ? 1 : L, async () => !(await e.getUserStatus('o', 'u')).locked);
          lengths.push(lock.lockedUntil! - lock.lockedAt!);
          const after = await e.getUserStatus('o', 'u');
          expect(after).toMatchObject({ locked: false, failedAttempts: { password: 0 } });
          expect(after.lockedUntil).toBeUndefined();
          expect((await e.listLocked('o')).users).toEqual([]);
        }
        // durationMs × 2^(n−1), capped at maxDurationMs = 4 × durationMs
        expect(lengths).toEqual([L, 2 * L, 4 * L, 4 * L]);
        console.log(`temporary lockout (${name}): consecutive lock lengths ${lengths.join(', ')} ms`);
        expect(events.filter((ev) => ev.type === 'unlock')).toHaveLength(4);
        expect(events.find((ev) => ev.type === 'unlock')).toMatchObject({ reason: 'automatic', user: 'u' });
      });

      it('restarts at durationMs after a success, an admin unlock or a password change', async () => {
        const { e, events } = await engine({ defences: temporary() });
        const L = lockMs();
        const lockLength = async (user: string): Promise<number> => {
          await wrong(e, user, 3);
          const lock = lockEvents(events).at(-1)!;
          return lock.lockedUntil! - lock.lockedAt!;
        };
        const ended = (user: string) => async () => !(await e.getUserStatus('o', user)).locked;
        // success
        expect(await lockLength('s')).toBe(L);
        await elapse(L, ended('s'));
        expect(await e.check('o', 's', 'password', () => true)).toMatchObject({ outcome: 'success' });
        expect(await lockLength('s')).toBe(L);
        // admin unlock
        await e.unlockUser('o', 's');
        expect(await lockLength('s')).toBe(L);
        // password change (does not unlock; the next lock is the first again)
        await e.passwordChanged('o', 's');
        await elapse(L, ended('s'));
        expect(await lockLength('s')).toBe(L);
      });

      it('keeps admin locks permanent, and an admin lock makes a temporary lock permanent', async () => {
        const long = 60_000; // long enough on Redis too: nothing here waits for a lock to end
        const { e, events } = await engine({
          defences: defences({ temporaryLockout: { enabled: true, durationMs: long, maxDurationMs: long } }),
        });
        await e.lockUser('o', 'admin');
        expect(await e.getUserStatus('o', 'admin')).toMatchObject({ locked: true });
        expect((await e.getUserStatus('o', 'admin')).lockedUntil).toBeUndefined();
        await wrong(e, 'temp', 3);
        const temp = await e.getUserStatus('o', 'temp');
        expect(temp.lockedUntil).toBe((temp.lockedAt ?? 0) + long);
        await e.lockUser('o', 'temp');
        expect(lockEvents(events).at(-1)).toMatchObject({ reason: 'admin', user: 'temp' });
        const permanent = await e.getUserStatus('o', 'temp');
        expect(permanent).toMatchObject({ locked: true, lockedAt: temp.lockedAt });
        expect(permanent.lockedUntil).toBeUndefined();
        if (ctx.advance) {
          ctx.advance(10 * long);
          expect((await e.getUserStatus('o', 'temp')).locked).toBe(true);
          expect((await e.getUserStatus('o', 'admin')).locked).toBe(true);
        }
      });

      it('locks for good with the policy off, as without defences', async () => {
        const { e } = await engine({
          defences: defences({ temporaryLockout: { enabled: false, durationMs: 100, maxDurationMs: 100 } }),
        });
        await wrong(e, 'u', 3);
        const s = await e.getUserStatus('o', 'u');
        expect(s.locked).toBe(true);
        expect(s.lockedUntil).toBeUndefined();
      });
    });

    describe('repeat-password forgiveness', () => {
      it('counts the same wrong password 20 times once, and 20 different ones up to the limit', async () => {
        const { e, events } = await engine({
          defaults: { maxPasswordAttempts: 10, maxOtpAttempts: 10 },
          defences: defences({ repeatPassword: { enabled: true, remember: 5 } }),
        });
        let same: CheckResult | undefined;
        for (let i = 0; i < 20; i++) same = await wrong(e, 'same', 1, 'hunter2');
        expect(same).toMatchObject({ outcome: 'failure', failedAttempts: 1, locked: false });
        expect(events.filter((ev) => ev.type === 'forgiven')).toHaveLength(19);
        const outcomes: string[] = [];
        for (let i = 0; i < 20; i++) outcomes.push((await wrong(e, 'diff', 1, `guess-${i}`)).outcome);
        const counted = (await e.getUserStatus('o', 'diff')).failedAttempts.password;
        expect(counted).toBe(10);
        expect(outcomes.filter((o) => o === 'failure')).toHaveLength(10);
        expect(outcomes.filter((o) => o === 'locked')).toHaveLength(10);
        console.log(
          `repeat-password (${name}): same wrong password ×20 → counted ${(await e.getUserStatus('o', 'same')).failedAttempts.password}; 20 different → counted ${counted}, locked`,
        );
      });

      it('counts parallel repeats of one wrong password once (decided in the settle)', async () => {
        const { e } = await engine({
          defaults: { maxPasswordAttempts: 10, maxOtpAttempts: 10 },
          defences: defences({ repeatPassword: { enabled: true, remember: 5 } }),
        });
        const results = await Promise.all(
          Array.from({ length: 10 }, () =>
            e.check('o', 'par', 'password', () => false, { password: 'same-wrong' }),
          ),
        );
        expect(results.every((r) => r.outcome === 'failure')).toBe(true);
        expect((await e.getUserStatus('o', 'par')).failedAttempts.password).toBe(1);
      });

      it('remembers only the last `remember` wrong passwords, and forgets them on success, unlock and password change', async () => {
        const { e } = await engine({
          defaults: { maxPasswordAttempts: 50, maxOtpAttempts: 50 },
          defences: defences({ repeatPassword: { enabled: true, remember: 2 } }),
        });
        const count = async () => (await e.getUserStatus('o', 'r')).failedAttempts.password;
        await wrong(e, 'r', 1, 'a');
        await wrong(e, 'r', 1, 'b');
        await wrong(e, 'r', 1, 'a'); // remembered: not counted
        expect(await count()).toBe(2);
        await wrong(e, 'r', 1, 'c'); // 'a' drops out (remember 2: b, c)
        await wrong(e, 'r', 1, 'a');
        expect(await count()).toBe(4);
        await e.passwordChanged('o', 'r');
        await wrong(e, 'r', 1, 'a');
        expect(await count()).toBe(1);
        await e.check('o', 'r', 'password', () => true);
        await wrong(e, 'r', 1, 'a');
        expect(await count()).toBe(1);
        // without the password (an attempt settled by id) every failure counts
        await wrong(e, 'r', 2);
        expect(await count()).toBe(3);
      });

      it('counts every failure when forgiveness is off or the password is not given', async () => {
        const { e } = await engine({
          defaults: { maxPasswordAttempts: 50, maxOtpAttempts: 50 },
          defences: defences({}),
        });
        await wrong(e, 'off', 5, 'same');
        expect((await e.getUserStatus('o', 'off')).failedAttempts.password).toBe(5);
      });
    });

    describe('per-org defence settings', () => {
      it('inherit per defence from the instance, with isDefault, details and errors as lockout settings', async () => {
        const { e } = await engine({ defences: temporary() });
        const inherited = await e.getEffectiveDefences('org-a');
        expect(inherited).toMatchObject({
          isDefault: true,
          resourceOwnerType: 'RESOURCE_OWNER_TYPE_INSTANCE',
          values: { temporaryLockout: { enabled: true }, repeatPassword: { enabled: false } },
        });
        const d = await e.writeOrgDefences('org-a', {
          op: 'add',
          values: { repeatPassword: { enabled: true, remember: 3 } },
        });
        expect(d).toMatchObject({ sequence: 1, resourceOwner: 'org-a' });
        const own = await e.getEffectiveDefences('org-a');
        expect(own).toMatchObject({
          isDefault: false,
          resourceOwnerType: 'RESOURCE_OWNER_TYPE_ORG',
          inherited: { temporaryLockout: true, repeatPassword: false },
          values: { temporaryLockout: { enabled: true }, repeatPassword: { enabled: true, remember: 3 } },
        });
        await expect(e.writeOrgDefences('org-a', { op: 'add', values: {} })).rejects.toMatchObject({
          code: 'Errors.Org.Defences.AlreadyExists',
        });
        await expect(
          e.writeOrgDefences('org-a', {
            op: 'update',
            values: { repeatPassword: { enabled: true, remember: 3 } },
          }),
        ).rejects.toMatchObject({ code: 'Errors.Org.Defences.NotChanged' });
        expect(
          await e.writeOrgDefences('org-a', {
            op: 'update',
            values: { temporaryLockout: { enabled: false, durationMs: 1000, maxDurationMs: 1000 } },
          }),
        ).toMatchObject({ sequence: 2 });
        // org-a now locks for good; org-b inherits the instance's temporary lockout
        await wrong(e, 'u', 3);
        for (let i = 0; i < 3; i++) await e.check('org-a', 'u', 'password', () => false);
        expect((await e.getUserStatus('org-a', 'u')).lockedUntil).toBeUndefined();
        expect(await e.writeOrgDefences('org-a', { op: 'remove' })).toMatchObject({ sequence: 3 });
        await expect(e.writeOrgDefences('org-a', { op: 'remove' })).rejects.toMatchObject({
          code: 'Errors.Org.Defences.NotFound',
        });
        expect((await e.getEffectiveDefences('org-a')).isDefault).toBe(true);
      });

      it('a change made through one engine is seen by another within 1 s', async () => {
        const { e: a } = await engine({ defences: defences({}) });
        const { e: b } = await engine({ defences: defences({}) });
        expect((await b.getEffectiveDefences('org-x')).isDefault).toBe(true);
        await a.writeOrgDefences('org-x', {
          op: 'add',
          values: { repeatPassword: { enabled: true, remember: 2 } },
        });
        const deadline = Date.now() + 1000;
        let seen = false;
        while (!seen && Date.now() <= deadline) {
          seen = !(await b.getEffectiveDefences('org-x')).isDefault;
          if (!seen) await sleep(20);
        }
        expect(seen).toBe(true);
      });

      it('refuses repeatPassword without an instance key, and every defence route without a defences section', async () => {
        const { e } = await engine({ defences: { values: {} } });
        await expect(
          e.writeOrgDefences('o', { op: 'add', values: { repeatPassword: { enabled: true, remember: 2 } } }),
        ).rejects.toMatchObject({ code: 'Errors.Defences.KeyMissing' });
        const { e: none } = await engine();
        await expect(none.getEffectiveDefences('o')).rejects.toMatchObject({
          code: 'Errors.Defences.Disabled',
        });
      });
    });
  });
}
