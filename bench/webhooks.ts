/**
 * Issue 14: the latency of a login check (reserve + settle as a failure that locks the user, the
 * case that records an event) with webhooks to a receiver that never answers, against the same
 * sidecar without webhooks. Both sidecars run in this process on one redis-server (in-process
 * servers share the load generator's event loop: figures are relative, A/B in alternating
 * rounds). Delivery runs off the request path, so the two should be within noise.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { parseConfig } from '../src/sidecar/config';
import { createLogger } from '../src/sidecar/logger';
import { startSidecar, type SidecarHandle } from '../src/sidecar/server';
import { startStandalone } from '../test/helpers/redis-servers';
import { fixed, percentile, ratio, table } from './lib';

const TOKEN = 'bench-webhooks-token-0001';
const ROUNDS = Number(process.env.BENCH_WEBHOOK_ROUNDS ?? 4);
const CHECKS = Number(process.env.BENCH_WEBHOOK_CHECKS ?? 600);
const CONCURRENCY = 8;

async function post(base: string, route: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(`${base}${route}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, json: await res.json() };
}

/** `CHECKS` failing checks (each locks a fresh user, limit 1), CONCURRENCY at a time: their latencies in ms. */
async function run(sidecar: SidecarHandle, label: string): Promise<number[]> {
  const latencies: number[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < CHECKS) {
      const userId = `${label}-${next++}-${randomBytes(4).toString('hex')}`;
      const started = performance.now();
      const reserved = await post(sidecar.url, '/v1/attempts', { userId, factor: 'password' });
      const { attemptId } = reserved.json as { attemptId: string };
      const settled = await post(sidecar.url, `/v1/attempts/${attemptId}/failure`);
      latencies.push(performance.now() - started);
      if (settled.status !== 200) throw new Error(`settle answered ${settled.status}`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return latencies.sort((a, b) => a - b);
}

export async function benchWebhooks(): Promise<void> {
  const redis = await startStandalone();
  const hanging = new Set<http.ServerResponse>();
  const receiver = http.createServer((_req, res) => {
    hanging.add(res); // never answered: every delivery runs into its timeout
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
  const base = (instance: string, extra: Record<string, unknown> = {}) =>
    parseConfig({
      server: { port: 0 },
      instance: { id: instance, maxPasswordAttempts: 1 },
      store: { type: 'redis', redis: { url: redis.url } },
      log: { level: 'silent' },
      auth: { tokens: [{ name: 'bench', token: TOKEN, orgs: ['*'], permissions: ['lockout.check'] }] },
      ...extra,
    });
  const plain = await startSidecar(base('plain'), { logger: createLogger('silent') });
  const hooked = await startSidecar(
    base('hooked', {
      webhooks: {
        endpoints: [
          { name: 'hang', url, secret: `whsec_${randomBytes(32).toString('base64')}`, timeoutMs: 5000 },
        ],
        pollIntervalMs: 50,
      },
    }),
    { logger: createLogger('silent') },
  );
  try {
    await run(plain, 'warm-plain');
    await run(hooked, 'warm-hooked');
    const rows: string[][] = [
      ['round', 'no webhooks p50 / p99 ms', 'hanging receiver p50 / p99 ms', 'p50 ratio'],
    ];
    const ratios: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const order: Array<[string, SidecarHandle]> =
        round % 2 === 0
          ? [
              ['plain', plain],
              ['hooked', hooked],
            ]
          : [
              ['hooked', hooked],
              ['plain', plain],
            ];
      const got: Record<string, number[]> = {};
      for (const [name, s] of order) got[name] = await run(s, `${name}-${round}`);
      const a = got.plain!;
      const b = got.hooked!;
      ratios.push(percentile(b, 0.5) / percentile(a, 0.5));
      rows.push([
        String(round + 1),
        `${fixed(percentile(a, 0.5), 2)} / ${fixed(percentile(a, 0.99), 2)}`,
        `${fixed(percentile(b, 0.5), 2)} / ${fixed(percentile(b, 0.99), 2)}`,
        ratio(percentile(b, 0.5), percentile(a, 0.5)),
      ]);
    }
    console.log(
      `${CHECKS} failing checks per run (reserve + settle, each locks a fresh user and records an event), ` +
        `${CONCURRENCY} at a time; the receiver never answers (deliveries time out after 5 s, off the request path).\n`,
    );
    console.log(table(rows));
    console.log(
      `\nhanging receiver / no webhooks, p50 latency, per round: ${ratios.map((r) => fixed(r, 2)).join(', ')}`,
    );
  } finally {
    for (const res of hanging) res.destroy();
    receiver.closeAllConnections();
    receiver.close();
    await hooked.close();
    await plain.close();
    await redis.stop();
  }
}
