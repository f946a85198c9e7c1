import { execFile } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

/**
 * The built package as its users get it: `npm run build` (dist/cjs by tsc, dist/esm a wrapper),
 * then consumers in a directory of their own that resolve `lockgate` by name from node_modules
 * (a symlink to this repository, as `npm link` makes), through package.json `exports`:
 * an ESM and a CommonJS program, and TypeScript consumers (module nodenext) checked by tsc.
 *
 * The build runs when CI is set, or when dist is missing or older than the sources.
 */

const run = promisify(execFile);
const ROOT = path.resolve(__dirname, '../..');
const FIXTURES = path.join(ROOT, 'test/fixtures/package-consumer');
const DIST_ENTRY = path.join(ROOT, 'dist/cjs/index.js');

function newestMtime(target: string): number {
  const stat = statSync(target);
  if (!stat.isDirectory()) return stat.mtimeMs;
  let newest = 0;
  for (const entry of readdirSync(target)) newest = Math.max(newest, newestMtime(path.join(target, entry)));
  return newest;
}

function distIsFresh(): boolean {
  if (!existsSync(DIST_ENTRY) || !existsSync(path.join(ROOT, 'dist/esm/index.js'))) return false;
  const inputs = ['src', 'scripts/build.mjs', 'package.json', 'tsconfig.json', 'tsconfig.build.json'];
  const newestInput = Math.max(...inputs.map((p) => newestMtime(path.join(ROOT, p))));
  return statSync(DIST_ENTRY).mtimeMs >= newestInput;
}

let consumer: string;

beforeAll(async () => {
  if (process.env.CI || !distIsFresh()) {
    await run(process.execPath, [path.join(ROOT, 'scripts/build.mjs')], { cwd: ROOT, timeout: 180_000 });
  }
  consumer = mkdtempSync(path.join(os.tmpdir(), 'lockgate-consumer-'));
  writeFileSync(
    path.join(consumer, 'package.json'),
    JSON.stringify({ name: 'lockgate-consumer', private: true, dependencies: { lockgate: '*' } }),
  );
  mkdirSync(path.join(consumer, 'node_modules'));
  symlinkSync(ROOT, path.join(consumer, 'node_modules/lockgate'), 'dir');
  // type packages for the TypeScript consumers (express, node)
  symlinkSync(path.join(ROOT, 'node_modules/@types'), path.join(consumer, 'node_modules/@types'), 'dir');
  for (const file of readdirSync(FIXTURES)) {
    copyFileSync(path.join(FIXTURES, file), path.join(consumer, file.replace(/\.txt$/, '')));
  }
}, 240_000);

afterAll(() => {
  if (consumer) rmSync(consumer, { recursive: true, force: true });
});

async function runNode(file: string): Promise<Record<string, unknown>> {
  const { stdout } = await run(process.execPath, [file], { cwd: consumer, timeout: 30_000 });
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
}

test('ESM: named and default imports through exports, one set of classes with require()', async () => {
  const out = await runNode('consumer.mjs');
  expect(out.resolved).toBe(`file://${path.join(ROOT, 'dist/esm/index.js')}`);
  expect(out.required).toBe(DIST_ENTRY);
  expect(out.exports).toEqual({
    createLockout: 'function',
    MemoryStore: 'function',
    RedisStore: 'function',
    UserLockedError: 'function',
    BusyError: 'function',
    StoreUnavailableError: 'function',
    InvalidArgumentError: 'function',
    LockgateError: 'function',
  });
  expect(out).toMatchObject({
    sameClasses: true,
    lockedIsEsmClass: true,
    lockedIsCjsClass: true,
    lockedCode: 'Errors.User.Locked',
    cjsOptionErrorIsEsmClass: true,
    optionErrorField: 'maxPasswordAttempts',
  });
});

test('CommonJS: require() through exports, instanceof across require() and import()', async () => {
  const out = await runNode('consumer.cjs');
  expect(out.required).toBe(DIST_ENTRY);
  expect(Object.values(out.exports as object).every((t) => t === 'function')).toBe(true);
  expect(out).toMatchObject({
    storeIsMemoryStore: true,
    sameClasses: true,
    lockedIsEsmClass: true,
    lockedIsCjsClass: true,
    busyIsEsmClass: true,
    busyRetryAfterMs: true,
  });
});

test('TypeScript (nodenext, ESM and CJS consumers): the types resolve through exports', async () => {
  const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
  const result = await run(process.execPath, [tsc, '-p', path.join(consumer, 'tsconfig.json')], {
    cwd: consumer,
    timeout: 120_000,
  }).then(
    () => ({ code: 0, output: '' }),
    (error: { code?: number; stdout?: string; stderr?: string }) => ({
      code: error.code ?? 1,
      output: `${error.stdout ?? ''}${error.stderr ?? ''}`,
    }),
  );
  expect(result.output).toBe('');
  expect(result.code).toBe(0);

  // and tsc does fail on a wrong use (the types are not `any`)
  writeFileSync(
    path.join(consumer, 'wrong.mts'),
    "import { createLockout } from 'lockgate';\nexport const n: number = createLockout().engine;\n",
  );
  const wrong = await run(
    process.execPath,
    [tsc, '--noEmit', '--module', 'nodenext', '--types', 'node', '--strict', 'wrong.mts'],
    {
      cwd: consumer,
      timeout: 120_000,
    },
  ).then(
    () => '',
    (error: { stdout?: string }) => error.stdout ?? '',
  );
  expect(wrong).toMatch(
    /wrong\.mts\(2,14\): error TS2322: Type 'LockoutEngine' is not assignable to type 'number'/,
  );
}, 120_000);

test('the admin console: routers.console() of the built package serves the page and every module it links to', async () => {
  const out = await runNode('console-consumer.cjs');
  expect(out.page).toBe(200);
  expect(out.apiBase).toBe('/admin');
  expect(out.csp).toContain("frame-ancestors 'none'");
  const statuses = out.statuses as Record<string, number>;
  expect(Object.keys(statuses)).toEqual(
    expect.arrayContaining([
      'app.js',
      'console.css',
      'vendor/preact.mjs',
      'vendor/uplot.mjs',
      'vendor/uplot.css',
    ]),
  );
  expect(Object.values(statuses).every((s) => s === 200)).toBe(true);
});
