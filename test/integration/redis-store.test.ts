/**
 * What only a real Redis shows: checks from several processes, an outage and the recovery,
 * the keys a user takes and where they live in a cluster.
 */
import { fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { LockoutEngine, RedisStore, StoreUnavailableError } from '../../src';
import { createTestCluster, createTestRedis, testRedisUrl } from '../helpers/redis-clients';
import { startStandalone, type RedisServerHandle } from '../helpers/redis-servers';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('RedisStore on real Redis', () => {
  it('G1 across 4 processes: 200 concurrent wrong checks with max 5 → exactly 5 evaluated, locked', async () => {
    const instanceId = `inst-${randomUUID()}`;
    const job = { url: testRedisUrl(), instanceId, org: 'org-p', user: 'victim', count: 50, max: 5 };
    const workers = [0, 1, 2, 3].map(() =>
      fork(join(__dirname, '../helpers/check-worker.ts'), [], {
        execArgv: ['-r', 'ts-node/register/transpile-only'],
        env: { ...process.env, LOCKGATE_WORKER_JOB: JSON.stringify(job) },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      }),
    );
    const next = (w: (typeof workers)[number]) =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        w.once('message', (m) => resolve(m as Record<string, unknown>));
        w.once('exit', (code) => reject(new Error(`worker exited with ${code}`)));
      });
    try {
      const ready = await Promise.all(workers.map(next));
      expect(ready.every((m) => m.ready === true)).toBe(true);
      const done = workers.map(next);
      workers.forEach((w) => w.send({ go: true }));
      const reports = await Promise.all(done);
      for (const r of reports) expect(r.error).toBeUndefined();
      const evaluated = reports.reduce((n, r) => n + (r.evaluated as number), 0);
      expect(evaluated).toBe(5);
      const client = await createTestRedis();
      const store = new RedisStore({ client });
      const engine = new LockoutEngine({
        store,
        instanceId,
        defaults: { maxPasswordAttempts: 5 },
      });
      const status = await engine.getUserStatus('org-p', 'victim');
      expect(status.locked).toBe(true);
      expect(status.failedAttempts.password).toBe(5);
      engine.close();
      await store.close();
      client.disconnect();
    } finally {
      workers.forEach((w) => w.kill());
    }
  }, 60_000);

  it.each([
    // 16 per write at most: Redis gets to work on a full batch while the turn goes on
    [true, 2],
    // one by one
    [false, 32],
  ])(
    'coalesceWrites %s: 32 checks sent in one event-loop turn take %i socket write(s), each answered on its own',
    async (coalesceWrites, expected) => {
      const client = await createTestRedis();
      const store = new RedisStore({ client, coalesceWrites });
      const engine = new LockoutEngine({ store, instanceId: `inst-${randomUUID()}` });
      try {
        await engine.getUserStatus('org-w', 'warm-up'); // scripts loaded, connection ready
        // what reaches the socket's own write functions: one call per system call (write or writev)
        type Socket = { _write: (...a: unknown[]) => unknown; _writev?: (...a: unknown[]) => unknown };
        const socket = client.stream as unknown as Socket;
        let writes = 0;
        const write = socket._write;
        const writev = socket._writev;
        socket._write = function (this: unknown, ...a: unknown[]) {
          writes += 1;
          return write.apply(this, a);
        };
        if (writev)
          socket._writev = function (this: unknown, ...a: unknown[]) {
            writes += 1;
            return writev.apply(this, a);
          };
        const outcomes = await Promise.all(
          Array.from({ length: 32 }, (_, i) => engine.reserve('org-w', `user-${i}`, 'password')),
        );
        delete (socket as Partial<Socket>)._write;
        delete (socket as Partial<Socket>)._writev;
        expect(outcomes.map((o) => o.status)).toEqual(Array(32).fill('admitted'));
        expect(writes).toBe(expected);
        const settled = await Promise.all(
          outcomes.map((o) =>
            o.status === 'admitted' ? engine.settle(o.reservation, 'failure') : undefined,
          ),
        );
        expect(settled.map((r) => r?.failedAttempts)).toEqual(Array(32).fill(1));
      } finally {
        engine.close();
        await store.close();
        client.disconnect();
      }
    },
  );

  describe('outage', () => {
    let server: RedisServerHandle;
    let client: Redis;
    beforeAll(async () => {
      server = await startStandalone();
    });
    afterAll(async () => {
      client?.disconnect();
      await server?.stop();
    });

    it('answers StoreUnavailableError while Redis is down, and the same engine works again when it returns', async () => {
      client = new Redis(server.url, {
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
        retryStrategy: () => 100,
      });
      client.on('error', () => undefined);
      await new Promise((r) => client.once('ready', r));
      const store = new RedisStore({ client, commandTimeoutMs: 500 });
      const engine = new LockoutEngine({
        store,
        instanceId: 'outage',
        defaults: { maxPasswordAttempts: 3 },
        settingsCacheTtlMs: 0,
      });
      expect((await engine.check('o', 'u', 'password', () => false)).outcome).toBe('failure');

      await server.halt();
      let evaluated = false;
      await expect(
        engine.check('o', 'u', 'password', () => {
          evaluated = true;
          return true;
        }),
      ).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(evaluated).toBe(false); // fail-closed: nothing is evaluated unchecked
      await expect(store.ping()).rejects.toBeInstanceOf(StoreUnavailableError);
      await expect(engine.getUserStatus('o', 'u')).rejects.toBeInstanceOf(StoreUnavailableError);

      await server.restart(); // an empty Redis on the same port: scripts must be loaded again
      const deadline = Date.now() + 10_000;
      let result: Awaited<ReturnType<typeof engine.check>> | undefined;
      while (Date.now() < deadline) {
        try {
          result = await engine.check('o', 'u', 'password', () => false);
          break;
        } catch (e) {
          expect(e).toBeInstanceOf(StoreUnavailableError);
          await sleep(100);
        }
      }
      expect(result).toEqual({ outcome: 'failure', failedAttempts: 1, locked: false });
      engine.close();
      await store.close();
    }, 30_000);

    it('settings change notices reach a store again after Redis restarts (it resubscribes itself, autoResubscribe off)', async () => {
      const connect = async () => {
        const c = new Redis(server.url, { enableOfflineQueue: false, retryStrategy: () => 50 });
        c.on('error', () => undefined);
        await new Promise((r) => c.once('ready', r));
        return c;
      };
      const [a, b] = [await connect(), await connect()];
      const listening = new RedisStore({ client: a, commandTimeoutMs: 500 });
      const writing = new RedisStore({ client: b, commandTimeoutMs: 500 });
      const heard: string[] = [];
      listening.onSettingsChanged((_instance, owner) => {
        heard.push(owner.type === 'org' ? owner.org : 'instance');
      });
      const unhandled: unknown[] = [];
      const onUnhandled = (e: unknown) => unhandled.push(e);
      process.on('unhandledRejection', onUnhandled);
      try {
        const values = { maxPasswordAttempts: 4, maxOtpAttempts: 4 };
        let n = 0;
        /** Writes org settings until the listening store hears of one (its subscription is up). */
        const heardAWrite = async () => {
          const deadline = Date.now() + 10_000;
          while (Date.now() < deadline) {
            const org = `org-notice-${(n += 1)}`;
            try {
              await writing.writeSettings('notices', { type: 'org', org }, { op: 'add', values });
            } catch {
              // Redis not back yet
            }
            await sleep(100);
            if (heard.includes(org)) return true;
          }
          return false;
        };
        expect(await heardAWrite()).toBe(true);
        await server.restart();
        expect(await heardAWrite()).toBe(true);
        // Closed right after Redis came back (a resubscribe may be on its way): nothing unhandled.
        await server.restart();
        await listening.close();
        await writing.close();
        await sleep(300);
        expect(unhandled).toEqual([]);
      } finally {
        process.off('unhandledRejection', onUnhandled);
        a.disconnect();
        b.disconnect();
      }
    }, 30_000);
  });

  it('keeps a user in one small hash (one cluster slot) that is gone once its tombstones end; MEMORY USAGE reported', async () => {
    const cluster = await createTestCluster();
    const standalone = await createTestRedis();
    try {
      for (const client of [standalone, cluster]) {
        const store = new RedisStore({ client });
        const instanceId = `inst-${randomUUID()}`;
        const engine = new LockoutEngine({ store, instanceId, leaseMs: 1000 });
        const subject = { instance: instanceId, org: '69629023906488334', user: '69629023906488335' };
        for (let i = 0; i < 3; i++) await engine.check(subject.org, subject.user, 'password', () => false);
        await engine.check(subject.org, subject.user, 'totp', () => false);
        const [s] = store.userKeys(subject);
        const counted = Number(await client.memory('USAGE', s));
        const r = await engine.reserve(subject.org, subject.user, 'otp_sms');
        const inFlight = Number(await client.memory('USAGE', s));
        // reported in the test output for the issue note
        console.log(
          `${client.isCluster ? 'cluster' : 'standalone'}: MEMORY USAGE of a user with failures ` +
            `(and the tombstones of its 4 checks): ${counted} B; with one reservation in flight: ${inFlight} B`,
        );
        expect(counted).toBeGreaterThan(0);
        expect(inFlight).toBeLessThan(1024);
        if (r.status === 'admitted') await engine.settle(r.reservation, 'release');
        await engine.unlockUser(subject.org, subject.user).catch(() => undefined);
        await engine.check(subject.org, subject.user, 'password', () => true);
        await engine.check(subject.org, subject.user, 'totp', () => true);
        const deadline = Date.now() + 10_000;
        while ((await client.exists(s)) !== 0 && Date.now() < deadline) await sleep(50);
        expect(await client.exists(s)).toBe(0);
        engine.close();
        await store.close();
      }
    } finally {
      cluster.disconnect();
      standalone.disconnect();
    }
  });
});
