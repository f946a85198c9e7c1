/**
 * The sidecar as a separate process (`node -r ts-node/register/transpile-only src/sidecar/main.ts`,
 * what `npm start` runs), for end-to-end tests: spawn it with its own LOCKGATE_* variables, wait
 * for it, call it, and kill whatever is left at the end (killSidecars in afterAll).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

/** A parsed JSON answer, read freely by the assertions. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

const ROOT = path.join(__dirname, '..', '..');
const MAIN = ['-r', 'ts-node/register/transpile-only', 'src/sidecar/main.ts'];

export interface SidecarProcess {
  readonly child: ChildProcess;
  readonly url: string;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (or the signal). */
  readonly exited: Promise<number | string>;
}

const children = new Set<ChildProcess>();

/** Spawns main.ts with only the given LOCKGATE_* variables (the rest of the environment is kept). */
export function spawnSidecar(env: Record<string, string>, port?: number): SidecarProcess {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('LOCKGATE_') || k.startsWith('LOCKGATE_TEST_')),
  );
  const child = spawn(process.execPath, MAIN, {
    cwd: ROOT,
    env: { ...base, ...env, ...(port !== undefined ? { LOCKGATE_PORT: String(port) } : {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve(code ?? signal ?? -1);
    }),
  );
  return { child, url: `http://127.0.0.1:${port ?? 0}`, stdout: () => out, stderr: () => err, exited };
}

/** Kills (SIGKILL) every sidecar spawned here that is still running. */
export function killSidecars(): void {
  for (const child of children) child.kill('SIGKILL');
}

/** Polls `fn` every 50 ms until it answers something other than undefined (fails after `timeoutMs`). */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 20_000,
): Promise<T> {
  const started = Date.now();
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Resolves once the process answers /readyz with 200; fails if it exits first. */
export async function waitReady(p: SidecarProcess, timeoutMs = 30_000): Promise<void> {
  await until(
    `${p.url}/readyz (stderr: ${p.stderr()})`,
    async () => {
      if (p.child.exitCode !== null) throw new Error(`sidecar exited: ${p.stderr()}`);
      try {
        return (await fetch(`${p.url}/readyz`)).status === 200 ? true : undefined;
      } catch {
        return undefined;
      }
    },
    timeoutMs,
  );
}

/** One API call: method, route, optional JSON body, the org header (default org-a). */
export async function call(
  url: string,
  token: string,
  method: string,
  route: string,
  body?: unknown,
  org = 'org-a',
): Promise<{ status: number; body: Json }> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, 'x-zitadel-orgid': org };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${url}${route}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Json) : undefined };
}
