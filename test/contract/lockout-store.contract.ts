/**
 * One contract suite for every LockoutStore: each store test file calls describeLockoutStore()
 * with a context that makes stores on one shared backend (a MemoryStore object, a standalone
 * Redis, a Redis Cluster). The rules are API.md section 1; G1–G3 are exercised with real
 * concurrency: many checks in flight at once through several engines and store connections.
 */
import { randomUUID } from 'node:crypto';
import {
  AlreadyExistsError,
  InvalidArgumentError,
  LockoutEngine,
  NotChangedError,
  NotFoundError,
  type CheckResult,
  type LockoutEngineOptions,
  type LockoutEvent,
  type LockoutStore,
} from '../../src';

/** Options every store takes (API.md; shared semantics 8). */
export interface StoreOptions {
  /** State of an unlocked user expires this long after its last write (0 = never). */
  idleTtlMs?: number;
}

export interface StoreContext {
  /**
   * A new store on the shared backend: for Redis a store with its own new connection, so that
   * several stores from one context act as several processes would. With `options`, a store
   * configured so (on the same backend and clock).
   */
  makeStore(options?: StoreOptions): Promise<LockoutStore>;
  /** How many keys or records the user's state takes (0 when it takes no space). */
  stateOf(store: LockoutStore, instance: string, org: string, user: string): Promise<number>;
  /** Closes what makeStore opened. */
  cleanup(): Promise<void>;
  /**
   * Moves the stores' clock forward by `ms` (a store with an injected clock: MemoryStore).
   * Absent for Redis, whose clock is the server's: there real time has to pass.
   */
  advance?(ms: number): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function describeLockoutStore(name: string, makeContext: () => Promise<StoreContext>): void {
  describe(`LockoutStore contract: ${name}`, () => {
    let ctx: StoreContext;
    let instanceId: string;
    const engines: LockoutEngine[] = [];

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

    async function engine(
      options: Partial<LockoutEngineOptions> = {},
      store?: LockoutStore,
    ): Promise<LockoutEngine> {
      const e = new LockoutEngine({ store: store ?? (await ctx.makeStore()), instanceId, ...options });
      engines.push(e);
      return e;
    }

    const wrong = () => false;
    const right = () => true;

    /**
     * Lets `ms` of store time pass, then requires `holds`. With an injected clock (memory) the
     * clock jumps and `holds` must be true at once; on Redis real time passes and `holds` is
     * polled until a generous deadline (no fixed sleep: a loaded machine only makes it slower).
     */
    const subjectOf = (user: string, org = 'o') => ({ instance: instanceId, org, user });
    const limits = (password: number, otp = password) => ({
      maxPasswordAttempts: password,
      maxOtpAttempts: otp,
    });
    const zero = () => ({ password: 0, totp: 0, otp_sms: 0, otp_email: 0, recovery_code: 0 });

    async function elapse(ms: number, holds: () => Promise<boolean>): Promise<void> {
      if (ctx.advance) {
        ctx.advance(ms);
        expect(await holds()).toBe(true);
        return;
      }
      const deadline = Date.now() + ms + 15_000;
      while (!(await holds())) {
        if (Date.now() > deadline) throw new Error(`condition still false ${ms} ms + 15 s later`);
        await sleep(Math.min(50, ms));
      }
    }

    describe('settings', () => {
      it('serves the configured instance default, and 10/10 when none is configured', async () => {
        const shipped = await engine();
        const s = await shipped.getEffectiveSettings('org-a');
        expect(s).toMatchObject({
          maxPasswordAttempts: 10,
          maxOtpAttempts: 10,
          isDefault: true,
          resourceOwnerType: 'RESOURCE_OWNER_TYPE_INSTANCE',
        });
        expect(s.details).toEqual({ sequence: 0, resourceOwner: instanceId });
        const configured = await engine({ defaults: { maxPasswordAttempts: 3, maxOtpAttempts: 4 } });
        expect(await configured.getInstanceSettings()).toMatchObject({
          maxPasswordAttempts: 3,
          maxOtpAttempts: 4,
        });
      });

      it('adds, updates and resets org settings with details, errors and per-owner sequence', async () => {
        const e = await engine();
        const before = Date.now();
        const added = await e.addOrgSettings('org-a', { maxPasswordAttempts: 3, maxOtpAttempts: '2' });
        expect(added.sequence).toBe(1);
        expect(added.resourceOwner).toBe('org-a');
        expect(added.creationDate).toBeGreaterThanOrEqual(before - 2000);
        expect(added.changeDate).toBe(added.creationDate);
        await expect(e.addOrgSettings('org-a', { maxPasswordAttempts: 5 })).rejects.toBeInstanceOf(
          AlreadyExistsError,
        );

        const eff = await e.getEffectiveSettings('org-a');
        expect(eff).toMatchObject({
          maxPasswordAttempts: 3,
          maxOtpAttempts: 2,
          isDefault: false,
          resourceOwnerType: 'RESOURCE_OWNER_TYPE_ORG',
        });
        expect(eff.details.sequence).toBe(1);

        await expect(
          e.updateOrgSettings('org-a', { maxPasswordAttempts: 3, maxOtpAttempts: 2 }),
        ).rejects.toBeInstanceOf(NotChangedError);
        await sleep(5);
        const updated = await e.updateOrgSettings('org-a', { maxPasswordAttempts: 4, maxOtpAttempts: 2 });
        expect(updated.sequence).toBe(2);
        expect(updated.creationDate).toBe(added.creationDate);
        expect(updated.changeDate).toBeGreaterThan(added.creationDate!);

        const reset = await e.resetOrgSettings('org-a');
        expect(reset.sequence).toBe(3);
        expect(await e.getEffectiveSettings('org-a')).toMatchObject({
          maxPasswordAttempts: 10,
          isDefault: true,
        });
        await expect(e.resetOrgSettings('org-a')).rejects.toBeInstanceOf(NotFoundError);
        await expect(e.updateOrgSettings('org-a', { maxPasswordAttempts: 1 })).rejects.toBeInstanceOf(
          NotFoundError,
        );
        // the sequence survives the reset and other orgs have their own
        expect((await e.addOrgSettings('org-a', { maxPasswordAttempts: 1 })).sequence).toBe(4);
        expect((await e.addOrgSettings('org-b', { maxPasswordAttempts: 1 })).sequence).toBe(1);
      });

      it('a settings change event carries the values it replaced (read by the write itself) and the new ones', async () => {
        const events: LockoutEvent[] = [];
        const e = await engine({ onEvent: (event) => events.push(event) });
        await e.addOrgSettings('org-ev', { maxPasswordAttempts: 3, maxOtpAttempts: 2 });
        await e.updateOrgSettings('org-ev', { maxPasswordAttempts: 4, maxOtpAttempts: 2 });
        await e.resetOrgSettings('org-ev');
        await e.updateInstanceSettings({ maxPasswordAttempts: 7, maxOtpAttempts: 7 });
        expect(events.filter((ev) => ev.type === 'settings')).toEqual([
          {
            type: 'settings',
            owner: { type: 'org', org: 'org-ev' },
            op: 'add',
            before: null,
            after: { maxPasswordAttempts: 3, maxOtpAttempts: 2 },
          },
          {
            type: 'settings',
            owner: { type: 'org', org: 'org-ev' },
            op: 'update',
            before: { maxPasswordAttempts: 3, maxOtpAttempts: 2 },
            after: { maxPasswordAttempts: 4, maxOtpAttempts: 2 },
          },
          {
            type: 'settings',
            owner: { type: 'org', org: 'org-ev' },
            op: 'remove',
            before: { maxPasswordAttempts: 4, maxOtpAttempts: 2 },
            after: null,
          },
          {
            type: 'settings',
            owner: { type: 'instance' },
            op: 'set',
            before: null,
            after: { maxPasswordAttempts: 7, maxOtpAttempts: 7 },
          },
        ]);
      });

      it('changes instance settings, refusing the same values (also when only the default is configured)', async () => {
        const e = await engine({ defaults: { maxPasswordAttempts: 5, maxOtpAttempts: 5 } });
        await expect(
          e.updateInstanceSettings({ maxPasswordAttempts: 5, maxOtpAttempts: 5 }),
        ).rejects.toBeInstanceOf(NotChangedError);
        const d = await e.updateInstanceSettings({ maxPasswordAttempts: 7, maxOtpAttempts: 5 });
        expect(d).toMatchObject({ sequence: 1, resourceOwner: instanceId });
        expect(await e.getEffectiveSettings('any-org')).toMatchObject({
          maxPasswordAttempts: 7,
          isDefault: true,
        });
        await e.addOrgSettings('org-c', { maxPasswordAttempts: 2, maxOtpAttempts: 2 });
        expect(await e.getEffectiveSettings('org-c')).toMatchObject({
          maxPasswordAttempts: 2,
          isDefault: false,
        });
      });

      it('rejects invalid values and ids', async () => {
        const e = await engine();
        for (const bad of [-1, 1.5, 2 ** 32, '12a', true, '-3', '', [1], { n: 1 }]) {
          await expect(e.addOrgSettings('org-a', { maxPasswordAttempts: bad })).rejects.toBeInstanceOf(
            InvalidArgumentError,
          );
        }
        await expect(e.addOrgSettings('', { maxPasswordAttempts: 1 })).rejects.toBeInstanceOf(
          InvalidArgumentError,
        );
        await expect(e.getEffectiveSettings('x'.repeat(257))).rejects.toBeInstanceOf(InvalidArgumentError);
        await expect(e.check('org-a', 'bad\u0000user', 'password', right)).rejects.toBeInstanceOf(
          InvalidArgumentError,
        );
        await expect(e.check('org-a', 'u', 'fingerprint' as never, right)).rejects.toBeInstanceOf(
          InvalidArgumentError,
        );
        expect((await e.addOrgSettings('org-a', { maxPasswordAttempts: 2 ** 32 - 1 })).sequence).toBe(1);
      });

      it('two engines sharing a store see a settings change within 1 s (G3)', async () => {
        const store = await ctx.makeStore();
        const a = await engine({ settingsCacheTtlMs: 1000 }, store);
        const b = await engine({ settingsCacheTtlMs: 1000 });
        expect((await a.getEffectiveSettings('org-g3')).maxPasswordAttempts).toBe(10); // now cached in a
        const changedAt = Date.now();
        await b.addOrgSettings('org-g3', { maxPasswordAttempts: 2, maxOtpAttempts: 2 });
        let seen = -1;
        while (Date.now() - changedAt < 1000) {
          if ((await a.getEffectiveSettings('org-g3')).maxPasswordAttempts === 2) {
            seen = Date.now() - changedAt;
            break;
          }
          await sleep(10);
        }
        expect(seen).toBeGreaterThanOrEqual(0);
        // and the new limit is enforced by a at once
        for (let i = 0; i < 2; i++) await a.check('org-g3', 'u', 'password', wrong);
        expect((await a.getUserStatus('org-g3', 'u')).locked).toBe(true);
      });
    });

    describe('lockout rules', () => {
      it('locks when count + 1 >= max; the reaching attempt gets the invalid answer, later ones locked', async () => {
        const e = await engine({ defaults: { maxPasswordAttempts: 3, maxOtpAttempts: 3 } });
        const r1 = await e.check('o', 'alice', 'password', wrong);
        const r2 = await e.check('o', 'alice', 'password', wrong);
        const r3 = await e.check('o', 'alice', 'password', wrong);
        expect(r1).toEqual({ outcome: 'failure', failedAttempts: 1, locked: false });
        expect(r2).toEqual({ outcome: 'failure', failedAttempts: 2, locked: false });
        expect(r3).toEqual({ outcome: 'failure', failedAttempts: 3, locked: true });
        let evaluated = false;
        const r4 = await e.check('o', 'alice', 'password', () => (evaluated = true));
        expect(r4.outcome).toBe('locked');
        expect(evaluated).toBe(false); // a locked user's credential is never evaluated
        const status = await e.getUserStatus('o', 'alice');
        expect(status.locked).toBe(true);
        expect(status.lockedAt).toBeGreaterThan(0);
        expect(status.failedAttempts.password).toBe(3);
        // every factor is refused while locked
        expect((await e.check('o', 'alice', 'totp', right)).outcome).toBe('locked');
      });

      it('a success resets only its own factor', async () => {
        const e = await engine({ defaults: { maxPasswordAttempts: 5, maxOtpAttempts: 5 } });
        await e.check('o', 'bob', 'password', wrong);
        await e.check('o', 'bob', 'password', wrong);
        await e.check('o', 'bob', 'totp', wrong);
        await e.check('o', 'bob', 'otp_sms', wrong);
        expect(await e.check('o', 'bob', 'password', right)).toEqual({
          outcome: 'success',
          failedAttempts: 0,
          locked: false,
        });
        const s = await e.getUserStatus('o', 'bob');
        expect(s.failedAttempts).toEqual({
          password: 0,
          totp: 1,
          otp_sms: 1,
          otp_email: 0,
          recovery_code: 0,
        });
      });

      it('counts each OTP factor separately against maxOtpAttempts, recovery codes too', async () => {
        const e = await engine({ defaults: { maxPasswordAttempts: 10, maxOtpAttempts: 2 } });
        await e.check('o', 'carol', 'totp', wrong);
        await e.check('o', 'carol', 'otp_sms', wrong);
        await e.check('o', 'carol', 'otp_email', wrong);
        expect((await e.getUserStatus('o', 'carol')).locked).toBe(false);
        expect(await e.check('o', 'carol', 'recovery_code', wrong)).toMatchObject({
          failedAttempts: 1,
          locked: false,
        });
        expect(await e.check('o', 'carol', 'recovery_code', wrong)).toMatchObject({
          failedAttempts: 2,
          locked: true,
        });
      });

      it('password change resets the password counter without unlocking', async () => {
        const e = await engine({ defaults: { maxPasswordAttempts: 2, maxOtpAttempts: 5 } });
        await e.check('o', 'dave', 'password', wrong);
        await e.check('o', 'dave', 'totp', wrong);
        await e.passwordChanged('o', 'dave');
        let s = await e.getUserStatus('o', 'dave');
        expect(s.failedAttempts.password).toBe(0);
        expect(s.failedAttempts.totp).toBe(1);
        await e.check('o', 'dave', 'password', wrong);
        await e.check('o', 'dave', 'password', wrong);
        await e.passwordChanged('o', 'dave');
        s = await e.getUserStatus('o', 'dave');
        expect(s.locked).toBe(true);
        expect(s.failedAttempts.password).toBe(0);
      });

      it('unlock clears the lock and all counters; lock locks; both refuse a no-op', async () => {
        const e = await engine({ defaults: { maxPasswordAttempts: 1, maxOtpAttempts: 5 } });
        await expect(e.unlockUser('o', 'erin')).rejects.toBeInstanceOf(NotChangedError);
        await e.check('o', 'erin', 'totp', wrong);
        await e.check('o', 'erin', 'password', wrong);
        expect((await e.getUserStatus('o', 'erin')).locked).toBe(true);
        await e.unlockUser('o', 'erin');
        const s = await e.getUserStatus('o', 'erin');
        expect(s.locked).toBe(false);
        expect(s.lockedAt).toBeUndefined();
        expect(s.failedAttempts).toEqual({
          password: 0,
          totp: 0,
          otp_sms: 0,
          otp_email: 0,
          recovery_code: 0,
        });
        expect((await e.check('o', 'erin', 'password', right)).outcome).toBe('success');

        const { lockedAt } = await e.lockUser('o', 'erin');
        expect(lockedAt).toBeGreaterThan(0);
        await expect(e.lockUser('o', 'erin')).rejects.toBeInstanceOf(NotChangedError);
        expect((await e.check('o', 'erin', 'password', right)).outcome).toBe('locked');
        expect((await e.getUserStatus('o', 'erin')).lockedAt).toBe(lockedAt);
      });

      it('max 0 never locks but still counts; lowering the limit locks at the next failure', async () => {
        const e = await engine({ defaults: { maxPasswordAttempts: 0, maxOtpAttempts: 0 } });
        for (let i = 0; i < 12; i++) await e.check('o', 'frank', 'password', wrong);
        let s = await e.getUserStatus('o', 'frank');
        expect(s.locked).toBe(false);
        expect(s.failedAttempts.password).toBe(12);
        await e.addOrgSettings('o', { maxPasswordAttempts: 5, maxOtpAttempts: 5 });
        expect((await e.getUserStatus('o', 'frank')).locked).toBe(false); // not locked by the change itself
        expect(await e.check('o', 'frank', 'password', wrong)).toEqual({
          outcome: 'failure',
          failedAttempts: 13,
          locked: true,
        });
        s = await e.getUserStatus('o', 'frank');
        expect(s.locked).toBe(true);
      });

      it('a user above a lowered limit is checked one at a time, and a success resets', async () => {
        const e = await engine({ defaults: { maxPasswordAttempts: 0, maxOtpAttempts: 0 } });
        for (let i = 0; i < 4; i++) await e.check('o', 'gina', 'password', wrong);
        await e.addOrgSettings('o', { maxPasswordAttempts: 2, maxOtpAttempts: 2 });
        const first = await e.reserve('o', 'gina', 'password');
        expect(first.status).toBe('admitted');
        expect((await e.reserve('o', 'gina', 'password')).status).toBe('busy');
        if (first.status !== 'admitted') throw new Error('unreachable');
        expect(await e.settle(first.reservation, 'success')).toEqual({ failedAttempts: 0, locked: false });
      });

      it('orgs and instances are isolated; ids are case-sensitive', async () => {
        const e = await engine({ defaults: { maxPasswordAttempts: 1, maxOtpAttempts: 1 } });
        await e.check('org-1', 'User', 'password', wrong);
        expect((await e.getUserStatus('org-1', 'User')).locked).toBe(true);
        expect((await e.getUserStatus('org-2', 'User')).locked).toBe(false);
        expect((await e.getUserStatus('org-1', 'user')).locked).toBe(false);
        const other = new LockoutEngine({ store: await ctx.makeStore(), instanceId: `${instanceId}-other` });
        engines.push(other);
        expect((await other.getUserStatus('org-1', 'User')).locked).toBe(false);
        // ids that would collide if keys were joined naively
        await e.check('a:b', 'c', 'password', wrong);
        expect((await e.getUserStatus('a', 'b:c')).locked).toBe(false);
      });

      it('lists the locked users of an org with a cursor', async () => {
        const e = await engine({ defaults: { maxPasswordAttempts: 1, maxOtpAttempts: 1 } });
        for (const u of ['u3', 'u1', 'u2', 'u4']) await e.check('org-l', u, 'password', wrong);
        await e.lockUser('org-l', 'u5');
        await e.check('org-other', 'x', 'password', wrong);
        await e.unlockUser('org-l', 'u4');
        const p1 = await e.listLocked('org-l', { limit: 2 });
        expect(p1.users.map((u) => u.userId)).toEqual(['u1', 'u2']);
        expect(p1.users.every((u) => u.lockedAt > 0)).toBe(true);
        expect(p1.nextCursor).toBeDefined();
        const p2 = await e.listLocked('org-l', { limit: 2, cursor: p1.nextCursor });
        expect(p2.users.map((u) => u.userId)).toEqual(['u3', 'u5']);
        expect(p2.nextCursor).toBeUndefined();
      });

      it('a user with no failures and no lock takes no space; a tombstone goes when its lease ends', async () => {
        const store = await ctx.makeStore();
        const e = await engine(
          { leaseMs: 1000, defaults: { maxPasswordAttempts: 3, maxOtpAttempts: 3 } },
          store,
        );
        await e.check('o', 'hank', 'password', wrong);
        await e.check('o', 'hank', 'totp', wrong);
        expect(await ctx.stateOf(store, instanceId, 'o', 'hank')).toBeGreaterThan(0);
        await e.check('o', 'hank', 'password', right);
        await e.check('o', 'hank', 'totp', right);
        expect(await ctx.stateOf(store, instanceId, 'o', 'hank')).toBe(0);
        await e.check('o', 'ivy', 'password', right);
        const r = await e.reserve('o', 'ivy', 'password');
        if (r.status !== 'admitted') throw new Error('expected admitted');
        await e.settle(r.reservation, 'release');
        expect(await ctx.stateOf(store, instanceId, 'o', 'ivy')).toBe(0);
        // a release of an id the store never saw (a compensated reserve) is tombstoned for a lease
        expect(await store.settle(subjectOf('ivy'), 'password', 'lost', 'release', limits(3), 1000)).toEqual({
          status: 'unknown',
        });
        expect(await store.reserve(subjectOf('ivy'), 'password', limits(3), 1000, 'lost')).toEqual({
          status: 'gone',
        });
        expect(await ctx.stateOf(store, instanceId, 'o', 'ivy')).toBeGreaterThan(0);
        await elapse(1001, async () => (await ctx.stateOf(store, instanceId, 'o', 'ivy')) === 0);
        expect((await e.getUserStatus('o', 'hank')).failedAttempts).toEqual({
          password: 0,
          totp: 0,
          otp_sms: 0,
          otp_email: 0,
          recovery_code: 0,
        });
      });
    });

    describe('reservation protocol', () => {
      it('settles exactly once; a second settle or a forged id is refused, not counted', async () => {
        const e = await engine({ defaults: { maxPasswordAttempts: 5, maxOtpAttempts: 5 } });
        const r = await e.reserve('o', 'jane', 'password');
        if (r.status !== 'admitted') throw new Error('expected admitted');
        expect(r.reservation.expiresAt).toBeGreaterThan(Date.now() - 2000);
        expect(await e.settle(r.reservation.attemptId, 'failure')).toEqual({
          failedAttempts: 1,
          locked: false,
        });
        await expect(e.settle(r.reservation.attemptId, 'failure')).rejects.toBeInstanceOf(NotFoundError);
        await expect(e.settle(r.reservation.attemptId, 'success')).rejects.toBeInstanceOf(NotFoundError);
        const forged = r.reservation.attemptId.replace(/\.[^.]+$/, '.AAAAAAAAAAAAAAAAAAAAAA');
        await expect(e.settle(forged, 'failure')).rejects.toBeInstanceOf(NotFoundError);
        await expect(e.settle('garbage', 'failure')).rejects.toBeInstanceOf(InvalidArgumentError);
        expect((await e.getUserStatus('o', 'jane')).failedAttempts.password).toBe(1);
      });

      it('release forgets the attempt uncounted; an evaluator that throws releases', async () => {
        const e = await engine({ defaults: { maxPasswordAttempts: 1, maxOtpAttempts: 1 } });
        const r = await e.reserve('o', 'kim', 'password');
        if (r.status !== 'admitted') throw new Error('expected admitted');
        expect((await e.reserve('o', 'kim', 'password')).status).toBe('busy');
        expect(await e.settle(r.reservation, 'release')).toEqual({ failedAttempts: 0, locked: false });
        await expect(
          e.check('o', 'kim', 'password', () => {
            throw new Error('verifier down');
          }),
        ).rejects.toThrow('verifier down');
        const s = await e.getUserStatus('o', 'kim');
        expect(s.failedAttempts.password).toBe(0);
        expect((await e.reserve('o', 'kim', 'password')).status).toBe('admitted');
      });

      it('a lease not settled in time counts as a failure, once, and may lock', async () => {
        const e = await engine({ leaseMs: 1000, defaults: { maxPasswordAttempts: 2, maxOtpAttempts: 2 } });
        const a = await e.reserve('o', 'leo', 'password');
        const b = await e.reserve('o', 'leo', 'password');
        if (a.status !== 'admitted' || b.status !== 'admitted') throw new Error('expected admitted');
        expect((await e.reserve('o', 'leo', 'password')).status).toBe('busy');
        expect((await e.getUserStatus('o', 'leo')).failedAttempts.password).toBe(0);
        // both leases (b's began a little after a's: on a loaded machine, tens of ms)
        await elapse(1001, async () => (await e.getUserStatus('o', 'leo')).failedAttempts.password >= 2);
        const s = await e.getUserStatus('o', 'leo');
        expect(s.failedAttempts.password).toBe(2);
        expect(s.locked).toBe(true);
        await expect(e.settle(a.reservation, 'success')).rejects.toBeInstanceOf(NotFoundError);
        expect((await e.getUserStatus('o', 'leo')).failedAttempts.password).toBe(2);
        expect((await e.listLocked('o')).users.map((u) => u.userId)).toEqual(['leo']);
      });

      it('G1: 200 concurrent wrong checks of one user with max 5 through 4 stores → exactly 5 evaluated, locked', async () => {
        const stores = await Promise.all([0, 1, 2, 3].map(() => ctx.makeStore()));
        const es = await Promise.all(
          stores.map((s) => engine({ defaults: { maxPasswordAttempts: 5, maxOtpAttempts: 5 } }, s)),
        );
        let evaluated = 0;
        let inFlight = 0;
        let maxInFlight = 0;
        const slowWrong = async () => {
          evaluated++;
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          await sleep(20);
          inFlight--;
          return false;
        };
        const results: CheckResult[] = await Promise.all(
          Array.from({ length: 200 }, (_, i) => es[i % 4]!.check('o', 'mallory', 'password', slowWrong)),
        );
        expect(evaluated).toBe(5);
        expect(maxInFlight).toBeGreaterThan(1); // they really overlapped
        const failures = results.filter((r) => r.outcome === 'failure');
        expect(failures).toHaveLength(5);
        expect(failures.filter((r) => r.outcome === 'failure' && r.locked)).toHaveLength(1);
        expect(results.every((r) => ['failure', 'busy', 'locked'].includes(r.outcome))).toBe(true);
        const s = await es[0]!.getUserStatus('o', 'mallory');
        expect(s.locked).toBe(true);
        expect(s.failedAttempts.password).toBe(5);
        // the busy ones retry: every one of them is now refused as locked, never evaluated
        const retries = await Promise.all(
          results
            .filter((r) => r.outcome === 'busy')
            .map((_, i) => es[i % 4]!.check('o', 'mallory', 'password', slowWrong)),
        );
        expect(retries.every((r) => r.outcome === 'locked')).toBe(true);
        expect(evaluated).toBe(5);
      });

      it('G2: 20 concurrent correct checks with max 5 → no lock, surplus busy', async () => {
        const stores = await Promise.all([0, 1].map(() => ctx.makeStore()));
        const es = await Promise.all(
          stores.map((s) => engine({ defaults: { maxPasswordAttempts: 5, maxOtpAttempts: 5 } }, s)),
        );
        const slowRight = async () => {
          await sleep(30);
          return true;
        };
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => es[i % 2]!.check('o', 'nina', 'password', slowRight)),
        );
        const successes = results.filter((r) => r.outcome === 'success').length;
        const busy = results.filter((r) => r.outcome === 'busy');
        expect(successes).toBeGreaterThanOrEqual(5);
        expect(busy.length).toBeGreaterThan(0);
        expect(successes + busy.length).toBe(20);
        for (const b of busy) if (b.outcome === 'busy') expect(b.retryAfterMs).toBeGreaterThan(0);
        const s = await es[0]!.getUserStatus('o', 'nina');
        expect(s.locked).toBe(false);
        expect(s.failedAttempts.password).toBe(0);
      });

      it('G1 with mixed outcomes: the store counts each failed evaluation once, never past the limit', async () => {
        const stores = await Promise.all([0, 1, 2].map(() => ctx.makeStore()));
        const es = await Promise.all(
          stores.map((s) => engine({ defaults: { maxPasswordAttempts: 4, maxOtpAttempts: 4 } }, s)),
        );
        let evaluated = 0;
        let evaluatedWrong = 0;
        let lockAnswered = false;
        let evaluatedAfterLock = 0;
        const results = await Promise.all(
          Array.from({ length: 120 }, (_, i) =>
            es[i % 3]!.check('o', 'oscar', 'totp', async () => {
              evaluated++;
              if (lockAnswered) evaluatedAfterLock++;
              await sleep(5 + (i % 7));
              const ok = i % 5 === 0;
              if (!ok) evaluatedWrong++;
              return ok;
            }).then((r) => {
              if (r.outcome === 'failure' && r.locked) lockAnswered = true;
              return r;
            }),
          ),
        );
        const s = await es[0]!.getUserStatus('o', 'oscar');
        const failures = results.flatMap((r) => (r.outcome === 'failure' ? [r] : []));
        const successes = results.filter((r) => r.outcome === 'success');
        // every evaluation was settled by the store: each wrong one as a failure it counted
        expect(failures).toHaveLength(evaluatedWrong);
        expect(failures.length + successes.length).toBe(evaluated);
        // the counter the store answered after each failure: 1..4, never past the limit; a success
        // resets it, so each value k was preceded by a k-1 of the same run (no failure lost or
        // counted twice) and a new run of 1s starts only at the start or after a success
        const seen = [0, 1, 2, 3, 4, 5].map((k) => failures.filter((f) => f.failedAttempts === k).length);
        expect(seen[0]).toBe(0);
        expect(seen[5]).toBe(0);
        expect(failures.every((f) => f.failedAttempts >= 1 && f.failedAttempts <= 4)).toBe(true);
        for (let k = 2; k <= 4; k++) expect(seen[k]).toBeLessThanOrEqual(seen[k - 1]!);
        expect(seen[1]).toBeLessThanOrEqual(successes.length + 1);
        // the limit locks exactly when a 4th failure in a row is counted, and nothing is evaluated after
        const locking = failures.filter((f) => f.locked);
        expect(locking).toHaveLength(seen[4]!);
        expect(evaluatedAfterLock).toBe(0);
        expect(s.locked).toBe(locking.length === 1);
        if (s.locked) expect(s.failedAttempts.totp).toBe(4);
        else expect(s.failedAttempts.totp).toBeLessThan(4);
      });
    });

    describe('idempotent reservations and expired leases (G5)', () => {
      /**
       * A condition that holds once a lease of `leaseMs` taken now has ended, without reading the
       * user under test: the same lease on another user, polled until it was applied.
       */
      async function leaseProbe(store: LockoutStore, leaseMs: number): Promise<() => Promise<boolean>> {
        const probe = subjectOf(`probe-${randomUUID()}`);
        await store.reserve(probe, 'password', limits(0), leaseMs, randomUUID());
        return async () => (await store.getUser(probe, limits(0))).failed.password === 1;
      }

      it('reserve twice is reserve once: same expiry, one slot', async () => {
        const store = await ctx.makeStore();
        const u = subjectOf('r1');
        const a1 = await store.reserve(u, 'password', limits(2), 30_000, 'nonce-a');
        ctx.advance?.(10); // a resend arrives later: it must not move the lease either
        const a2 = await store.reserve(u, 'password', limits(2), 30_000, 'nonce-a');
        expect(a1.status).toBe('admitted');
        expect(a2).toEqual(a1);
        // a second id still fits under max 2: the repeated reserve took no second slot
        expect((await store.reserve(u, 'password', limits(2), 30_000, 'nonce-b')).status).toBe('admitted');
        expect((await store.reserve(u, 'password', limits(2), 30_000, 'nonce-c')).status).toBe('busy');
        expect(await store.settle(u, 'password', 'nonce-a', 'failure', limits(2), 30_000)).toEqual({
          status: 'settled',
          failedAttempts: 1,
          locked: false,
          lockedNow: false,
        });
        expect((await store.getUser(u, limits(2))).failed.password).toBe(1);
      });

      it('an id settled or released with tombstone is gone: a late reserve of it is refused and takes no slot', async () => {
        const store = await ctx.makeStore();
        const u = subjectOf('r2');
        await store.reserve(u, 'password', limits(3), 30_000, 'nonce-a');
        await store.reserve(u, 'password', limits(3), 30_000, 'nonce-b');
        await store.settle(u, 'password', 'nonce-a', 'failure', limits(3), 30_000, true);
        await store.settle(u, 'password', 'nonce-b', 'release', limits(3), 30_000, true);
        expect(await store.reserve(u, 'password', limits(3), 30_000, 'nonce-a')).toEqual({ status: 'gone' });
        expect(await store.reserve(u, 'password', limits(3), 30_000, 'nonce-b')).toEqual({ status: 'gone' });
        // failures 1 + in flight < 3: two fresh ids fit, a third is busy
        expect((await store.reserve(u, 'password', limits(3), 30_000, 'nonce-c')).status).toBe('admitted');
        expect((await store.reserve(u, 'password', limits(3), 30_000, 'nonce-d')).status).toBe('admitted');
        expect((await store.reserve(u, 'password', limits(3), 30_000, 'nonce-e')).status).toBe('busy');
        expect((await store.getUser(u, limits(3))).failed.password).toBe(1);
      });

      it('an ordinary settle leaves no tombstone: its reserve was answered, so no copy of it can follow', async () => {
        const store = await ctx.makeStore();
        const u = subjectOf('r2b');
        await store.reserve(u, 'password', limits(3), 30_000, 'nonce-a');
        await store.settle(u, 'password', 'nonce-a', 'success', limits(3), 30_000);
        expect(await ctx.stateOf(store, instanceId, 'o', 'r2b')).toBe(0);
      });

      it('settle twice is settle once; settling an unknown id tombstones it', async () => {
        const store = await ctx.makeStore();
        const u = subjectOf('r3');
        await store.reserve(u, 'totp', limits(5), 30_000, 'nonce-a');
        expect(await store.settle(u, 'totp', 'nonce-a', 'failure', limits(5), 30_000)).toMatchObject({
          status: 'settled',
          failedAttempts: 1,
        });
        expect(await store.settle(u, 'totp', 'nonce-a', 'failure', limits(5), 30_000)).toEqual({
          status: 'unknown',
        });
        expect(await store.settle(u, 'totp', 'nonce-a', 'success', limits(5), 30_000)).toEqual({
          status: 'unknown',
        });
        expect((await store.getUser(u, limits(5))).failed.totp).toBe(1);
        // the compensation of a reserve whose answer was lost: settled before it arrives
        expect(await store.settle(u, 'totp', 'nonce-z', 'release', limits(5), 30_000)).toEqual({
          status: 'unknown',
        });
        expect(await store.reserve(u, 'totp', limits(5), 30_000, 'nonce-z')).toEqual({ status: 'gone' });
        expect((await store.getUser(u, limits(5))).failed.totp).toBe(1);
      });

      it('unlock clears reservations in flight: their settle is unknown and their lease never counts', async () => {
        const store = await ctx.makeStore();
        const u = subjectOf('r4');
        await store.reserve(u, 'password', limits(3), 300, 'nonce-p');
        await store.reserve(u, 'totp', limits(3), 300, 'nonce-t');
        expect((await store.lock(u, limits(3))).changed).toBe(true);
        expect(await store.unlock(u, limits(3), 300)).toEqual({ changed: true });
        expect(await store.settle(u, 'password', 'nonce-p', 'failure', limits(3), 300)).toEqual({
          status: 'unknown',
        });
        expect(await store.reserve(u, 'totp', limits(3), 300, 'nonce-t')).toEqual({ status: 'gone' });
        // after the leases would have ended (a later lease on another user has), nothing was counted
        await elapse(301, await leaseProbe(store, 300));
        expect(await store.getUser(u, limits(3))).toEqual({ locked: false, failed: zero() });
        expect(await store.settle(u, 'totp', 'nonce-t', 'failure', limits(3), 300)).toEqual({
          status: 'unknown',
        });
        expect(await store.getUser(u, limits(3))).toEqual({ locked: false, failed: zero() });
      });

      it('resetFactor drops in-flight reservations of that factor uncounted, keeps the lock and other factors', async () => {
        const store = await ctx.makeStore();
        const u = subjectOf('r5');
        await store.reserve(u, 'password', limits(5), 30_000, 'nonce-p');
        await store.reserve(u, 'totp', limits(5), 30_000, 'nonce-t');
        await store.resetFactor(u, 'password', limits(5), 30_000);
        expect(await store.settle(u, 'password', 'nonce-p', 'failure', limits(5), 30_000)).toEqual({
          status: 'unknown',
        });
        expect(await store.settle(u, 'totp', 'nonce-t', 'failure', limits(5), 30_000)).toMatchObject({
          status: 'settled',
          failedAttempts: 1,
        });
        expect((await store.getUser(u, limits(5))).failed).toEqual({ ...zero(), totp: 1 });
        // the lock stays through a reset
        const { lockedAt } = await store.lock(u, limits(5));
        await store.resetFactor(u, 'totp', limits(5), 30_000);
        expect(await store.getUser(u, limits(5))).toEqual({ locked: true, lockedAt, failed: zero() });
      });

      it('a password reset applies an expired lease first: no stale failure of the old password follows', async () => {
        const store = await ctx.makeStore();
        const u = subjectOf('r6');
        await store.reserve(u, 'password', limits(5), 300, 'nonce-p');
        // nobody reads the user while the lease runs out; the reset is the next operation
        await elapse(301, await leaseProbe(store, 300));
        await store.resetFactor(u, 'password', limits(5), 300);
        expect(await store.getUser(u, limits(5))).toEqual({ locked: false, failed: zero() });
        expect(await store.settle(u, 'password', 'nonce-p', 'failure', limits(5), 300)).toEqual({
          status: 'unknown',
        });
      });

      it('lock and unlock apply expired leases first (an unlock leaves the user active, all zero)', async () => {
        const store = await ctx.makeStore();
        const u = subjectOf('r7');
        // issue 8, defect 5: max 1, abandoned reservation, admin lock, lease expires, admin unlock
        await store.reserve(u, 'password', limits(1), 300, 'nonce-a');
        expect((await store.lock(u, limits(1))).changed).toBe(true);
        await elapse(301, await leaseProbe(store, 300));
        expect(await store.unlock(u, limits(1), 300)).toEqual({ changed: true });
        expect(await store.getUser(u, limits(1))).toEqual({ locked: false, failed: zero() });
        expect(await store.getUser(u, limits(1))).toEqual({ locked: false, failed: zero() });

        // a lock finds the user already locked by an expired lease: changed false
        const v = subjectOf('r7b');
        await store.reserve(v, 'totp', limits(1), 300, 'nonce-b');
        await elapse(301, await leaseProbe(store, 300));
        const locked = await store.lock(v, limits(1));
        expect(locked.changed).toBe(false);
        expect(await store.getUser(v, limits(1))).toEqual({
          locked: true,
          lockedAt: locked.lockedAt,
          failed: { ...zero(), totp: 1 },
        });
      });

      it('listLocked lists users locked by expired leases that nobody read', async () => {
        const store = await ctx.makeStore();
        const l = limits(3);
        // Two failures each, then a third attempt abandoned: its lease, once ended, locks the user.
        for (const [user, factor] of [
          ['lease-x', 'password'],
          ['lease-y', 'totp'],
        ] as const) {
          for (const n of [1, 2]) {
            await store.reserve(subjectOf(user, 'org-x'), factor, l, 10_000, `${user}-${n}`);
            await store.settle(subjectOf(user, 'org-x'), factor, `${user}-${n}`, 'failure', l, 10_000);
          }
          await store.reserve(subjectOf(user, 'org-x'), factor, l, 300, `${user}-abandoned`);
        }
        await store.lock(subjectOf('admin-z', 'org-x'), l);
        await elapse(301, async () => {
          const ids = (await store.listLocked(instanceId, 'org-x', l, 10)).users.map((x) => x.userId);
          return ids.includes('lease-x') && ids.includes('lease-y');
        });
        const page = await store.listLocked(instanceId, 'org-x', l, 10);
        expect(page.users.map((x) => x.userId)).toEqual(['admin-z', 'lease-x', 'lease-y']);
        const x = await store.getUser(subjectOf('lease-x', 'org-x'), l);
        expect(x).toEqual({
          locked: true,
          lockedAt: page.users[1]!.lockedAt,
          failed: { ...zero(), password: 3 },
        });
      });

      it('listLocked orders user ids as UTF-8 bytes, also outside the BMP, with a cursor', async () => {
        const store = await ctx.makeStore();
        // UTF-16 order would put U+1F600 (a surrogate pair, 0xD83D…) before U+FFFD; UTF-8 puts it after
        const ids = ['\u{1F600}', '\uFFFD', 'z', '\u00E9', 'A', '\u{10000}', '\uE000'];
        for (const id of ids) await store.lock(subjectOf(id, 'org-u'), limits(1));
        const expected = [...ids].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
        expect(expected).toEqual(['A', 'z', '\u00E9', '\uE000', '\uFFFD', '\u{10000}', '\u{1F600}']);
        const listed: string[] = [];
        let cursor: string | undefined;
        do {
          const page = await store.listLocked(instanceId, 'org-u', limits(1), 2, cursor);
          listed.push(...page.users.map((x) => x.userId));
          cursor = page.nextCursor;
        } while (cursor !== undefined);
        expect(listed).toEqual(expected);
      });

      it('busy retryAfterMs is the time until the earliest lease of the SAME factor ends, in [1, 1000]', async () => {
        const store = await ctx.makeStore();
        const u = subjectOf('r8');
        // another factor's lease ends much sooner: it must not shorten the password's hint
        expect((await store.reserve(u, 'totp', limits(1), 20, 'nonce-t')).status).toBe('admitted');
        expect((await store.reserve(u, 'password', limits(1), 60_000, 'nonce-p')).status).toBe('admitted');
        expect(await store.reserve(u, 'password', limits(1), 60_000, 'nonce-q')).toEqual({
          status: 'busy',
          retryAfterMs: 1000,
        });
        const v = subjectOf('r8b');
        await store.reserve(v, 'password', limits(1, 1), 60_000, 'nonce-p');
        await store.reserve(v, 'otp_sms', limits(1, 1), 700, 'nonce-s');
        const busy = await store.reserve(v, 'otp_sms', limits(1, 1), 700, 'nonce-s2');
        expect(busy.status).toBe('busy');
        if (busy.status !== 'busy') throw new Error('unreachable');
        expect(busy.retryAfterMs).toBeGreaterThanOrEqual(1);
        expect(busy.retryAfterMs).toBeLessThanOrEqual(700);
      });
    });

    describe('bounded state', () => {
      it('idle expiry: an unlocked user goes idleTtlMs after its last write; locks and leases in flight stay', async () => {
        const store = await ctx.makeStore({ idleTtlMs: 500 });
        const idle = subjectOf('idle');
        const locked = subjectOf('idle-locked');
        const leased = subjectOf('idle-leased');
        await store.reserve(idle, 'password', limits(5), 100, 'nonce-i');
        await store.settle(idle, 'password', 'nonce-i', 'failure', limits(5), 100);
        await store.lock(locked, limits(5));
        await store.reserve(leased, 'password', limits(2), 1500, 'nonce-l'); // outlives the idle period
        expect(await ctx.stateOf(store, instanceId, 'o', 'idle')).toBeGreaterThan(0);
        await elapse(501, async () => (await ctx.stateOf(store, instanceId, 'o', 'idle')) === 0);
        expect(await store.getUser(idle, limits(5))).toEqual({ locked: false, failed: zero() });
        expect((await store.getUser(locked, limits(5))).locked).toBe(true);
        // the reservation kept its user: when its lease ends, the failure is counted, not lost
        await elapse(1000, async () => (await store.getUser(leased, limits(2))).failed.password === 1);
        expect(await ctx.stateOf(store, instanceId, 'o', 'idle-leased')).toBeGreaterThan(0);
        expect(await ctx.stateOf(store, instanceId, 'o', 'idle-locked')).toBeGreaterThan(0);
      });
    });

    describe('one-time material', () => {
      it('useStep accepts only a step later than every used one, per user and key, until it expires', async () => {
        const store = await ctx.makeStore();
        const subject = { instance: instanceId, org: 'o', user: 'pia' };
        expect(await store.useStep(subject, 'totp', 123, 300)).toBe(true);
        expect(await store.useStep(subject, 'totp', 123, 300)).toBe(false);
        expect(await store.useStep(subject, 'totp', 122, 300)).toBe(false);
        expect(await store.useStep({ ...subject, user: 'quinn' }, 'totp', 123, 300)).toBe(true);
        expect(await store.useStep(subject, 'other', 1, 300)).toBe(true);
        expect(await store.useStep(subject, 'totp', 124, 300)).toBe(true);
        expect(await store.useStep(subject, 'totp', 123, 300)).toBe(false);
        // once the record of step 124 has expired, an earlier step is accepted again
        await elapse(301, () => store.useStep(subject, 'totp', 123, 300));
        expect(await store.useStep(subject, 'totp', 123, 300)).toBe(false);
      });

      it('codes are single use, replaced by a new one, and expire', async () => {
        const store = await ctx.makeStore();
        const subject = { instance: instanceId, org: 'o', user: 'rita' };
        expect(await store.takeCode(subject, 'sms', 'h1')).toBe('missing');
        await store.putCode(subject, 'sms', 'h1', 10_000);
        expect(await store.takeCode(subject, 'email', 'h1')).toBe('missing');
        expect(await store.takeCode(subject, 'sms', 'h2')).toBe('mismatch');
        expect(await store.takeCode(subject, 'sms', 'h1')).toBe('match');
        expect(await store.takeCode(subject, 'sms', 'h1')).toBe('missing');
        await store.putCode(subject, 'sms', 'h1', 10_000);
        await store.putCode(subject, 'sms', 'h3', 300);
        expect(await store.takeCode(subject, 'sms', 'h1')).toBe('mismatch');
        // polled with a wrong hash, which never consumes the code: 'mismatch' until it expires
        await elapse(301, async () => (await store.takeCode(subject, 'sms', 'h2')) === 'missing');
        expect(await store.takeCode(subject, 'sms', 'h3')).toBe('missing');
      });
    });
  });
}
