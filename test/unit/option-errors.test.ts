import { createLockout, InvalidArgumentError, OptionError, toHttpError } from '../../src';
import { describeOptionValue } from '../../src/core/option-checks';
import { LockoutEngine, type LockoutEngineOptions } from '../../src/core/engine';
import type { LockoutStore } from '../../src/core/store';
import { MemoryStore, type MemoryStoreOptions } from '../../src/store/memory/memory-store';
import { RedisStore, type RedisStoreOptions } from '../../src/store/redis/redis-store';
import { thrown } from '../helpers/errors';

function expectOptionError(make: () => unknown, check: string, field: string, message: RegExp): void {
  const error = thrown(make);
  expect(error).toBeInstanceOf(OptionError);
  expect(error).toBeInstanceOf(InvalidArgumentError);
  expect(error).not.toBeInstanceOf(TypeError);
  const e = error as OptionError;
  expect(e.code).toBe('Errors.Options.Invalid');
  expect(e.check).toBe(check);
  expect(e.field).toBe(field);
  expect(e.message).toMatch(message);
  expect(e.name).toBe('OptionError');
}

describe('option errors: a code per check and a corrective message', () => {
  let store: MemoryStore;
  beforeEach(() => {
    store = new MemoryStore({ purgeIntervalMs: 0 });
  });
  afterEach(async () => {
    await store.close();
  });
  const engine = (options: Partial<LockoutEngineOptions>) => () => new LockoutEngine({ store, ...options });

  it('LockoutEngine: each option its own check', () => {
    expectOptionError(
      engine({ leaseMs: 999 }),
      'LockoutEngine.leaseMs',
      'leaseMs',
      /^leaseMs must be an integer from 1000 to 3600000 \(ms\).*got 999, omit it for 30000$/,
    );
    expectOptionError(
      engine({ leaseMs: 2000, evaluationTimeoutMs: 1600 }),
      'LockoutEngine.evaluationTimeoutMs',
      'evaluationTimeoutMs',
      /\(1500 with leaseMs 2000\).*got 1600: lower it or raise leaseMs$/,
    );
    expectOptionError(
      engine({ onStoreError: 'open' as never }),
      'LockoutEngine.onStoreError',
      'onStoreError',
      /^onStoreError must be 'fail-closed' .* or 'fail-open' .*, got "open"$/,
    );
    expectOptionError(
      engine({ settingsCacheTtlMs: 1.5 }),
      'LockoutEngine.settingsCacheTtlMs',
      'settingsCacheTtlMs',
      /^settingsCacheTtlMs must be an integer from 0 to 1000 .*got 1\.5; 0 reads the store every time$/,
    );
  });

  it('LockoutEngine: a store lacking members of the port is named with what it lacks', () => {
    expectOptionError(
      () => new LockoutEngine({} as LockoutEngineOptions),
      'LockoutEngine.store',
      'store',
      /^store must be a LockoutStore \(e\.g\. new MemoryStore\(\) or new RedisStore\(\{ client \}\)\)$/,
    );
    expectOptionError(
      () => new LockoutEngine(undefined as unknown as LockoutEngineOptions),
      'LockoutEngine.store',
      'store',
      /^store must be a LockoutStore/,
    );
    const partial = { reserve: () => undefined, settle: () => undefined } as unknown as LockoutStore;
    expectOptionError(
      () => new LockoutEngine({ store: partial }),
      'LockoutEngine.store',
      'store',
      /\(it lacks getUser, lock, unlock, resetFactor, listLocked \(AttemptStore: attempts and locks\); getSettings, writeSettings, onSettingsChanged \(SettingsStore: settings and their change notices\); useStep, putCode, takeCode \(OneTimeStore: one-time codes and used TOTP steps\); kind, ping, close \(StoreLifecycle: name, health and close\)\), got an object$/,
    );
    expectOptionError(
      () => new LockoutEngine({ store: 'redis://x' as never }),
      'LockoutEngine.store',
      'store',
      /\(it lacks reserve, .*\), got "redis:\/\/x"$/,
    );
  });

  it('MemoryStore: each option its own check', () => {
    const memory = (options: MemoryStoreOptions) => () => new MemoryStore({ purgeIntervalMs: 0, ...options });
    expectOptionError(
      memory({ maxUsers: 0 }),
      'MemoryStore.maxUsers',
      'maxUsers',
      /^MemoryStore: maxUsers must be an integer of at least 1, got 0; omit it for 100000 users/,
    );
    expectOptionError(memory({ maxUsers: 1.5 }), 'MemoryStore.maxUsers', 'maxUsers', /got 1\.5;/);
    expectOptionError(
      memory({ idleTtlMs: -1 }),
      'MemoryStore.idleTtlMs',
      'idleTtlMs',
      /^MemoryStore: idleTtlMs must be an integer of at least 0, got -1; omit it for 86400000 \(24 h\), or pass 0/,
    );
    expectOptionError(
      memory({ purgeIntervalMs: Number.NaN }),
      'MemoryStore.purgeIntervalMs',
      'purgeIntervalMs',
      /^MemoryStore: purgeIntervalMs must be an integer of at least 0, got NaN; omit it for 60000/,
    );
    expectOptionError(memory({ idleTtlMs: '5' as never }), 'MemoryStore.idleTtlMs', 'idleTtlMs', /got "5";/);
  });

  it('RedisStore: an InvalidArgumentError with a code per check, never a TypeError', () => {
    const client = { defineCommand: () => undefined } as unknown as RedisStoreOptions['client'];
    const redis = (options: Partial<RedisStoreOptions>) => () =>
      new RedisStore({ client, ...options } as RedisStoreOptions);
    expectOptionError(
      redis({ client: undefined }),
      'RedisStore.client',
      'client',
      /^RedisStore: client must be an ioredis Redis or Cluster client, got undefined; pass new RedisStore\(\{ client: new Redis\(url\) \}\)$/,
    );
    expectOptionError(
      () => new RedisStore(undefined as unknown as RedisStoreOptions),
      'RedisStore.client',
      'client',
      /got undefined/,
    );
    expectOptionError(redis({ client: {} as never }), 'RedisStore.client', 'client', /got an object/);
    expectOptionError(
      redis({ prefix: 'a b' }),
      'RedisStore.prefix',
      'prefix',
      /^RedisStore: prefix must be 1-64 characters of A-Z a-z 0-9 _ \. -, got "a b"; omit it for "lg"/,
    );
    expectOptionError(redis({ prefix: '' }), 'RedisStore.prefix', 'prefix', /got ""/);
    expectOptionError(
      redis({ coalesceWrites: 'yes' as never }),
      'RedisStore.coalesceWrites',
      'coalesceWrites',
      /^RedisStore: coalesceWrites must be true or false, got "yes"; omit it for true/,
    );
    expectOptionError(
      redis({ commandTimeoutMs: 0 }),
      'RedisStore.commandTimeoutMs',
      'commandTimeoutMs',
      /^RedisStore: commandTimeoutMs must be an integer of at least 1, got 0; omit it for 2000 \(ms\)/,
    );
    expectOptionError(
      redis({ idleTtlMs: 0.5 }),
      'RedisStore.idleTtlMs',
      'idleTtlMs',
      /^RedisStore: idleTtlMs must be an integer of at least 0, got 0\.5; omit it for 86400000/,
    );
  });

  it('createLockout, its routers and its tokens: each option its own check', () => {
    // An engine option is checked by the engine's own check, whatever the face.
    expectOptionError(
      () => createLockout({ leaseMs: 5 }),
      'LockoutEngine.leaseMs',
      'leaseMs',
      /^createLockout: leaseMs must be an integer from 1000/,
    );
    expectOptionError(
      () => createLockout({ onFailOpen: 3 as never }),
      'createLockout.onFailOpen',
      'onFailOpen',
      /^createLockout: onFailOpen must be a function \(notice\) => void, got 3$/,
    );
    expectOptionError(
      () => createLockout({ password: { memoryCost: -1 } as never }),
      'createLockout.password.memoryCost',
      'password.memoryCost',
      /got -1/,
    );
    expectOptionError(
      () => createLockout({ tokens: [] }).routers.all({ bodyLimit: '1 megabyte' }),
      'routers.all.bodyLimit',
      'bodyLimit',
      /^routers\.all: bodyLimit must be a size such as '16kb' or a positive number of bytes, got "1 megabyte"$/,
    );
    expectOptionError(
      () => createLockout({ onError: () => undefined }).routers.all(),
      'routers.all.authorize',
      'authorize',
      /^routers\.all: authorize is needed/,
    );
    expectOptionError(
      () =>
        createLockout({ tokens: [{ name: 'a', token: 'tok-a', org: 'o', permissions: ['bogus' as never] }] }),
      'createLockout.tokens[0].permissions[0]',
      'tokens[0].permissions[0]',
      /must be one of/,
    );
  });

  it('an option error that escapes to a face is a 400 code 3 with its stable id', () => {
    const error = thrown(() => new MemoryStore({ maxUsers: 0 }));
    const answer = toHttpError(error);
    expect(answer.status).toBe(400);
    expect(answer.body.code).toBe(3);
    expect(answer.body.details[0]?.id).toBe('Errors.Options.Invalid');
  });

  it('describes received values without dumping them', () => {
    expect(describeOptionValue('x'.repeat(50))).toBe(`"${'x'.repeat(40)}…"`);
    expect(describeOptionValue(() => 1)).toBe('a function');
    expect(describeOptionValue([1])).toBe('an array');
    expect(describeOptionValue(null)).toBe('null');
    expect(describeOptionValue({ password: 'secret' })).toBe('an object');
    expect(describeOptionValue(Number.POSITIVE_INFINITY)).toBe('Infinity');
  });
});
