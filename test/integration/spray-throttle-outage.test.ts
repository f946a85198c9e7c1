/**
 * Issue 12, spray throttling while Redis is down (G4): the throttle's counter follows the engine's
 * onStoreError — fail-closed answers 503 and evaluates nothing, fail-open lets the check through
 * unthrottled (the credential alone answers, as the engine does). A Redis of this test's own.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { createLockout, RedisStore, StoreUnavailableError, type Lockout } from '../../src';
import { startStandalone, type RedisServerHandle } from '../helpers/redis-servers';

const ORG = 'org-a';
const IP = '203.0.113.7';

/** Resolves once `client` is connected (again). */
function ready(client: Redis): Promise<void> {
  return client.status === 'ready'
    ? Promise.resolve()
    : new Promise((resolve) => client.once('ready', () => resolve()));
}

describe('spray throttling while Redis is down (G4)', () => {
  let server: RedisServerHandle;
  let client: Redis;
  beforeAll(async () => {
    server = await startStandalone();
    client = new Redis(server.url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: () => 50,
    });
    client.on('error', () => undefined);
    await new Promise<void>((resolve) =>
      client.status === 'ready' ? resolve() : client.once('ready', () => resolve()),
    );
  });
  const downLockouts: Lockout[] = [];
  afterAll(async () => {
    await server.restart();
    await ready(client);
    await Promise.all(downLockouts.map((l) => l.close()));
    await client.quit();
    await server.stop();
  });

  test('fail-closed: a check answers StoreUnavailableError (503) and evaluates nothing; fail-open: the credential alone answers, unthrottled', async () => {
    const make = (onStoreError: 'fail-closed' | 'fail-open') => {
      const l = createLockout({
        store: new RedisStore({ client, commandTimeoutMs: 500 }),
        instanceId: `down-${randomUUID()}`,
        onStoreError,
        onError: () => undefined,
        defences: { sprayThrottle: { failures: 1 } },
      });
      downLockouts.push(l);
      return l;
    };
    const closed = make('fail-closed');
    const open = make('fail-open');
    // Up first (connections and subscriptions made, scripts loaded), as a running service is.
    for (const l of [closed, open]) {
      await l.checks.check(ORG, 'warm', 'password', () => true, { clientIp: '198.51.100.1' });
    }
    await server.halt();
    let evaluated = 0;
    const verifier = () => {
      evaluated += 1;
      return false;
    };
    await expect(
      closed.checks.check(ORG, 'u', 'password', verifier, { clientIp: IP }),
    ).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(evaluated).toBe(0);
    for (let i = 0; i < 3; i += 1) {
      await expect(open.checks.check(ORG, `u${i}`, 'password', verifier, { clientIp: IP })).resolves.toEqual({
        ok: false,
        failedAttempts: 0,
        locked: false,
      });
    }
    expect(evaluated).toBe(3);
  });
});
