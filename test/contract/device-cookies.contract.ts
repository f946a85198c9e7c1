/**
 * Device cookies (issue 12, OWASP "Slow Down Online Guessing Attacks with Device Cookies"), one
 * suite for every store: a check with a valid device token counts on that device's own scope, one
 * without on the user's untrusted scope; each scope locks alone; an admin lock locks every scope;
 * an unlock clears every scope; a password change resets every scope; device scopes are bounded;
 * G1 holds per scope under real concurrency; the status and the listing name the scope.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { LockoutEngine, type CheckResult, type LockoutEvent } from '../../src';
import type { DefencesConfig } from '../../src/core/defences';
import type { StoreContext } from './lockout-store.contract';

export function describeDeviceCookies(name: string, makeContext: () => Promise<StoreContext>): void {
  describe(`device cookies: ${name}`, () => {
    let ctx: StoreContext;
    let instanceId: string;
    const engines: LockoutEngine[] = [];
    // One key for every engine of the suite, as processes sharing a store share the configuration.
    const secret = randomBytes(32);
    const defences = (maxDevices = 10): DefencesConfig => ({
      values: { deviceCookies: { enabled: true, maxDevices } },
      deviceTokens: { keys: [{ id: 'k1', secret }], maxAgeMs: 30 * 86_400_000 },
    });

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

    async function engine(max = 5, maxDevices = 10, events?: LockoutEvent[]): Promise<LockoutEngine> {
      const e = new LockoutEngine({
        store: await ctx.makeStore(),
        instanceId,
        defaults: { maxPasswordAttempts: max, maxOtpAttempts: max },
        defences: defences(maxDevices),
        ...(events ? { onEvent: (ev: LockoutEvent) => events.push(ev) } : {}),
      });
      engines.push(e);
      return e;
    }

    /** A device token of `user`: the one a success without a token hands out. */
    async function login(e: LockoutEngine, user: string, deviceToken?: string): Promise<CheckResult> {
      return e.check('o', user, 'password', () => true, deviceToken === undefined ? {} : { deviceToken });
    }
    async function tokenOf(e: LockoutEngine, user: string): Promise<string> {
      const r = await login(e, user);
      if (r.outcome !== 'success' || r.deviceToken === undefined) throw new Error('no device token');
      return r.deviceToken;
    }
    const wrong = (e: LockoutEngine, user: string, deviceToken?: string) =>
      e.check('o', user, 'password', () => false, deviceToken === undefined ? {} : { deviceToken });

    it('a success hands out a device token; the device keeps working while untrusted clients are locked', async () => {
      const events: LockoutEvent[] = [];
      const e = await engine(3, 10, events);
      const token = await tokenOf(e, 'alice');
      for (let i = 0; i < 5; i++) await wrong(e, 'alice');
      expect(await login(e, 'alice')).toMatchObject({ outcome: 'locked' });
      const ok = await login(e, 'alice', token);
      expect(ok).toMatchObject({ outcome: 'success' });
      expect(events.find((ev) => ev.type === 'lock')).toMatchObject({
        reason: 'failures',
        scope: 'untrusted',
      });
      // a token of another user, a forged or a garbled one is simply absent: untrusted
      const other = await tokenOf(e, 'bob');
      expect(await login(e, 'alice', other)).toMatchObject({ outcome: 'locked' });
      expect(await login(e, 'alice', `${token}x`)).toMatchObject({ outcome: 'locked' });
      expect(await login(e, 'alice', 'k1.e30.AAAA')).toMatchObject({ outcome: 'locked' });
      const status = await e.getUserStatus('o', 'alice');
      expect(status.locked).toBe(false);
      expect(status.scopes).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ scope: 'untrusted', locked: true }),
          expect.objectContaining({ scope: expect.stringMatching(/^device:/), locked: false }),
        ]),
      );
      expect((await e.listLocked('o')).users).toEqual([
        { userId: 'alice', lockedAt: expect.any(Number), scope: 'untrusted' },
      ]);
    });

    it('a device locks alone; an admin lock locks every scope; an unlock clears every scope', async () => {
      const e = await engine(3);
      const token = await tokenOf(e, 'carol');
      for (let i = 0; i < 3; i++) await wrong(e, 'carol', token);
      expect(await login(e, 'carol', token)).toMatchObject({ outcome: 'locked' });
      expect(await login(e, 'carol')).toMatchObject({ outcome: 'success' });
      await e.lockUser('o', 'dave');
      const daveToken = await (async () => {
        await e.unlockUser('o', 'dave');
        return tokenOf(e, 'dave');
      })();
      await e.lockUser('o', 'dave');
      expect(await login(e, 'dave', daveToken)).toMatchObject({ outcome: 'locked' });
      expect(await login(e, 'dave')).toMatchObject({ outcome: 'locked' });
      await e.unlockUser('o', 'dave');
      expect(await login(e, 'dave', daveToken)).toMatchObject({ outcome: 'success' });
      // unlock of a user whose only lock is a scope's: it counts as locked, and every scope is cleared
      for (let i = 0; i < 2; i++) await wrong(e, 'carol');
      await e.unlockUser('o', 'carol');
      const s = await e.getUserStatus('o', 'carol');
      expect(s.scopes?.every((sc) => !sc.locked && sc.failedAttempts.password === 0)).toBe(true);
      expect(await login(e, 'carol', token)).toMatchObject({ outcome: 'success' });
    });

    it('a password change resets every scope', async () => {
      const e = await engine(5);
      const token = await tokenOf(e, 'erin');
      await wrong(e, 'erin', token);
      await wrong(e, 'erin');
      await wrong(e, 'erin');
      await e.passwordChanged('o', 'erin');
      const s = await e.getUserStatus('o', 'erin');
      expect(s.scopes?.map((sc) => sc.failedAttempts.password)).toEqual(s.scopes?.map(() => 0));
    });

    it('keeps at most maxDevices device scopes, forgetting the least recently used unlocked one', async () => {
      const e = await engine(2, 2);
      const t1 = await tokenOf(e, 'fay');
      for (let i = 0; i < 2; i++) await wrong(e, 'fay', t1); // device 1 locked: never forgotten
      const t2 = await tokenOf(e, 'fay');
      await wrong(e, 'fay', t2);
      const t3 = await tokenOf(e, 'fay');
      await login(e, 'fay', t3);
      await tokenOf(e, 'fay'); // a fourth device: device 2 (oldest unlocked) goes
      const s = await e.getUserStatus('o', 'fay');
      const devices = (s.scopes ?? []).filter((sc) => sc.scope.startsWith('device:'));
      expect(devices).toHaveLength(2); // device 1 (locked, kept) and device 3; device 2 was forgotten
      expect(devices.some((d) => d.locked)).toBe(true);
      expect(await login(e, 'fay', t1)).toMatchObject({ outcome: 'locked' });
      // device 2 was forgotten with its failure: it starts again from 0
      await wrong(e, 'fay', t2);
      expect(await login(e, 'fay', t2)).toMatchObject({ outcome: 'success' });
    });

    it('the scopes outlive state the user had before device cookies (an unlock still finds a locked scope)', async () => {
      const store = await ctx.makeStore({ idleTtlMs: 300 });
      const before = new LockoutEngine({
        store,
        instanceId,
        defaults: { maxPasswordAttempts: 3, maxOtpAttempts: 3 },
      });
      engines.push(before);
      await wrong(before, 'hal'); // a counter of the user's own state, expiring 300 ms later
      const after = new LockoutEngine({
        store,
        instanceId,
        defaults: { maxPasswordAttempts: 3, maxOtpAttempts: 3 },
        defences: defences(),
      });
      engines.push(after);
      for (let i = 0; i < 3; i++) await wrong(after, 'hal');
      if (ctx.advance) ctx.advance(1000);
      else await new Promise((r) => setTimeout(r, 1000));
      const s = await after.getUserStatus('o', 'hal');
      expect(s.scopes?.find((sc) => sc.scope === 'untrusted')).toMatchObject({ locked: true });
      await after.unlockUser('o', 'hal');
      expect(await login(after, 'hal')).toMatchObject({ outcome: 'success' });
    });

    it('G1 per scope: 200 concurrent wrong checks evaluate exactly max per scope, across two engines', async () => {
      const max = 5;
      const a = await engine(max);
      const b = await engine(max);
      const d1 = await tokenOf(a, 'gil');
      const d2 = await tokenOf(a, 'gil');
      const evaluated = { untrusted: 0, d1: 0, d2: 0 };
      const scopes: Array<[keyof typeof evaluated, string | undefined]> = [
        ['untrusted', undefined],
        ['d1', d1],
        ['d2', d2],
      ];
      const attempt = async (e: LockoutEngine, key: keyof typeof evaluated, token?: string) => {
        for (;;) {
          const r = await e.check(
            'o',
            'gil',
            'password',
            async () => {
              evaluated[key]++;
              await new Promise((res) => setTimeout(res, 2));
              return false;
            },
            token === undefined ? {} : { deviceToken: token },
          );
          if (r.outcome !== 'busy') return r.outcome;
          await new Promise((res) => setTimeout(res, Math.min(r.retryAfterMs, 20)));
        }
      };
      await Promise.all(
        Array.from({ length: 200 }, (_, i) => {
          const [key, token] = scopes[i % 3]!;
          return attempt(i % 2 === 0 ? a : b, key, token);
        }),
      );
      console.log(
        `G1 per scope (${name}): 200 concurrent wrong checks, max ${max}: evaluated ${JSON.stringify(evaluated)}`,
      );
      expect(evaluated).toEqual({ untrusted: max, d1: max, d2: max });
    });

    it('botnet: 500 clients without a device token against one account; the real browser logs in on the first try', async () => {
      const e = await engine(10);
      const browser = await tokenOf(e, 'victim');
      const outcomes = { failure: 0, locked: 0, busy: 0, success: 0 };
      await Promise.all(
        Array.from({ length: 500 }, async () => {
          const r = await wrong(e, 'victim');
          outcomes[r.outcome]++;
        }),
      );
      const real = await login(e, 'victim', browser);
      const status = await e.getUserStatus('o', 'victim');
      console.log(
        `botnet (${name}): 500 untrusted clients → ${outcomes.failure} evaluated, ${outcomes.locked} locked, ${outcomes.busy} busy; ` +
          `untrusted scope locked: ${status.scopes?.find((sc) => sc.scope === 'untrusted')?.locked}; real browser: ${real.outcome} on the first try`,
      );
      expect(outcomes.failure).toBe(10);
      expect(real.outcome).toBe('success');
      expect(status.scopes?.find((sc) => sc.scope === 'untrusted')?.locked).toBe(true);
    });
  });
}
