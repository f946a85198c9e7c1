/**
 * The sidecar on real Redis: readiness, G4 (store down → 503 code 14, recovery without a restart),
 * fail-open, state kept across sidecar restarts, and Redis Cluster.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseConfig, type SidecarConfig } from '../../src/sidecar/config';
import { createLogger } from '../../src/sidecar/logger';
import { startSidecar, type SidecarHandle } from '../../src/sidecar/server';
import { generateTotpSecret, hashPassword, totpCode } from '../../src/verify';
import { testClusterNodes, testRedisUrl } from '../helpers/redis-clients';
import {
  findRedisBinaries,
  getFreePort,
  redisCommand,
  startCluster,
  startStandalone,
  type RedisServerHandle,
} from '../helpers/redis-servers';

/** A parsed JSON answer, read freely by the assertions. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
const ADMIN = 'redis-admin-token-0001';
const FAST_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 };

function redisConfig(redis: Record<string, unknown>, extra: Record<string, unknown> = {}): SidecarConfig {
  return parseConfig({
    server: { port: 0 },
    instance: { id: `it-${randomUUID()}`, maxPasswordAttempts: 3 },
    store: { type: 'redis', redis: { commandTimeoutMs: 500, ...redis } },
    password: { argon2: FAST_ARGON2 },
    auth: {
      tokens: [
        {
          name: 'root',
          token: ADMIN,
          orgs: ['*'],
          permissions: [
            'iam.policy.read',
            'iam.policy.write',
            'policy.read',
            'user.read',
            'user.write',
            'lockout.check',
          ],
        },
      ],
    },
    ...extra,
  });
}

function capture() {
  const lines: string[] = [];
  const logger = createLogger('info', { write: (line: string) => void lines.push(line) });
  return { logger, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

async function call(
  sidecar: SidecarHandle,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: Json; text: string }> {
  const headers: Record<string, string> = { authorization: `Bearer ${ADMIN}`, 'x-zitadel-orgid': 'org-a' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${sidecar.url}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, body: parsed, text };
}

async function until(what: string, fn: () => Promise<boolean>, timeoutMs = 15_000): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await fn()) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Kills the Redis process (connection refused until restart()). */
async function killRedis(server: RedisServerHandle): Promise<void> {
  const pid = server.pid;
  if (pid === undefined) throw new Error('redis is not running');
  process.kill(pid, 'SIGKILL');
  await until('redis to die', async () => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  });
}

let hash: string;
beforeAll(async () => {
  hash = await hashPassword('right', FAST_ARGON2);
});

describe('sidecar on standalone Redis', () => {
  let redis: RedisServerHandle;
  beforeAll(async () => {
    redis = await startStandalone();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('store down: /readyz and checks answer 503 code 14 (fail-closed); it recovers without a restart', async () => {
    const sidecar = await startSidecar(redisConfig({ url: redis.url }), { logger: createLogger('silent') });
    try {
      expect((await call(sidecar, 'GET', '/readyz')).status).toBe(200);
      const wrong = await call(sidecar, 'POST', '/v1/checks/password', {
        userId: 'u1',
        password: 'x',
        encodedHash: hash,
      });
      expect(wrong.status).toBe(401);

      await killRedis(redis);
      const ready = await call(sidecar, 'GET', '/readyz');
      expect(ready.status).toBe(503);
      expect(ready.body.code).toBe(14);
      const healthz = await call(sidecar, 'GET', '/healthz');
      expect(healthz.status).toBe(200);
      for (const body of [
        { userId: 'u1', password: 'right', encodedHash: hash },
        { userId: 'u1', password: 'wrong', encodedHash: hash },
      ]) {
        const res = await call(sidecar, 'POST', '/v1/checks/password', body);
        expect(res.status).toBe(503);
        expect(res.body.code).toBe(14);
        expect(res.body.details[0].id).toBe('Errors.Store.Unavailable');
        expect(res.text).not.toMatch(/ECONNREFUSED|Stream|ioredis/i);
      }
      const attempt = await call(sidecar, 'POST', '/v1/attempts', { userId: 'u1', factor: 'password' });
      expect(attempt.status).toBe(503);
      expect((await call(sidecar, 'POST', '/v2/users/u1/lock')).status).toBe(503);

      const metrics = await (await fetch(`${sidecar.url}/metrics`)).text();
      expect(metrics).toMatch(/lockgate_store_errors_total\{operation="reserve"\} [1-9]/);
      expect(metrics).toContain('lockgate_store_up 0');

      await redis.restart();
      await until(
        'readiness after the restart',
        async () => (await call(sidecar, 'GET', '/readyz')).status === 200,
      );
      const after = await call(sidecar, 'POST', '/v1/checks/password', {
        userId: 'u2',
        password: 'right',
        encodedHash: hash,
      });
      expect(after.status).toBe(200);
      const failure = await call(sidecar, 'POST', '/v1/checks/password', {
        userId: 'u2',
        password: 'x',
        encodedHash: hash,
      });
      expect(failure.status).toBe(401);
      expect(failure.body.details[1].failedAttempts).toBe('1');
    } finally {
      await sidecar.close();
    }
  });

  it('fail-open: the credential is still verified, lockout is neither enforced nor counted, and a warning is logged', async () => {
    const log = capture();
    const sidecar = await startSidecar(redisConfig({ url: redis.url }, { onStoreError: 'fail-open' }), {
      logger: log.logger,
    });
    try {
      // While Redis is up, fail-open changes nothing.
      expect((await call(sidecar, 'POST', '/v2/users/locked-one/lock')).status).toBe(200);
      expect(
        (
          await call(sidecar, 'POST', '/v1/checks/password', {
            userId: 'locked-one',
            password: 'right',
            encodedHash: hash,
          })
        ).status,
      ).toBe(423);
      const counted = await call(sidecar, 'POST', '/v1/checks/password', {
        userId: 'u3',
        password: 'x',
        encodedHash: hash,
      });
      expect(counted.body.details[1].failedAttempts).toBe('1');

      await killRedis(redis);
      const ok = await call(sidecar, 'POST', '/v1/checks/password', {
        userId: 'u3',
        password: 'right',
        encodedHash: hash,
      });
      expect(ok.status).toBe(200);
      expect(ok.body).toEqual({ userId: 'u3', factor: 'password', failedAttempts: '0', locked: false });
      // The lock cannot be read: a correct password passes.
      expect(
        (
          await call(sidecar, 'POST', '/v1/checks/password', {
            userId: 'locked-one',
            password: 'right',
            encodedHash: hash,
          })
        ).status,
      ).toBe(200);
      for (let i = 0; i < 5; i += 1) {
        const wrong = await call(sidecar, 'POST', '/v1/checks/password', {
          userId: 'u3',
          password: 'x',
          encodedHash: hash,
        });
        expect(wrong.status).toBe(401); // never 423: nothing is counted
        expect(wrong.body.details[1].failedAttempts).toBe('0');
      }
      // An unknown user still costs a (dummy) verification and fails.
      expect(
        (await call(sidecar, 'POST', '/v1/checks/password', { userId: 'ghost', password: 'x' })).status,
      ).toBe(401);

      // Attempts for credentials verified elsewhere are admitted and settle uncounted, once.
      const reserved = await call(sidecar, 'POST', '/v1/attempts', { userId: 'u3', factor: 'password' });
      expect(reserved.status).toBe(201);
      const settled = await call(sidecar, 'POST', `/v1/attempts/${reserved.body.attemptId}/failure`);
      expect(settled.status).toBe(200);
      expect(settled.body).toEqual({ failedAttempts: '0', locked: false });
      expect((await call(sidecar, 'POST', `/v1/attempts/${reserved.body.attemptId}/failure`)).status).toBe(
        404,
      );

      // Codes need the store themselves; admin routes are not checks.
      const secret = generateTotpSecret();
      expect(
        (await call(sidecar, 'POST', '/v1/checks/totp', { userId: 'u3', code: totpCode(secret), secret }))
          .status,
      ).toBe(503);
      expect((await call(sidecar, 'POST', '/v1/otp/sms', { userId: 'u3' })).status).toBe(503);
      expect((await call(sidecar, 'POST', '/v2/users/u3/lock')).status).toBe(503);
      expect((await call(sidecar, 'GET', '/readyz')).status).toBe(503);

      const warnings = log.records().filter((r) => r.failOpen === true);
      expect(warnings.length).toBeGreaterThanOrEqual(9);
      expect(warnings[0]).toMatchObject({ level: 40, userId: 'u3', orgId: 'org-a', factor: 'password' });
      const metrics = await (await fetch(`${sidecar.url}/metrics`)).text();
      expect(metrics).toMatch(/lockgate_fail_open_total\{factor="password"\} (9|1\d)/);

      await redis.restart();
      await until(
        'readiness after the restart',
        async () => (await call(sidecar, 'GET', '/readyz')).status === 200,
      );
      const again = await call(sidecar, 'POST', '/v1/checks/password', {
        userId: 'u3',
        password: 'x',
        encodedHash: hash,
      });
      expect(again.status).toBe(401);
      expect(again.body.details[1].failedAttempts).toBe('1'); // counting again (the restarted Redis is empty)
    } finally {
      await sidecar.close();
    }
  });
});

describe('sidecar on the shared Redis', () => {
  it('a restarted sidecar keeps the state kept in Redis', async () => {
    const config = redisConfig({ url: testRedisUrl() });
    const first = await startSidecar(config, { logger: createLogger('silent') });
    try {
      for (let i = 0; i < 2; i += 1) {
        await call(first, 'POST', '/v1/checks/password', {
          userId: 'persist',
          password: 'x',
          encodedHash: hash,
        });
      }
      expect((await call(first, 'POST', '/v2/users/locked/lock')).status).toBe(200);
      expect(
        (
          await call(first, 'PUT', '/admin/v1/policies/password/lockout', {
            maxPasswordAttempts: 6,
            maxOtpAttempts: 2,
          })
        ).status,
      ).toBe(200);
    } finally {
      await first.close();
    }
    const second = await startSidecar(config, { logger: createLogger('silent') });
    try {
      const status = await call(second, 'GET', '/v1/users/persist/lockout');
      expect(status.body.failedAttempts.password).toBe('2');
      expect(status.body.settings).toMatchObject({ maxPasswordAttempts: '6', maxOtpAttempts: '2' });
      expect((await call(second, 'GET', '/v1/users/locked/lockout')).body.state).toBe('USER_STATE_LOCKED');
      expect(
        (
          await call(second, 'POST', '/v1/checks/password', {
            userId: 'locked',
            password: 'right',
            encodedHash: hash,
          })
        ).status,
      ).toBe(423);
    } finally {
      await second.close();
    }
  });

  it('runs on a Redis Cluster given in the configuration', async () => {
    const nodes = testClusterNodes().map((n) => `${n.host}:${n.port}`);
    const sidecar = await startSidecar(redisConfig({ cluster: { nodes } }), {
      logger: createLogger('silent'),
    });
    try {
      expect((await call(sidecar, 'GET', '/readyz')).status).toBe(200);
      const statuses: number[] = [];
      for (let i = 0; i < 4; i += 1) {
        statuses.push(
          (
            await call(sidecar, 'POST', '/v1/checks/password', {
              userId: 'c1',
              password: 'x',
              encodedHash: hash,
            })
          ).status,
        );
      }
      expect(statuses).toEqual([401, 401, 401, 423]);
      const issued = await call(sidecar, 'POST', '/v1/otp/email', { userId: 'c2' });
      expect(issued.status).toBe(201);
      const checked = await call(sidecar, 'POST', '/v1/checks/otp_email', {
        userId: 'c2',
        code: issued.body.code,
      });
      expect(checked.status).toBe(200);
    } finally {
      await sidecar.close();
    }
  });
});

describe('sidecar on a Redis Cluster whose master goes away', () => {
  it("answers 503 while the master of the user's slot is down, and recovers when it returns", async () => {
    const cluster = await startCluster(3);
    const sidecar = await startSidecar(
      redisConfig({ cluster: { nodes: cluster.nodes.map((n) => `${n.host}:${n.port}`) } }),
      { logger: createLogger('silent') },
    );
    try {
      const check = () =>
        call(sidecar, 'POST', '/v1/checks/password', { userId: 'cn1', password: 'x', encodedHash: hash });
      expect((await check()).status).toBe(401);
      // the master that holds the user's keys: any key with the user's hash tag maps to it
      // the master that holds the user's keys (all of a user's keys share one hash tag)
      const key = `lg:{${encodeURIComponent(sidecar.engine.instanceId)}:org-a:cn1}:s`;
      const first = cluster.nodes[0]!.port;
      const slot = Number(await redisCommand(first, ['CLUSTER', 'KEYSLOT', key]));
      const ranges = (await redisCommand(first, ['CLUSTER', 'SLOTS'])) as unknown as Array<
        [number, number, [string, number]]
      >;
      const range = ranges.find(([from, to]) => slot >= from && slot <= to)!;
      const owner = cluster.servers.find((srv) => srv.port === Number(range[2][1]))!;
      await owner.halt();
      const down = await check();
      expect(down.status).toBe(503);
      expect(down.body.code).toBe(14);
      await owner.restart(); // same port, same nodes.conf: it takes its slots back (its data is gone)
      await until('the sidecar answering again', async () => (await check()).status === 401, 30_000);
    } finally {
      await sidecar.close();
      await cluster.stop();
    }
  }, 60_000);
});

describe('sidecar through Redis Sentinel', () => {
  it('finds the master through a sentinel given in the configuration', async () => {
    const master = await startStandalone();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'lockgate-sentinel-'));
    const port = await getFreePort();
    const conf = path.join(dir, 'sentinel.conf');
    writeFileSync(
      conf,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor lgmaster 127.0.0.1 ${master.port} 1`,
        'sentinel down-after-milliseconds lgmaster 5000',
      ].join('\n'),
    );
    const sentinel = spawn(findRedisBinaries().server, [conf, '--sentinel'], { stdio: 'ignore' });
    const exited = new Promise((resolve) => sentinel.once('exit', resolve));
    let sidecar: SidecarHandle | undefined;
    try {
      await until('the sentinel to know the master', async () => {
        try {
          const reply = await redisCommand(port, ['SENTINEL', 'get-master-addr-by-name', 'lgmaster']);
          return Array.isArray(reply) && reply[1] === String(master.port);
        } catch {
          return false;
        }
      });
      sidecar = await startSidecar(
        redisConfig({ sentinel: { sentinels: [`127.0.0.1:${port}`], name: 'lgmaster' } }),
        { logger: createLogger('silent') },
      );
      expect((await call(sidecar, 'GET', '/readyz')).status).toBe(200);
      expect((await call(sidecar, 'POST', '/v2/users/s1/lock')).status).toBe(200);
      // The lock is on the master the sentinel named.
      const keys = await redisCommand(master.port, ['KEYS', 'lg:*']);
      expect(Array.isArray(keys) && keys.length).toBeGreaterThan(0);
    } finally {
      await sidecar?.close();
      sentinel.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
      await master.stop();
    }
  });
});
