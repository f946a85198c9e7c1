/**
 * Does the Redis behind a RedisStore keep its data across a restart? Locks and counters live
 * only in Redis: with neither AOF nor RDB snapshots, a Redis restart unlocks every locked user
 * and forgets every count. The sidecar warns at start and shows the answer in /readyz.
 */
import { Cluster, type Redis } from 'ioredis';
import type { RedisClient } from './redis-store';

/**
 * - `persistent`: AOF (`appendonly yes`) or RDB snapshots (`save` points) are on, on every master.
 * - `none`: a master has neither: its data is lost when it restarts.
 * - `unknown`: it could not be read (CONFIG disabled or denied by an ACL, and INFO shows no AOF;
 *   or Redis did not answer).
 */
export type PersistenceState = 'persistent' | 'none' | 'unknown';

export interface RedisPersistence {
  readonly state: PersistenceState;
  /** AOF is on (every master, for a Cluster); absent when unknown. */
  readonly aof?: boolean;
  /** RDB save points are set (every master, for a Cluster); absent when unknown. */
  readonly rdb?: boolean;
  /** Why the state is `unknown`. */
  readonly reason?: string;
}

/** How long one node may take to answer before the state is `unknown`. Default 2000 ms. */
export interface ReadPersistenceOptions {
  readonly timeoutMs?: number;
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** `CONFIG GET name` → its value (ioredis answers [name, value]). */
async function configGet(node: Redis, name: string): Promise<string> {
  const reply = (await node.config('GET', name)) as unknown;
  if (!Array.isArray(reply) || reply.length < 2 || typeof reply[1] !== 'string') {
    throw new Error(`CONFIG GET ${name} answered no value`);
  }
  return reply[1];
}

async function readNode(node: Redis): Promise<RedisPersistence> {
  try {
    const [appendonly, save] = await Promise.all([configGet(node, 'appendonly'), configGet(node, 'save')]);
    const aof = appendonly.trim().toLowerCase() === 'yes';
    const rdb = save.trim() !== '';
    return { state: aof || rdb ? 'persistent' : 'none', aof, rdb };
  } catch (configError) {
    // CONFIG may be renamed, disabled or denied: INFO persistence tells whether AOF is on, but
    // not whether save points are set.
    try {
      const info = await node.info('persistence');
      const aofEnabled = /^aof_enabled:(\d)/m.exec(info)?.[1];
      if (aofEnabled === '1') return { state: 'persistent', aof: true };
      return {
        state: 'unknown',
        ...(aofEnabled === '0' ? { aof: false } : {}),
        reason: `CONFIG GET failed (${describe(configError)}) and INFO does not show RDB save points`,
      };
    } catch (infoError) {
      return { state: 'unknown', reason: `CONFIG GET and INFO failed (${describe(infoError)})` };
    }
  }
}

function describe(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  // The first line of a Redis error, without anything a reply may echo back.
  return text.split('\n')[0]!.slice(0, 120);
}

/**
 * Reads whether `client`'s Redis persists its data: `CONFIG GET appendonly` and `CONFIG GET save`
 * (falling back to `INFO persistence`), on every master of a Cluster. Never throws.
 */
export async function readRedisPersistence(
  client: RedisClient,
  options: ReadPersistenceOptions = {},
): Promise<RedisPersistence> {
  const timeoutMs = options.timeoutMs ?? 2000;
  const nodes: Redis[] = client instanceof Cluster ? client.nodes('master') : [client];
  if (nodes.length === 0) return { state: 'unknown', reason: 'the Cluster client knows no masters yet' };
  const answers = await Promise.all(
    nodes.map((node) =>
      withTimeout(readNode(node), timeoutMs).catch((error: unknown): RedisPersistence => ({
        state: 'unknown',
        reason: describe(error),
      })),
    ),
  );
  if (answers.length === 1) return answers[0]!;
  const none = answers.find((a) => a.state === 'none');
  if (none) return none;
  const unknown = answers.find((a) => a.state === 'unknown');
  if (unknown) return unknown;
  const all = (field: 'aof' | 'rdb'): { aof?: boolean; rdb?: boolean } =>
    answers.every((a) => a[field] !== undefined) ? { [field]: answers.every((a) => a[field]) } : {};
  return { state: 'persistent', ...all('aof'), ...all('rdb') };
}

/** The warning for a state that is not `persistent` (undefined when it is). */
export function persistenceWarning(persistence: RedisPersistence): string | undefined {
  switch (persistence.state) {
    case 'persistent':
      return undefined;
    case 'none':
      return (
        'Redis has no persistence (appendonly no, no save points): every lock and counter is lost ' +
        'when Redis restarts; turn on AOF (appendonly yes) or RDB snapshots (save)'
      );
    case 'unknown':
      return (
        'Redis persistence could not be read' +
        (persistence.reason ? ` (${persistence.reason})` : '') +
        ': make sure AOF or RDB snapshots are on, or locks and counters are lost when Redis restarts'
      );
  }
}
