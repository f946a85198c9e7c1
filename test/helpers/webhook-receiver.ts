/**
 * A webhook receiver on a free port for tests (issue 14): it verifies the Standard Webhooks
 * signature of every request with the `standardwebhooks` verifier, keeps what it received, and
 * answers what the test's `answer` says (a status, or `hang`: never answers).
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';

export interface Received {
  /** webhook-id */
  readonly id: string;
  /** Whether the signature (and timestamp) verified. */
  readonly verified: boolean;
  /** The parsed body ({ type, timestamp, data }). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly body: any;
  /** What was answered (0: hung). */
  readonly status: number;
}

export interface Receiver {
  readonly url: string;
  readonly received: Received[];
  /** Received requests answered 2xx. */
  delivered(): Received[];
  /** Changes the behaviour. */
  setAnswer(answer: Answer): void;
  close(): Promise<void>;
}

/** What to answer to the n-th request (1-based) carrying `id` (and its n-th overall, `total`). */
export type Answer = (attemptOfId: number, id: string, total: number) => number | 'hang';

/** A fresh Standard Webhooks secret. */
export function newSecret(): string {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

export async function startReceiver(secret: string, answer: Answer = () => 200): Promise<Receiver> {
  const verifier = new Webhook(secret);
  const received: Received[] = [];
  const attempts = new Map<string, number>();
  const hanging = new Set<ServerResponse>();
  let behave = answer;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const id = String(req.headers['webhook-id'] ?? '');
      let verified = true;
      try {
        verifier.verify(raw, {
          'webhook-id': id,
          'webhook-timestamp': String(req.headers['webhook-timestamp'] ?? ''),
          'webhook-signature': String(req.headers['webhook-signature'] ?? ''),
        });
      } catch {
        verified = false;
      }
      const n = (attempts.get(id) ?? 0) + 1;
      attempts.set(id, n);
      const what = behave(n, id, received.length + 1);
      let body: unknown;
      try {
        body = JSON.parse(raw);
      } catch {
        body = raw;
      }
      received.push({ id, verified, body, status: what === 'hang' ? 0 : what });
      if (what === 'hang') {
        hanging.add(res);
        res.once('close', () => hanging.delete(res));
        return;
      }
      res.statusCode = what;
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    received,
    delivered: () => received.filter((r) => r.status >= 200 && r.status < 300),
    setAnswer(a) {
      behave = a;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of hanging) res.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
