/**
 * Issue 12, defence 2, in the sidecar: the check and attempt routes throttle by the `clientIp` the
 * auth service passes; over the limit they answer 429 (code 8, Errors.Lockout.Throttled,
 * Retry-After) whatever the user, the block is audit-logged and counted in /metrics. On the
 * memory store and on real Redis, with really concurrent HTTP requests.
 */
import { randomUUID } from 'node:crypto';
import { parseConfig, type SidecarConfig } from '../../src/sidecar/config';
import { createLogger } from '../../src/sidecar/logger';
import { startSidecar, type SidecarHandle } from '../../src/sidecar/server';
import { hashPassword } from '../../src/verify';
import { testRedisUrl } from '../helpers/redis-clients';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;
const TOKEN = 'spray-admin-token-0001';
const FAST_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 };
const IP = '203.0.113.7';

function config(store: Record<string, unknown>, sprayThrottle: Record<string, unknown>): SidecarConfig {
  return parseConfig({
    server: { port: 0 },
    instance: { id: `spray-${randomUUID()}`, maxPasswordAttempts: 3 },
    store,
    password: { argon2: FAST_ARGON2 },
    defences: { sprayThrottle },
    auth: {
      tokens: [
        {
          name: 'auth-service',
          token: TOKEN,
          orgs: ['*'],
          permissions: ['user.read', 'user.write', 'lockout.check'],
        },
      ],
    },
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
  org = 'org-a',
): Promise<{ status: number; body: Json; text: string; headers: Headers }> {
  const headers: Record<string, string> = { authorization: `Bearer ${TOKEN}`, 'x-zitadel-orgid': org };
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
  return { status: res.status, body: parsed, text, headers: res.headers };
}

function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(name));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

let hash: string;
beforeAll(async () => {
  hash = await hashPassword('right password', FAST_ARGON2);
});

const STORES: Array<{ name: string; store: () => Record<string, unknown> }> = [
  { name: 'memory', store: () => ({ type: 'memory' }) },
  { name: 'Redis', store: () => ({ type: 'redis', redis: { url: testRedisUrl() } }) },
];

describe.each(STORES)('sidecar spray throttling on $name', ({ store }) => {
  let sidecar: SidecarHandle;
  let logs: ReturnType<typeof capture>;
  beforeEach(async () => {
    logs = capture();
    sidecar = await startSidecar(config(store(), { enabled: true, failures: 5, blockSeconds: 300 }), {
      logger: logs.logger,
    });
  });
  afterEach(async () => {
    await sidecar.close();
  });

  it('a spray across users and orgs is throttled after 5 failures: 429 code 8 with Retry-After, the same answer for any user, audit-logged and counted', async () => {
    for (let i = 0; i < 5; i += 1) {
      const r = await call(
        sidecar,
        'POST',
        '/v1/checks/password',
        { userId: `victim-${i}`, password: 'Winter2026!', encodedHash: hash, clientIp: IP },
        i % 2 === 0 ? 'org-a' : 'org-b',
      );
      expect(r.status).toBe(401);
    }
    // A known user with the right password, and an unknown user: the same answer, unevaluated.
    const known = await call(sidecar, 'POST', '/v1/checks/password', {
      userId: 'victim-0',
      password: 'right password',
      encodedHash: hash,
      clientIp: IP,
    });
    const unknown = await call(
      sidecar,
      'POST',
      '/v1/checks/password',
      { userId: 'nobody', password: 'x', clientIp: IP },
      'org-c',
    );
    for (const r of [known, unknown]) {
      expect(r.status).toBe(429);
      expect(r.headers.get('retry-after')).toBe('300');
      expect(r.body).toEqual({
        code: 8,
        message: 'Too many failed checks from this client, retry later',
        details: [
          {
            '@type': 'type.googleapis.com/zitadel.v1.ErrorDetail',
            id: 'Errors.Lockout.Throttled',
            message: 'Too many failed checks from this client, retry later',
          },
        ],
      });
    }
    expect(known.text).toBe(unknown.text);
    // The attempt route is throttled too, and nobody was locked (one failure each).
    expect(
      (await call(sidecar, 'POST', '/v1/attempts', { userId: 'x', factor: 'password', clientIp: IP })).status,
    ).toBe(429);
    expect((await call(sidecar, 'GET', '/v1/users/victim-0/lockout')).body.state).toBe('USER_STATE_ACTIVE');
    // Another client is not.
    expect(
      (
        await call(sidecar, 'POST', '/v1/checks/password', {
          userId: 'victim-0',
          password: 'right password',
          encodedHash: hash,
          clientIp: '198.51.100.20',
        })
      ).status,
    ).toBe(200);

    const audit = logs.records().filter((r) => r.audit === true && r.action === 'client.throttle');
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({
      ip: `${IP}/32`,
      failures: 5,
      reason: 'failures',
      principal: 'auth-service',
    });
    expect(Date.parse(audit[0]!.until as string)).toBeGreaterThan(Date.now() + 290_000);
    // Recorded as an event (issue 14) under the instance id (a block belongs to no org or user).
    const instanceId = sidecar.engine.instanceId;
    const events = await call(sidecar, 'GET', '/v1/events?type=client.throttled', undefined, instanceId);
    expect(events.status).toBe(200);
    expect(events.body.events).toHaveLength(1);
    expect(events.body.events[0]).toMatchObject({
      orgId: instanceId,
      type: 'client.throttled',
      actor: { type: 'system' },
      data: { ip: `${IP}/32`, failures: 5 },
    });
    expect(events.body.events[0].userId).toBeUndefined();
    const metrics = (await call(sidecar, 'GET', '/metrics')).text;
    expect(metric(metrics, 'lockgate_spray_throttle_blocks_total')).toBe(1);
    expect(
      metric(metrics, 'lockgate_check_duration_seconds_count{factor="password",outcome="throttled"}'),
    ).toBe(2);
  });

  it('100 concurrent wrong checks from one clientIp over HTTP: exactly 5 evaluated (401), 95 throttled (429)', async () => {
    const answers = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        call(sidecar, 'POST', '/v1/checks/password', {
          userId: `user-${i}`,
          password: 'wrong',
          encodedHash: hash,
          clientIp: IP,
        }),
      ),
    );
    const statuses = answers.map((a) => a.status);
    expect(statuses.filter((s) => s === 401)).toHaveLength(5);
    expect(statuses.filter((s) => s === 429)).toHaveLength(95);
  });

  it('attempts carry their point from reserve to settle: a success gives it back, a failure keeps it', async () => {
    const reserve = (userId: string) =>
      call(sidecar, 'POST', '/v1/attempts', { userId, factor: 'password', clientIp: IP });
    for (let i = 0; i < 10; i += 1) {
      const r = await reserve(`good-${i}`);
      expect(r.status).toBe(201);
      expect(r.body.attemptId).toContain('~');
      expect((await call(sidecar, 'POST', `/v1/attempts/${r.body.attemptId}/success`)).status).toBe(200);
    }
    for (let i = 0; i < 5; i += 1) {
      const r = await reserve(`bad-${i}`);
      expect(r.status).toBe(201);
      expect((await call(sidecar, 'POST', `/v1/attempts/${r.body.attemptId}/failure`)).status).toBe(200);
    }
    expect((await reserve('good-0')).status).toBe(429);
  });

  it('a settled attempt settled again gives nothing back twice, and a forged ticket is a 400', async () => {
    const reserve = (userId: string) =>
      call(sidecar, 'POST', '/v1/attempts', { userId, factor: 'password', clientIp: IP });
    const first = await reserve('u0');
    expect((await call(sidecar, 'POST', `/v1/attempts/${first.body.attemptId}/failure`)).status).toBe(200);
    const good = await reserve('u1');
    expect((await call(sidecar, 'POST', `/v1/attempts/${good.body.attemptId}/success`)).status).toBe(200);
    // Replayed: 404, and the point is not given back again.
    expect((await call(sidecar, 'POST', `/v1/attempts/${good.body.attemptId}/success`)).status).toBe(404);
    const [id] = String(good.body.attemptId).split('~');
    const forged = `${id}~${Buffer.from(JSON.stringify(['10.0.0.1/8', 1])).toString('base64url')}`;
    const bad = await call(sidecar, 'POST', `/v1/attempts/${forged}/success`);
    expect(bad.status).toBe(400);
    expect(bad.body.details[0].id).toBe('Errors.Attempt.Invalid');
    // 4 more failures reach 5 (the replay gave nothing back: otherwise a sixth would pass).
    for (let i = 0; i < 4; i += 1) {
      const r = await reserve(`bad-${i}`);
      expect((await call(sidecar, 'POST', `/v1/attempts/${r.body.attemptId}/failure`)).status).toBe(200);
    }
    expect((await reserve('u9')).status).toBe(429);
  });
});

describe('sidecar spray throttling input', () => {
  let sidecar: SidecarHandle;
  afterEach(async () => {
    await sidecar.close();
  });

  it('a clientIp that is not an IP address is a 400; without clientIp a check cannot be throttled (counted in /metrics)', async () => {
    sidecar = await startSidecar(config({ type: 'memory' }, { enabled: true, failures: 2 }), {
      logger: createLogger('silent'),
    });
    const bad = await call(sidecar, 'POST', '/v1/checks/password', {
      userId: 'u',
      password: 'x',
      encodedHash: hash,
      clientIp: 'not-an-ip',
    });
    expect(bad.status).toBe(400);
    expect(bad.body.details[0].id).toBe('Errors.Request.ClientIp');
    for (let i = 0; i < 4; i += 1) {
      const r = await call(sidecar, 'POST', '/v1/checks/password', {
        userId: `u${i}`,
        password: 'x',
        encodedHash: hash,
      });
      expect(r.status).toBe(401);
    }
    const metrics = (await call(sidecar, 'GET', '/metrics')).text;
    expect(metric(metrics, 'lockgate_spray_throttle_no_client_ip_total{route="/v1/checks/password"}')).toBe(
      4,
    );
  });

  it('with the defence off (the default), clientIp is accepted and changes nothing', async () => {
    sidecar = await startSidecar(config({ type: 'memory' }, {}), { logger: createLogger('silent') });
    for (let i = 0; i < 10; i += 1) {
      const r = await call(sidecar, 'POST', '/v1/checks/password', {
        userId: `u${i}`,
        password: 'x',
        encodedHash: hash,
        clientIp: IP,
      });
      expect(r.status).toBe(401);
    }
    const attempt = await call(sidecar, 'POST', '/v1/attempts', {
      userId: 'a',
      factor: 'password',
      clientIp: IP,
    });
    expect(attempt.status).toBe(201);
    expect(attempt.body.attemptId).not.toContain('~');
    const metrics = (await call(sidecar, 'GET', '/metrics')).text;
    expect(metric(metrics, 'lockgate_spray_throttle_no_client_ip_total')).toBe(0);
  });
});
