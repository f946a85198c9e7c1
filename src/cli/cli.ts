/**
 * The `lockgate` command: `serve` (the sidecar), `config check`, the admin commands that talk to
 * a running sidecar over its HTTP API (status, lock, unlock, lockouts, settings) and
 * `hash-password`. Arguments are parsed with Node's util.parseArgs (no dependency).
 *
 * `runCli` takes its environment and streams as arguments (tests and main.ts pass theirs) and
 * answers the exit code: 0 success, 1 failure (an API error, an unreachable sidecar, a bad
 * configuration), 2 bad usage; `serving` when `serve` started the sidecar (it exits on a signal).
 */
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { Env } from '../sidecar/config';
import { ApiError, callApi, ConnectError, DEFAULT_URL, isRecord } from './client';

// The sidecar, the configuration schema and argon2 are loaded by the commands that use them
// (import() below), so that the commands that only call the API start quickly.
/** ENV.config of src/sidecar/config.ts (test/e2e/cli.test.ts's serve and config check tests rely on it). */
const CONFIG_VARIABLE = 'LOCKGATE_CONFIG';

export interface CliIo {
  readonly env: Env;
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** The whole of standard input (hash-password). */
  readonly readStdin: () => Promise<string>;
}

export type ExitCode = 0 | 1 | 2 | 'serving';

type Options = NonNullable<ParseArgsConfig['options']>;
type Values = Record<string, string | boolean | undefined>;

interface Command {
  /** `['settings', 'get']`. */
  readonly name: readonly string[];
  /** The arguments after the name, e.g. `USER [--org ORG] [--json]`. */
  readonly synopsis: string;
  readonly summary: string;
  /** Names of the positional arguments (all required). */
  readonly positionals: readonly string[];
  readonly options: Options;
  /** Lines describing the options, for --help. */
  readonly help?: readonly string[];
  run(args: { values: Values; positionals: string[]; io: CliIo }): Promise<ExitCode>;
}

/** Bad usage: exit 2 with the message and the usage on stderr. */
class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: Command,
  ) {
    super(message);
  }
}

/** A failure to report in one line: exit 1. */
class Failure extends Error {}

const ORG = { org: { type: 'string' } } as const satisfies Options;
const JSON_OPTION = { json: { type: 'boolean' } } as const satisfies Options;
const ORG_HELP = '  --org ORG      the org (x-zitadel-orgid); default: the token’s home org';
const JSON_HELP = '  --json         print the server’s JSON answer instead of a table';

const COMMANDS: readonly Command[] = [
  {
    name: ['serve'],
    synopsis: '[--config FILE]',
    summary: 'run the sidecar (as npm start) until SIGTERM/SIGINT',
    positionals: [],
    options: { config: { type: 'string' } },
    help: [
      '  --config FILE  YAML configuration file (instead of LOCKGATE_CONFIG); LOCKGATE_* variables still apply',
    ],
    async run({ values, io }) {
      const file = values.config as string | undefined;
      const { runSidecar } = await import('../sidecar/run');
      await runSidecar(file !== undefined ? { ...io.env, [CONFIG_VARIABLE]: file } : io.env);
      return 'serving';
    },
  },
  {
    name: ['config', 'check'],
    synopsis: 'FILE [--json]',
    summary: 'validate a configuration file and print the effective configuration, secrets masked',
    positionals: ['FILE'],
    options: { ...JSON_OPTION },
    help: [
      '  FILE is layered as `serve` would: config/default.yaml, FILE, then LOCKGATE_* variables.',
      '  --json         print JSON instead of YAML',
    ],
    async run({ values, positionals, io }) {
      const { ConfigError, loadConfig } = await import('../sidecar/config');
      const { maskConfig } = await import('./mask');
      const { stringify } = await import('yaml');
      let masked: Record<string, unknown>;
      try {
        const config = loadConfig({ ...io.env, [CONFIG_VARIABLE]: positionals[0] }, (f) =>
          readFileSync(f, 'utf8'),
        );
        masked = maskConfig(config);
      } catch (error) {
        if (error instanceof ConfigError) throw new Failure(error.message.replace(/^lockgate: /, ''));
        throw error;
      }
      io.stdout(values.json ? `${JSON.stringify(masked, null, 2)}\n` : stringify(masked));
      return 0;
    },
  },
  {
    name: ['status'],
    synopsis: 'USER [--org ORG] [--json]',
    summary: 'show a user’s lockout state, failure counters and effective settings',
    positionals: ['USER'],
    options: { ...ORG, ...JSON_OPTION },
    help: [ORG_HELP, JSON_HELP],
    async run({ values, positionals, io }) {
      const { body } = await callApi(io.env, {
        method: 'GET',
        path: `/v1/users/${encodeURIComponent(positionals[0]!)}/lockout`,
        org: values.org as string | undefined,
      });
      if (values.json) return printJson(io, body);
      const b = body as Record<string, unknown> & {
        failedAttempts?: Record<string, string>;
        settings?: Record<string, unknown>;
      };
      const f = b.failedAttempts ?? {};
      const s = b.settings ?? {};
      const rows: Array<[string, string]> = [
        ['user', String(b.userId)],
        ['org', String(b.orgId)],
        ['state', b.state === 'USER_STATE_LOCKED' ? 'locked' : 'active'],
      ];
      if (b.lockedAt !== undefined) rows.push(['locked at', String(b.lockedAt)]);
      rows.push(
        ['failed password', String(f.password ?? 0)],
        ['failed totp', String(f.totp ?? 0)],
        ['failed otp sms', String(f.otpSms ?? 0)],
        ['failed otp email', String(f.otpEmail ?? 0)],
        ['failed recovery', String(f.recoveryCode ?? 0)],
        ['max password', String(s.maxPasswordAttempts)],
        ['max otp', String(s.maxOtpAttempts)],
        ['settings of', s.resourceOwnerType === 'RESOURCE_OWNER_TYPE_ORG' ? 'the org' : 'the instance'],
      );
      io.stdout(keyValues(rows));
      return 0;
    },
  },
  userAction('lock', '_lock', 'lock a user (until unlocked)', 'locked'),
  userAction('unlock', '_unlock', 'unlock a user and reset their failure counters', 'unlocked'),
  {
    name: ['lockouts'],
    synopsis: '[--org ORG] [--limit N] [--cursor C] [--json]',
    summary: 'list the locked users of an org',
    positionals: [],
    options: { ...ORG, limit: { type: 'string' }, cursor: { type: 'string' }, ...JSON_OPTION },
    help: [
      ORG_HELP,
      '  --limit N      at most N users',
      '  --cursor C     the next page (printed after a page)',
      JSON_HELP,
    ],
    async run({ values, io }) {
      const query = new URLSearchParams();
      if (values.limit !== undefined) query.set('limit', String(integer('--limit', values.limit as string)));
      if (values.cursor !== undefined) query.set('cursor', values.cursor as string);
      const q = query.toString();
      const { body } = await callApi(io.env, {
        method: 'GET',
        path: `/v1/lockouts${q ? `?${q}` : ''}`,
        org: values.org as string | undefined,
      });
      if (values.json) return printJson(io, body);
      const b = body as { users?: Array<{ userId: string; lockedAt: string }>; nextCursor?: string };
      const users = b.users ?? [];
      if (users.length === 0) io.stdout('no locked users\n');
      else
        io.stdout(
          table(
            ['USER', 'LOCKED AT'],
            users.map((u) => [u.userId, u.lockedAt]),
          ),
        );
      if (b.nextCursor !== undefined) io.stdout(`more: lockgate lockouts --cursor ${b.nextCursor}\n`);
      return 0;
    },
  },
  {
    name: ['settings', 'get'],
    synopsis: '[--org ORG | --instance] [--json]',
    summary: 'show an org’s effective lockout settings, or the instance’s',
    positionals: [],
    options: { ...ORG, instance: { type: 'boolean' }, ...JSON_OPTION },
    help: [ORG_HELP, '  --instance     the instance settings (the default of every org)', JSON_HELP],
    async run({ values, io }) {
      const org = orgOrInstance(values, this);
      const { body } = await callApi(io.env, settingsGet(org));
      if (values.json) return printJson(io, body);
      io.stdout(keyValues(settingsRows(body, org)));
      return 0;
    },
  },
  {
    name: ['settings', 'set'],
    synopsis: '[--max-password N] [--max-otp N] [--org ORG | --instance] [--json]',
    summary: 'change an org’s lockout settings (added when it has none), or the instance’s',
    positionals: [],
    options: {
      'max-password': { type: 'string' },
      'max-otp': { type: 'string' },
      ...ORG,
      instance: { type: 'boolean' },
      ...JSON_OPTION,
    },
    help: [
      '  --max-password N  failed password checks before the user is locked (0 = never)',
      '  --max-otp N       failed TOTP/SMS/Email/recovery checks before the user is locked (0 = never)',
      '                    (a value left out keeps its current value; at least one is needed)',
      ORG_HELP,
      '  --instance        the instance settings (the default of every org)',
      JSON_HELP,
    ],
    async run({ values, io }) {
      const org = orgOrInstance(values, this);
      const password = values['max-password'];
      const otp = values['max-otp'];
      if (password === undefined && otp === undefined) {
        throw new UsageError('give --max-password, --max-otp or both', this);
      }
      const wanted = {
        maxPasswordAttempts:
          password === undefined ? undefined : integer('--max-password', password as string),
        maxOtpAttempts: otp === undefined ? undefined : integer('--max-otp', otp as string),
      };
      const current = (await callApi(io.env, settingsGet(org))).body as {
        policy: { maxPasswordAttempts: string; maxOtpAttempts: string };
        isDefault?: boolean;
      };
      const body = {
        maxPasswordAttempts: wanted.maxPasswordAttempts ?? Number(current.policy.maxPasswordAttempts),
        maxOtpAttempts: wanted.maxOtpAttempts ?? Number(current.policy.maxOtpAttempts),
      };
      let reply: unknown;
      if (org === INSTANCE) {
        reply = (await callApi(io.env, { method: 'PUT', path: '/admin/v1/policies/password/lockout', body }))
          .body;
      } else {
        // An org that still uses the instance settings has none of its own: add them.
        const method = current.isDefault === false ? 'PUT' : 'POST';
        reply = (await callApi(io.env, { method, path: '/management/v1/policies/lockout', org, body })).body;
      }
      if (values.json) return printJson(io, { ...body, ...(isRecord(reply) ? reply : {}) });
      const owner = isRecord(reply) && isRecord(reply.details) ? reply.details.resourceOwner : undefined;
      io.stdout(
        `${org === INSTANCE ? 'instance settings' : `settings of org ${String(owner ?? org ?? '')}`} changed: ` +
          `max password ${body.maxPasswordAttempts}, max otp ${body.maxOtpAttempts}\n`,
      );
      return 0;
    },
  },
  {
    name: ['hash-password'],
    synopsis: '[--memory-cost KIB] [--time-cost N] [--parallelism N]',
    summary: 'read a password from stdin and print its argon2id PHC string',
    positionals: [],
    options: {
      'memory-cost': { type: 'string' },
      'time-cost': { type: 'string' },
      parallelism: { type: 'string' },
    },
    help: [
      '  The password is read from standard input (never from the command line); one trailing',
      '  newline is removed (at a terminal, end it with Ctrl-D).',
      '  Example: printf %s "$PASSWORD" | lockgate hash-password',
      '  --memory-cost KIB  argon2 memory in KiB (default 65536)',
      '  --time-cost N      argon2 iterations (default 3)',
      '  --parallelism N    argon2 lanes (default 4)',
    ],
    async run({ values, io }) {
      const cost = {
        ...(values['memory-cost'] !== undefined
          ? { memoryCost: integer('--memory-cost', values['memory-cost'] as string) }
          : {}),
        ...(values['time-cost'] !== undefined
          ? { timeCost: integer('--time-cost', values['time-cost'] as string) }
          : {}),
        ...(values.parallelism !== undefined
          ? { parallelism: integer('--parallelism', values.parallelism as string) }
          : {}),
      };
      const { hashPassword, MAX_PASSWORD_LENGTH } = await import('../verify/password');
      const password = (await io.readStdin()).replace(/\r?\n$/, '');
      if (password === '') throw new Failure('no password on standard input');
      if (password.length > MAX_PASSWORD_LENGTH) {
        throw new Failure(`the password is longer than ${MAX_PASSWORD_LENGTH} characters`);
      }
      let hash: string;
      try {
        hash = await hashPassword(password, cost);
      } catch (error) {
        throw new Failure(`cannot hash: ${error instanceof Error ? error.message : String(error)}`);
      }
      io.stdout(`${hash}\n`);
      return 0;
    },
  },
];

const INSTANCE = Symbol('instance');

function userAction(name: string, route: string, summary: string, done: string): Command {
  return {
    name: [name],
    synopsis: 'USER [--org ORG] [--json]',
    summary,
    positionals: ['USER'],
    options: { ...ORG, ...JSON_OPTION },
    help: [ORG_HELP, JSON_HELP],
    async run({ values, positionals, io }) {
      const user = positionals[0]!;
      const { body } = await callApi(io.env, {
        method: 'POST',
        path: `/management/v1/users/${encodeURIComponent(user)}/${route}`,
        org: values.org as string | undefined,
        body: {},
      });
      if (values.json) return printJson(io, body);
      const owner = isRecord(body) && isRecord(body.details) ? body.details.resourceOwner : values.org;
      io.stdout(`${done} user ${user}${owner !== undefined ? ` (org ${String(owner)})` : ''}\n`);
      return 0;
    },
  };
}

function orgOrInstance(values: Values, command: Command): string | typeof INSTANCE | undefined {
  if (values.instance && values.org !== undefined)
    throw new UsageError('give --org or --instance, not both', command);
  return values.instance ? INSTANCE : (values.org as string | undefined);
}

function settingsGet(org: string | typeof INSTANCE | undefined) {
  return org === INSTANCE
    ? ({ method: 'GET', path: '/admin/v1/policies/lockout' } as const)
    : ({ method: 'GET', path: '/management/v1/policies/lockout', org } as const);
}

function settingsRows(body: unknown, org: string | typeof INSTANCE | undefined): Array<[string, string]> {
  const b = body as {
    policy: Record<string, unknown> & { details?: Record<string, unknown> };
    isDefault?: boolean;
  };
  const owner = String(b.policy.details?.resourceOwner ?? org ?? '');
  return [
    [
      'settings of',
      org === INSTANCE ? 'the instance' : `org ${owner}${b.isDefault ? ' (the instance default)' : ''}`,
    ],
    ['max password', String(b.policy.maxPasswordAttempts)],
    ['max otp', String(b.policy.maxOtpAttempts)],
  ];
}

function integer(option: string, text: string): number {
  if (!/^[0-9]{1,10}$/.test(text))
    throw new UsageError(`${option}: expected a non-negative integer, got "${text}"`);
  return Number(text);
}

function printJson(io: CliIo, body: unknown): 0 {
  io.stdout(`${JSON.stringify(body, null, 2)}\n`);
  return 0;
}

function keyValues(rows: ReadonlyArray<readonly [string, string]>): string {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}\n`).join('');
}

function table(head: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    `${cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')}\n`;
  return [head, ...rows].map(line).join('');
}

// ---- usage ---------------------------------------------------------------------------------

function commandUsage(c: Command): string {
  const lines = [`usage: lockgate ${c.name.join(' ')} ${c.synopsis}`.trimEnd(), '', `  ${c.summary}`];
  if (c.help && c.help.length > 0) lines.push('', ...c.help);
  return `${lines.join('\n')}\n`;
}

function mainUsage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.join(' ').length));
  return [
    'usage: lockgate <command> [options]',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.join(' ').padEnd(width)}  ${c.summary}`),
    '',
    'The commands that talk to a running sidecar use:',
    `  LOCKGATE_URL    the sidecar's address (default ${DEFAULT_URL})`,
    '  LOCKGATE_TOKEN  the bearer token',
    '',
    '`lockgate <command> --help` describes a command.',
    '',
  ].join('\n');
}

// ---- dispatch ------------------------------------------------------------------------------

export async function runCli(argv: readonly string[], io: CliIo): Promise<ExitCode> {
  const [first, second] = argv;
  if (first === undefined) {
    io.stderr(mainUsage());
    return 2;
  }
  if (first === '--help' || first === '-h' || first === 'help') {
    io.stdout(mainUsage());
    return 0;
  }
  const command =
    COMMANDS.find((c) => c.name.length === 2 && c.name[0] === first && c.name[1] === second) ??
    COMMANDS.find((c) => c.name.length === 1 && c.name[0] === first);
  if (!command) {
    const group = COMMANDS.filter((c) => c.name.length === 2 && c.name[0] === first);
    if (group.length > 0 && (second === '--help' || second === '-h')) {
      io.stdout(group.map(commandUsage).join('\n'));
      return 0;
    }
    const what =
      group.length > 0
        ? second === undefined
          ? `lockgate ${first}: expected a subcommand (${group.map((c) => c.name[1]).join(', ')})`
          : `lockgate ${first}: unknown subcommand "${second}"`
        : `unknown command "${first}"`;
    io.stderr(`lockgate: ${what}\n\n${group.length > 0 ? group.map(commandUsage).join('\n') : mainUsage()}`);
    return 2;
  }
  const rest = argv.slice(command.name.length);
  try {
    let parsed: { values: Values; positionals: string[] };
    try {
      parsed = parseArgs({
        args: [...rest],
        options: { ...command.options, help: { type: 'boolean', short: 'h' } },
        allowPositionals: true,
        strict: true,
      }) as { values: Values; positionals: string[] };
    } catch (error) {
      throw new UsageError(error instanceof Error ? error.message : String(error), command);
    }
    if (parsed.values.help) {
      io.stdout(commandUsage(command));
      return 0;
    }
    if (parsed.positionals.length < command.positionals.length) {
      throw new UsageError(
        `missing ${command.positionals.slice(parsed.positionals.length).join(' ')}`,
        command,
      );
    }
    if (parsed.positionals.length > command.positionals.length) {
      throw new UsageError(
        `unexpected argument "${parsed.positionals[command.positionals.length]}"`,
        command,
      );
    }
    return await command.run({ ...parsed, io });
  } catch (error) {
    if (error instanceof UsageError) {
      io.stderr(
        `lockgate ${command.name.join(' ')}: ${error.message}\n\n${commandUsage(error.command ?? command)}`,
      );
      return 2;
    }
    if (error instanceof ApiError) {
      io.stderr(`lockgate: ${error.message} (HTTP ${error.status})\n`);
      return 1;
    }
    if (error instanceof ConnectError || error instanceof Failure) {
      io.stderr(`lockgate: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}
