import { existsSync } from 'node:fs';
import type { Cluster, Redis } from 'ioredis';
import {
  createTestCluster,
  createTestRedis,
  flushAll,
  testClusterNodes,
  testRedisUrl,
} from '../helpers/redis-clients';
import {
  redisCommand,
  startCluster,
  startStandalone,
  type RedisServerHandle,
} from '../helpers/redis-servers';

describe('test Redis servers', () => {
  describe('startStandalone', () => {
    let server: RedisServerHandle;
    let client: Redis | undefined;

    beforeAll(async () => {
      server = await startStandalone();
    });

    afterEach(async () => {
      client?.disconnect();
      client = undefined;
    });

    afterAll(async () => {
      await server?.stop();
    });

    it('runs on a free port other than 6379 and answers PING', async () => {
      expect(server.port).not.toBe(6379);
      expect(server.url).toBe(`redis://127.0.0.1:${server.port}`);
      client = await createTestRedis({ url: server.url });
      await expect(client.ping()).resolves.toBe('PONG');
    });

    it('survives restart on the same port, with no data kept', async () => {
      client = await createTestRedis({ url: server.url });
      await client.set('restart-probe', '1');
      client.disconnect();
      const { port, pid } = server;

      await server.restart();

      expect(server.port).toBe(port);
      expect(server.pid).toBeDefined();
      expect(server.pid).not.toBe(pid);
      client = await createTestRedis({ url: server.url });
      await expect(client.ping()).resolves.toBe('PONG');
      await expect(client.get('restart-probe')).resolves.toBeNull();
    });

    it('flushAll empties it', async () => {
      client = await createTestRedis({ url: server.url });
      await client.set('flush-probe', '1');
      await flushAll(client);
      await expect(client.dbsize()).resolves.toBe(0);
    });

    it('stop() ends the process, frees the port and removes the temp dir', async () => {
      const other = await startStandalone();
      await other.stop();
      expect(other.pid).toBeUndefined();
      expect(existsSync(other.dir)).toBe(false);
      await expect(redisCommand(other.port, ['PING'], 300)).rejects.toThrow();
    });
  });

  describe('shared servers from global setup', () => {
    let redis: Redis | undefined;
    let cluster: Cluster | undefined;

    afterAll(async () => {
      await redis?.quit();
      await cluster?.quit();
    });

    it('publishes a standalone URL that answers PING', async () => {
      expect(testRedisUrl()).toMatch(/^redis:\/\/127\.0\.0\.1:\d+$/);
      expect(testRedisUrl()).not.toMatch(/:6379$/);
      redis = await createTestRedis();
      await expect(redis.ping()).resolves.toBe('PONG');
    });

    it('publishes a cluster of 3 masters covering every slot', async () => {
      expect(testClusterNodes()).toHaveLength(3);
      cluster = await createTestCluster();
      expect(cluster.nodes('master')).toHaveLength(3);
      const info = await cluster.cluster('INFO');
      expect(info).toContain('cluster_state:ok');
      expect(info).toContain('cluster_slots_assigned:16384');
    });

    it('routes keys of different slots through the Cluster client', async () => {
      cluster ??= await createTestCluster();
      const writer = cluster;
      const tag = `redis-servers-test:${process.pid}:${Date.now()}`;
      // Different hash tags, so the keys land in different slots (and on different masters).
      const keys = ['a', 'b', 'c', 'd', 'e', 'f'].map((k) => `{${tag}:${k}}:probe`);
      await Promise.all(keys.map((key) => writer.set(key, key, 'EX', 60)));

      const reader = await createTestCluster();
      try {
        await expect(Promise.all(keys.map((key) => reader.get(key)))).resolves.toEqual(keys);
      } finally {
        await reader.quit();
        await Promise.all(keys.map((key) => writer.del(key)));
      }
    });
  });

  describe('startCluster', () => {
    it('starts a private cluster that flushAll empties on every master and stop() removes', async () => {
      const handle = await startCluster(3);
      let client: Cluster | undefined;
      try {
        expect(handle.nodes).toHaveLength(3);
        client = await createTestCluster({ nodes: handle.nodes });
        const keys = ['x', 'y', 'z', 'w'].map((k) => `{${k}}:flush-probe`);
        for (const key of keys) await client.set(key, '1');
        await flushAll(client);
        const sizes = await Promise.all(client.nodes('master').map((node) => node.dbsize()));
        expect(sizes).toEqual([0, 0, 0]);
      } finally {
        client?.disconnect();
        await handle.stop();
      }
      for (const server of handle.servers) expect(existsSync(server.dir)).toBe(false);
    });
  });
});
