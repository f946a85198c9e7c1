/**
 * The `lockgate` command as users run it: the COMPILED CLI (tsc into a temporary directory laid
 * out as the package: dist/cjs, package.json, config/default.yaml; node_modules linked), run with
 * child_process against a real sidecar started in this process (memory store, port 0, a known
 * admin token). Every command: table and --json output, API errors (exit 1 with the server's
 * message), bad usage (exit 2), an unreachable sidecar, `config check` masking secrets,
 * `hash-password` verified by argon2, and `serve` answering /healthz and exiting 0 on SIGTERM.
 *
 * `npm pack` + install of the tarball into an empty directory needs the npm registry (for the
 * dependencies): it runs only with LOCKGATE_TEST_PACK=1 and is reported as skipped otherwise.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import argon2 from 'argon2';
import { parse as parseYaml } from 'yaml';
import { PERMISSIONS } from '../../src/http/auth';
import { parseConfig } from '../../src/sidecar/config';
import { createLogger } from '../../src/sidecar/logger';
import { startSidecar, type SidecarHandle } from '../../src/sidecar/server';

/** A parsed JSON answer, read freely by the assertions. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

const ROOT = path.resolve(__dirname, '../..');
const ADMIN = 'cli-admin-token-for-tests-0001';
const FAST_ARGON2 = { memoryCost: 1024, timeCost: 1, parallelism: 1 };
const exec = promisify(execFile);

let pkg: string; // the temporary package directory
let bin: string; // its dist/cjs/cli/main.js
let sidecar: SidecarHandle;

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** The environment without the caller's LOCKGATE_* variables (LOCKGATE_TEST_* kept). */
/** Every command of the CLI, as its usage names it. */
const COMMANDS = [
  'serve',
  'config check',
  'status',
  'lock',
  'unlock',
  'lockouts',
  'settings get',
  'settings set',
  'hash-password',
];

function cleanEnv(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(process.env).filter(
      (e): e is [string, string] =>
        e[1] !== undefined && (!e[0].startsWith('LOCKGATE_') || e[0].startsWith('LOCKGATE_TEST_')),
    ),
  );
}

/** Runs the compiled CLI against the test's sidecar (as admin unless `env` says otherwise). */
function cli(
  args: readonly string[],
  options: { env?: Record<string, string>; input?: string } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      env: { ...cleanEnv(), LOCKGATE_URL: sidecar.url, LOCKGATE_TOKEN: ADMIN, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(options.input ?? '');
  });
}

function json(run: Run): Json {
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  return JSON.parse(run.stdout);
}

beforeAll(async () => {
  pkg = mkdtempSync(path.join(os.tmpdir(), 'lockgate-cli-'));
  await exec(
    process.execPath,
    [
      path.join(ROOT, 'node_modules/typescript/bin/tsc'),
      '-p',
      path.join(ROOT, 'tsconfig.build.json'),
      '--outDir',
      path.join(pkg, 'dist/cjs'),
      '--declaration',
      'false',
      '--sourceMap',
      'false',
    ],
    { cwd: ROOT },
  );
  cpSync(path.join(ROOT, 'package.json'), path.join(pkg, 'package.json'));
  cpSync(path.join(ROOT, 'config'), path.join(pkg, 'config'), { recursive: true });
  // as scripts/build.mjs: the admin console's static files beside its compiled module
  cpSync(path.join(ROOT, 'src/console/static'), path.join(pkg, 'dist/cjs/console/static'), {
    recursive: true,
  });
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(pkg, 'node_modules'), 'dir');
  bin = path.join(pkg, 'dist/cjs/cli/main.js');

  sidecar = await startSidecar(
    parseConfig({
      server: { port: 0 },
      instance: { id: 'itest', maxPasswordAttempts: 3 },
      password: { argon2: FAST_ARGON2 },
      auth: {
        tokens: [
          { name: 'root', token: ADMIN, orgs: ['*'], permissions: [...PERMISSIONS] },
          { name: 'reader', token: 'cli-reader-token-0001', permissions: ['user.read'] },
        ],
      },
    }),
    { logger: createLogger('silent') },
  );
}, 120_000);

afterAll(async () => {
  await sidecar?.close();
  if (pkg) rmSync(pkg, { recursive: true, force: true });
});

describe('the build', () => {
  it('the bin file starts with a shebang and package.json names it', async () => {
    const { readFileSync } = await import('node:fs');
    expect(readFileSync(bin, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
    const manifest = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    expect(manifest.bin).toEqual({ lockgate: 'dist/cjs/cli/main.js' });
    expect(manifest.files).toEqual(expect.arrayContaining(['dist', 'config']));
  });
});

describe('usage', () => {
  it('--help describes the commands (exit 0, stdout)', async () => {
    const run = await cli(['--help']);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('');
    for (const c of COMMANDS) {
      expect(run.stdout).toContain(`  ${c} `);
    }
    expect(run.stdout).toContain('LOCKGATE_URL');
    expect(run.stdout).toContain('LOCKGATE_TOKEN');
  });

  it.each(COMMANDS)('lockgate %s --help', async (name) => {
    const run = await cli([...name.split(' '), '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^usage: lockgate ${name}\\b`));
    expect(run.stderr).toBe('');
  });

  it.each([
    [[], /usage: lockgate <command>/],
    [['frobnicate'], /unknown command "frobnicate"/],
    [['status'], /missing USER/],
    [['status', 'u1', 'u2'], /unexpected argument "u2"/],
    [['status', 'u1', '--bogus'], /Unknown option '--bogus'/],
    [['lock', '--org'], /--org/],
    [['lockouts', '--limit', 'ten'], /--limit: expected a non-negative integer/],
    [['settings'], /expected a subcommand \(get, set\)/],
    [['settings', 'del'], /unknown subcommand "del"/],
    [['settings', 'set'], /give --max-password, --max-otp or both/],
    [['settings', 'get', '--org', 'o', '--instance'], /not both/],
    [['config', 'check'], /missing FILE/],
    [['hash-password', 'my-password'], /unexpected argument/],
  ])('bad usage %j: usage on stderr, exit 2', async (args, message) => {
    const run = await cli(args as string[]);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(message);
    expect(run.stderr).toContain('usage: lockgate');
  });
});

describe('users', () => {
  it('lock, status, lockouts, unlock: tables', async () => {
    const lock = await cli(['lock', 'cli-u1']);
    expect(lock).toEqual({ code: 0, stdout: 'locked user cli-u1 (org itest)\n', stderr: '' });

    const status = await cli(['status', 'cli-u1']);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^user +cli-u1$/m);
    expect(status.stdout).toMatch(/^org +itest$/m);
    expect(status.stdout).toMatch(/^state +locked$/m);
    expect(status.stdout).toMatch(/^locked at +\d{4}-\d\d-\d\dT/m);
    expect(status.stdout).toMatch(/^max password +3$/m);

    const list = await cli(['lockouts']);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^USER +LOCKED AT$/m);
    expect(list.stdout).toMatch(/^cli-u1 +\d{4}-/m);

    const unlock = await cli(['unlock', 'cli-u1']);
    expect(unlock).toEqual({ code: 0, stdout: 'unlocked user cli-u1 (org itest)\n', stderr: '' });
    const after = await cli(['status', 'cli-u1']);
    expect(after.stdout).toMatch(/^state +active$/m);
    expect(after.stdout).not.toMatch(/locked at/);
    expect((await cli(['lockouts'])).stdout).toBe('no locked users\n');
  });

  it('--json prints the server’s answers', async () => {
    const lock = json(await cli(['lock', 'cli-u2', '--json']));
    expect(lock.details.resourceOwner).toBe('itest');
    const status = json(await cli(['status', 'cli-u2', '--json']));
    expect(status).toMatchObject({ userId: 'cli-u2', orgId: 'itest', state: 'USER_STATE_LOCKED' });
    expect(status.failedAttempts.password).toBe('0');
    const list = json(await cli(['lockouts', '--json']));
    expect(list.users.map((u: Json) => u.userId)).toEqual(['cli-u2']);
    const unlock = json(await cli(['unlock', 'cli-u2', '--json']));
    expect(unlock.details.resourceOwner).toBe('itest');
  });

  it('--org goes in x-zitadel-orgid; --limit pages with a cursor', async () => {
    for (const u of ['o-1', 'o-2', 'o-3']) expect((await cli(['lock', u, '--org', 'org-b'])).code).toBe(0);
    expect((await cli(['status', 'o-1'])).stdout).toMatch(/^state +active$/m);
    expect((await cli(['status', 'o-1', '--org', 'org-b'])).stdout).toMatch(/^state +locked$/m);

    const page = await cli(['lockouts', '--org', 'org-b', '--limit', '2']);
    expect(page.code).toBe(0);
    const cursor = /^more: lockgate lockouts --cursor (\S+)$/m.exec(page.stdout)?.[1];
    expect(cursor).toBeDefined();
    const first = json(await cli(['lockouts', '--org', 'org-b', '--limit', '2', '--json']));
    const second = json(
      await cli(['lockouts', '--org', 'org-b', '--limit', '2', '--cursor', cursor!, '--json']),
    );
    const ids = [...first.users, ...second.users].map((u: Json) => u.userId).sort();
    expect(ids).toEqual(['o-1', 'o-2', 'o-3']);
  });

  it('API errors: the server’s message, exit 1', async () => {
    const unlock = await cli(['unlock', 'never-locked']);
    expect(unlock).toEqual({ code: 1, stdout: '', stderr: 'lockgate: User is not locked (HTTP 400)\n' });
    expect((await cli(['lock', 'twice'])).code).toBe(0);
    const again = await cli(['lock', 'twice']);
    expect(again).toEqual({ code: 1, stdout: '', stderr: 'lockgate: User is already locked (HTTP 400)\n' });

    const noToken = await cli(['status', 'x'], { env: { LOCKGATE_TOKEN: '' } });
    expect(noToken).toEqual({
      code: 1,
      stdout: '',
      stderr: 'lockgate: Authorization: Bearer token required (HTTP 401)\n',
    });
    const reader = await cli(['lock', 'x'], { env: { LOCKGATE_TOKEN: 'cli-reader-token-0001' } });
    expect(reader.code).toBe(1);
    expect(reader.stderr).toMatch(/^lockgate: .+ \(HTTP 403\)\n$/);
  });

  it('an unreachable sidecar: one line, exit 1', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const run = await cli(['status', 'x'], { env: { LOCKGATE_URL: `http://127.0.0.1:${port}` } });
    expect(run).toEqual({
      code: 1,
      stdout: '',
      stderr: `lockgate: cannot connect to the sidecar at http://127.0.0.1:${port}: connection refused (is it running? set LOCKGATE_URL)\n`,
    });
    const bad = await cli(['lockouts'], { env: { LOCKGATE_URL: 'not a url' } });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe('lockgate: LOCKGATE_URL: expected an http:// or https:// URL, got "not a url"\n');
  });
});

describe('settings', () => {
  it('get: the token’s home org, an org, the instance (table and --json)', async () => {
    const home = await cli(['settings', 'get']);
    expect(home.code).toBe(0);
    expect(home.stdout).toMatch(/^settings of +org itest \(the instance default\)$/m);
    expect(home.stdout).toMatch(/^max password +3$/m);
    expect(home.stdout).toMatch(/^max otp +10$/m);
    const org = json(await cli(['settings', 'get', '--org', 'org-s', '--json']));
    expect(org).toMatchObject({
      isDefault: true,
      policy: { maxPasswordAttempts: '3', maxOtpAttempts: '10' },
    });
    const instance = await cli(['settings', 'get', '--instance']);
    expect(instance.stdout).toMatch(/^settings of +the instance$/m);
    expect(instance.stdout).toMatch(/^max password +3$/m);
  });

  it('set: adds org settings, then changes them (a value left out is kept); unchanged → exit 1', async () => {
    const add = await cli(['settings', 'set', '--org', 'org-s', '--max-password', '5']);
    expect(add).toEqual({
      code: 0,
      stdout: 'settings of org org-s changed: max password 5, max otp 10\n',
      stderr: '',
    });
    const change = json(await cli(['settings', 'set', '--org', 'org-s', '--max-otp', '7', '--json']));
    expect(change).toMatchObject({
      maxPasswordAttempts: 5,
      maxOtpAttempts: 7,
      details: { resourceOwner: 'org-s' },
    });
    const got = json(await cli(['settings', 'get', '--org', 'org-s', '--json']));
    expect(got).toMatchObject({
      isDefault: false,
      policy: { maxPasswordAttempts: '5', maxOtpAttempts: '7' },
    });
    const table = await cli(['settings', 'get', '--org', 'org-s']);
    expect(table.stdout).toMatch(/^settings of +org org-s$/m);

    const same = await cli(['settings', 'set', '--org', 'org-s', '--max-otp', '7']);
    expect(same.code).toBe(1);
    expect(same.stdout).toBe('');
    expect(same.stderr).toMatch(/^lockgate: .+ \(HTTP 400\)\n$/);
  });

  it('set --instance changes the instance settings', async () => {
    const set = await cli(['settings', 'set', '--instance', '--max-password', '4', '--max-otp', '6']);
    expect(set).toEqual({
      code: 0,
      stdout: 'instance settings changed: max password 4, max otp 6\n',
      stderr: '',
    });
    const got = json(await cli(['settings', 'get', '--instance', '--json']));
    expect(got.policy).toMatchObject({ maxPasswordAttempts: '4', maxOtpAttempts: '6' });
    const bad = await cli(['settings', 'set', '--instance', '--max-password', '99999999999']);
    expect(bad.code).toBe(2);
  });
});

describe('config check', () => {
  const SECRETS = {
    token: 'file-token-secret-value-0001',
    redisPassword: 'redis-url-password-secret',
    nodePassword: 'redis-node-password-secret',
    pepper: 'otp-pepper-secret-0123456789',
  };
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'lockgate-cli-config-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function file(name: string, text: string): string {
    const p = path.join(dir, name);
    writeFileSync(p, text);
    return p;
  }

  const good = () =>
    file(
      'good.yaml',
      [
        'server: { port: 9999 }',
        'instance: { id: cfg-test }',
        'store:',
        '  type: redis',
        `  redis: { url: "redis://app:${SECRETS.redisPassword}@redis.internal:6379/2", password: "${SECRETS.nodePassword}" }`,
        `otp: { pepper: "${SECRETS.pepper}" }`,
        'auth:',
        '  tokens:',
        `    - { name: ops, token: "${SECRETS.token}", orgs: ["*"], permissions: [user.read] }`,
        '',
      ].join('\n'),
    );

  function expectMasked(text: string): void {
    for (const secret of Object.values(SECRETS)) expect(text).not.toContain(secret);
    expect(text).not.toContain(createHash('sha256').update(SECRETS.token).digest('hex'));
    expect(text).not.toContain('cli-env-admin-token');
    expect(text).not.toContain(createHash('sha256').update('cli-env-admin-token').digest('hex'));
  }

  it('a good file: the effective configuration as YAML, secrets masked', async () => {
    const run = await cli(['config', 'check', good()], {
      env: { LOCKGATE_ADMIN_TOKEN: 'cli-env-admin-token' },
    });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expectMasked(run.stdout);
    const config = parseYaml(run.stdout);
    expect(config.server).toMatchObject({ port: 9999, host: '127.0.0.1' }); // defaults merged in
    expect(config.instance.id).toBe('cfg-test');
    expect(config.store.redis.url).toBe('redis://app:********@redis.internal:6379/2');
    expect(config.store.redis.password).toBe('********');
    expect(config.otp.pepper).toBe('********');
    expect(config.auth.tokens.map((t: Json) => [t.name, t.sha256])).toEqual([
      ['ops', '********'],
      ['admin', '********'],
    ]);
  });

  it('--json, and the environment applies', async () => {
    const run = await cli(['config', 'check', good(), '--json'], { env: { LOCKGATE_PORT: '7070' } });
    expectMasked(run.stdout);
    const config = json(run);
    expect(config.server.port).toBe(7070);
  });

  it('a bad file: the one-line ConfigError, exit 1', async () => {
    const bad = await cli(['config', 'check', file('bad.yaml', 'server: { port: "x" }\n')]);
    expect(bad).toEqual({
      code: 1,
      stdout: '',
      stderr: 'lockgate: invalid configuration: server.port: expected an integer from 0 to 65535\n',
    });
    const missing = await cli(['config', 'check', path.join(dir, 'nope.yaml')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(
      /^lockgate: invalid configuration: LOCKGATE_CONFIG: cannot read .*nope\.yaml \(ENOENT\)\n$/,
    );
    const secretInError = await cli([
      'config',
      'check',
      file(
        'bad-secret.yaml',
        `otp: { pepper: "short" }\nauth: { tokens: [{ name: a, token: "${SECRETS.token}", permissions: [nope] }] }\n`,
      ),
    ]);
    expect(secretInError.code).toBe(1);
    expect(secretInError.stderr.split('\n')).toHaveLength(2); // one line and the final newline
    expectMasked(secretInError.stderr);
  });
});

describe('hash-password', () => {
  it('reads stdin and prints an argon2id PHC string that verifies', async () => {
    const run = await cli(
      ['hash-password', '--memory-cost', '1024', '--time-cost', '1', '--parallelism', '1'],
      {
        input: 'correct horse battery staple\n',
      },
    );
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const hash = run.stdout.trim();
    expect(hash).toMatch(/^\$argon2id\$v=19\$(?=[^$]*\bm=1024\b)(?=[^$]*\bt=1\b)(?=[^$]*\bp=1\b)[^$]+\$/);
    expect(run.stdout).toBe(`${hash}\n`);
    expect(await argon2.verify(hash, 'correct horse battery staple')).toBe(true);
    expect(await argon2.verify(hash, 'correct horse battery staple\n')).toBe(false);
  });

  it('default cost (m=64 MiB, t=3, p=4); an empty stdin is exit 1', async () => {
    const run = await cli(['hash-password'], { input: 'pw-default-cost' });
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(
      /^\$argon2id\$v=19\$(?=[^$]*\bm=65536\b)(?=[^$]*\bt=3\b)(?=[^$]*\bp=4\b)[^$]+\$/,
    );
    expect(await argon2.verify(run.stdout.trim(), 'pw-default-cost')).toBe(true);
    const empty = await cli(['hash-password']);
    expect(empty).toEqual({ code: 1, stdout: '', stderr: 'lockgate: no password on standard input\n' });
  });
});

/** Spawns `lockgate serve` (command + args) and resolves once it logs its listening URL. */
async function startServe(command: string, args: string[], env: NodeJS.ProcessEnv) {
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)),
  );
  const deadline = Date.now() + 20_000;
  for (;;) {
    const url = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(out)?.[1];
    if (url) return { child, url, exited, out: () => out, err: () => err };
    if (Date.now() > deadline || child.exitCode !== null) {
      if (child.exitCode === null) child.kill('SIGKILL');
      throw new Error(`serve did not start: ${out}${err}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('serve', () => {
  it('starts the sidecar, answers /healthz and the API, exits 0 on SIGTERM', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'lockgate-cli-serve-'));
    try {
      const config = path.join(dir, 'serve.yaml');
      writeFileSync(
        config,
        [
          'server: { port: 0 }',
          'instance: { id: served }',
          'auth:',
          '  tokens:',
          '    - { name: ops, token: served-token-0001, orgs: ["*"], permissions: [user.read, user.write] }',
          '',
        ].join('\n'),
      );
      const served = await startServe(process.execPath, [bin, 'serve', '--config', config], cleanEnv());
      const { child, url, exited } = served;
      try {
        const health = await fetch(`${url}/healthz`);
        expect(health.status).toBe(200);
        expect(await health.json()).toEqual({ status: 'ok' });
        const status = await cli(['status', 'someone', '--json'], {
          env: { LOCKGATE_URL: url, LOCKGATE_TOKEN: 'served-token-0001' },
        });
        expect(json(status)).toMatchObject({
          userId: 'someone',
          orgId: 'served',
          state: 'USER_STATE_ACTIVE',
        });
        child.kill('SIGTERM');
        expect(await exited).toBe(0);
        expect(served.err()).toBe('');
        expect(served.out()).not.toContain('generated admin token'); // the file's token is used
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a bad --config: the one-line ConfigError, exit 1', async () => {
    const run = await cli(['serve', '--config', path.join(os.tmpdir(), 'lockgate-no-such-file.yaml')]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /^lockgate: invalid configuration: LOCKGATE_CONFIG: cannot read .* \(ENOENT\)\n$/,
    );
  });
});

// Opt-in: installing the tarball needs the npm registry for lockgate's dependencies.
const packIt = process.env.LOCKGATE_TEST_PACK === '1' ? it : it.skip;
describe('npm pack', () => {
  packIt(
    'the packed tarball installs into an empty directory: `lockgate --help`, `config check` and `serve` (memory store) run',
    async () => {
      cpSync(path.join(ROOT, 'README.md'), path.join(pkg, 'README.md'));
      cpSync(path.join(ROOT, 'CHANGELOG.md'), path.join(pkg, 'CHANGELOG.md'));
      const packed = await exec('npm', ['pack', '--json', '--pack-destination', pkg], { cwd: pkg });
      const [info] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
      const files = info!.files.map((f) => f.path);
      expect(files).toEqual(
        expect.arrayContaining([
          'dist/cjs/cli/main.js',
          'dist/cjs/console/static/app.js',
          'config/default.yaml',
          'package.json',
        ]),
      );
      const app = mkdtempSync(path.join(os.tmpdir(), 'lockgate-cli-install-'));
      try {
        writeFileSync(
          path.join(app, 'package.json'),
          '{ "name": "app", "version": "1.0.0", "private": true }\n',
        );
        await exec('npm', ['install', '--no-audit', '--no-fund', path.join(pkg, info!.filename)], {
          cwd: app,
          timeout: 240_000,
        });
        const help = await exec(path.join(app, 'node_modules/.bin/lockgate'), ['--help'], { cwd: app });
        expect(help.stdout).toMatch(/^usage: lockgate <command>/);
        const check = await exec(
          path.join(app, 'node_modules/.bin/lockgate'),
          ['config', 'check', '/dev/null'],
          {
            cwd: app,
            env: cleanEnv(),
          },
        );
        expect(parseYaml(check.stdout).server.port).toBe(8080); // config/default.yaml shipped and found
        // `lockgate serve` from the installed package: the sidecar on the memory store.
        const served = await startServe(path.join(app, 'node_modules/.bin/lockgate'), ['serve'], {
          ...cleanEnv(),
          LOCKGATE_PORT: '0',
        });
        try {
          expect(served.out()).toContain('"store":"memory"');
          expect((await fetch(`${served.url}/healthz`)).status).toBe(200);
          // the admin console, with its library modules from the installed dependencies
          expect((await fetch(`${served.url}/console/`)).status).toBe(200);
          expect((await fetch(`${served.url}/console/vendor/preact.mjs`)).status).toBe(200);
          served.child.kill('SIGTERM');
          expect(await served.exited).toBe(0);
        } finally {
          if (served.child.exitCode === null && served.child.signalCode === null)
            served.child.kill('SIGKILL');
        }
      } finally {
        rmSync(app, { recursive: true, force: true });
      }
    },
    300_000,
  );
});
