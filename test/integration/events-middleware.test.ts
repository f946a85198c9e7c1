/**
 * Issue 14 through the middleware: createLockout with an event log from createEvents records what
 * its engine does (with the actor of each admin operation), serves it through the routers'
 * GET /v1/users/{id}/events, tells onEvent the same events, and delivers webhooks — in process on
 * the memory store, through Redis Streams on a Redis Cluster (the org stream in its own slot).
 */
import type { AddressInfo } from 'node:net';
import express from 'express';
import { createLockout } from '../../src/express/lockout';
import { createEvents, RedisEventLog } from '../../src/events';
import { toEventRecord, type EventRecord } from '../../src/core/events';
import type { LockoutEvent } from '../../src/core/engine';
import { MemoryStore } from '../../src/store/memory/memory-store';
import { RedisStore } from '../../src/store/redis/redis-store';
import { createTestCluster, createTestRedis } from '../helpers/redis-clients';
import { until } from '../helpers/sidecar-process';
import { newSecret, startReceiver } from '../helpers/webhook-receiver';
import { randomUUID } from 'node:crypto';

const TOKEN = 'events-mw-token-000001';

describe('events through the middleware (memory store)', () => {
  it('records admin operations with their actor, serves them, tells onEvent, and delivers a signed webhook', async () => {
    const secret = newSecret();
    const receiver = await startReceiver(secret);
    const events = createEvents({
      webhooks: {
        endpoints: [{ name: 'r', url: receiver.url, secret, types: ['user.locked'] }],
        pollIntervalMs: 20,
      },
    });
    const told: LockoutEvent[] = [];
    const lockout = createLockout({
      store: new MemoryStore(),
      eventLog: events.eventLog,
      onEvent: (e) => told.push(e),
      tokens: [{ name: 'helpdesk', token: TOKEN, org: 'org-a', permissions: ['user.read', 'user.write'] }],
    });
    events.start();
    const app = express();
    app.use(lockout.routers.users({ deadLetters: events.deadLetters }));
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const post = (route: string) =>
      fetch(`${base}${route}`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
    try {
      expect((await post('/v2/users/alice/lock')).status).toBe(200);
      expect((await post('/v2/users/alice/unlock')).status).toBe(200);
      expect((await post('/v1/users/alice/password_changed')).status).toBe(200);
      const res = await fetch(`${base}/v1/users/alice/events`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      const body = (await res.json()) as { events: Array<{ type: string; actor: unknown }> };
      expect(body.events.map((e) => e.type)).toEqual([
        'user.password_changed',
        'user.unlocked',
        'user.locked',
      ]);
      for (const e of body.events) expect(e.actor).toEqual({ type: 'token', name: 'helpdesk' });
      expect(told.map((e) => e.type)).toEqual(['lock', 'unlock', 'password_changed']);
      expect(told[0]).toMatchObject({ actor: { type: 'token', name: 'helpdesk' }, reason: 'admin' });
      // Only the subscribed type is delivered.
      await until('the delivery', () => (receiver.delivered().length > 0 ? true : undefined));
      expect(receiver.received).toHaveLength(1);
      expect(receiver.received[0]).toMatchObject({ verified: true, body: { type: 'user.locked' } });
    } finally {
      server.close();
      await events.close();
      await lockout.close();
      await receiver.close();
    }
  });
});

describe('events on a Redis Cluster', () => {
  it('each org has one stream, read newest first in pages; webhooks are delivered through its consumer group', async () => {
    const client = await createTestCluster();
    const instanceId = `ev-cluster-${randomUUID()}`;
    const secret = newSecret();
    const receiver = await startReceiver(secret);
    const events = createEvents({
      redis: client,
      instanceId,
      webhooks: { endpoints: [{ name: 'r', url: receiver.url, secret }], pollIntervalMs: 20 },
    });
    const store = new RedisStore({ client });
    const lockout = createLockout({ store, instanceId, eventLog: events.eventLog });
    events.start();
    try {
      for (let i = 0; i < 5; i += 1) await lockout.engine.lockUser('org-x', `u${i}`);
      await lockout.engine.lockUser('org-y', 'v');
      const log = events.eventLog as RedisEventLog;
      const first = await log.list('org-x', { limit: 2 });
      expect(first.events.map((e) => e.user)).toEqual(['u4', 'u3']);
      const rest = await log.list('org-x', { limit: 10, cursor: first.nextCursor! });
      expect(rest.events.map((e) => e.user)).toEqual(['u2', 'u1', 'u0']);
      expect(rest.nextCursor).toBeUndefined();
      expect((await log.list('org-y', {})).events.map((e) => e.user)).toEqual(['v']);
      await until('six deliveries', () => (receiver.delivered().length >= 6 ? true : undefined));
      expect(receiver.received.every((r) => r.verified)).toBe(true);
      expect(new Set(receiver.received.map((r) => r.id)).size).toBe(6);
      // A record appended directly is listed with the id it was given (the webhook-id of its deliveries).
      const record: EventRecord = toEventRecord({ type: 'unlock', org: 'org-y', user: 'v' }, instanceId)!;
      await log.append(record);
      expect((await log.list('org-y', { limit: 1 })).events[0]!.id).toBe(record.id);
    } finally {
      await events.close();
      await lockout.close();
      await receiver.close();
      client.disconnect();
    }
  });
});

describe('events on a standalone Redis', () => {
  it('an org stream deleted under the workers gets its group back and its next events delivered; other orgs go on', async () => {
    const client = await createTestRedis();
    const instanceId = `ev-nogroup-${randomUUID()}`;
    const secret = newSecret();
    const receiver = await startReceiver(secret);
    const events = createEvents({
      redis: client,
      instanceId,
      webhooks: { endpoints: [{ name: 'r', url: receiver.url, secret }], pollIntervalMs: 20 },
    });
    const lockout = createLockout({
      store: new RedisStore({ client }),
      instanceId,
      eventLog: events.eventLog,
    });
    events.start();
    const users = () => receiver.delivered().map((r) => `${r.body.data.orgId}/${r.body.data.userId}`);
    try {
      await lockout.engine.lockUser('org-a', 'a1');
      await lockout.engine.lockUser('org-b', 'b1');
      await until('two deliveries', () => (receiver.delivered().length >= 2 ? true : undefined));
      await client.del((events.eventLog as RedisEventLog).keys.stream('org-a'));
      await lockout.engine.lockUser('org-a', 'a2');
      await lockout.engine.lockUser('org-b', 'b2');
      await until('four deliveries', () => (receiver.delivered().length >= 4 ? true : undefined));
      expect(users().sort()).toEqual(['org-a/a1', 'org-a/a2', 'org-b/b1', 'org-b/b2']);
      expect(receiver.received.every((r) => r.verified)).toBe(true);
    } finally {
      await events.close();
      await lockout.close();
      await receiver.close();
      client.disconnect();
    }
  });
});
