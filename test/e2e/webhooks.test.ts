/**
 * Issue 14 end to end: real sidecar processes on one real Redis, webhook receivers on free ports
 * that verify every signature with the `standardwebhooks` verifier. Deliveries survive a SIGKILL
 * between the lock and its delivery; a receiver failing 5 times then succeeding gets the event;
 * one answering 410 gets nothing more; two sidecars deliver each event once; 200 concurrent
 * lock/unlock/lock sequences are recorded in order per user.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { testRedisUrl } from '../helpers/redis-clients';
import { getFreePort } from '../helpers/redis-servers';
import {
  call,
  killSidecars,
  spawnSidecar,
  until,
  waitReady,
  type Json,
  type SidecarProcess,
} from '../helpers/sidecar-process';
import { newSecret, startReceiver, type Receiver } from '../helpers/webhook-receiver';

const TOKEN = 'webhooks-admin-token-123456';
let dir: string;
const receivers: Receiver[] = [];

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'lockgate-webhooks-'));
});
afterAll(async () => {
  killSidecars();
  await Promise.all(receivers.map((r) => r.close()));
  rmSync(dir, { recursive: true, force: true });
});

async function receiver(secret: string, answer?: Parameters<typeof startReceiver>[1]): Promise<Receiver> {
  const r = await startReceiver(secret, answer);
  receivers.push(r);
  return r;
}

interface Options {
  readonly instance: string;
  readonly url: string;
  readonly secret: string;
  readonly maxAttempts?: number;
  readonly pollIntervalMs?: number;
  readonly claimIdleMs?: number;
  readonly timeoutMs?: number;
  readonly maxPasswordAttempts?: number;
}

/** A sidecar process on the shared Redis with one webhook endpoint (fast backoff: tests do not wait). */
async function sidecar(o: Options): Promise<SidecarProcess> {
  const file = path.join(dir, `${randomUUID()}.yaml`);
  const config = {
    instance: { id: o.instance, maxPasswordAttempts: o.maxPasswordAttempts ?? 10 },
    log: { level: 'warn' },
    webhooks: {
      endpoints: [{ name: 'receiver', url: o.url, secret: o.secret, timeoutMs: o.timeoutMs ?? 2000 }],
      retry: { initialDelayMs: 20, maxDelayMs: 100, maxAttempts: o.maxAttempts ?? 12 },
      pollIntervalMs: o.pollIntervalMs ?? 50,
      claimIdleMs: o.claimIdleMs ?? 3000,
    },
  };
  writeFileSync(file, JSON.stringify(config));
  const port = await getFreePort();
  const p = spawnSidecar(
    { LOCKGATE_CONFIG: file, LOCKGATE_ADMIN_TOKEN: TOKEN, LOCKGATE_REDIS_URL: testRedisUrl() },
    port,
  );
  await waitReady(p);
  return p;
}

/** A counter of /metrics (0 when absent). */
async function metric(p: SidecarProcess, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${p.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

const locked = (r: Receiver, user: string): Json[] =>
  r.delivered().filter((x) => x.body.type === 'user.locked' && x.body.data.userId === user);

describe('webhooks across sidecar processes (Redis)', () => {
  it('an event read but not delivered when its sidecar is SIGKILLed is delivered by the next one, with the same id', async () => {
    const instance = `wh-kill-${randomUUID()}`;
    const secret = newSecret();
    // The receiver hangs: the first sidecar has read the event (pending in the consumer group)
    // and is waiting for the answer when it is killed.
    const r = await receiver(secret, () => 'hang');
    const a = await sidecar({ instance, url: r.url, secret, timeoutMs: 2500, claimIdleMs: 3000 });
    expect((await call(a.url, TOKEN, 'POST', '/v2/users/alice/lock')).status).toBe(200);
    await until('the first attempt', () => (r.received.length > 0 ? true : undefined));
    a.child.kill('SIGKILL');
    await a.exited;
    r.setAnswer(() => 204);
    const b = await sidecar({ instance, url: r.url, secret, claimIdleMs: 3000 });
    const delivered = await until('the delivery after the restart', () => {
      const d = locked(r, 'alice');
      return d.length > 0 ? d : undefined;
    });
    expect(r.received.every((x) => x.verified)).toBe(true);
    // Every copy carries the one event id (duplicates only with the same id).
    expect(new Set(r.received.map((x) => x.id)).size).toBe(1);
    expect(delivered[0].body).toMatchObject({
      type: 'user.locked',
      data: {
        orgId: 'org-a',
        userId: 'alice',
        actor: { type: 'token', name: 'admin' },
        data: { reason: 'admin' },
      },
    });
    expect(delivered[0].id).toBe(delivered[0].body.data.id);
    b.child.kill('SIGKILL');
  });

  it('an event whose delivery failed before its sidecar was SIGKILLed is retried by the next one', async () => {
    const instance = `wh-retry-kill-${randomUUID()}`;
    const secret = newSecret();
    const r = await receiver(secret, () => 500);
    const a = await sidecar({ instance, url: r.url, secret, claimIdleMs: 2000, timeoutMs: 1000 });
    expect((await call(a.url, TOKEN, 'POST', '/v2/users/bob/lock')).status).toBe(200);
    await until('a failed attempt', () => (r.received.length > 0 ? true : undefined));
    a.child.kill('SIGKILL');
    await a.exited;
    r.setAnswer(() => 200);
    const b = await sidecar({ instance, url: r.url, secret, claimIdleMs: 2000, timeoutMs: 1000 });
    await until('the delivery after the restart', () => (locked(r, 'bob').length > 0 ? true : undefined));
    expect(r.received.every((x) => x.verified)).toBe(true);
    expect(new Set(r.received.map((x) => x.id)).size).toBe(1);
    b.child.kill('SIGKILL');
  });

  it('a receiver that fails 5 times then succeeds gets the event, every attempt signed and with the same id', async () => {
    const instance = `wh-five-${randomUUID()}`;
    const secret = newSecret();
    const r = await receiver(secret, (n) => (n <= 5 ? 503 : 200));
    const a = await sidecar({ instance, url: r.url, secret, maxAttempts: 8 });
    expect((await call(a.url, TOKEN, 'POST', '/v2/users/carol/lock')).status).toBe(200);
    await until('the sixth attempt', () => (locked(r, 'carol').length > 0 ? true : undefined));
    expect(r.received.map((x) => x.status)).toEqual([503, 503, 503, 503, 503, 200]);
    expect(r.received.every((x) => x.verified)).toBe(true);
    expect(new Set(r.received.map((x) => x.id)).size).toBe(1);
    expect(await metric(a, 'lockgate_webhook_attempts_total', 'endpoint="receiver",outcome="retry"')).toBe(5);
    expect(
      await metric(a, 'lockgate_webhook_attempts_total', 'endpoint="receiver",outcome="delivered"'),
    ).toBe(1);
    a.child.kill('SIGKILL');
  });

  it('an endpoint that answered 410 gets no further delivery', async () => {
    const instance = `wh-gone-${randomUUID()}`;
    const secret = newSecret();
    const r = await receiver(secret, () => 410);
    const a = await sidecar({ instance, url: r.url, secret });
    expect((await call(a.url, TOKEN, 'POST', '/v2/users/dave/lock')).status).toBe(200);
    await until('the 410', () => (r.received.length > 0 ? true : undefined));
    expect((await call(a.url, TOKEN, 'POST', '/v2/users/dave/unlock')).status).toBe(200);
    expect((await call(a.url, TOKEN, 'POST', '/v2/users/erin/lock')).status).toBe(200);
    // The next two events are skipped (the endpoint is disabled), not sent.
    await until('the skipped events', async () =>
      (await metric(a, 'lockgate_webhook_attempts_total', 'endpoint="receiver",outcome="skipped"')) >= 2
        ? true
        : undefined,
    );
    expect(r.received).toHaveLength(1);
    expect(r.received[0]!.verified).toBe(true);
    expect(await metric(a, 'lockgate_webhook_attempts_total', 'endpoint="receiver",outcome="gone"')).toBe(1);
    a.child.kill('SIGKILL');
  });

  it('two sidecars deliver each event once; 200 concurrent lock/unlock/lock sequences are recorded in order per user', async () => {
    const instance = `wh-two-${randomUUID()}`;
    const secret = newSecret();
    const r = await receiver(secret, () => 200);
    // Generous timeouts: a retry after a timed-out attempt (the receiver in this busy process
    // answering late) or a take-over of a slow round would be a legitimate second delivery.
    const slow = { timeoutMs: 10_000, claimIdleMs: 30_000 };
    const [a, b] = await Promise.all([
      sidecar({ instance, url: r.url, secret, maxPasswordAttempts: 1, ...slow }),
      sidecar({ instance, url: r.url, secret, maxPasswordAttempts: 1, ...slow }),
    ]);
    const users = Array.from({ length: 200 }, (_, i) => `user-${i}`);
    await Promise.all(
      users.map(async (u, i) => {
        const [first, second] = i % 2 === 0 ? [a, b] : [b, a];
        // A failed attempt at limit 1 locks (sidecar 1), an admin unlock (sidecar 2), an admin lock (sidecar 1).
        const attempt = await call(first.url, TOKEN, 'POST', '/v1/attempts', {
          userId: u,
          factor: 'password',
        });
        expect(attempt.status).toBe(201);
        const failed = await call(first.url, TOKEN, 'POST', `/v1/attempts/${attempt.body.attemptId}/failure`);
        expect(failed.body).toEqual({ failedAttempts: '1', locked: true });
        expect((await call(second.url, TOKEN, 'POST', `/v2/users/${u}/unlock`)).status).toBe(200);
        expect((await call(first.url, TOKEN, 'POST', `/v2/users/${u}/lock`)).status).toBe(200);
      }),
    );
    // The record: 600 events, per user newest first: admin lock, unlock, lock by failures.
    const events: Json[] = [];
    let cursor: string | undefined;
    do {
      const page = await call(
        a.url,
        TOKEN,
        'GET',
        `/v1/events?limit=1000${cursor ? `&cursor=${cursor}` : ''}`,
      );
      expect(page.status).toBe(200);
      events.push(...page.body.events);
      cursor = page.body.nextCursor;
    } while (cursor);
    expect(events).toHaveLength(600);
    for (const u of users) {
      const mine = events.filter((e) => e.userId === u);
      expect(mine.map((e) => [e.type, e.data.reason])).toEqual([
        ['user.locked', 'admin'],
        ['user.unlocked', undefined],
        ['user.locked', 'failures'],
      ]);
      expect(mine[2]).toMatchObject({
        actor: { type: 'system' },
        data: { factor: 'password', failedAttempts: 1 },
      });
    }
    // Both sidecars deliver; each event reaches the receiver once.
    await until(
      '600 deliveries',
      async () => {
        const delivered =
          (await metric(a, 'lockgate_webhook_attempts_total', 'endpoint="receiver",outcome="delivered"')) +
          (await metric(b, 'lockgate_webhook_attempts_total', 'endpoint="receiver",outcome="delivered"'));
        return delivered >= 600 ? true : undefined;
      },
      60_000,
    );
    expect(r.received.every((x) => x.verified)).toBe(true);
    // No attempt failed, so every event was attempted once, by one of the two.
    for (const p of [a, b]) {
      expect(await metric(p, 'lockgate_webhook_attempts_total', 'endpoint="receiver",outcome="retry"')).toBe(
        0,
      );
    }
    expect(r.received).toHaveLength(600);
    expect(new Set(r.received.map((x) => x.id)).size).toBe(600);
    expect(new Set(r.received.map((x) => x.id))).toEqual(new Set(events.map((e) => e.id)));
    a.child.kill('SIGKILL');
    b.child.kill('SIGKILL');
  });
});
