/**
 * A webhook receiver for lockgate's events: verifies each delivery's Standard Webhooks signature
 * (webhook-id, webhook-timestamp, webhook-signature) with the `standardwebhooks` package and
 * prints the verified event; an unverifiable one is answered 400 and not printed.
 *
 *   WEBHOOK_SECRET=whsec_... PORT=9000 npx ts-node --transpile-only examples/webhook-receiver/receiver.ts
 *
 * Receivers should be idempotent: lockgate delivers at least once, and a repeated delivery
 * carries the same webhook-id (the event id).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';

export interface ReceiverOptions {
  readonly secret: string;
  readonly port?: number;
  /** Where verified events go (default: console.log of one line each). */
  readonly print?: (line: string) => void;
}

export async function startWebhookReceiver(
  options: ReceiverOptions,
): Promise<{ server: Server; url: string }> {
  const verifier = new Webhook(options.secret);
  const print = options.print ?? ((line: string) => console.log(line));
  const seen = new Set<string>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 64 * 1024)
        req.destroy(); // events are small
      else chunks.push(c);
    });
    req.on('end', () => {
      const payload = Buffer.concat(chunks).toString('utf8');
      let message: {
        type: string;
        data: { id: string; orgId: string; userId?: string; actor: unknown; data: unknown };
      };
      try {
        message = verifier.verify(payload, {
          'webhook-id': String(req.headers['webhook-id']),
          'webhook-timestamp': String(req.headers['webhook-timestamp']),
          'webhook-signature': String(req.headers['webhook-signature']),
        }) as typeof message;
      } catch {
        res.writeHead(400).end();
        return;
      }
      const e = message.data;
      if (!seen.has(e.id)) {
        seen.add(e.id);
        print(
          `verified ${message.type} ${e.id} org=${e.orgId}${e.userId !== undefined ? ` user=${e.userId}` : ''} ` +
            `actor=${JSON.stringify(e.actor)} ${JSON.stringify(e.data)}`,
        );
      }
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(options.port ?? 9000, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { server, url: `http://127.0.0.1:${port}/webhooks` };
}

if (require.main === module) {
  const secret = process.env.WEBHOOK_SECRET;
  if (!secret) {
    console.error('set WEBHOOK_SECRET (the secret of the endpoint in lockgate’s configuration)');
    process.exit(2);
  }
  void startWebhookReceiver({ secret, port: Number(process.env.PORT ?? 9000) }).then(({ url }) =>
    console.log(`listening on ${url}`),
  );
}
