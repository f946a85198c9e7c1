/**
 * Where a benchmarked server spends its CPU: `npm run bench:profile -- <dir>` reads every
 * `.cpuprofile` in <dir> (written by `BENCH_CPU_PROF=<dir> npm run bench -- peers`, or by
 * `node --cpu-prof`) and prints each one's sampled time by kind: system calls that write to a
 * socket, garbage collection, Express and its body parsing, ioredis, undici, Node's own HTTP and
 * streams, lockgate itself, idle. Shares are of the busy time (samples that are not idle). This is
 * what the goal table's "NOT met" lines are read against (README, Benchmarks).
 *
 * Run alone: `node -r ts-node/register/transpile-only bench/profile.ts <dir>`.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fixed, table } from './lib';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
}
interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
}
interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** The kinds, in print order; the first rule that matches a frame names its kind. */
const KINDS = [
  'socket writes (system calls)',
  'garbage collection',
  'Express (router, body parsing)',
  'ioredis',
  'undici',
  'lockgate',
  'Node core (HTTP, streams, timers, promises)',
  'other packages, start-up',
] as const;
type Kind = (typeof KINDS)[number] | 'idle';

const EXPRESS_PACKAGES = new Set([
  'express',
  'router',
  'body-parser',
  'raw-body',
  'type-is',
  'content-type',
  'parseurl',
  'on-finished',
  'finalhandler',
  'media-typer',
  'mime-types',
  'iconv-lite',
  'send',
  'encodeurl',
  'path-to-regexp',
]);

function kindOf(frame: CallFrame): Kind {
  const { functionName: name, url } = frame;
  if (name === '(idle)') return 'idle';
  if (name === '(garbage collector)') return 'garbage collection';
  if (
    url === '' &&
    /^(writev|writeBuffer|writeUtf8String|writeLatin1String|writeAsciiString|writeUcs2String)$/.test(name)
  )
    return 'socket writes (system calls)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1];
  if (pkg !== undefined) {
    if (EXPRESS_PACKAGES.has(pkg)) return 'Express (router, body parsing)';
    if (pkg === 'ioredis' || pkg === 'redis-parser' || pkg === '@ioredis/commands') return 'ioredis';
    if (pkg === 'undici') return 'undici';
    return 'other packages, start-up';
  }
  if (url.startsWith('wasm://')) return 'undici'; // undici's llhttp
  if (/\/(dist\/(cjs|esm)|src)\//.test(url)) return 'lockgate';
  // Node's own modules, and its native functions (no URL): microtasks, parsers, socket reads
  if (url.startsWith('node:') && !url.startsWith('node:internal/modules/'))
    return 'Node core (HTTP, streams, timers, promises)';
  if (url === '' && name !== '(program)' && name !== '(root)')
    return 'Node core (HTTP, streams, timers, promises)';
  return 'other packages, start-up';
}

export function summarize(profile: CpuProfile): { busyMs: number; idleMs: number; share: Map<Kind, number> } {
  const byId = new Map<number, ProfileNode>();
  for (const node of profile.nodes) byId.set(node.id, node);
  const us = new Map<Kind, number>();
  for (let i = 0; i < profile.samples.length; i += 1) {
    const node = byId.get(profile.samples[i]!);
    if (!node) continue;
    const kind = kindOf(node.callFrame);
    us.set(kind, (us.get(kind) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const idle = us.get('idle') ?? 0;
  let busy = 0;
  for (const [kind, t] of us) if (kind !== 'idle') busy += t;
  const share = new Map<Kind, number>();
  for (const kind of KINDS) share.set(kind, busy > 0 ? (us.get(kind) ?? 0) / busy : NaN);
  return { busyMs: busy / 1000, idleMs: idle / 1000, share };
}

function main(): void {
  const dir = process.argv[2];
  if (!dir) {
    console.error('usage: npm run bench:profile -- <directory of .cpuprofile files>');
    process.exitCode = 2;
    return;
  }
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .sort();
  if (files.length === 0) {
    console.error(`no .cpuprofile file in ${dir}`);
    process.exitCode = 2;
    return;
  }
  const rows: string[][] = [['profile (pid in the name)', 'busy s', ...KINDS]];
  for (const file of files) {
    const profile = JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as CpuProfile;
    const { busyMs, share } = summarize(profile);
    rows.push([
      file,
      fixed(busyMs / 1000, 1),
      ...KINDS.map((k) => `${fixed((share.get(k) ?? NaN) * 100, 1)}%`),
    ]);
  }
  console.log('share of busy CPU time (samples not idle), by kind of code\n');
  console.log(table(rows));
}

if (require.main === module) main();
