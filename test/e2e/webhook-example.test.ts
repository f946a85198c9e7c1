/**
 * README's worked example (issue 14): examples/webhook-receiver/receiver.ts prints the verified
 * event while the quick start (a sidecar process on the memory store) locks user 42 with ten
 * wrong passwords; the endpoint's secret comes from the environment (`${WEBHOOK_SECRET}`).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startWebhookReceiver } from '../../examples/webhook-receiver/receiver';
import { getFreePort } from '../helpers/redis-servers';
import { call, killSidecars, spawnSidecar, until, waitReady } from '../helpers/sidecar-process';
import { newSecret } from '../helpers/webhook-receiver';

afterAll(() => killSidecars());

it('the example receiver prints the verified lock of the quick start, once', async () => {
  const secret = newSecret();
  const lines: string[] = [];
  const { server, url } = await startWebhookReceiver({ secret, port: 0, print: (l) => lines.push(l) });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lockgate-example-'));
  try {
    const file = path.join(dir, 'lockgate.yaml');
    writeFileSync(
      file,
      [
        'password:',
        '  argon2: { memoryCost: 1024, timeCost: 1, parallelism: 1 }',
        'webhooks:',
        '  endpoints:',
        '    - name: demo',
        `      url: ${url}`,
        '      secret: "${WEBHOOK_SECRET}"',
        '',
      ].join('\n'),
    );
    const token = 'example-admin-token-123456';
    const port = await getFreePort();
    const p = spawnSidecar(
      { LOCKGATE_CONFIG: file, LOCKGATE_ADMIN_TOKEN: token, WEBHOOK_SECRET: secret },
      port,
    );
    await waitReady(p);
    for (let i = 0; i < 10; i += 1) {
      const r = await call(
        p.url,
        token,
        'POST',
        '/v1/checks/password',
        { userId: '42', password: 'guess' },
        'default',
      );
      expect(r.status).toBe(401);
    }
    const line = await until('the printed event', () => lines.find((l) => l.includes('user.locked')));
    expect(line).toMatch(
      /^verified user\.locked evt_[a-z2-7]{26} org=default user=42 actor=\{"type":"system"\} /,
    );
    expect(line).toContain('"failedAttempts":10');
    expect(p.stdout()).not.toContain(secret);
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    expect(lines.filter((l) => l.includes('user.locked'))).toHaveLength(1);
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
