/**
 * Attempt ids are bearer capabilities (whoever holds one may settle the attempt): the sidecar's
 * debug request lines and error lines must not carry them, as they carry no tokens.
 */
import { randomUUID } from 'node:crypto';
import { parseConfig } from '../../src/sidecar/config';
import { createLogger, redactPath } from '../../src/sidecar/logger';
import { startSidecar, type SidecarHandle } from '../../src/sidecar/server';

const TOKEN = 'log-test-token-000001';

function capture(level: 'debug' | 'info' = 'debug') {
  const lines: string[] = [];
  const logger = createLogger(level, { write: (line: string) => void lines.push(line) });
  return { logger, lines, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe('redactPath', () => {
  it.each([
    ['/v1/attempts/abc.def/success', '/v1/attempts/[redacted]/success'],
    ['/v1/attempts/abc.def/failure', '/v1/attempts/[redacted]/failure'],
    ['/V1/Attempts/abc.def/SUCCESS', '/V1/Attempts/[redacted]/SUCCESS'],
    ['/lockgate/v1/attempts/abc.def/failure', '/lockgate/v1/attempts/[redacted]/failure'],
    ['/v1/attempts/abc.def', '/v1/attempts/[redacted]'],
    ['/v1/attempts', '/v1/attempts'],
    ['/v1/checks/password', '/v1/checks/password'],
  ])('%s → %s', (path, expected) => {
    expect(redactPath(path)).toBe(expected);
  });
});

describe('the sidecar logs no attempt id', () => {
  let sidecar: SidecarHandle;
  const log = capture('debug');

  beforeAll(async () => {
    sidecar = await startSidecar(
      parseConfig({
        server: { port: 0 },
        instance: { id: `log-${randomUUID()}` },
        password: { argon2: { memoryCost: 1024, timeCost: 1, parallelism: 1 } },
        auth: { tokens: [{ name: 'root', token: TOKEN, orgs: ['*'], permissions: ['lockout.check'] }] },
      }),
      { logger: log.logger },
    );
  });
  afterAll(async () => {
    await sidecar?.close();
  });

  const post = (path: string, body?: unknown) =>
    fetch(`${sidecar.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });

  async function reserve(userId: string): Promise<string> {
    const res = await post('/v1/attempts', { userId, factor: 'password' });
    expect(res.status).toBe(201);
    return ((await res.json()) as { attemptId: string }).attemptId;
  }

  /** Waits until `count` request lines are logged (they are written when the response finishes). */
  async function requestLines(count: number): Promise<Array<Record<string, unknown>>> {
    for (let i = 0; i < 200; i += 1) {
      const lines = log.records().filter((r) => r.msg === 'request');
      if (lines.length >= count) return lines;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(
      `expected ${count} request lines, got ${log.records().length} lines: ${log.lines.join('')}`,
    );
  }

  it('request lines show /v1/attempts/[redacted]/…, never the id or its random part', async () => {
    log.lines.length = 0;
    const first = await reserve('alice');
    const second = await reserve('bob');
    const third = await reserve('carol');
    expect((await post(`/v1/attempts/${first}/success`)).status).toBe(200);
    expect((await post(`/v1/attempts/${second}/failure`)).status).toBe(200);
    // Settled already, and a case variant of the route: 404 (still a request line).
    expect((await post(`/V1/ATTEMPTS/${first}/SUCCESS`)).status).toBe(404);
    // Malformed: 400.
    expect((await post(`/v1/attempts/${third.slice(0, -3)}/failure`)).status).toBe(400);

    const lines = await requestLines(7);
    const paths = lines.map((r) => r.path);
    expect(paths).toEqual([
      '/v1/attempts',
      '/v1/attempts',
      '/v1/attempts',
      '/v1/attempts/[redacted]/success',
      '/v1/attempts/[redacted]/failure',
      '/V1/ATTEMPTS/[redacted]/SUCCESS',
      '/v1/attempts/[redacted]/failure',
    ]);
    const text = log.lines.join('\n');
    for (const id of [first, second, third]) {
      expect(text).not.toContain(id.slice(id.indexOf('.') + 1));
      expect(text).not.toContain(id.slice(0, id.indexOf('.')));
    }
  });

  it('an attemptId in a logged object is censored', () => {
    const own = capture('info');
    own.logger.info(
      { attemptId: 'secret-id', body: { attemptId: 'x' }, entry: { attemptId: 'y' } },
      'logged',
    );
    const [record] = own.records();
    expect(record).toMatchObject({
      attemptId: '[redacted]',
      body: '[redacted]',
      entry: { attemptId: '[redacted]' },
    });
    expect(own.lines.join('')).not.toMatch(/secret-id|"x"|"y"/);
  });
});
