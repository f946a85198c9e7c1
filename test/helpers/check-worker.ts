/**
 * A separate process that runs lockout checks against a shared Redis, for the cross-process
 * guarantee tests. Forked with IPC; waits for {go: true} so that all workers start together,
 * then runs `count` concurrent wrong checks and reports how many credentials it evaluated.
 */
import { Redis } from 'ioredis';
import { LockoutEngine, RedisStore } from '../../src';

interface Job {
  url: string;
  instanceId: string;
  org: string;
  user: string;
  count: number;
  max: number;
}

async function main(): Promise<void> {
  const job = JSON.parse(process.env.LOCKGATE_WORKER_JOB ?? '{}') as Job;
  const client = new Redis(job.url, { enableOfflineQueue: false });
  await new Promise<void>((resolve, reject) => {
    client.once('ready', resolve);
    client.once('error', reject);
  });
  const store = new RedisStore({ client });
  const engine = new LockoutEngine({
    store,
    instanceId: job.instanceId,
    defaults: { maxPasswordAttempts: job.max, maxOtpAttempts: job.max },
  });
  process.send?.({ ready: true });
  await new Promise<void>((resolve) => process.once('message', () => resolve()));
  let evaluated = 0;
  const results = await Promise.all(
    Array.from({ length: job.count }, () =>
      engine.check(job.org, job.user, 'password', async () => {
        evaluated++;
        await new Promise((r) => setTimeout(r, 20));
        return false;
      }),
    ),
  );
  const outcomes: Record<string, number> = {};
  for (const r of results) outcomes[r.outcome] = (outcomes[r.outcome] ?? 0) + 1;
  process.send?.({ evaluated, outcomes });
  engine.close();
  await store.close();
  client.disconnect();
}

main().catch((e: unknown) => {
  process.send?.({ error: String(e) });
  process.exitCode = 1;
});
