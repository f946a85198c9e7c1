/**
 * Reverse-proxy mode on real Redis (G1 through the proxy): 200 wrong logins of one user at once,
 * spread over two proxies that share the store, reach the upstream at most `max` times, and the
 * user ends locked.
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { LockoutEngine } from '../../src/core/engine';
import { RedisStore } from '../../src/store';
import { createTestRedis } from '../helpers/redis-clients';
import {
  loginHandler,
  passwordState,
  postJson,
  startProxy,
  startUpstream,
  type ProxyServer,
  type Upstream,
} from './proxy-harness';

const MAX = 5;
const PARALLEL = 200;

let client: Redis;
let upstream: Upstream;
const stores: RedisStore[] = [];
const engines: LockoutEngine[] = [];
const gates: ProxyServer[] = [];

beforeAll(async () => {
  client = await createTestRedis({ enableOfflineQueue: false });
  upstream = await startUpstream(loginHandler(new Map([['victim', 'right']]), 30));
  const instanceId = `proxy-${randomUUID()}`;
  for (let i = 0; i < 2; i++) {
    const store = new RedisStore({ client });
    const engine = new LockoutEngine({ store, instanceId, defaults: { maxPasswordAttempts: MAX } });
    stores.push(store);
    engines.push(engine);
    gates.push(
      await startProxy({
        engine,
        config: {
          upstream: upstream.url,
          routes: [{ path: '/login', user: { from: 'json', name: 'user' }, org: { fixed: 'org-r' } }],
        },
      }),
    );
  }
});

afterAll(async () => {
  for (const gate of gates) await gate.close();
  for (const engine of engines) engine.close();
  for (const store of stores) await store.close();
  await upstream.close();
  await client.quit();
});

test(`${PARALLEL} parallel wrong logins of one user (max ${MAX}) over two proxies: at most ${MAX} reach the upstream, and the user is locked`, async () => {
  const answers = await Promise.all(
    Array.from({ length: PARALLEL }, (_, i) =>
      postJson(gates[i % gates.length]!.url, '/login', { user: 'victim', password: `guess-${i}` }),
    ),
  );
  const reached = upstream.hits.length;
  expect(reached).toBeLessThanOrEqual(MAX);

  const counts = new Map<number, number>();
  for (const a of answers) counts.set(a.status, (counts.get(a.status) ?? 0) + 1);
  // every answer is the upstream's 401, locked (423) or busy (429): nothing else
  expect([...counts.keys()].every((s) => s === 401 || s === 423 || s === 429)).toBe(true);
  expect(counts.get(401) ?? 0).toBe(reached);

  const state = await passwordState(engines[0]!, 'org-r', 'victim');
  expect(state).toEqual({ failed: MAX, locked: true });
  expect(reached).toBe(MAX);

  // locked: the right password does not reach the upstream either, through either proxy
  for (const gate of gates) {
    expect((await postJson(gate.url, '/login', { user: 'victim', password: 'right' })).status).toBe(423);
  }
  expect(upstream.hits.length).toBe(reached);

  // unlocked through the engine: access is back
  await engines[1]!.unlockUser('org-r', 'victim');
  const ok = await postJson(gates[0]!.url, '/login', { user: 'victim', password: 'right' });
  expect(ok.status).toBe(200);
  expect(await passwordState(engines[0]!, 'org-r', 'victim')).toEqual({ failed: 0, locked: false });
});
