/**
 * Real `redis-server` processes for tests: a standalone server and a Redis Cluster, each on free
 * ports with its own temp dir, never the developer's own Redis on 6379.
 *
 * Every server is a child of the process that started it (`detached: false`) and is killed when
 * that process exits, even on a crash; a run killed with SIGKILL leaves servers behind that the
 * next run's {@link sweepStaleServers} removes.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, readFileSync, rmSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const REDIS_HOST = '127.0.0.1';

/** The address of one Redis node. */
export interface RedisNodeAddress {
  host: string;
  port: number;
}

/** A running `redis-server` process that the tests own. */
export interface RedisServerHandle extends RedisNodeAddress {
  readonly host: typeof REDIS_HOST;
  readonly port: number;
  /** `redis://127.0.0.1:PORT` */
  readonly url: string;
  /** The server's working directory (a temp dir, removed by `stop()`). */
  readonly dir: string;
  /** Process id of the current `redis-server`, `undefined` once stopped. */
  readonly pid: number | undefined;
  /** SIGTERM, wait for the exit (SIGKILL after a grace period), remove the temp dir. Idempotent. */
  stop(): Promise<void>;
  /** Stop the process and start it again on the same port and dir (no data survives). */
  restart(): Promise<void>;
  /** Stop the process only, keeping port and dir for a later `restart()` (an outage). */
  halt(): Promise<void>;
  /** The last `lines` (default 30) lines the server logged, for error messages. */
  logTail(lines?: number): string;
}

/** A Redis Cluster of masters only, every slot assigned. */
export interface ClusterHandle {
  /** Client ports of the masters; pass them to `new Cluster(nodes)`. */
  readonly nodes: RedisNodeAddress[];
  /** The processes behind `nodes`, in the same order (restart one to test failure handling). */
  readonly servers: RedisServerHandle[];
  /** Stop every node and remove their temp dirs. Idempotent. */
  stop(): Promise<void>;
}

const TMP_PREFIX = 'lockgate-redis-';
const OWNER_FILE = 'lockgate-owner.json';
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const CLUSTER_CREATE_TIMEOUT_MS = 30_000;
const CLUSTER_READY_TIMEOUT_MS = 20_000;
const PORT_ATTEMPTS = 8;
const LOG_LINES_KEPT = 200;
const LOG_LINES_SHOWN = 30;
const CLUSTER_SLOTS = 16384;

// ---------------------------------------------------------------------------------------------
// Binaries

/** Paths of `redis-server` and `redis-cli`: env override, then /usr/bin, then PATH. */
export interface RedisBinaries {
  server: string;
  cli: string;
}

function findExecutable(name: string, envVar: string): string | undefined {
  const override = process.env[envVar];
  const candidates = override
    ? [override]
    : [`/usr/bin/${name}`, ...(process.env.PATH ?? '').split(path.delimiter).map((d) => path.join(d, name))];
  for (const candidate of candidates) {
    if (!candidate) continue;
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // try the next one
    }
  }
  return undefined;
}

function describeMissing(name: string, envVar: string): string {
  const override = process.env[envVar];
  return override
    ? `${envVar}=${override} is not an executable file`
    : `${name} could not be found in /usr/bin or on PATH`;
}

/**
 * Locate the Redis binaries, or throw an error that says how to install them.
 * `LOCKGATE_REDIS_SERVER` / `LOCKGATE_REDIS_CLI` point at other builds.
 */
export function findRedisBinaries(): RedisBinaries {
  const server = findExecutable('redis-server', 'LOCKGATE_REDIS_SERVER');
  const cli = findExecutable('redis-cli', 'LOCKGATE_REDIS_CLI');
  if (!server || !cli) {
    const missing = [
      server ? '' : describeMissing('redis-server', 'LOCKGATE_REDIS_SERVER'),
      cli ? '' : describeMissing('redis-cli', 'LOCKGATE_REDIS_CLI'),
    ].filter(Boolean);
    throw new Error(
      `lockgate tests need real Redis binaries (>= 7.0) but ${missing.join(' and ')}. Install them (Debian/Ubuntu: ` +
        `\`apt-get install -y redis-server redis-tools\`, macOS: \`brew install redis\`) or set ` +
        `LOCKGATE_REDIS_SERVER / LOCKGATE_REDIS_CLI to their paths. The tests start their own ` +
        `servers on free ports; a running Redis on 6379 is neither needed nor used.`,
    );
  }
  return { server, cli };
}

// ---------------------------------------------------------------------------------------------
// Process bookkeeping: kill our servers when this process exits, whatever the reason.

interface LiveServer {
  child: ChildProcess;
  dir: string;
}

const live = new Set<LiveServer>();
let exitHooksInstalled = false;

function killAllSync(): void {
  for (const server of live) {
    try {
      server.child.kill('SIGKILL');
    } catch {
      // already gone
    }
    try {
      rmSync(server.dir, { recursive: true, force: true });
    } catch {
      // sweepStaleServers() will get it next time
    }
  }
  live.clear();
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.once('exit', killAllSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      killAllSync();
      // Only we were listening: restore the default action (terminate) and re-raise.
      if (process.listenerCount(signal) === 1) {
        process.removeListener(signal, onSignal);
        process.kill(process.pid, signal);
      }
    };
    process.on(signal, onSignal);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function isRedisServerPid(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('redis-server');
  } catch {
    return false;
  }
}

/**
 * Kill servers and remove temp dirs left by earlier runs whose test process died without
 * cleaning up (SIGKILL, OOM). Servers of runs still alive are left alone.
 */
export async function sweepStaleServers(): Promise<void> {
  const tmp = os.tmpdir();
  let entries: string[];
  try {
    entries = await fs.readdir(tmp);
  } catch {
    return;
  }
  await Promise.all(
    entries
      .filter((name) => name.startsWith(TMP_PREFIX))
      .map(async (name) => {
        const dir = path.join(tmp, name);
        try {
          const owner = JSON.parse(await fs.readFile(path.join(dir, OWNER_FILE), 'utf8')) as {
            ownerPid?: number;
            redisPid?: number;
          };
          if (typeof owner.ownerPid === 'number' && isAlive(owner.ownerPid)) return;
          if (typeof owner.redisPid === 'number' && isRedisServerPid(owner.redisPid)) {
            process.kill(owner.redisPid, 'SIGKILL');
          }
        } catch {
          // No owner file: only remove it once it is clearly abandoned.
          const stat = await fs.stat(dir).catch(() => undefined);
          if (!stat || Date.now() - stat.mtimeMs < 10 * 60_000) return;
        }
        await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
      }),
  );
}

// ---------------------------------------------------------------------------------------------
// Ports

/** A port that was free a moment ago (bound on port 0, then released). Never 6379. */
export async function getFreePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer();
      server.unref();
      server.once('error', reject);
      server.listen({ port: 0, host: REDIS_HOST, exclusive: true }, () => {
        const address = server.address();
        server.close(() => {
          if (address && typeof address === 'object') resolve(address.port);
          else reject(new Error(`unexpected listen address ${String(address)}`));
        });
      });
    });
    if (port !== 6379) return port;
  }
}

// ---------------------------------------------------------------------------------------------
// A minimal RESP client, so waiting for readiness needs neither ioredis nor redis-cli.

type RespValue = string | number | null | RespValue[] | RespError;

class RespError extends Error {}

function parseResp(buf: Buffer, start: number): { value: RespValue; end: number } | undefined {
  const lineEnd = buf.indexOf('\r\n', start);
  if (lineEnd < 0) return undefined;
  const type = String.fromCharCode(buf[start] ?? 0);
  const line = buf.toString('utf8', start + 1, lineEnd);
  const next = lineEnd + 2;
  switch (type) {
    case '+':
      return { value: line, end: next };
    case '-':
      return { value: new RespError(line), end: next };
    case ':':
      return { value: Number(line), end: next };
    case '$': {
      const length = Number(line);
      if (length < 0) return { value: null, end: next };
      if (buf.length < next + length + 2) return undefined;
      return { value: buf.toString('utf8', next, next + length), end: next + length + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count < 0) return { value: null, end: next };
      const items: RespValue[] = [];
      let offset = next;
      for (let i = 0; i < count; i += 1) {
        const item = parseResp(buf, offset);
        if (!item) return undefined;
        items.push(item.value);
        offset = item.end;
      }
      return { value: items, end: offset };
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(type)}`);
  }
}

/** Send one command over a fresh connection and return its reply (errors are rejected). */
export function redisCommand(port: number, args: string[], timeoutMs = 1_000): Promise<RespValue> {
  return new Promise((resolve, reject) => {
    let buffer = Buffer.alloc(0);
    const socket = net.connect({ port, host: REDIS_HOST });
    const finish = (error: Error | undefined, value?: RespValue): void => {
      socket.destroy();
      if (error) reject(error);
      else resolve(value ?? null);
    };
    socket.setTimeout(timeoutMs, () =>
      finish(new Error(`${args.join(' ')} on port ${port} timed out after ${timeoutMs} ms`)),
    );
    socket.once('error', (error) => finish(error));
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      let parsed;
      try {
        parsed = parseResp(buffer, 0);
      } catch (error) {
        finish(error as Error);
        return;
      }
      if (!parsed) return;
      if (parsed.value instanceof RespError) finish(parsed.value);
      else finish(undefined, parsed.value);
    });
    socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
  });
}

/** Parse `INFO` / `CLUSTER INFO` text into fields. */
function parseInfo(text: RespValue): Record<string, string> {
  const fields: Record<string, string> = {};
  if (typeof text !== 'string') return fields;
  for (const line of text.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon > 0) fields[line.slice(0, colon)] = line.slice(colon + 1).trim();
  }
  return fields;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// One server process

class PortInUseError extends Error {}

class RedisServer implements RedisServerHandle {
  readonly host = REDIS_HOST;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private entry: LiveServer | undefined;
  private log: string[] = [];
  private stopped = false;

  constructor(
    private readonly binaries: RedisBinaries,
    readonly port: number,
    readonly dir: string,
    private readonly extraArgs: string[],
  ) {}

  get url(): string {
    return `redis://${this.host}:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  logTail(lines = LOG_LINES_SHOWN): string {
    return this.log.slice(-lines).join('\n');
  }

  /** Spawn the process and resolve once it answers PING (and it is this process answering). */
  async start(): Promise<void> {
    const args = [
      '--port',
      String(this.port),
      '--bind',
      this.host,
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      this.dir,
      '--daemonize',
      'no',
      '--logfile',
      '',
      ...this.extraArgs,
    ];
    const log: string[] = [];
    this.log = log;
    const child = spawn(this.binaries.server, args, { detached: false, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const entry: LiveServer = { child, dir: this.dir };
    this.entry = entry;
    live.add(entry);
    installExitHooks();
    child.unref();
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      (stream as unknown as net.Socket).unref?.();
      stream.setEncoding('utf8');
      let partial = '';
      stream.on('data', (chunk: string) => {
        const lines = (partial + chunk).split('\n');
        partial = lines.pop() ?? '';
        log.push(...lines);
        if (log.length > LOG_LINES_KEPT) log.splice(0, log.length - LOG_LINES_KEPT);
      });
      stream.on('end', () => {
        if (partial) log.push(partial);
        partial = '';
      });
    }

    let exitInfo: string | undefined;
    let spawnError: Error | undefined;
    const exited = new Promise<void>((resolve) => {
      // 'close' (not 'exit'): fires once stdout/stderr are drained, so the log tail is complete.
      child.once('close', (code, signal) => {
        exitInfo = signal ? `signal ${signal}` : `code ${String(code)}`;
        live.delete(entry);
        resolve();
      });
      child.once('error', (error) => {
        spawnError = error;
        live.delete(entry);
        resolve();
      });
    });
    this.exited = exited;

    if (child.pid !== undefined) {
      await fs.writeFile(
        path.join(this.dir, OWNER_FILE),
        JSON.stringify({ ownerPid: process.pid, redisPid: child.pid, port: this.port }),
      );
    }

    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (spawnError) {
        throw new Error(`could not spawn ${this.binaries.server}: ${spawnError.message}`);
      }
      if (exitInfo !== undefined) {
        const tail = this.logTail();
        const message = `redis-server on port ${this.port} exited during startup (${exitInfo}).\n--- redis log tail ---\n${tail}`;
        if (/Address already in use/i.test(tail)) throw new PortInUseError(message);
        throw new Error(message);
      }
      try {
        const pong = await redisCommand(this.port, ['PING'], 500);
        if (pong === 'PONG') {
          const info = parseInfo(await redisCommand(this.port, ['INFO', 'server'], 500));
          if (Number(info.process_id) === child.pid) return;
          // Someone else owns this port; our process is about to fail its bind and exit.
        }
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await this.stopProcess();
        throw new Error(
          `redis-server on port ${this.port} did not answer PING within ${START_TIMEOUT_MS} ms.\n` +
            `--- redis log tail ---\n${this.logTail()}`,
        );
      }
      await sleep(exitInfo === undefined ? 20 : 0);
    }
  }

  private async stopProcess(): Promise<void> {
    const child = this.child;
    const entry = this.entry;
    this.child = undefined;
    this.entry = undefined;
    if (!child || !entry) return;
    const exited = this.exited;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        exited.then(() => false),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(true), STOP_TIMEOUT_MS);
        }),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        child.kill('SIGKILL');
        await exited;
      }
    }
    live.delete(entry);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.stopProcess();
    await fs.rm(this.dir, { recursive: true, force: true });
  }

  /** Stops the process only (an outage); `restart()` starts it again on the same port. */
  async halt(): Promise<void> {
    await this.stopProcess();
  }

  async restart(): Promise<void> {
    if (this.stopped) throw new Error(`redis-server on port ${this.port} was stopped; it cannot restart`);
    await this.stopProcess();
    let lastError: unknown;
    for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt += 1) {
      try {
        await this.start();
        return;
      } catch (error) {
        lastError = error;
        if (!(error instanceof PortInUseError)) throw error;
        await sleep(100 * (attempt + 1));
      }
    }
    throw lastError;
  }
}

/**
 * Start a server on a fresh free port, retrying with another port if the chosen one was taken
 * in between. `extraPortCount` more free ports are passed to `args` (the cluster bus port).
 */
async function startOnFreePort(
  binaries: RedisBinaries,
  args: (port: number, extraPorts: number[]) => string[],
  extraPortCount = 0,
): Promise<RedisServer> {
  let lastError: unknown;
  for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt += 1) {
    const port = await getFreePort();
    const extraPorts: number[] = [];
    while (extraPorts.length < extraPortCount) {
      const extra = await getFreePort();
      if (extra !== port && !extraPorts.includes(extra)) extraPorts.push(extra);
    }
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), `${TMP_PREFIX}${port}-`));
    const server = new RedisServer(binaries, port, dir, args(port, extraPorts));
    try {
      await server.start();
      return server;
    } catch (error) {
      await server.stop().catch(() => undefined);
      lastError = error;
      if (!(error instanceof PortInUseError)) throw error;
    }
  }
  throw new Error(`could not start redis-server after ${PORT_ATTEMPTS} port attempts`, { cause: lastError });
}

// ---------------------------------------------------------------------------------------------
// Public starters

/** Start a standalone `redis-server` on a free port. */
export async function startStandalone(): Promise<RedisServerHandle> {
  return startOnFreePort(findRedisBinaries(), () => []);
}

/**
 * Start `n` cluster-enabled masters, join them with `redis-cli --cluster create` and wait until
 * every node reports `cluster_state:ok` with all 16384 slots assigned and every node known.
 */
export async function startCluster(n = 3): Promise<ClusterHandle> {
  if (!Number.isInteger(n) || n < 3) {
    throw new Error(
      `startCluster(n) needs n >= 3 masters (redis-cli --cluster create refuses fewer); got ${n}`,
    );
  }
  const binaries = findRedisBinaries();
  const started = await Promise.allSettled(
    Array.from({ length: n }, () =>
      startOnFreePort(
        binaries,
        // An explicit bus port (Redis >= 7.0) rather than port + 10000, which may be taken or > 65535.
        (port, [busPort]) => [
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          `nodes-${port}.conf`,
          '--cluster-node-timeout',
          '2000',
          '--cluster-port',
          String(busPort),
        ],
        1,
      ),
    ),
  );
  const servers = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const stopAll = async (): Promise<void> => {
    await Promise.allSettled(servers.map((server) => server.stop()));
  };
  const failure = started.find((result) => result.status === 'rejected');
  if (failure) {
    await stopAll();
    throw failure.reason;
  }

  const logTails = (): string =>
    servers.map((s) => `--- redis log tail, port ${s.port} ---\n${s.logTail(15)}`).join('\n');

  try {
    await new Promise<void>((resolve, reject) => {
      execFile(
        binaries.cli,
        [
          '--cluster',
          'create',
          ...servers.map((s) => `${s.host}:${s.port}`),
          '--cluster-replicas',
          '0',
          '--cluster-yes',
        ],
        { timeout: CLUSTER_CREATE_TIMEOUT_MS, env: { ...process.env, TERM: 'dumb' } },
        (error, stdout, stderr) => {
          if (!error) {
            resolve();
            return;
          }
          reject(
            new Error(
              `redis-cli --cluster create failed: ${error.message}\n` +
                `--- redis-cli stdout ---\n${stdout}\n--- redis-cli stderr ---\n${stderr}\n${logTails()}`,
            ),
          );
        },
      );
    });

    const deadline = Date.now() + CLUSTER_READY_TIMEOUT_MS;
    for (;;) {
      const infos = await Promise.all(
        servers.map((s) =>
          redisCommand(s.port, ['CLUSTER', 'INFO'])
            .then(parseInfo)
            .catch((error: Error) => ({ error: error.message }) as Record<string, string>),
        ),
      );
      const ready = infos.every(
        (info) =>
          info.cluster_state === 'ok' &&
          Number(info.cluster_slots_assigned) === CLUSTER_SLOTS &&
          Number(info.cluster_known_nodes) === n &&
          Number(info.cluster_size) === n,
      );
      if (ready) break;
      if (Date.now() > deadline) {
        const states = servers.map((s, i) => `port ${s.port}: ${JSON.stringify(infos[i])}`).join('\n');
        throw new Error(
          `Redis Cluster did not reach cluster_state:ok with ${CLUSTER_SLOTS} slots on all ${n} nodes ` +
            `within ${CLUSTER_READY_TIMEOUT_MS} ms.\n${states}\n${logTails()}`,
        );
      }
      await sleep(50);
    }
  } catch (error) {
    await stopAll();
    throw error;
  }

  return {
    nodes: servers.map((s) => ({ host: s.host, port: s.port })),
    servers,
    stop: stopAll,
  };
}
