/**
 * Issue 10, resource exhaustion: 200,000 random user names, one wrong password each, through the
 * engine on a MemoryStore bounded to 10,000 users. The store must stay within its bound (evicting
 * the least recently used unlocked users, saying so), never evict a locked user, keep its heap
 * proportional to the bound, and forget every idle user once idleTtlMs has passed on its clock.
 */
import { randomUUID } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { LockoutEngine, MemoryStore } from '../../src';

const NAMES = 200_000;
const MAX_USERS = 10_000;
const LOCKED = 100;
const IDLE_TTL_MS = 3_600_000;
const LEASE_MS = 30_000;

/** A real gc(), so that heap figures measure what is kept, not garbage. */
function collector(): () => void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed) return exposed;
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

function heapAfterGc(gc: () => void): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

test('a spray of 200,000 names stays within maxUsers, never evicts a locked user, and is forgotten after idleTtlMs', async () => {
  const gc = collector();
  const clock = { t: 1_700_000_000_000 };
  const warnings: Array<{ at: number; message: string }> = [];
  const store = new MemoryStore({
    now: () => clock.t,
    maxUsers: MAX_USERS,
    idleTtlMs: IDLE_TTL_MS,
    purgeIntervalMs: 250,
    onWarning: (message) => warnings.push({ at: clock.t, message }),
  });
  const engine = new LockoutEngine({
    store,
    instanceId: 'spray',
    leaseMs: LEASE_MS,
    defaults: { maxPasswordAttempts: 3, maxOtpAttempts: 3 },
  });
  const wrong = () => false;
  try {
    // real users locked by their failures, before the spray
    const locked = Array.from({ length: LOCKED }, (_, i) => `locked-${String(i).padStart(3, '0')}`);
    for (const u of locked) for (let k = 0; k < 3; k++) await engine.check('org', u, 'password', wrong);
    const heapBefore = heapAfterGc(gc);

    let maxTracked = 0;
    for (let i = 0; i < NAMES; i++) {
      clock.t += 1; // 200 s of store time in all
      const r = await engine.check('org', randomUUID(), 'password', wrong);
      if (r.outcome !== 'failure' || r.failedAttempts !== 1)
        throw new Error(`name ${i}: ${JSON.stringify(r)}`);
      if (i % 500 === 0) maxTracked = Math.max(maxTracked, store.stats().users);
    }
    const heapSprayed = heapAfterGc(gc);
    const stats = store.stats();
    maxTracked = Math.max(maxTracked, stats.users);

    // within the bound; every name past it evicted exactly one unlocked user
    expect(maxTracked).toBeLessThanOrEqual(MAX_USERS);
    expect(stats).toEqual({ users: MAX_USERS, maxUsers: MAX_USERS, evictions: NAMES + LOCKED - MAX_USERS });
    // said so, at most once a minute of store time
    expect(warnings.length).toBeGreaterThanOrEqual(2);
    expect(warnings.length).toBeLessThanOrEqual(Math.ceil(NAMES / 60_000) + 1);
    for (let k = 1; k < warnings.length; k++) {
      expect(warnings[k]!.at - warnings[k - 1]!.at).toBeGreaterThanOrEqual(60_000);
    }
    expect(warnings[0]!.message).toMatch(/maxUsers/);
    // the locked users were never evicted
    const listed = await engine.listLocked('org', { limit: 1000 });
    expect(listed.users.map((u) => u.userId)).toEqual(locked);
    for (const u of locked) expect((await engine.getUserStatus('org', u)).locked).toBe(true);
    // memory follows the bound, not the 200,000 names (a store keeping every name needs ≥ 80 MB)
    const grown = heapSprayed - heapBefore;
    expect(grown).toBeLessThan(MAX_USERS * 1500);

    // after idleTtlMs without writes every unlocked user is gone (the purge timer, store time)
    clock.t += IDLE_TTL_MS + LEASE_MS;
    const deadline = Date.now() + 20_000;
    while (store.stats().users > LOCKED && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(store.stats().users).toBe(LOCKED);
    for (const u of locked) expect((await engine.getUserStatus('org', u)).locked).toBe(true);
    for (const u of locked) await engine.unlockUser('org', u);
    expect(store.stats().users).toBe(0);
    // what is left is what was there before the spray (plus noise), not 10,000 records
    expect(heapAfterGc(gc) - heapBefore).toBeLessThan(grown / 2);
  } finally {
    engine.close();
    await store.close();
  }
}, 120_000); // about 4 s alone; generous for a loaded 2-core machine
