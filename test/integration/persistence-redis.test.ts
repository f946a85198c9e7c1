/**
 * Redis without persistence (issue 10): a private redis-server started with `--save ''
 * --appendonly no` (test/helpers/redis-servers.ts starts every server so) loses every lock when it
 * restarts. readRedisPersistence says so, the sidecar warns at start, and /readyz shows it.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { parseConfig, type SidecarConfig } from '../../src/sidecar/config';
import { createLogger } from '../../src/sidecar/logger';
import { startSidecar } from '../../src/sidecar/server';
import { readRedisPersistence } from '../../src/store/redis/persistence';
import { createTestRedis } from '../helpers/redis-clients';
import { startStandalone, type RedisServerHandle } from '../helpers/redis-servers';

function sidecarConfig(url: string): SidecarConfig {
  return parseConfig({
    server: { port: 0 },
    instance: { id: `persist-${randomUUID()}` },
    store: { type: 'redis', redis: { url, commandTimeoutMs: 2000 } },
    auth: { tokens: [{ name: 'root', token: 'persistence-token-01', permissions: ['user.read'] }] },
  });
}

function capture() {
  const lines: string[] = [];
  const logger = createLogger('info', { write: (line: string) => void lines.push(line) });
  return { logger, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe('Redis persistence', () => {
  let server: RedisServerHandle;
  let admin: Redis;

  beforeAll(async () => {
    server = await startStandalone();
    admin = await createTestRedis({ url: server.url });
  });
  afterAll(async () => {
    await admin?.quit();
    await server?.stop();
  });
  afterEach(async () => {
    // Back to the state the server was started in.
    await admin.config('SET', 'appendonly', 'no');
    await admin.config('SET', 'save', '');
    await admin.call('ACL', 'DELUSER', 'noconfig');
  });

  it("the test server really runs with --save '' --appendonly no", async () => {
    expect(await admin.config('GET', 'save')).toEqual(['save', '']);
    expect(await admin.config('GET', 'appendonly')).toEqual(['appendonly', 'no']);
  });

  it('readRedisPersistence: none, AOF, RDB', async () => {
    await expect(readRedisPersistence(admin)).resolves.toEqual({ state: 'none', aof: false, rdb: false });
    await admin.config('SET', 'appendonly', 'yes');
    await expect(readRedisPersistence(admin)).resolves.toEqual({
      state: 'persistent',
      aof: true,
      rdb: false,
    });
    await admin.config('SET', 'appendonly', 'no');
    await admin.config('SET', 'save', '3600 1');
    await expect(readRedisPersistence(admin)).resolves.toEqual({
      state: 'persistent',
      aof: false,
      rdb: true,
    });
  });

  it('CONFIG denied (ACL): INFO persistence shows AOF, else unknown', async () => {
    await admin.call('ACL', 'SETUSER', 'noconfig', 'on', '>noconfig-pw', '~*', '&*', '+@all', '-config');
    const limited = await createTestRedis({ url: server.url, username: 'noconfig', password: 'noconfig-pw' });
    try {
      await expect(limited.config('GET', 'save')).rejects.toThrow(/NOPERM/);
      const unknown = await readRedisPersistence(limited);
      expect(unknown).toMatchObject({ state: 'unknown', aof: false });
      expect(unknown.reason).toMatch(/CONFIG GET failed/);
      await admin.config('SET', 'appendonly', 'yes');
      await expect(readRedisPersistence(limited)).resolves.toEqual({ state: 'persistent', aof: true });
    } finally {
      await limited.quit();
    }
  });

  it('Redis unreachable: unknown, never a throw', async () => {
    const stopped = await startStandalone();
    const client = await createTestRedis({
      url: stopped.url,
      enableOfflineQueue: false,
      retryStrategy: () => null,
    });
    client.on('error', () => undefined);
    await stopped.stop();
    await new Promise<void>((resolve) => (client.status === 'end' ? resolve() : client.once('end', resolve)));
    const read = await readRedisPersistence(client, { timeoutMs: 500 });
    expect(read.state).toBe('unknown');
    client.disconnect();
  });

  it('the sidecar warns at start and /readyz shows it in its detail', async () => {
    const log = capture();
    const sidecar = await startSidecar(sidecarConfig(server.url), { logger: log.logger });
    try {
      const warnings = log.records().filter((r) => r.level === 40 && /persistence/.test(String(r.msg)));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatchObject({
        store: 'redis',
        persistence: { state: 'none', aof: false, rdb: false },
      });
      expect(String(warnings[0]!.msg)).toMatch(/lost when Redis restarts/);

      const res = await fetch(`${sidecar.url}/readyz`);
      expect(res.status).toBe(200);
      const body = (await res.json()) as Record<string, unknown>;
      expect(body).toEqual({
        status: 'ok',
        store: 'redis',
        persistence: 'none',
        warning: expect.stringMatching(/no persistence/) as unknown,
      });
    } finally {
      await sidecar.close();
    }
  });

  it('with AOF on: no warning, /readyz says persistent', async () => {
    await admin.config('SET', 'appendonly', 'yes');
    const log = capture();
    const sidecar = await startSidecar(sidecarConfig(server.url), { logger: log.logger });
    try {
      expect(log.records().filter((r) => /persistence/.test(String(r.msg)))).toEqual([]);
      const body = (await (await fetch(`${sidecar.url}/readyz`)).json()) as Record<string, unknown>;
      expect(body).toEqual({ status: 'ok', store: 'redis', persistence: 'persistent' });
    } finally {
      await sidecar.close();
    }
  });
});
