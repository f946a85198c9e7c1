/**
 * G5 on the sidecar over HTTP (issue 8, defect 4): a check whose evaluation outlives
 * `evaluationTimeoutMs` answers 503 code 14 and counts nothing — a check route never answers
 * 404. Also the new configuration fields and the /metrics of compensation and the memory store.
 */
import { ConfigError, parseConfig } from '../../src/sidecar/config';
import { createLogger } from '../../src/sidecar/logger';
import { createMetrics } from '../../src/sidecar/metrics';
import { startSidecar, type SidecarHandle } from '../../src/sidecar/server';
import { hashPassword } from '../../src/verify';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
const CHECKER = 'g5-checker-token-0001';
const ADMIN = 'g5-admin-token-0002';
/** Costly enough that no verification can finish within 1 ms, cheap enough for a test. */
// Costly enough (tens of ms) that a 1 ms evaluation bound is always passed first, however loaded
// the machine: the bound's timer is due long before the hash's thread can finish.
const ARGON2 = { memoryCost: 65536, timeCost: 3, parallelism: 1 };

function config(extra: Record<string, unknown> = {}) {
  return parseConfig({
    server: { port: 0 },
    instance: { id: 'g5', maxPasswordAttempts: 1 },
    leaseMs: 1000,
    password: { argon2: ARGON2 },
    log: { level: 'silent' },
    auth: {
      tokens: [
        { name: 'login', token: CHECKER, permissions: ['lockout.check'] },
        { name: 'admin', token: ADMIN, permissions: ['user.read', 'user.write'] },
      ],
    },
    ...extra,
  });
}

async function call(sidecar: SidecarHandle, path: string, token: string, body?: unknown) {
  const res = await fetch(`${sidecar.url}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: (await res.json()) as Json };
}

const until = async (what: string, condition: () => boolean): Promise<void> => {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('defect 4: a check whose evaluation outlives its bound', () => {
  let sidecar: SidecarHandle;
  let hash: string;
  beforeAll(async () => {
    hash = await hashPassword('right', ARGON2);
    sidecar = await startSidecar(config({ evaluationTimeoutMs: 1 }), {
      logger: createLogger('silent'),
    });
  });
  afterAll(async () => {
    await sidecar?.close();
  });

  it('answers 503 code 14 (never 404), releases the attempt uncounted, and the lease counts nothing', async () => {
    const started = Date.now();
    for (let i = 0; i < 2; i += 1) {
      // max 1: a leaked reservation would make the second check answer 429 busy
      const r = await call(sidecar, '/v1/checks/password', CHECKER, {
        userId: 'slow',
        password: 'right',
        encodedHash: hash,
      });
      expect(r.status).toBe(503);
      expect(r.body.code).toBe(14);
      expect(r.body.details[0].id).toBe('Errors.Check.Timeout');
    }
    await until('the lease to end', () => Date.now() > started + 1100);
    const status = await call(sidecar, '/v1/users/slow/lockout', ADMIN);
    expect(status.status).toBe(200);
    expect(status.body).toMatchObject({ state: 'USER_STATE_ACTIVE', failedAttempts: { password: '0' } });
    const metrics = await (await fetch(`${sidecar.url}/metrics`)).text();
    expect(metrics).toMatch(/lockgate_check_duration_seconds_count\{factor="password",outcome="error"\} 2/);
  });
});

describe('sidecar configuration of G5', () => {
  it('evaluationTimeoutMs, store.idleTtlMs and store.memory.maxUsers, with their defaults', () => {
    const c = config();
    expect(c.leaseMs).toBe(1000);
    expect(c.evaluationTimeoutMs).toBeUndefined();
    expect(c.store.idleTtlMs).toBe(86_400_000);
    expect(c.store.memory.maxUsers).toBe(100_000);
    const d = config({ evaluationTimeoutMs: 400, store: { idleTtlMs: 0, memory: { maxUsers: 50 } } });
    expect(d.evaluationTimeoutMs).toBe(400);
    expect(d.store).toMatchObject({ idleTtlMs: 0, memory: { maxUsers: 50 } });
  });

  it('refuses a lease under 1 s and an evaluation bound that leaves no time to settle', () => {
    const error = (raw: Record<string, unknown>): ConfigError => {
      try {
        config(raw);
      } catch (e) {
        return e as ConfigError;
      }
      throw new Error('expected a ConfigError');
    };
    expect(error({ leaseMs: 999 }).message).toMatch(/leaseMs: expected an integer from 1000 to 3600000/);
    const tooLong = error({ evaluationTimeoutMs: 501 });
    expect(tooLong.field).toBe('evaluationTimeoutMs');
    expect(tooLong.message).toMatch(/at most leaseMs − 500 \(500\).*raise leaseMs/);
    expect(error({ store: { memory: { maxUsers: 0 } } }).field).toBe('store.memory.maxUsers');
  });
});

describe('/metrics of G5', () => {
  it('compensation counters and pending gauge; memory store users, max users and evictions from stats()', async () => {
    const metrics = createMetrics({ processMetrics: false });
    let pending = 2;
    metrics.watchEngine({
      compensationStats: () => ({ pending, queued: 3, retried: 1, compensated: 1, abandoned: 0 }),
    });
    metrics.watchStore({ stats: () => ({ users: 7, maxUsers: 100, evictions: 4 }) });
    const task = {
      subject: { instance: 'i', org: 'o', user: 'u' },
      factor: 'password',
      nonce: 'n',
      outcome: 'release',
      origin: 'reserve',
      deadline: 0,
    } as const;
    metrics.compensation({ type: 'queued', task } as never);
    metrics.compensation({ type: 'abandoned', task, reason: 'expired' } as never);
    let text = await metrics.registry.metrics();
    expect(text).toMatch(/lockgate_compensations_total\{event="queued"\} 1/);
    expect(text).toMatch(/lockgate_compensations_total\{event="abandoned"\} 1/);
    expect(text).toMatch(/lockgate_compensations_total\{event="compensated"\} 0/);
    expect(text).toMatch(/lockgate_compensations_pending 2/);
    expect(text).toMatch(/lockgate_memory_store_users 7/);
    expect(text).toMatch(/lockgate_memory_store_max_users 100/);
    expect(text).toMatch(/lockgate_memory_store_evictions_total 4/);
    pending = 0;
    text = await metrics.registry.metrics();
    expect(text).toMatch(/lockgate_compensations_pending 0/);
  });

  it('a store without stats() adds no memory store metrics', async () => {
    const metrics = createMetrics({ processMetrics: false });
    metrics.watchStore({ kind: 'redis' });
    expect(await metrics.registry.metrics()).not.toMatch(/lockgate_memory_store/);
  });
});
