import type { Cluster, Redis } from 'ioredis';
import { StoreUnavailableError } from '../../core/errors';
import type {
  CodeChannel,
  LockedPage,
  LockoutStore,
  Owner,
  ReserveResult,
  SettingsChange,
  SettingsRecord,
  SettleOutcome,
  SettleResult,
  UserState,
  WriteSettingsResult,
} from '../../core/store';
import { FACTORS, zeroCounters, type Factor, type Limits, type Subject } from '../../core/subjects';
import { GET_USER, LOCK, RESERVE, SETTLE, TAKE_CODE, UNLOCK, USE_STEP, WRITE_SETTINGS } from './scripts';

/** An ioredis client: standalone, Sentinel-backed (`new Redis({ sentinels, name })`) or `Redis.Cluster`. */
export type RedisClient = Redis | Cluster;

export interface RedisStoreOptions {
  /**
   * The ioredis client. Recommended: `enableOfflineQueue: false` (commands fail at once while
   * Redis is down instead of waiting, and no queued reservation runs after the caller gave up).
   */
  client: RedisClient;
  /** Key prefix (default "lg"). */
  prefix?: string;
  /** A store operation that has not answered after this long fails with StoreUnavailableError (default 2000 ms). */
  commandTimeoutMs?: number;
  /** The connection for settings-change notifications (default: `client.duplicate()`, closed by close()). */
  subscriber?: RedisClient;
}

type Reply = Array<string | number | null>;

interface Scripts {
  lgReserve(s: string, r: string, ...argv: Array<string | number>): Promise<Reply>;
  lgSettle(s: string, r: string, ...argv: Array<string | number>): Promise<Reply>;
  lgGetUser(s: string, r: string, ...argv: Array<string | number>): Promise<Reply>;
  lgLock(s: string): Promise<[number, number]>;
  lgUnlock(s: string): Promise<number>;
  lgWriteSettings(k: string, ...argv: Array<string | number>): Promise<Reply>;
  lgTakeCode(k: string, hash: string): Promise<'match' | 'mismatch' | 'missing'>;
  lgUseStep(k: string, step: number, ttlMs: number): Promise<number>;
}

/**
 * The Redis store (ioredis). One round trip per reserve, settle, status read, lock and unlock:
 * each is one Lua script on the user's slot. Settings changes are published on
 * `<prefix>:settings` so every process drops its cached copy at once.
 */
export class RedisStore implements LockoutStore {
  readonly kind = 'redis';
  readonly client: RedisClient;
  private readonly redis: RedisClient & Scripts;
  private readonly prefix: string;
  private readonly timeoutMs: number;
  private readonly channel: string;
  private readonly listeners = new Set<(instance: string, owner: Owner) => void>();
  private subscriber?: RedisClient;
  private readonly ownSubscriber: boolean;
  private readonly givenSubscriber?: RedisClient;

  constructor(options: RedisStoreOptions) {
    if (
      !options?.client ||
      typeof (options.client as { defineCommand?: unknown }).defineCommand !== 'function'
    ) {
      throw new TypeError('RedisStore: options.client must be an ioredis Redis or Cluster client');
    }
    this.client = options.client;
    this.prefix = options.prefix ?? 'lg';
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(this.prefix)) {
      throw new TypeError('RedisStore: prefix must be 1-64 characters of A-Z a-z 0-9 _ . -');
    }
    this.timeoutMs = options.commandTimeoutMs ?? 2000;
    if (!Number.isInteger(this.timeoutMs) || this.timeoutMs < 1) {
      throw new TypeError('RedisStore: commandTimeoutMs must be a positive integer');
    }
    this.channel = `${this.prefix}:settings`;
    this.givenSubscriber = options.subscriber;
    this.ownSubscriber = !options.subscriber;
    const c = this.client;
    const define = (name: string, lua: string, numberOfKeys: number) => {
      if (!(name in c)) c.defineCommand(name, { lua, numberOfKeys });
    };
    define('lgReserve', RESERVE, 2);
    define('lgSettle', SETTLE, 2);
    define('lgGetUser', GET_USER, 2);
    define('lgLock', LOCK, 1);
    define('lgUnlock', UNLOCK, 1);
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
    const [s, r] = this.userKeys(subject);
    const reply = await this.run(() =>
      this.redis.lgReserve(s, r, factor, limits.maxPasswordAttempts, limits.maxOtpAttempts, leaseMs, id),
    );
    if (reply[2] === 1) await this.indexLocked(subject);
    const value = Number(reply[1]);
    switch (reply[0]) {
      case 'admitted':
        return { status: 'admitted', expiresAt: value };
      case 'locked':
        return { status: 'locked', lockedAt: value };
      default:
        return { status: 'busy', retryAfterMs: value };
    }
  }

  async settle(
    subject: Subject,
    factor: Factor,
    id: string,
    outcome: SettleOutcome,
    limits: Limits,
    _leaseMs: number,
  ): Promise<SettleResult> {
    const [s, r] = this.userKeys(subject);
    const reply = await this.run(() =>
      this.redis.lgSettle(s, r, factor, id, outcome, limits.maxPasswordAttempts, limits.maxOtpAttempts),
    );
    if (reply[3] === 1 || reply[4] === 1) await this.indexLocked(subject);
    if (reply[0] !== 'settled') return { status: 'unknown' };
    return {
      status: 'settled',
      failedAttempts: Number(reply[1]),
      locked: reply[2] === 1,
      lockedNow: reply[3] === 1,
    };
  }

  async getUser(subject: Subject, limits: Limits): Promise<UserState> {
    const [s, r] = this.userKeys(subject);
    const reply = await this.run(() =>
      this.redis.lgGetUser(s, r, limits.maxPasswordAttempts, limits.maxOtpAttempts),
    );
    if (reply[0] === 1) await this.indexLocked(subject);
    const failed = zeroCounters();
    let lockedAt: number | undefined;
    for (let i = 1; i + 1 < reply.length; i += 2) {
      const field = String(reply[i]);
      const value = Number(reply[i + 1]);
      if (field === 'L') lockedAt = value;
      else if (field.startsWith('f:') && (FACTORS as readonly string[]).includes(field.slice(2))) {
        failed[field.slice(2) as Factor] = value;
      }
    }
    return lockedAt === undefined ? { locked: false, failed } : { locked: true, lockedAt, failed };
  }

  async lock(subject: Subject, _limits: Limits): Promise<{ changed: boolean; lockedAt: number }> {
    const [changed, lockedAt] = await this.run(() => this.redis.lgLock(this.userKeys(subject)[0]));
    if (changed === 1) await this.indexLocked(subject);
    return { changed: changed === 1, lockedAt: Number(lockedAt) };
  }

  async unlock(subject: Subject, _limits: Limits, _leaseMs: number): Promise<{ changed: boolean }> {
    const changed = await this.run(() => this.redis.lgUnlock(this.userKeys(subject)[0]));
    if (changed === 1)
      await this.run(() => this.redis.zrem(this.lockedKey(subject.instance, subject.org), subject.user));
    return { changed: changed === 1 };
  }

  async resetFactor(subject: Subject, factor: Factor, _limits: Limits, _leaseMs: number): Promise<void> {
    await this.run(() => this.redis.hdel(this.userKeys(subject)[0], `f:${factor}`));
  }

  /**
   * Locked users from the org's index (a sorted set of user ids, kept beside each lock and
   * unlock). Each entry is checked against the user's own state, and stale ones are dropped.
   */
  async listLocked(
    instance: string,
    org: string,
    _limits: Limits,
    limit: number,
    cursor?: string,
  ): Promise<LockedPage> {
    const key = this.lockedKey(instance, org);
    const ids = await this.run(() =>
      this.redis.zrangebylex(key, cursor === undefined ? '-' : `(${cursor}`, '+', 'LIMIT', 0, limit + 1),
    );
    const page = ids.slice(0, limit);
    const states = await this.run(() =>
      Promise.all(page.map((user) => this.redis.hget(this.userKeys({ instance, org, user })[0], 'L'))),
    );
    const users: Array<{ userId: string; lockedAt: number }> = [];
    const stale: string[] = [];
    page.forEach((userId, i) => {
      const at = states[i];
      if (at == null) stale.push(userId);
      else users.push({ userId, lockedAt: Number(at) });
    });
    if (stale.length > 0) await this.run(() => this.redis.zrem(key, ...stale));
    const last = page[page.length - 1];
    return ids.length > limit && last !== undefined ? { users, nextCursor: last } : { users };
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
    if (reply[0] !== 'ok') return { status: reply[0] as 'exists' | 'not_found' | 'not_changed' };
    this.notify(instance, owner);
    return {
      status: 'ok',
      sequence: Number(reply[1]),
      creationDate: Number(reply[2]),
      changeDate: Number(reply[3]),
    };
  }

  onSettingsChanged(listener: (instance: string, owner: Owner) => void): () => void {
    this.listeners.add(listener);
    this.subscribe();
    return () => this.listeners.delete(listener);
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
    this.listeners.clear();
    const sub = this.subscriber;
    this.subscriber = undefined;
    if (sub && this.ownSubscriber) sub.disconnect();
    else if (sub) await sub.unsubscribe(this.channel).catch(() => undefined);
  }

  /** The keys of one user (all on one slot): [state hash, reservations zset]. */
  userKeys(subject: Subject): [string, string] {
    const tag = this.userTag(subject);
    return [`${tag}:s`, `${tag}:r`];
  }

  private userTag(s: Subject): string {
    return `${this.prefix}:{${enc(s.instance)}:${enc(s.org)}:${enc(s.user)}}`;
  }

  private lockedKey(instance: string, org: string): string {
    return `${this.prefix}:{${enc(instance)}:${enc(org)}}:locked`;
  }

  private settingsKey(instance: string, owner: Owner): string {
    return owner.type === 'instance'
      ? `${this.prefix}:{${enc(instance)}}:settings`
      : `${this.prefix}:{${enc(instance)}:${enc(owner.org)}}:settings`;
  }

  private async indexLocked(subject: Subject): Promise<void> {
    await this.run(() => this.redis.zadd(this.lockedKey(subject.instance, subject.org), 0, subject.user));
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
    const sub =
      this.givenSubscriber ??
      (this.client.isCluster
        ? (this.client as Cluster).duplicate(undefined, { enableOfflineQueue: true })
        : (this.client as Redis).duplicate({ enableOfflineQueue: true }));
    this.subscriber = sub;
    sub.on('error', () => undefined);
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

  /** Runs one store operation with a deadline; every failure becomes StoreUnavailableError. */
  private async run<T>(op: () => Promise<T>): Promise<T> {
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
      if (e instanceof StoreUnavailableError) throw e;
      throw new StoreUnavailableError('Redis command failed', { cause: e });
    } finally {
      clearTimeout(timer);
    }
  }
}

function enc(part: string): string {
  return encodeURIComponent(part);
}
