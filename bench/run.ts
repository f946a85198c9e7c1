/**
 * Benchmark entry: `npm run bench` runs every benchmark in order; `npm run bench -- engine`
 * (names separated by spaces or commas) runs only those.
 *
 * Each benchmark is a module under bench/ exporting one async function; it starts and stops
 * whatever it needs (its own redis-server on a free port) and prints absolute figures and
 * ratios against a baseline measured in the same run. The goals they record (bench/lib.ts
 * recordRatioGoal/recordGoal: issue 16) are printed at the end as one table, met or NOT met.
 */

interface Benchmark {
  readonly name: string;
  readonly description: string;
  readonly run: () => Promise<void>;
}

const BENCHMARKS: Benchmark[] = [
  {
    name: 'engine',
    description: 'lockgate engine (MemoryStore, RedisStore) vs the rate-limiter-flexible login recipe',
    run: () => require('./engine').benchEngine(),
  },
  {
    name: 'sidecar',
    description:
      'sidecar on Redis: locked check and reserve+settle vs a bare Express route; argon2 checks per UV_THREADPOOL_SIZE',
    run: () => require('./sidecar').benchSidecar(),
  },
  {
    name: 'middleware',
    description: 'Express login route guarded by lockgate vs unguarded (memory store, Redis)',
    run: () => require('./middleware').benchMiddleware(),
  },
  {
    name: 'webhooks',
    description: 'issue 14: login-check latency with webhooks to a receiver that hangs vs no webhooks',
    run: () => require('./webhooks').benchWebhooks(),
  },
  {
    name: 'proxy',
    description: "lockgate's reverse proxy vs calling the upstream directly",
    run: () => require('./proxy').benchProxy(),
  },
  {
    name: 'peers',
    description:
      'issue 16: proxy, proxied login, sidecar and middleware against their peers (http-proxy, fastify, ' +
      'http-proxy-middleware, nginx, bare routes, express-rate-limit, rate-limiter-flexible), each server in a process of its own',
    run: () => require('./peers').benchPeers(),
  },
];

async function main(): Promise<void> {
  const wanted = process.argv
    .slice(2)
    .flatMap((a) => a.split(','))
    .map((a) => a.trim())
    .filter(Boolean);
  const unknown = wanted.filter((w) => !BENCHMARKS.some((b) => b.name === w));
  if (unknown.length > 0) {
    console.error(
      `unknown benchmark ${unknown.join(', ')}; available: ${BENCHMARKS.map((b) => b.name).join(', ')}`,
    );
    process.exitCode = 2;
    return;
  }
  const selected = wanted.length === 0 ? BENCHMARKS : BENCHMARKS.filter((b) => wanted.includes(b.name));
  for (const bench of selected) {
    const started = Date.now();
    console.log(`\n######## ${bench.name}: ${bench.description}\n`);
    try {
      await bench.run();
      console.log(`\n(${bench.name} took ${((Date.now() - started) / 1000).toFixed(1)} s)`);
    } catch (error) {
      process.exitCode = 1;
      console.error(`\n${bench.name} failed:`, error);
    }
  }
  // every goal the benchmarks recorded (issue 16), measured or not
  const goals = (require('./lib') as typeof import('./lib')).goalsTable();
  if (goals) console.log(`\n######## Goals\n\n${goals}`);
}

main()
  .catch((error) => {
    process.exitCode = 1;
    console.error(error);
  })
  .finally(() => {
    // Every benchmark closes what it opened; if something still holds the loop, say so and leave.
    setTimeout(() => {
      console.error('bench: something still held the event loop 5 s after the end; exiting');
      process.exit(process.exitCode ?? 1);
    }, 5000).unref();
  });
