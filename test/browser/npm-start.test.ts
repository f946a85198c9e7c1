/**
 * The quick start in a browser: the sidecar as `npm start` runs it (no configuration, memory
 * store; a separate process), its start line names the console, and the admin token it prints
 * signs in to /console in Chromium.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { getFreePort } from '../helpers/redis-servers';
import { CHROMIUM_ARGS, chromiumPath, screenshot } from './console-harness';

const ROOT = path.join(__dirname, '..', '..');
/** package.json "start". */
const MAIN = ['-r', 'ts-node/register/transpile-only', 'src/sidecar/main.ts'];

let child: ChildProcess | undefined;
let browser: Browser | undefined;
afterAll(async () => {
  await browser?.close();
  if (child && child.exitCode === null) child.kill('SIGKILL');
});

async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const started = Date.now();
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() - started > 30_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('npm start serves the console at /console, and the admin token it prints signs in', async () => {
  const port = await getFreePort();
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('LOCKGATE_') || k === 'LOCKGATE_CHROMIUM'),
  );
  child = spawn(process.execPath, MAIN, {
    cwd: ROOT,
    env: { ...env, LOCKGATE_PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | string>((resolve) =>
    child!.once('exit', (code, signal) => resolve(code ?? signal ?? -1)),
  );
  const token = await until('the token line', () => /admin token[^:]*: (\S+)\n/.exec(out)?.[1]);
  const url = `http://127.0.0.1:${port}`;
  await until('the start line', () => (out.includes('lockgate listening') ? true : undefined));
  expect(out).toContain(`"console":"${url}/console/"`);

  browser = await chromium.launch({ executablePath: chromiumPath(), args: CHROMIUM_ARGS });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(e.message));
  await page.goto(`${url}/console`); // redirected to /console/
  expect(page.url()).toBe(`${url}/console/`);
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  const nav = page.getByRole('navigation', { name: 'Pages', exact: true });
  await nav.waitFor();
  expect(await nav.getByRole('link').allTextContents()).toEqual([
    'Locked users',
    'User lookup',
    'Settings',
    'Activity',
  ]);
  // The generated token's home org is the instance id (`default`); it may act on every org.
  expect(await page.getByLabel('Organization').inputValue()).toBe('default');
  await page.getByText('Nobody is locked in this organization.').waitFor();
  await screenshot({ page, context, problems, foreignRequests: [] }, 'console-npm-start');
  expect(problems).toEqual([]);
  await context.close();

  child.kill('SIGTERM');
  expect(await exited).toBe(0);
}, 60_000);
