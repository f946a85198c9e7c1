/**
 * The fault proxy itself, against the shared real redis-server and cluster: each fault does what
 * it says. Where a fault holds something back, the test observes the server through a direct
 * client (the command ran / did not run yet) instead of timing the proxied call.
 */
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { Cluster, Redis } from 'ioredis';
import { FaultProxy, startClusterProxies, type ClusterProxies } from '../helpers/fault-proxy';
import { createTestRedis, testClusterNodes, testRedisUrl } from '../helpers/redis-clients';

const DEADLINE_MS = 5_000;

/** Polls `condition` every 10 ms until it holds; throws `what` after DEADLINE_MS. */
async function until(what: string, condition: () => boolean | Promise<boolean>): Promise<void> {
  const end = Date.now() + DEADLINE_MS;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Whether `promise` has settled (after letting pending callbacks run). */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setImmediate(r));
  return done;
}

function targetOf(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port) };
}

describe('FaultProxy (standalone redis-server)', () => {
  let proxy: FaultProxy;
  let direct: Redis;
  let client: Redis;
  const key = (name: string) => `fp:${randomUUID()}:${name}`;

  beforeEach(async () => {
    proxy = await FaultProxy.start(targetOf(testRedisUrl()));
    direct = await createTestRedis();
    client = await createTestRedis({ url: proxy.url, retryStrategy: () => 20 });
  });

  afterEach(async () => {
    client.disconnect();
    direct.disconnect();
    await proxy.close();
  });

  it('passes commands and replies through unchanged when healthy', async () => {
    const k = key('pass');
    await expect(client.set(k, 'v', 'PX', 60_000)).resolves.toBe('OK');
    await expect(direct.get(k)).resolves.toBe('v');
    expect(proxy.stats().accepted).toBe(1);
    expect(proxy.stats().bytesUp).toBeGreaterThan(0);
  });

  it('delay up: the command reaches Redis only after the delay; heal delivers it', async () => {
    const k = key('up');
    proxy.delay('up', 60_000);
    const reply = client.set(k, 'v', 'PX', 60_000);
    await until('the proxy holds the command', () => proxy.stats().bytesHeld > 0);
    await expect(direct.exists(k)).resolves.toBe(0);
    expect(await settled(reply)).toBe(false);
    proxy.heal();
    await expect(reply).resolves.toBe('OK');
    await expect(direct.get(k)).resolves.toBe('v');
  });

  it('delay down: Redis runs the command while its reply is still held', async () => {
    const k = key('down');
    proxy.delay('down', 60_000);
    const reply = client.incr(k);
    await until('Redis ran the command', async () => (await direct.get(k)) === '1');
    // Its reply may still be on its way from Redis to the proxy (a loaded machine): wait for it.
    await until('the proxy holds the reply', () => proxy.stats().bytesHeld > 0);
    expect(await settled(reply)).toBe(false);
    proxy.heal();
    await expect(reply).resolves.toBe(1);
    await direct.del(k);
  });

  it('a finite delay delivers by itself, in order', async () => {
    const k = key('order');
    proxy.delay('both', 50);
    const replies = [client.rpush(k, 'a'), client.rpush(k, 'b'), client.rpush(k, 'c')];
    await expect(Promise.all(replies)).resolves.toEqual([1, 2, 3]);
    await expect(direct.lrange(k, 0, -1)).resolves.toEqual(['a', 'b', 'c']);
    await direct.del(k);
  });

  it('black hole: new and open connections forward nothing; heal delivers the held bytes', async () => {
    const k = key('hole');
    proxy.blackHole();
    const reply = client.set(k, 'v', 'PX', 60_000);
    await until('the proxy holds the command', () => proxy.stats().bytesHeld > 0);
    const heldBefore = proxy.stats().bytesHeld;
    const late = new Redis(proxy.url, { lazyConnect: true, retryStrategy: () => null });
    late.on('error', () => undefined);
    const lateConnect = late.connect();
    const latePing = late.ping();
    await until('the new connection is accepted and its bytes held', () => {
      const s = proxy.stats();
      return s.accepted === 2 && s.bytesHeld > heldBefore;
    });
    await expect(direct.exists(k)).resolves.toBe(0);
    expect(await settled(reply)).toBe(false);
    expect(await settled(latePing)).toBe(false);
    proxy.heal();
    await expect(reply).resolves.toBe('OK');
    await lateConnect;
    await expect(latePing).resolves.toBe('PONG');
    await expect(direct.get(k)).resolves.toBe('v');
    late.disconnect();
  });

  it('dropReplies: the command runs, its reply is lost, the connection is reset and ioredis resends it (runs twice)', async () => {
    const k = key('drop');
    proxy.dropReplies(60_000);
    const reply = client.incr(k);
    await until('Redis ran the command once', async () => (await direct.get(k)) === '1');
    await until('the reply was discarded', () => proxy.stats().bytesDropped > 0);
    expect(await settled(reply)).toBe(false);
    proxy.heal(); // ends the window: the connection that lost its reply is reset
    expect(proxy.stats().resets).toBe(1);
    // ioredis reconnects and resends the unanswered INCR: Redis runs it a second time.
    await expect(reply).resolves.toBe(2);
    await expect(direct.get(k)).resolves.toBe('2');
    expect(proxy.stats().accepted).toBe(2);
    await direct.del(k);
  });

  it('a drop window ends by itself and resets only connections that lost bytes', async () => {
    const idle = await createTestRedis({ url: proxy.url });
    const k = key('window');
    proxy.dropReplies(100);
    const reply = client.incr(k);
    await expect(reply).resolves.toBe(2);
    expect(proxy.stats().resets).toBe(1);
    await expect(idle.ping()).resolves.toBe('PONG'); // its connection was never reset
    expect(proxy.stats().accepted).toBe(3);
    idle.disconnect();
    await direct.del(k);
  });

  it('reset destroys open connections; the client reconnects through the proxy', async () => {
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    proxy.reset();
    await closed;
    expect(proxy.stats().resets).toBe(1);
    await until('the client is ready again', () => client.status === 'ready');
    await expect(client.ping()).resolves.toBe('PONG');
    expect(proxy.stats().accepted).toBe(2);
  });

  it('refuse: new connections are closed at once until heal', async () => {
    proxy.refuse(true);
    const refused = net.connect({ host: proxy.host, port: proxy.port });
    refused.on('error', () => undefined);
    let received = 0;
    refused.on('data', (d: Buffer) => (received += d.length));
    refused.write('PING\r\n');
    await new Promise<void>((resolve) => refused.once('close', () => resolve()));
    expect(received).toBe(0);
    expect(proxy.stats().resets).toBe(1);
    expect(client.status).toBe('ready'); // open connections are left alone
    proxy.heal();
    const ok = await createTestRedis({ url: proxy.url });
    await expect(ok.ping()).resolves.toBe('PONG');
    ok.disconnect();
  });

  it('split: every byte written separately still makes whole commands and replies', async () => {
    const k = key('split');
    const value = 'x'.repeat(300) + 'é∀😀';
    proxy.split(1);
    const before = proxy.stats().writes;
    await expect(client.set(k, value, 'PX', 60_000)).resolves.toBe('OK');
    await expect(client.get(k)).resolves.toBe(value);
    const bytes = Buffer.byteLength(value);
    expect(proxy.stats().writes - before).toBeGreaterThan(2 * bytes);
    await expect(direct.get(k)).resolves.toBe(value);
  });
});

describe('FaultProxy in front of the 3-node cluster (natMap)', () => {
  let proxies: ClusterProxies;
  let cluster: Cluster;
  let direct: Redis;

  beforeAll(async () => {
    proxies = await startClusterProxies(testClusterNodes());
    cluster = new Cluster(proxies.nodes, { natMap: proxies.natMap, enableOfflineQueue: true });
    cluster.on('error', () => undefined);
    await until('the cluster client is ready', () => cluster.status === 'ready');
    direct = await createTestRedis();
  });

  afterAll(async () => {
    cluster.disconnect();
    direct.disconnect();
    await proxies.closeAll();
  });

  it('every node is reached through its proxy', async () => {
    const keys = Array.from({ length: 60 }, (_, i) => `fp:${randomUUID()}:${i}`);
    await Promise.all(keys.map((k) => cluster.set(k, k, 'PX', 60_000)));
    await expect(Promise.all(keys.map((k) => cluster.get(k)))).resolves.toEqual(keys);
    for (const proxy of proxies.proxies) {
      expect(proxy.stats().accepted).toBeGreaterThan(0);
      expect(proxy.stats().bytesUp).toBeGreaterThan(0);
    }
    // No connection went around the proxies: the client knows only proxy addresses.
    const proxyKeys = new Set(proxies.nodes.map((n) => `${n.host}:${n.port}`));
    for (const node of cluster.nodes('all')) {
      expect(proxyKeys.has(`${node.options.host}:${node.options.port}`)).toBe(true);
    }
  });

  it('a black hole on one node stalls only the keys of its slots', async () => {
    const victim = proxies.proxies[0] as FaultProxy;
    const victimKey = `${victim.host}:${victim.port}`;
    // Find one key served through the victim's proxy and one through another.
    let onVictim: string | undefined;
    let elsewhere: string | undefined;
    for (let i = 0; (!onVictim || !elsewhere) && i < 1000; i++) {
      const k = `fp:${randomUUID()}`;
      const slot = clusterKeySlot(k);
      const node = (cluster.slots[slot] ?? [])[0];
      if (node === victimKey) onVictim ??= k;
      else elsewhere ??= k;
    }
    if (!onVictim || !elsewhere) throw new Error('could not find keys on both sides');
    victim.blackHole();
    const stalled = cluster.set(onVictim, 'v', 'PX', 60_000);
    await expect(cluster.set(elsewhere, 'v', 'PX', 60_000)).resolves.toBe('OK');
    await until('the victim proxy holds the command', () => victim.stats().bytesHeld > 0);
    expect(await settled(stalled)).toBe(false);
    victim.heal();
    await expect(stalled).resolves.toBe('OK');
  });
});

/** CRC16/XMODEM slot of a key without a hash tag (what Redis Cluster uses). */
function clusterKeySlot(key: string): number {
  let crc = 0;
  for (const byte of Buffer.from(key)) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}
