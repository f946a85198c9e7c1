import type { Writable } from 'node:stream';
import { ReplyError, type Cluster, type Redis } from 'ioredis';
import { canonicalDefences, parseStoredDefences, type DefenceRecord } from '../../core/defences';
import { OptionError, StoreUnavailableError } from '../../core/errors';
import { describeOptionValue, integerOption } from '../../core/option-checks';
import { indexMember, pageOfMembers, parseIndexMember, subjectOfMember } from '../../core/store';
import type {
  CodeChannel,
  DefenceSettingsChange,
  DefenceSettingsStore,
  LockedPage,
  LockoutStore,
  Owner,
  ReserveResult,
  SettingsChange,
  SettingsRecord,
  SettleExtra,
  SettleOutcome,
  SettleResult,
  UserState,
  WriteSettingsResult,
} from '../../core/store';
import { FACTORS, zeroCounters, type Factor, type Limits, type Subject } from '../../core/subjects';
import {
  GET_USER,
  INDEX_ADD,
  INDEX_REMOVE,
  LOCK,
  PENDING_ADD,
  PENDING_DONE,
  PENDING_DUE,
  RESERVE,
  RESET,
  SETTLE,
  TAKE_CODE,
  UNLOCK,
  USE_STEP,
  WRITE_SETTINGS,
} from './scripts';

/** An ioredis client: standalone, Sentinel-backed (`new Redis({ sentinels, name })`) or `Redis.Cluster`. */
export type RedisClient = Redis | Cluster;

export interface RedisStoreOptions {
  /**
   * The ioredis client. Recommended: `enableOfflineQueue: false` (commands fail at once while
   * Redis is down instead of waiting, and no queued reservation runs after the caller gave up)
   * and `autoResendUnfulfilledCommands: false` (for a Cluster: in `redisOptions`). Every reserve,
   * settle and release is idempotent per nonce, so ioredis's blind resend of commands that were
   * unanswered when a connection dropped cannot count anything twice; it is still better off:
   * the caller already got StoreUnavailableError and compensates, so a resend only replays, after
   * a reconnect, work that nobody waits for (the sidecar's client sets it to false).
   */
  client: RedisClient;
  /** Key prefix (default "lg"). */
  prefix?: string;
  /**
   * A store operation that has not answered after this long fails with StoreUnavailableError
   * (default 2000 ms). The outcome of a reserve or settle that timed out is unknown (Redis may
   * still run it); running the same reserve, settle or release again is harmless.
   */
  commandTimeoutMs?: number;
  /** The connection for settings-change notifications (default: `client.duplicate()`, closed by close()). */
  subscriber?: RedisClient;
  /**
   * State of a user who is not locked (counters, tombstones) expires this long after the user's
   * last write, and never before a lease in flight has been applied; locked users never expire.
   * Default 86_400_000 (24 h); 0 = counters never expire (ZITADEL's strict semantics).
   */
  idleTtlMs?: number;
  /**
   * Send the commands of one event-loop turn together, up to 16 per socket write (default true;
   * standalone and Sentinel clients). Checks that arrive together share one system call: less
   * CPU in the app and in Redis, and more throughput (README, Benchmarks). false: one write per
   * command, as ioredis does by itself.
   */
  coalesceWrites?: boolean;
}

/** The one reply shape of every user script (see scripts.ts). */
interface UserReply {
  readonly status: string;
  readonly value: number;
  readonly flag: boolean;
  /** lockedAt after the script (0: not locked); after an unlock, the lockedAt it cleared. */
  readonly lockedAt: number;
  /** 1: the script locked the user; -1: it unlocked the user; 0: neither. */
  readonly lockChange: number;
  /** > 0: the lease end of a reservation whose failure could lock the user. */
  readonly pendingUntil: number;
  readonly counters: ReadonlyArray<readonly [string, number]>;
  /** Defences only (0 otherwise): the lockedAt of a temporary lock the script ended. */
  readonly ended: number;
  /** Defences only (0 otherwise): when the current lock ends (0: not locked, or for good). */
  readonly lockedUntil: number;
  /** Defences only: the settle's failure repeated a remembered wrong password (not counted). */
  readonly forgiven: boolean;
}

/** Parses the fixed reply of a user script; anything else is a bug, not an outage. */
/**
 * The one reply shape of WRITE_SETTINGS: {status, sequence, creationDate, changeDate, previous pw,
 * previous otp} (the previous values '' when none were stored). `values`: whether the stored
 * fields are lockout settings (answered as `previous`), not defence settings' JSON.
 */
function parseSettingsReply(raw: unknown, values: boolean): WriteSettingsResult {
  if (!Array.isArray(raw) || raw.length !== 6) {
    throw new Error(`RedisStore: unexpected script reply ${JSON.stringify(raw)}`);
  }
  const [status, sequence, creationDate, changeDate, pw, otp] = raw as unknown[];
  if (status === 'ok') {
    const ok = {
      status: 'ok' as const,
      sequence: Number(sequence),
      creationDate: Number(creationDate),
      changeDate: Number(changeDate),
    };
    if (!values) return ok;
    return {
      ...ok,
      previous: pw === '' ? null : { maxPasswordAttempts: Number(pw), maxOtpAttempts: Number(otp) },
    };
  }
  if (status === 'exists' || status === 'not_found' || status === 'not_changed') return { status };
  throw new Error(`RedisStore: unexpected script reply ${JSON.stringify(raw)}`);
}

function parseUserReply(raw: unknown): UserReply {
  if (!Array.isArray(raw) || (raw.length !== 7 && raw.length !== 10) || !Array.isArray(raw[6])) {
    throw new Error(`RedisStore: unexpected script reply ${JSON.stringify(raw)}`);
  }
  const flat = raw[6] as unknown[];
  const counters: Array<readonly [string, number]> = [];
  for (let i = 0; i + 1 < flat.length; i += 2) counters.push([String(flat[i]), Number(flat[i + 1])]);
  return {
    status: String(raw[0]),
    value: Number(raw[1]),
    flag: Number(raw[2]) === 1,
    lockedAt: Number(raw[3]),
    lockChange: Number(raw[4]),
    pendingUntil: Number(raw[5]),
    counters,
    ended: raw.length === 10 ? Number(raw[7]) : 0,
    lockedUntil: raw.length === 10 ? Number(raw[8]) : 0,
    forgiven: raw.length === 10 && Number(raw[9]) === 1,
  };
}

/** The defence fields of an answer, present only when set. */
function defenceFields(r: UserReply): { expiredLockAt?: number; lockedUntil?: number; lockedAt?: number } {
  return {
    ...(r.ended > 0 ? { expiredLockAt: r.ended } : {}),
    ...(r.lockedUntil > 0 && r.lockedAt > 0 ? { lockedUntil: r.lockedUntil, lockedAt: r.lockedAt } : {}),
  };
}

type UserScript = (...keysAndArgv: Array<string | number>) => Promise<unknown>;

type UserScriptName = 'lgReserve' | 'lgSettle' | 'lgGetUser' | 'lgLock' | 'lgUnlock' | 'lgReset';

interface Scripts {
  lgReserve: UserScript;
  lgSettle: UserScript;
  lgGetUser: UserScript;
  lgLock: UserScript;
  lgUnlock: UserScript;
  lgReset: UserScript;
  /** The same scripts on a scope's hash and the user's own (device cookies: two keys). */
  lgReserve2: UserScript;
  lgSettle2: UserScript;
  lgGetUser2: UserScript;
  lgLock2: UserScript;
  lgUnlock2: UserScript;
  lgReset2: UserScript;
  lgIndexAdd(i: string, h: string, user: string, lockedAt: number): Promise<number>;
  lgIndexRemove(i: string, h: string, user: string, lockedAt: number): Promise<number>;
  lgPendingAdd(p: string, user: string, until: number, idleTtlMs: number): Promise<number>;
  lgPendingDue(p: string, count: number): Promise<string[]>;
  lgPendingDone(p: string, user: string, until: number): Promise<number>;
  lgWriteSettings(k: string, ...argv: Array<string | number>): Promise<Array<string | number | null>>;
  lgTakeCode(k: string, hash: string): Promise<'match' | 'mismatch' | 'missing'>;
  lgUseStep(k: string, step: number, ttlMs: number): Promise<number>;
}

/** A write to the org's slot that follows a committed user script (index or pending set). */
interface OrgWrite {
  readonly kind: 'add' | 'remove' | 'pending';
  readonly instance: string;
  readonly org: string;
  readonly user: string;
  /** lockedAt for add/remove, lease end for pending. */
  readonly at: number;
  attempts: number;
}

/** Org writes kept for retry at most (the oldest is dropped past it). */
const MAX_RETRIES_QUEUED = 10_000;
/** Background retry attempts of one org write (then it waits for the next listing of its org). */
const MAX_BACKGROUND_ATTEMPTS = 12;
/** Pending users applied per listing, at most. */
const PENDING_BATCH = 500;
const PENDING_BATCHES = 20;
/**
 * Most commands one coalesced socket write carries (RedisStore's coalesceWrites). Uncapped, an
 * in-process loop of 64 checks in flight sent all 64 at the turn's end and Redis idled meanwhile:
 * the engine benchmark fell from 16 806 checks/s (not coalesced) to 10 601; capped at 16 it ran
 * 20 923 against 20 557, while a proxied login's CPU stayed as low as uncapped (issue 16).
 */
const COALESCE_MAX = 16;

const DEFAULT_IDLE_TTL_MS = 86_400_000;
/** Tombstone length for leases applied by getUser/lock/listLocked, before any call told the lease. */
const DEFAULT_LEASE_HINT_MS = 30_000;

/**
 * The Redis store (ioredis). One round trip per reserve, settle, status read, lock, unlock and
 * reset: each is one Lua script on the user's slot. The locked-users index lives on the org's
 * slot and is written after the user's script (one more round trip, only when the lock changed,
 * or when a reservation could lock the user by expiring): such a write never fails the operation
 * that committed — a failed one is retried in the background and before the org's next listing,
 * and the writes converge in any order (see scripts.ts). Settings changes are published on
 * `<prefix>:settings` so every process drops its cached copy at once.
 */
export class RedisStore implements LockoutStore, DefenceSettingsStore {
  readonly kind = 'redis';
  readonly client: RedisClient;
  private readonly redis: RedisClient & Scripts;
  /** Key prefix of every key of this store (other counters on its client use it too: spray throttling). */
  readonly prefix: string;
  /** How long a command may take before it is answered as an outage (ms). */
  readonly timeoutMs: number;
  /** Whether commands of one event-loop turn share a socket write (options.coalesceWrites). */
  private readonly coalesce: boolean;
  /** The connection corked for this event-loop turn's commands (see coalesceWrites). */
  private corked: Writable | undefined;
  /** Commands written to `corked` since it was corked. */
  private batched = 0;
  /** Whether the turn's flush (setImmediate) is scheduled. */
  private flushScheduled = false;
  private readonly idleTtlMs: number;
  private readonly channel: string;
  private readonly listeners = new Set<(instance: string, owner: Owner) => void>();
  private subscriber?: RedisClient;
  private readonly ownSubscriber: boolean;
  private readonly givenSubscriber?: RedisClient;
  /** The lease the latest call told this store: the tombstone length where the port gives no lease (getUser, lock). */
  private leaseHintMs = DEFAULT_LEASE_HINT_MS;
  private readonly retries: OrgWrite[] = [];
  private retryTimer?: NodeJS.Timeout;
  private closed = false;

  constructor(options: RedisStoreOptions) {
    const client = (options as Partial<RedisStoreOptions> | undefined)?.client;
    if (typeof (client as { defineCommand?: unknown } | undefined)?.defineCommand !== 'function') {
      throw new OptionError(
        'RedisStore.client',
        'client',
        `RedisStore: client must be an ioredis Redis or Cluster client, got ${describeOptionValue(client)}; pass new RedisStore({ client: new Redis(url) })`,
      );
    }
    this.client = options.client;
    this.prefix = options.prefix ?? 'lg';
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(this.prefix)) {
      throw new OptionError(
        'RedisStore.prefix',
        'prefix',
        `RedisStore: prefix must be 1-64 characters of A-Z a-z 0-9 _ . -, got ${describeOptionValue(this.prefix)}; omit it for "lg", or give each deployment sharing a Redis its own`,
      );
    }
    this.timeoutMs = integerOption('RedisStore', 'commandTimeoutMs', options.commandTimeoutMs ?? undefined, {
      fallback: 2000,
      min: 1,
      fix: 'omit it for 2000 (ms); a command that outlives it is answered as an outage (503 or fail-open)',
    });
    this.idleTtlMs = integerOption('RedisStore', 'idleTtlMs', options.idleTtlMs ?? undefined, {
      fallback: DEFAULT_IDLE_TTL_MS,
      min: 0,
      fix: 'omit it for 86400000 (24 h), or pass 0 to keep an idle user until a success, an unlock or a password change',
    });
    if (options.coalesceWrites !== undefined && typeof options.coalesceWrites !== 'boolean') {
      throw new OptionError(
        'RedisStore.coalesceWrites',
        'coalesceWrites',
        `RedisStore: coalesceWrites must be true or false, got ${describeOptionValue(options.coalesceWrites)}; omit it for true`,
      );
    }
    this.coalesce = options.coalesceWrites !== false && !this.client.isCluster;
    this.channel = `${this.prefix}:settings`;
    this.givenSubscriber = options.subscriber;
    this.ownSubscriber = !options.subscriber;
    const c = this.client;
    const define = (name: string, lua: string, numberOfKeys: number) => {
      if (!(name in c)) c.defineCommand(name, { lua, numberOfKeys });
    };
    define('lgReserve', RESERVE, 1);
    define('lgSettle', SETTLE, 1);
    define('lgGetUser', GET_USER, 1);
    define('lgLock', LOCK, 1);
    define('lgUnlock', UNLOCK, 1);
    define('lgReset', RESET, 1);
    define('lgReserve2', RESERVE, 2);
    define('lgSettle2', SETTLE, 2);
    define('lgGetUser2', GET_USER, 2);
    define('lgLock2', LOCK, 2);
    define('lgUnlock2', UNLOCK, 2);
    define('lgReset2', RESET, 2);
    define('lgIndexAdd', INDEX_ADD, 2);
    define('lgIndexRemove', INDEX_REMOVE, 2);
    define('lgPendingAdd', PENDING_ADD, 1);
    define('lgPendingDue', PENDING_DUE, 1);
    define('lgPendingDone', PENDING_DONE, 1);
    define('lgWriteSettings', WRITE_SETTINGS, 1);
    define('lgTakeCode', TAKE_CODE, 1);
    define('lgUseStep', USE_STEP, 1);
    this.redis = c as RedisClient & Scripts;
  }

  async reserve(
    subject: Subject,
    factor: Factor,
    limits: Limits,
    leaseMs: number,
    id: string,
  ): Promise<ReserveResult> {
    const r = await this.user(subject, 'lgReserve', limits, leaseMs, [factor, id]);
    const ended = r.ended > 0 ? { expiredLockAt: r.ended } : undefined;
    switch (r.status) {
      case 'admitted':
        return { status: 'admitted', expiresAt: r.value, ...ended };
      case 'gone':
        return { status: 'gone', ...ended };
      case 'locked':
        return r.lockedUntil > 0
          ? { status: 'locked', lockedAt: r.value, lockedUntil: r.lockedUntil, ...ended }
          : { status: 'locked', lockedAt: r.value, ...ended };
      default:
        return { status: 'busy', retryAfterMs: r.value, ...ended };
    }
  }

  async settle(
    subject: Subject,
    factor: Factor,
    id: string,
    outcome: SettleOutcome,
    limits: Limits,
    leaseMs: number,
    tombstone = false,
    extra?: SettleExtra,
  ): Promise<SettleResult> {
    const r = await this.user(
      subject,
      'lgSettle',
      limits,
      leaseMs,
      [factor, id, outcome, tombstone ? '1' : '0'],
      extra?.repeatKey,
    );
    if (r.status !== 'settled') return { status: 'unknown' };
    const settled = {
      status: 'settled' as const,
      failedAttempts: r.value,
      locked: r.lockedAt > 0,
      lockedNow: r.flag,
    };
    if (!limits.defences && r.ended === 0) return settled;
    return { ...settled, ...defenceFields(r), ...(r.forgiven ? { forgiven: true } : {}) };
  }

  async getUser(subject: Subject, limits: Limits): Promise<UserState> {
    const r = await this.user(subject, 'lgGetUser', limits, this.leaseHintMs, []);
    return stateOf(r);
  }

  async lock(subject: Subject, limits: Limits): Promise<{ changed: boolean; lockedAt: number }> {
    const r = await this.user(subject, 'lgLock', limits, this.leaseHintMs, []);
    return { changed: r.flag, lockedAt: r.lockedAt };
  }

  async unlock(
    subject: Subject,
    limits: Limits,
    leaseMs: number,
    force = false,
  ): Promise<{ changed: boolean }> {
    const r = await this.user(subject, 'lgUnlock', limits, leaseMs, force ? ['1'] : []);
    return { changed: r.flag };
  }

  async resetFactor(subject: Subject, factor: Factor, limits: Limits, leaseMs: number): Promise<void> {
    await this.user(subject, 'lgReset', limits, leaseMs, [factor]);
  }

  /**
   * Locked users from the org's index. First the org's retried index writes and the leases of
   * pending users that have ended are applied (so a user locked by an expired lease that nobody
   * read is listed); then each entry of the page is checked against the user's own state (leases
   * applied), and an entry whose user is not locked is removed — conditionally, so that a newer
   * lock written meanwhile by another process stays.
   */
  async listLocked(
    instance: string,
    org: string,
    limits: Limits,
    limit: number,
    cursor?: string,
  ): Promise<LockedPage> {
    await this.flushRetries(instance, org);
    await this.applyDuePending(instance, org, limits);
    const [key, atKey] = this.indexKeys(instance, org);
    // Device cookies: a user's members (its own and its scopes') are at most maxDevices + 2, and a
    // page never splits them (pageOfMembers): fetch enough to finish the last user's.
    const group = limits.defences?.maxDevices ? limits.defences.maxDevices + 2 : 0;
    // after the cursor's user and all of its scopes ("<user>\u0000<scope>" < "<user>\u0001")
    const ids = await this.run(() =>
      this.redis.zrangebylex(
        key,
        cursor === undefined ? '-' : `[${cursor}\u0001`,
        '+',
        'LIMIT',
        0,
        limit + 1 + group,
      ),
    );
    const { page, more } = pageOfMembers(ids, limit);
    if (page.length === 0) return { users: [] };
    const indexed = await this.run(() => this.redis.hmget(atKey, ...page));
    const states = await Promise.all(
      page.map((member) =>
        this.user(subjectOfMember(instance, org, member), 'lgGetUser', limits, this.leaseHintMs, []),
      ),
    );
    const users: Array<{ userId: string; lockedAt: number; scope?: string }> = [];
    const stale: Array<Promise<void>> = [];
    page.forEach((member, i) => {
      const at = states[i]?.lockedAt ?? 0;
      const { user, scope } = parseIndexMember(member);
      if (at > 0)
        users.push(
          scope === undefined ? { userId: user, lockedAt: at } : { userId: user, lockedAt: at, scope },
        );
      else
        stale.push(
          this.orgWrite({
            kind: 'remove',
            instance,
            org,
            user: member,
            at: Number(indexed[i] ?? 0),
            attempts: 0,
          }),
        );
    });
    await Promise.all(stale);
    const last = page[page.length - 1];
    return (more || ids.length > page.length) && last !== undefined
      ? { users, nextCursor: parseIndexMember(last).user }
      : { users };
  }

  async getSettings(instance: string, owner: Owner): Promise<SettingsRecord | null> {
    const [on, pw, otp, seq, cd, ch] = await this.run(() =>
      this.redis.hmget(this.settingsKey(instance, owner), 'on', 'pw', 'otp', 'seq', 'cd', 'ch'),
    );
    if (on !== '1') return null;
    return {
      maxPasswordAttempts: Number(pw),
      maxOtpAttempts: Number(otp),
      sequence: Number(seq),
      creationDate: Number(cd),
      changeDate: Number(ch),
    };
  }

  async writeSettings(instance: string, owner: Owner, change: SettingsChange): Promise<WriteSettingsResult> {
    const values = change.op === 'remove' ? { maxPasswordAttempts: 0, maxOtpAttempts: 0 } : change.values;
    const fallback = change.op === 'set' ? change.fallback : values;
    const message = JSON.stringify({ i: instance, o: owner.type === 'org' ? owner.org : null });
    const reply = await this.run(() =>
      this.redis.lgWriteSettings(
        this.settingsKey(instance, owner),
        change.op,
        values.maxPasswordAttempts,
        values.maxOtpAttempts,
        fallback.maxPasswordAttempts,
        fallback.maxOtpAttempts,
        this.channel,
        message,
      ),
    );
    const result = parseSettingsReply(reply, true);
    if (result.status === 'ok') this.notify(instance, owner);
    return result;
  }

  onSettingsChanged(listener: (instance: string, owner: Owner) => void): () => void {
    this.listeners.add(listener);
    this.subscribe();
    return () => this.listeners.delete(listener);
  }

  async getDefenceSettings(instance: string, org: string): Promise<DefenceRecord | null> {
    const [on, json, seq, cd, ch] = await this.run(() =>
      this.redis.hmget(this.defenceKey(instance, org), 'on', 'pw', 'seq', 'cd', 'ch'),
    );
    if (on !== '1' || json == null) return null;
    return {
      values: parseStoredDefences(json),
      sequence: Number(seq),
      creationDate: Number(cd),
      changeDate: Number(ch),
    };
  }

  /** One WRITE_SETTINGS script on the org's defences hash (the JSON in its `pw` field, `otp` unused). */
  async writeDefenceSettings(
    instance: string,
    org: string,
    change: DefenceSettingsChange,
  ): Promise<WriteSettingsResult> {
    const json = change.op === 'remove' ? '' : canonicalDefences(change.values);
    const message = JSON.stringify({ i: instance, o: org });
    const reply = await this.run(() =>
      this.redis.lgWriteSettings(
        this.defenceKey(instance, org),
        change.op,
        json,
        '',
        json,
        '',
        this.channel,
        message,
      ),
    );
    const result = parseSettingsReply(reply, false);
    if (result.status === 'ok') this.notify(instance, { type: 'org', org });
    return result;
  }

  async useStep(subject: Subject, key: string, step: number, ttlMs: number): Promise<boolean> {
    const k = `${this.userTag(subject)}:u:${encodeURIComponent(key)}`;
    return (await this.run(() => this.redis.lgUseStep(k, step, ttlMs))) === 1;
  }

  async putCode(subject: Subject, channel: CodeChannel, codeHash: string, ttlMs: number): Promise<void> {
    await this.run(() => this.redis.set(`${this.userTag(subject)}:c:${channel}`, codeHash, 'PX', ttlMs));
  }

  async takeCode(
    subject: Subject,
    channel: CodeChannel,
    codeHash: string,
  ): Promise<'match' | 'mismatch' | 'missing'> {
    return this.run(() => this.redis.lgTakeCode(`${this.userTag(subject)}:c:${channel}`, codeHash));
  }

  async ping(): Promise<void> {
    await this.run(() => this.redis.ping());
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.listeners.clear();
    const sub = this.subscriber;
    this.subscriber = undefined;
    if (sub && this.ownSubscriber) sub.disconnect();
    else if (sub) await sub.unsubscribe(this.channel).catch(() => undefined);
  }

  /**
   * The keys of one user: its state hash (one key, so one slot); for a scope (device cookies), the
   * scope's hash and the user's own, on the same slot.
   */
  userKeys(subject: Subject): [string] | [string, string] {
    const own = `${this.userTag(subject)}:s`;
    return subject.scope === undefined ? [own] : [`${own}:${subject.scope}`, own];
  }

  /**
   * Coalesces the socket writes of the commands sent in one event-loop turn: the connection is
   * corked at the turn's first command and uncorked once the turn's I/O callbacks have run
   * (setImmediate), or as soon as COALESCE_MAX commands wait, so that the commands of the checks
   * that arrived together leave in one system call instead of one each (on this machine a socket
   * write is a third of a proxied login's CPU: issue 16), and Redis never waits long for a batch.
   * Each command is still sent, queued and answered by ioredis on its own (unlike auto-pipelining,
   * which sends them as a pipeline, and which the fault suite showed to break G5): corked bytes
   * are bytes not yet on the wire, as bytes in the kernel's buffer are. Standalone and Sentinel
   * clients (one connection); a cluster's commands go to several, and are left as they are.
   */
  private coalesceWrites(): void {
    if (!this.coalesce) return;
    if (this.corked !== undefined) {
      if (this.batched < COALESCE_MAX) {
        this.batched += 1;
        return;
      }
      // a full batch leaves now: Redis gets to work while this turn goes on
      this.flushWrites();
    }
    const stream = (this.client as Redis).stream as Writable | undefined;
    if (stream === undefined || (this.client as Redis).status !== 'ready' || !stream.writable) return;
    stream.cork();
    this.corked = stream;
    this.batched = 1;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        this.flushWrites();
      });
    }
  }

  private flushWrites(): void {
    const stream = this.corked;
    if (stream === undefined) return;
    this.corked = undefined;
    this.batched = 0;
    stream.uncork();
  }

  /** Org writes waiting for a retry (for tests and metrics). */
  pendingOrgWrites(): number {
    return this.retries.length;
  }

  private userTag(s: Subject): string {
    return `${this.prefix}:{${enc(s.instance)}:${enc(s.org)}:${enc(s.user)}}`;
  }

  /** The org's locked-users index: [zset of user ids, hash user → lockedAt]. */
  private indexKeys(instance: string, org: string): [string, string] {
    const tag = `${this.prefix}:{${enc(instance)}:${enc(org)}}`;
    return [`${tag}:locked`, `${tag}:lockedat`];
  }

  private pendingKey(instance: string, org: string): string {
    return `${this.prefix}:{${enc(instance)}:${enc(org)}}:pending`;
  }

  private defenceKey(instance: string, org: string): string {
    return `${this.prefix}:{${enc(instance)}:${enc(org)}}:defences`;
  }

  private settingsKey(instance: string, owner: Owner): string {
    return owner.type === 'instance'
      ? `${this.prefix}:{${enc(instance)}}:settings`
      : `${this.prefix}:{${enc(instance)}:${enc(owner.org)}}:settings`;
  }

  /**
   * Runs one user script and then its org writes (index, pending set). Only the script can fail
   * the operation: once it answered, the operation committed, and an org write that fails is
   * queued for retry instead of failing it. `argv`: the script's own arguments; with defences
   * on, they are padded to four and followed by the defences' (see scripts.ts).
   */
  private async user(
    subject: Subject,
    name: UserScriptName,
    limits: Limits,
    leaseMs: number,
    argv: Array<string | number>,
    repeatKey?: string,
  ): Promise<UserReply> {
    this.leaseHintMs = leaseMs;
    const d = limits.defences;
    const scoped = subject.scope !== undefined;
    if (d || scoped) {
      while (argv.length < 4) argv.push('');
      argv.push(d?.lockMs ?? 0, d?.maxLockMs ?? 0, d?.remember ?? 0, repeatKey ?? '');
      if (scoped) argv.push(d?.maxDevices ?? 0, subject.scope);
    }
    // a scope's scripts take the user's own hash too (device cookies: KEYS[2])
    const keys = this.userKeys(subject);
    const script: UserScript = scoped ? this.redis[`${name}2`] : this.redis[name];
    const raw = await this.run(() =>
      script.call(
        this.redis,
        ...keys,
        limits.maxPasswordAttempts,
        limits.maxOtpAttempts,
        leaseMs,
        this.idleTtlMs,
        ...argv,
      ),
    );
    const reply = parseUserReply(raw);
    const { instance, org } = subject;
    const user = indexMember(subject);
    const writes: Array<Promise<void>> = [];
    if (reply.ended > 0) {
      // a temporary lock that ended: its entry goes (a newer lock's entry stays, see INDEX_REMOVE)
      writes.push(this.orgWrite({ kind: 'remove', instance, org, user, at: reply.ended, attempts: 0 }));
    }
    if (reply.lockChange === 1) {
      writes.push(this.orgWrite({ kind: 'add', instance, org, user, at: reply.lockedAt, attempts: 0 }));
    } else if (reply.lockChange === -1) {
      writes.push(this.orgWrite({ kind: 'remove', instance, org, user, at: reply.lockedAt, attempts: 0 }));
    }
    if (reply.pendingUntil > 0) {
      writes.push(
        this.orgWrite({ kind: 'pending', instance, org, user, at: reply.pendingUntil, attempts: 0 }),
      );
    }
    if (writes.length > 0) await Promise.all(writes);
    return reply;
  }

  /** One org write; a failure queues it for retry and never rejects. */
  private async orgWrite(w: OrgWrite): Promise<void> {
    try {
      await this.run(() => this.execOrgWrite(w));
    } catch {
      this.queueRetry(w);
    }
  }

  private execOrgWrite(w: OrgWrite): Promise<number> {
    if (w.kind === 'pending') {
      return this.redis.lgPendingAdd(this.pendingKey(w.instance, w.org), w.user, w.at, this.idleTtlMs);
    }
    const [i, h] = this.indexKeys(w.instance, w.org);
    return w.kind === 'add'
      ? this.redis.lgIndexAdd(i, h, w.user, w.at)
      : this.redis.lgIndexRemove(i, h, w.user, w.at);
  }

  private queueRetry(w: OrgWrite): void {
    if (this.closed) return;
    w.attempts += 1;
    if (this.retries.length >= MAX_RETRIES_QUEUED) this.retries.shift();
    this.retries.push(w);
    this.scheduleRetry();
  }

  /** Background retries with backoff (100 ms doubling up to 5 s), each write at most MAX_BACKGROUND_ATTEMPTS times. */
  private scheduleRetry(): void {
    if (this.retryTimer || this.closed) return;
    const due = this.retries.filter((w) => w.attempts <= MAX_BACKGROUND_ATTEMPTS);
    if (due.length === 0) return;
    const attempts = Math.min(...due.map((w) => w.attempts));
    const delay = Math.min(5000, 100 * 2 ** Math.max(0, attempts - 1));
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      const batch = this.retries.filter((w) => w.attempts <= MAX_BACKGROUND_ATTEMPTS);
      void this.replay(batch).then(() => this.scheduleRetry());
    }, delay);
    this.retryTimer.unref();
  }

  /** Runs queued writes again (in their order); those that fail again stay queued. */
  private async replay(batch: OrgWrite[]): Promise<void> {
    for (const w of batch) {
      const i = this.retries.indexOf(w);
      if (i < 0) continue;
      try {
        await this.run(() => this.execOrgWrite(w));
        const j = this.retries.indexOf(w);
        if (j >= 0) this.retries.splice(j, 1);
      } catch {
        w.attempts += 1;
      }
    }
  }

  /** Before a listing: the org's queued writes, once more (they converge the index). */
  private async flushRetries(instance: string, org: string): Promise<void> {
    const mine = this.retries.filter((w) => w.instance === instance && w.org === org);
    if (mine.length > 0) await this.replay(mine);
  }

  /** Applies the ended leases of the org's pending users (each may lock its user and index it). */
  private async applyDuePending(instance: string, org: string, limits: Limits): Promise<void> {
    const key = this.pendingKey(instance, org);
    for (let batch = 0; batch < PENDING_BATCHES; batch++) {
      const due = await this.run(() => this.redis.lgPendingDue(key, PENDING_BATCH));
      const entries: Array<[string, number]> = [];
      for (let i = 0; i + 1 < due.length; i += 2) entries.push([String(due[i]), Number(due[i + 1])]);
      let done = 0;
      await Promise.all(
        entries.map(async ([user, until]) => {
          const r = await this.user(
            subjectOfMember(instance, org, user),
            'lgGetUser',
            limits,
            this.leaseHintMs,
            [],
          );
          // value = earliest lease end still in flight: keep the entry while one that ended by
          // `until` is still there (the user's slot runs on a clock behind the org's)
          if (r.value === 0 || r.value > until) {
            done += await this.run(() => this.redis.lgPendingDone(key, user, until));
          }
        }),
      );
      if (entries.length < PENDING_BATCH || done === 0) return;
    }
  }

  private notify(instance: string, owner: Owner): void {
    for (const l of this.listeners) {
      try {
        l(instance, owner);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  private subscribe(): void {
    if (this.subscriber) return;
    // Our own connection resubscribes itself after a reconnect: ioredis's autoResubscribe sends a
    // SUBSCRIBE nobody awaits, which rejects unhandled ("Connection is closed") when the store is
    // closed before Redis answers it (a shutdown right after Redis came back).
    const sub =
      this.givenSubscriber ??
      (this.client.isCluster
        ? (this.client as Cluster).duplicate(undefined, { enableOfflineQueue: true, autoResubscribe: false })
        : (this.client as Redis).duplicate({ enableOfflineQueue: true, autoResubscribe: false }));
    this.subscriber = sub;
    sub.on('error', () => undefined);
    if (!this.givenSubscriber) {
      let first = true;
      sub.on('ready', () => {
        if (first) first = false;
        else sub.subscribe(this.channel).catch(() => undefined);
      });
    }
    sub.on('message', (channel: string, message: string) => {
      if (channel !== this.channel) return;
      try {
        const m = JSON.parse(message) as { i: string; o: string | null };
        this.notify(m.i, m.o === null ? { type: 'instance' } : { type: 'org', org: m.o });
      } catch {
        // not ours
      }
    });
    sub.subscribe(this.channel).catch(() => undefined);
  }

  /**
   * Runs one Redis operation with a deadline; a failure of Redis or of the connection becomes
   * StoreUnavailableError. A bug (see isBug) is not an outage and is rethrown as it is.
   */
  private async run<T>(op: () => Promise<T>): Promise<T> {
    this.coalesceWrites();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new StoreUnavailableError(`Redis did not answer within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
    });
    try {
      return await Promise.race([op(), deadline]);
    } catch (e) {
      if (e instanceof StoreUnavailableError || isBug(e)) throw e;
      throw new StoreUnavailableError('Redis command failed', { cause: e });
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Errors that are not an outage: a programming error in our code (TypeError and the like), a Lua
 * error in a script, or a key of the wrong type (data that is not ours). They are rethrown as they
 * are, so that they surface as an internal error instead of a 503 that fail-open would pass.
 */
function isBug(e: unknown): boolean {
  if (
    e instanceof TypeError ||
    e instanceof RangeError ||
    e instanceof ReferenceError ||
    e instanceof SyntaxError
  ) {
    return true;
  }
  if (!(e instanceof ReplyError)) return false;
  const message = (e as Error).message;
  return message.startsWith('WRONGTYPE') || /^ERR .*user_script/.test(message);
}

function stateOf(r: UserReply): UserState {
  const failed = zeroCounters();
  const scopes: string[] = [];
  for (const [field, value] of r.counters) {
    if (field.startsWith('d:')) {
      scopes.push(field.slice(2));
      continue;
    }
    const factor = field.slice(2);
    if ((FACTORS as readonly string[]).includes(factor)) failed[factor as Factor] = value;
  }
  let state: UserState =
    r.lockedAt > 0 ? { locked: true, lockedAt: r.lockedAt, failed } : { locked: false, failed };
  if (r.ended > 0 || r.lockedUntil > 0) state = { ...state, ...defenceFields(r) };
  return scopes.length > 0 ? { ...state, scopes } : state;
}

function enc(part: string): string {
  return encodeURIComponent(part);
}
