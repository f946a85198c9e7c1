/**
 * SIGHUP on a real sidecar process (`node -r ts-node/register/transpile-only src/sidecar/main.ts`):
 * the tokens of the LOCKGATE_CONFIG file are reloaded without a restart, a change outside `auth`
 * is logged as not applied, and a bad file keeps the previous tokens and logs one line naming the
 * field. LOCKGATE_ADMIN_TOKEN from the environment keeps applying across reloads.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');
const MAIN = ['-r', 'ts-node/register/transpile-only', 'src/sidecar/main.ts'];
const TOKEN_A = 'token-a-0123456789abcdef';
const TOKEN_B = 'token-b-0123456789abcdef';
const ADMIN = 'env-admin-token-0123456789';

let child: ChildProcess | undefined;
let dir: string;

afterAll(() => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function yaml(tokenName: string, token: string, extra: string[] = []): string {
  return [
    'server:',
    '  port: 0',
    'log:',
    '  level: info',
    'auth:',
    '  tokens:',
    `    - name: ${tokenName}`,
    `      token: ${token}`,
    '      orgs: ["*"]',
    '      permissions: [user.read]',
    ...extra,
    '',
  ].join('\n');
}

async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const started = Date.now();
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() - started > 10_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function status(url: string, token: string): Promise<number> {
  const res = await fetch(`${url}/v1/users/x/lockout`, { headers: { authorization: `Bearer ${token}` } });
  await res.arrayBuffer();
  return res.status;
}

it('SIGHUP reloads the tokens; a bad file keeps the old ones and says why; SIGTERM exits 0', async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'lockgate-hup-'));
  const file = path.join(dir, 'lockgate.yaml');
  writeFileSync(file, yaml('alpha', TOKEN_A));
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('LOCKGATE_') || k.startsWith('LOCKGATE_TEST_')),
  );
  const p = spawn(process.execPath, MAIN, {
    cwd: ROOT,
    env: { ...base, LOCKGATE_CONFIG: file, LOCKGATE_ADMIN_TOKEN: ADMIN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child = p;
  let out = '';
  let err = '';
  p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | string>((resolve) =>
    p.once('exit', (code, signal) => resolve(code ?? signal ?? -1)),
  );
  const logged = () => out + err;

  const url = await until(`the listening line (stderr: ${err})`, () => {
    if (p.exitCode !== null) throw new Error(`sidecar exited: ${err}`);
    return /"url":"(http:\/\/[^"]+)"/.exec(out)?.[1];
  });
  expect(await status(url, TOKEN_A)).toBe(200);
  expect(await status(url, TOKEN_B)).toBe(401);

  // Token B instead of A, and a setting outside auth that needs a restart.
  writeFileSync(file, yaml('beta', TOKEN_B, ['instance:', '  maxPasswordAttempts: 3']));
  p.kill('SIGHUP');
  await until('token B to be accepted', async () =>
    (await status(url, TOKEN_B)) === 200 ? true : undefined,
  );
  expect(await status(url, TOKEN_A)).toBe(401);
  expect(await status(url, ADMIN)).toBe(200); // LOCKGATE_ADMIN_TOKEN still applies
  await until('the reload line', () => (out.includes('configuration reloaded: auth') ? true : undefined));
  const reloaded = out.split('\n').find((l) => l.includes('configuration reloaded: auth'))!;
  expect(JSON.parse(reloaded)).toMatchObject({ level: 30, tokens: ['beta', 'admin'] });
  expect(out).toMatch(/"level":40[^\n]*not applied: instance\.maxPasswordAttempts"/);
  expect(logged()).not.toContain(TOKEN_B);
  expect(logged()).not.toContain(ADMIN);

  // A bad file: the old tokens stay, and one error line names the field.
  writeFileSync(file, yaml('gamma', TOKEN_A).replace('port: 0', 'port: 99999'));
  p.kill('SIGHUP');
  const failed = await until('the reload error line', () =>
    out.split('\n').find((l) => l.includes('configuration not reloaded')),
  );
  expect(JSON.parse(failed)).toMatchObject({ level: 50, field: 'server.port' });
  expect(failed).toContain(
    'lockgate: invalid configuration: server.port: expected an integer from 0 to 65535',
  );
  expect(await status(url, TOKEN_B)).toBe(200);
  expect(await status(url, TOKEN_A)).toBe(401);
  expect(p.exitCode).toBeNull();

  p.kill('SIGTERM');
  expect(await exited).toBe(0);
}, 30_000);
