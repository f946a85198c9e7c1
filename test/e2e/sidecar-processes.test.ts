/**
 * The sidecar as separate processes (`node -r ts-node/register/transpile-only src/sidecar/main.ts`,
 * what `npm start` runs): the quick start without configuration, bad configuration, SIGTERM
 * draining, and two processes sharing one Redis (G1 and G3).
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { hashPassword } from '../../src/verify';
import { testRedisUrl } from '../helpers/redis-clients';
import { getFreePort } from '../helpers/redis-servers';
import {
  call,
  killSidecars,
  spawnSidecar,
  until,
  waitReady,
  type SidecarProcess,
} from '../helpers/sidecar-process';

const FAST_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 };

afterAll(() => killSidecars());

describe('sidecar main (npm start)', () => {
  it('starts with no configuration, prints a generated admin token once, and that token locks and unlocks', async () => {
    const port = await getFreePort();
    const p = spawnSidecar({}, port);
    const token = await until('the token line', () => /admin token[^:]*: (\S+)\n/.exec(p.stdout())?.[1]);
    await waitReady(p);
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(p.stdout().split(token)).toHaveLength(2); // printed exactly once
    expect(p.stdout()).toContain(`"url":"http://127.0.0.1:${port}"`);

    expect((await call(p.url, token, 'POST', '/v2/users/alice/lock')).status).toBe(200);
    const status = await call(p.url, token, 'GET', '/v1/users/alice/lockout');
    expect(status.body).toMatchObject({ userId: 'alice', orgId: 'org-a', state: 'USER_STATE_LOCKED' });
    expect((await call(p.url, token, 'POST', '/management/v1/users/alice/_unlock')).status).toBe(200);
    expect((await call(p.url, token, 'GET', '/v1/users/alice/lockout')).body.state).toBe('USER_STATE_ACTIVE');
    expect((await call(p.url, 'not-the-token', 'GET', '/v1/users/alice/lockout')).status).toBe(401);

    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(p.stdout().split(token)).toHaveLength(2); // never logged afterwards either
  });

  it('does not print a token when one is configured', async () => {
    const port = await getFreePort();
    const p = spawnSidecar({ LOCKGATE_ADMIN_TOKEN: 'my-admin-token-123456' }, port);
    await waitReady(p);
    expect(p.stdout()).not.toContain('admin token');
    expect(p.stdout()).not.toContain('my-admin-token-123456');
    expect((await call(p.url, 'my-admin-token-123456', 'GET', '/v1/users/bob/lockout')).status).toBe(200);
    p.child.kill('SIGINT');
    expect(await p.exited).toBe(0);
  });

  it('a bad LOCKGATE_PORT stops the start with one line naming the field and exit code 1', async () => {
    const p = spawnSidecar({ LOCKGATE_PORT: '99999' });
    expect(await p.exited).toBe(1);
    expect(p.stderr()).toBe(
      'lockgate: invalid configuration: server.port (from LOCKGATE_PORT): expected an integer from 0 to 65535\n',
    );
    expect(p.stdout()).toBe('');
  });

  it('an unknown key in the LOCKGATE_CONFIG file stops the start with one line naming it', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'lockgate-cfg-'));
    try {
      const file = path.join(dir, 'lockgate.yaml');
      writeFileSync(file, 'server:\n  port: 8080\n  hots: 0.0.0.0\n');
      const p = spawnSidecar({ LOCKGATE_CONFIG: file });
      expect(await p.exited).toBe(1);
      expect(p.stderr().trimEnd().split('\n')).toEqual([
        'lockgate: invalid configuration: server.hots: unknown option (check the spelling; see config/example.yaml)',
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('SIGTERM stops accepting, drains the in-flight request, then exits 0', async () => {
    const port = await getFreePort();
    const token = 'drain-admin-token-123456';
    const p = spawnSidecar({ LOCKGATE_ADMIN_TOKEN: token, LOCKGATE_LOG_LEVEL: 'info' }, port);
    await waitReady(p);
    const body = JSON.stringify({ userId: 'drain', password: 'pw' });
    const socket = net.connect(port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    let response = '';
    socket.on('data', (d: Buffer) => (response += d.toString()));
    // Headers and half of the body: the request is in flight, waiting for the rest.
    socket.write(
      `POST /v1/checks/password HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, 8)}`,
    );
    await new Promise((r) => setTimeout(r, 200));
    p.child.kill('SIGTERM');
    await until('the shutdown log line', () =>
      p.stdout().includes('draining in-flight requests') ? true : undefined,
    );
    await expect(fetch(`${p.url}/healthz`)).rejects.toThrow(); // no longer accepting
    expect(p.child.exitCode).toBeNull(); // still draining
    socket.write(body.slice(8));
    expect(await p.exited).toBe(0);
    expect(response).toMatch(/^HTTP\/1\.1 401 /);
    expect(response).toContain('"failedAttempts":"1"');
    socket.destroy();
  });
});

describe('two sidecar processes on one Redis', () => {
  const token = 'shared-admin-token-123456';
  let a: SidecarProcess;
  let b: SidecarProcess;
  let dir: string;
  let hash: string;

  beforeAll(async () => {
    hash = await hashPassword('right', FAST_ARGON2);
    dir = mkdtempSync(path.join(os.tmpdir(), 'lockgate-two-'));
    const file = path.join(dir, 'lockgate.yaml');
    writeFileSync(
      file,
      [
        'instance:',
        `  id: e2e-${randomUUID()}`,
        '  maxPasswordAttempts: 5',
        'password:',
        '  argon2: { memoryCost: 1024, timeCost: 1, parallelism: 1 }',
        'otp:',
        '  pepper: "${SHARED_PEPPER}"',
        'log:',
        '  level: warn',
      ].join('\n'),
    );
    const env = {
      LOCKGATE_CONFIG: file,
      LOCKGATE_REDIS_URL: testRedisUrl(),
      LOCKGATE_ADMIN_TOKEN: token,
      SHARED_PEPPER: 'a-pepper-shared-by-both-sidecars',
    };
    const [portA, portB] = [await getFreePort(), await getFreePort()];
    a = spawnSidecar(env, portA);
    b = spawnSidecar(env, portB);
    await Promise.all([waitReady(a), waitReady(b)]);
  });

  afterAll(async () => {
    for (const p of [a, b]) {
      if (p && p.child.exitCode === null) {
        p.child.kill('SIGTERM');
        await p.exited;
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('G1: 100 concurrent wrong passwords for one user across both: exactly 5 are evaluated and the user is locked', async () => {
    const user = `g1-${randomUUID()}`;
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        call(i % 2 === 0 ? a.url : b.url, token, 'POST', '/v1/checks/password', {
          userId: user,
          password: `wrong-${i}`,
          encodedHash: hash,
        }),
      ),
    );
    const count = (status: number) => results.filter((r) => r.status === status).length;
    expect(count(401)).toBe(5); // failed credential evaluations: exactly the limit
    expect(count(401) + count(423) + count(429)).toBe(100);
    const failedAttempts = results
      .filter((r) => r.status === 401)
      .map((r) => Number(r.body.details[1].failedAttempts))
      .sort((x, y) => x - y);
    expect(failedAttempts).toEqual([1, 2, 3, 4, 5]);
    for (const sidecar of [a, b]) {
      const status = await call(sidecar.url, token, 'GET', `/v1/users/${user}/lockout`);
      expect(status.body).toMatchObject({ state: 'USER_STATE_LOCKED', failedAttempts: { password: '5' } });
      expect(
        (
          await call(sidecar.url, token, 'POST', '/v1/checks/password', {
            userId: user,
            password: 'right',
            encodedHash: hash,
          })
        ).status,
      ).toBe(423);
    }
  });

  it('G1 with attempts: 100 concurrent reservations settled as failures across both count exactly 5', async () => {
    const user = `g1-attempts-${randomUUID()}`;
    const results = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const url = i % 2 === 0 ? a.url : b.url;
        const reserved = await call(url, token, 'POST', '/v1/attempts', { userId: user, factor: 'password' });
        if (reserved.status !== 201) return reserved.status;
        // Settled through the other process.
        const other = i % 2 === 0 ? b.url : a.url;
        return (await call(other, token, 'POST', `/v1/attempts/${reserved.body.attemptId}/failure`)).status;
      }),
    );
    expect(results.filter((s) => s === 200)).toHaveLength(5);
    expect(results.every((s) => s === 200 || s === 423 || s === 429)).toBe(true);
    const status = await call(a.url, token, 'GET', `/v1/users/${user}/lockout`);
    expect(status.body).toMatchObject({ state: 'USER_STATE_LOCKED', failedAttempts: { password: '5' } });
  });

  it('G3: a settings change, lock or unlock through one is seen by the other within 1 s', async () => {
    const before = await call(b.url, token, 'GET', '/management/v1/policies/lockout', undefined, 'org-g3');
    expect(before.body.policy.maxPasswordAttempts).toBe('5'); // b has the old value cached now
    const added = await call(
      a.url,
      token,
      'POST',
      '/management/v1/policies/lockout',
      { maxPasswordAttempts: 2, maxOtpAttempts: 3 },
      'org-g3',
    );
    expect(added.status).toBe(200);
    const changed = Date.now();
    await until('b to see the new settings', async () => {
      const r = await call(b.url, token, 'GET', '/management/v1/policies/lockout', undefined, 'org-g3');
      return r.body.policy.maxPasswordAttempts === '2' ? true : undefined;
    });
    expect(Date.now() - changed).toBeLessThan(1000);

    // Applied on b at once: the second failure locks.
    const statuses: number[] = [];
    for (let i = 0; i < 3; i += 1) {
      statuses.push(
        (
          await call(
            b.url,
            token,
            'POST',
            '/v1/checks/password',
            { userId: 'g3-user', password: 'x', encodedHash: hash },
            'org-g3',
          )
        ).status,
      );
    }
    expect(statuses).toEqual([401, 401, 423]);

    expect((await call(a.url, token, 'POST', '/v2/users/g3-user/unlock', undefined, 'org-g3')).status).toBe(
      200,
    );
    expect(
      (await call(b.url, token, 'GET', '/v1/users/g3-user/lockout', undefined, 'org-g3')).body.state,
    ).toBe('USER_STATE_ACTIVE');
    expect((await call(b.url, token, 'POST', '/v2/users/g3-user/lock', undefined, 'org-g3')).status).toBe(
      200,
    );
    expect(
      (
        await call(
          a.url,
          token,
          'POST',
          '/v1/checks/password',
          { userId: 'g3-user', password: 'right', encodedHash: hash },
          'org-g3',
        )
      ).status,
    ).toBe(423);
  });

  it('a code issued by one is checked by the other (shared pepper)', async () => {
    const issued = await call(a.url, token, 'POST', '/v1/otp/sms', { userId: 'otp-user' });
    expect(issued.status).toBe(201);
    const checked = await call(b.url, token, 'POST', '/v1/checks/otp_sms', {
      userId: 'otp-user',
      code: issued.body.code,
    });
    expect(checked.status).toBe(200);
  });
});
