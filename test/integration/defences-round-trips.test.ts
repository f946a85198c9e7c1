/**
 * Round trips per check with the defences of issue 12 (temporary lockout, repeat-password
 * forgiveness and device cookies, half the checks with a device token) on, against a real Redis: every command the store's client sends is counted
 * (ioredis sendCommand), so what is asserted is the number of round trips, not a time.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { LockoutEngine, RedisStore } from '../../src';
import type { DefencesConfig } from '../../src/core/defences';
import { createTestRedis } from '../helpers/redis-clients';

interface Counted {
  readonly client: Redis;
  readonly counts: Map<string, number>;
}

async function countedClient(): Promise<Counted> {
  const client = await createTestRedis();
  const counts = new Map<string, number>();
  const send = client.sendCommand.bind(client);
  client.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
    counts.set(command.name, (counts.get(command.name) ?? 0) + 1);
    return (send as (...a: unknown[]) => unknown)(command, ...rest);
  }) as typeof client.sendCommand;
  return { client, counts };
}

const ALL_ON: DefencesConfig = {
  values: {
    temporaryLockout: { enabled: true, durationMs: 60_000, maxDurationMs: 600_000 },
    repeatPassword: { enabled: true, remember: 5 },
    deviceCookies: { enabled: true, maxDevices: 10 },
  },
  repeatPasswordKey: randomBytes(32),
  deviceTokens: { keys: [{ id: 'k', secret: randomBytes(32) }], maxAgeMs: 86_400_000 },
};

/** Runs `n` checks (wrong passwords, some repeated, and successes) and answers the commands sent. */
async function commandsPerChecks(
  defences: DefencesConfig | undefined,
  n: number,
): Promise<Map<string, number>> {
  const { client, counts } = await countedClient();
  const store = new RedisStore({ client });
  const engine = new LockoutEngine({
    store,
    instanceId: `rt-${randomUUID()}`,
    defaults: { maxPasswordAttempts: 1000, maxOtpAttempts: 1000 },
    // settings read from the store once: the comparison is of the check's own round trips
    settingsCacheTtlMs: 1000,
    ...(defences ? { defences } : {}),
  });
  try {
    const warm = await engine.check('o', 'warm-up', 'password', () => true);
    // device cookies: half the checks present the device token a success handed out
    const deviceToken = warm.outcome === 'success' ? warm.deviceToken : undefined;
    counts.clear();
    for (let i = 0; i < n; i++) {
      const ok = i % 5 === 4;
      const user = i % 2 === 0 ? 'warm-up' : `user-${i % 7}`;
      await engine.check('o', user, 'password', () => ok, {
        password: `guess-${i % 3}`,
        ...(deviceToken !== undefined && i % 2 === 0 ? { deviceToken } : {}),
      });
    }
    return new Map(counts);
  } finally {
    engine.close();
    await store.close();
    client.disconnect();
  }
}

describe('round trips per check with the defences on', () => {
  it('are the same as with every defence off: one reserve and one settle script, nothing else', async () => {
    const n = 60;
    const off = await commandsPerChecks(undefined, n);
    const on = await commandsPerChecks(ALL_ON, n);
    const perCheck = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0) / n;
    console.log(
      `round trips per check: defences off ${perCheck(off)} (${JSON.stringify(Object.fromEntries(off))}), ` +
        `temporary lockout + repeat-password + device cookies on ${perCheck(on)} (${JSON.stringify(Object.fromEntries(on))})`,
    );
    expect(off.get('evalsha')).toBe(2 * n);
    expect(on.get('evalsha')).toBe(2 * n);
    expect(perCheck(on)).toBe(perCheck(off));
    expect(perCheck(on)).toBe(2);
  });
});
