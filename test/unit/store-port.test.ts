import { OptionError } from '../../src/core/errors';
import { LockoutEngine } from '../../src/core/engine';
import {
  ATTEMPT_STORE_MEMBERS,
  LOCKOUT_STORE_MEMBERS,
  ONE_TIME_STORE_MEMBERS,
  SETTINGS_STORE_MEMBERS,
  STORE_LIFECYCLE_MEMBERS,
  STORE_PORTS,
  missingStoreMembers,
  type LockoutStore,
  type LockoutStoreMember,
} from '../../src/core/store';
import { observeStore } from '../../src/sidecar/store';
import { MemoryStore } from '../../src/store/memory/memory-store';
import { RedisStore, type RedisClient } from '../../src/store/redis/redis-store';
import { thrown } from '../helpers/errors';

/** The store port split by concern: every member listed once, and all of them checked when an engine is made. */

/** A RedisStore that never talks to Redis: its constructor only defines the scripts on the client. */
function offlineRedisStore(): RedisStore {
  return new RedisStore({ client: { defineCommand: () => undefined } as unknown as RedisClient });
}

/** A plain object with exactly the port members of `store` (methods bound to it). */
function portView(store: LockoutStore): Record<string, unknown> {
  const view: Record<string, unknown> = {};
  for (const m of LOCKOUT_STORE_MEMBERS) {
    const value: unknown = store[m];
    view[m] = typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(store) : value;
  }
  return view;
}

function portOf(member: LockoutStoreMember) {
  const port = STORE_PORTS.find((p) => p.members.includes(member));
  if (!port) throw new Error(`${member} belongs to no port`);
  return port;
}

describe('store port: the member lists', () => {
  it('name each member once, port by port, in the order the engine checks them', () => {
    expect(STORE_PORTS.map((p) => p.port)).toEqual([
      'AttemptStore',
      'SettingsStore',
      'OneTimeStore',
      'StoreLifecycle',
    ]);
    expect(STORE_PORTS.map((p) => p.members)).toEqual([
      ATTEMPT_STORE_MEMBERS,
      SETTINGS_STORE_MEMBERS,
      ONE_TIME_STORE_MEMBERS,
      STORE_LIFECYCLE_MEMBERS,
    ]);
    expect(LOCKOUT_STORE_MEMBERS).toEqual(STORE_PORTS.flatMap((p) => p.members));
    expect(new Set(LOCKOUT_STORE_MEMBERS).size).toBe(LOCKOUT_STORE_MEMBERS.length);
    expect([...LOCKOUT_STORE_MEMBERS].sort()).toEqual(
      [
        'reserve',
        'settle',
        'getUser',
        'lock',
        'unlock',
        'resetFactor',
        'listLocked',
        'getSettings',
        'writeSettings',
        'onSettingsChanged',
        'useStep',
        'putCode',
        'takeCode',
        'kind',
        'ping',
        'close',
      ].sort(),
    );
  });

  it.each([
    ['MemoryStore', MemoryStore.prototype, () => new MemoryStore({ purgeIntervalMs: 0 })],
    ['RedisStore', RedisStore.prototype, offlineRedisStore],
  ] as const)(
    'equal the port members of the %s prototype (kind: a string of each instance)',
    async (_name, proto, make) => {
      const methods = Object.getOwnPropertyNames(proto).filter(
        (n) => typeof Object.getOwnPropertyDescriptor(proto, n)?.value === 'function',
      );
      // Every listed method is a method of the class…
      for (const port of STORE_PORTS) {
        const expected = port.members.filter((m) => m !== 'kind');
        expect(methods.filter((n) => (expected as readonly string[]).includes(n)).sort()).toEqual(
          [...expected].sort(),
        );
      }
      // …and kind, the one member that is not a method, is a string field of each instance.
      expect(methods).not.toContain('kind');
      const store = make();
      try {
        expect(typeof store.kind).toBe('string');
        expect(missingStoreMembers(store)).toEqual([]);
      } finally {
        await store.close();
      }
    },
  );
});

describe('store port: LockoutEngine checks every member when it is made', () => {
  let memory: MemoryStore;
  const engines: LockoutEngine[] = [];
  beforeEach(() => {
    memory = new MemoryStore({ purgeIntervalMs: 0 });
  });
  afterEach(async () => {
    for (const e of engines.splice(0)) e.close();
    await memory.close();
  });

  // (A RedisStore passes the same check, above; an engine on it would subscribe to Redis.)
  it('accepts a MemoryStore, the sidecar’s observed store and a plain object of the port', () => {
    for (const store of [
      memory,
      observeStore(memory, () => undefined),
      portView(memory) as unknown as LockoutStore,
    ]) {
      engines.push(new LockoutEngine({ store }));
    }
    expect(engines).toHaveLength(3);
  });

  it.each(LOCKOUT_STORE_MEMBERS.map((m) => [m]))(
    'refuses a store without %s, naming it and its concern',
    (member) => {
      const port = portOf(member);
      const store = portView(memory);
      delete store[member];
      const error = thrown(() => new LockoutEngine({ store: store as unknown as LockoutStore }));
      expect(error).toBeInstanceOf(OptionError);
      const e = error as OptionError;
      expect(e.code).toBe('Errors.Options.Invalid');
      expect(e.check).toBe('LockoutEngine.store');
      expect(e.field).toBe('store');
      expect(e.message).toBe(
        `store must be a LockoutStore (e.g. new MemoryStore() or new RedisStore({ client })) (it lacks ${member} (${port.port}: ${port.concern})), got an object`,
      );
    },
  );

  it.each(LOCKOUT_STORE_MEMBERS.map((m) => [m]))('refuses a store whose %s has the wrong type', (member) => {
    const store = portView(memory);
    store[member] = member === 'kind' ? 42 : 'not a function';
    const error = thrown(() => new LockoutEngine({ store: store as unknown as LockoutStore }));
    expect(error).toBeInstanceOf(OptionError);
    expect((error as OptionError).message).toContain(`(it lacks ${member} (${portOf(member).port}: `);
  });

  it('names every missing member, grouped by port, when several are missing', () => {
    const store = portView(memory);
    for (const m of ['lock', 'listLocked', 'onSettingsChanged', 'takeCode', 'ping'] as const) delete store[m];
    const error = thrown(() => new LockoutEngine({ store: store as unknown as LockoutStore }));
    expect((error as OptionError).message).toMatch(
      /\(it lacks lock, listLocked \(AttemptStore: attempts and locks\); onSettingsChanged \(SettingsStore: settings and their change notices\); takeCode \(OneTimeStore: one-time codes and used TOTP steps\); ping \(StoreLifecycle: name, health and close\)\), got an object$/,
    );
  });
});
