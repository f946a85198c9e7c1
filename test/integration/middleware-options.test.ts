import { createLockout, InvalidArgumentError, MemoryStore, type LockoutOptions } from '../../src';

/** createLockout validates its options when called, and says what to pass instead. */

function errorOf(options: unknown): InvalidArgumentError {
  try {
    const lockout = createLockout(options as LockoutOptions);
    void lockout.close();
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect((error as InvalidArgumentError).code).toBe('Errors.Options.Invalid');
    return error as InvalidArgumentError;
  }
  throw new Error(`createLockout accepted ${JSON.stringify(options)}`);
}

test.each<[unknown, string, RegExp]>([
  ['nope', 'options', /createLockout: options must be an object such as \{ store, instance/],
  [
    { store: {} },
    'store',
    /store must be a LockoutStore such as new MemoryStore\(\) or new RedisStore\(\{ client \}\) \(it lacks reserve/,
  ],
  [{ store: 'redis://localhost' }, 'store', /store must be a LockoutStore/],
  [
    { maxPasswordAttempts: 5 },
    'maxPasswordAttempts',
    /is not a top-level option: pass instance: \{ maxPasswordAttempts: 5 \}/,
  ],
  [{ client: {} }, 'client', /pass store: new RedisStore\(\{ client \}\)/],
  [
    { lockedRespons: {} },
    'lockedRespons',
    /is not an option of createLockout \(known options: store, instanceId/,
  ],
  [
    { instance: 5 },
    'instance',
    /instance must be an object such as \{ maxPasswordAttempts: 5, maxOtpAttempts: 5 \}/,
  ],
  [
    { instance: { maxPasswordAttempts: -1 } },
    'instance.maxPasswordAttempts',
    /must be an integer from 0 \(never lock\) to 4294967295, got -1/,
  ],
  [{ instance: { maxOtpAttempts: '5' } }, 'instance.maxOtpAttempts', /got "5"/],
  [
    { instance: { maxAttempts: 5 } },
    'instance.maxAttempts',
    /is not a setting: give maxPasswordAttempts and\/or maxOtpAttempts/,
  ],
  [{ instanceId: '' }, 'instanceId', /createLockout: instanceId is required/],
  [{ defaultOrg: 'a\u0001' }, 'defaultOrg', /createLockout: defaultOrg must not contain control characters/],
  [{ leaseMs: 0 }, 'leaseMs', /createLockout: leaseMs must be an integer from 1000 to 3600000 \(ms\)/],
  [{ leaseMs: 999 }, 'leaseMs', /from 1000 to 3600000/],
  [
    { leaseMs: 2000, evaluationTimeoutMs: 1600 },
    'evaluationTimeoutMs',
    /evaluationTimeoutMs must be an integer from 1 to leaseMs − 500 \(1500 with leaseMs 2000\).*raise leaseMs/,
  ],
  [{ evaluationTimeoutMs: 0 }, 'evaluationTimeoutMs', /from 1 to leaseMs − 500 \(29500 with leaseMs 30000\)/],
  [{ settingsCacheTtlMs: 5000 }, 'settingsCacheTtlMs', /from 0 to 1000/],
  [
    { onStoreError: 'open' },
    'onStoreError',
    /must be 'fail-closed' \(answer 503 while the store is down\) or 'fail-open' \(evaluate without lockout\), got "open"/,
  ],
  [{ lockedResponse: 401 }, 'lockedResponse', /must be \{ status\?, body\?, headers\? \} or a function/],
  [{ busyResponse: { status: 200 } }, 'busyResponse.status', /from 400 to 599, got 200/],
  [
    { unavailableResponse: { headers: { 'Retry-After': 5 } } },
    'unavailableResponse.headers.Retry-After',
    /must be a string, got 5/,
  ],
  [{ onError: 'console' }, 'onError', /onError must be a function \(error, context\) => void/],
  [
    { password: { memoryCost: 1.5 } },
    'password.memoryCost',
    /createLockout: password\.memoryCost must be an integer/,
  ],
  [
    { password: { memoryCost: 4 } },
    'password.memoryCost',
    /createLockout: password\.memoryCost must be an integer from 32/,
  ],
  [{ totp: { window: 99 } }, 'totp.window', /createLockout: totp\.window must be an integer from 0 to 10/],
  [
    { codes: { pepper: 'short' } },
    'codes.pepper',
    /createLockout: codes\.pepper must be a string of at least 16 characters/,
  ],
  [{ tokens: 'abc' }, 'tokens', /tokens must be a list of \{ name, token, org, permissions \}/],
  [
    { tokens: [{ name: 't', token: 'x', org: 'o', permissions: ['root'] }] },
    'tokens[0].permissions[0]',
    /createLockout: tokens\[0\]\.permissions\[0\] must be one of policy\.read/,
  ],
  [
    { tokens: [], authorize: async () => ({ principal: 'p', orgId: 'o' }) },
    'tokens',
    /authorize replaces the token model/,
  ],
  [{ bodyLimit: -1 }, 'bodyLimit', /must be a size such as '16kb'/],
  // bytes.parse reads these as null: express.json would then read bodies of any size.
  [{ bodyLimit: '16 kilobytes' }, 'bodyLimit', /must be a size such as '16kb'.*got "16 kilobytes"/],
  [{ bodyLimit: 'abc' }, 'bodyLimit', /must be a size such as '16kb'/],
])('%j → %s', (options, field, message) => {
  const error = errorOf(options);
  expect(error.field).toBe(field);
  expect(error.message).toMatch(message);
});

test('valid options: defaults resolved, a given store is used', async () => {
  const store = new MemoryStore();
  const lockout = createLockout({ store, instance: { maxPasswordAttempts: 5 } });
  expect(lockout.store).toBe(store);
  expect(lockout.config).toMatchObject({
    instanceId: 'default',
    defaultOrg: 'default',
    defaults: { maxPasswordAttempts: 5, maxOtpAttempts: 10 },
    failOpen: false,
  });
  expect((await lockout.engine.getInstanceSettings()).maxPasswordAttempts).toBe(5);
  await lockout.close();
  const bare = createLockout();
  expect(bare.store).toBeInstanceOf(MemoryStore);
  expect(bare.config.defaults).toEqual({ maxPasswordAttempts: 10, maxOtpAttempts: 10 });
  await bare.close();
});
