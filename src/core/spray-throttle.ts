import { StoreUnavailableError, ThrottledError } from './errors';
import { ipBlock } from './ip-block';
import { describeOptionValue, invalidOption, isPlainObject } from './option-checks';
import type { SettleOutcome } from './store';

/**
 * Spray throttling (issue 12, defence 2): failed checks are counted per client address block (an
 * IPv4 address, an IPv6 /64) across every user and org of the instance; once a block has had
 * `failures` failed checks within a window, its checks answer 429 (ThrottledError, `Retry-After`)
 * without evaluating anything — no reservation, no credential check, no user counter touched —
 * until `blockSeconds` have passed.
 *
 * Exact under concurrency: a check takes one point of its block atomically BEFORE it is evaluated
 * (one store round trip) and gives it back after, unless it failed (a success or a release is
 * not a failure). A block therefore never has more than `failures` failed evaluations in a window,
 * however many of its checks race: the surplus in flight is answered 429 unevaluated. The check
 * that takes the last point and fails blocks the address block (the `throttle` event).
 */

/** Options of spray throttling (createLockout's `defences.sprayThrottle`, the config file's `defences.sprayThrottle`). */
export interface SprayThrottleOptions {
  /** On or off. Default true in createLockout when the object is given; the config file's default is false. */
  readonly enabled?: boolean;
  /** Failed checks from one address block within `windowSeconds` that throttle it. Default 100. */
  readonly failures?: number;
  /** The counting window (s): rate-limiter-flexible's fixed window, from the block's first counted check. Default 900. */
  readonly windowSeconds?: number;
  /** How long a block is throttled once it reached `failures` (s); 0 = until its window ends. Default 900. */
  readonly blockSeconds?: number;
  /** IPv6 addresses are counted per this prefix (1–128). Default 64. IPv4 is always per address. */
  readonly ipv6Prefix?: number;
}

/** The resolved options. */
export interface SprayThrottleConfig {
  readonly enabled: boolean;
  readonly failures: number;
  readonly windowSeconds: number;
  readonly blockSeconds: number;
  readonly ipv6Prefix: number;
}

export const SPRAY_THROTTLE_DEFAULTS: SprayThrottleConfig = Object.freeze({
  enabled: false,
  failures: 100,
  windowSeconds: 900,
  blockSeconds: 900,
  ipv6Prefix: 64,
});

const MAX_SECONDS = 30 * 86_400;

/**
 * Checks spray throttling options (an OptionError naming `<field>.<option>`) and fills in the
 * defaults; `enabledByDefault` is what an object without `enabled` means.
 */
export function resolveSprayThrottle(
  options: unknown,
  field = 'defences.sprayThrottle',
  enabledByDefault = true,
): SprayThrottleConfig {
  if (options === undefined) return SPRAY_THROTTLE_DEFAULTS;
  if (!isPlainObject(options)) {
    throw invalidOption(
      field,
      `must be an object such as { failures: 100, windowSeconds: 900, blockSeconds: 900 }, got ${describeOptionValue(options)}`,
    );
  }
  const known = ['enabled', 'failures', 'windowSeconds', 'blockSeconds', 'ipv6Prefix'];
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw invalidOption(`${field}.${key}`, `is not an option (known: ${known.join(', ')})`);
    }
  }
  const o = options as Record<string, unknown>;
  const int = (name: string, min: number, max: number, fallback: number): number => {
    const value = o[name];
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw invalidOption(
        `${field}.${name}`,
        `must be an integer from ${min} to ${max}, got ${describeOptionValue(value)}`,
      );
    }
    return value;
  };
  if (o.enabled !== undefined && typeof o.enabled !== 'boolean') {
    throw invalidOption(`${field}.enabled`, `must be true or false, got ${describeOptionValue(o.enabled)}`);
  }
  return {
    enabled: (o.enabled as boolean | undefined) ?? enabledByDefault,
    failures: int('failures', 1, 1_000_000, SPRAY_THROTTLE_DEFAULTS.failures),
    windowSeconds: int('windowSeconds', 1, MAX_SECONDS, SPRAY_THROTTLE_DEFAULTS.windowSeconds),
    blockSeconds: int('blockSeconds', 0, MAX_SECONDS, SPRAY_THROTTLE_DEFAULTS.blockSeconds),
    ipv6Prefix: int('ipv6Prefix', 1, 128, SPRAY_THROTTLE_DEFAULTS.ipv6Prefix),
  };
}

/**
 * The throttle's counter: one integer per key with an expiry, shared by every process that
 * shares the store (src/store/spray-counter.ts: rate-limiter-flexible on the engine's store).
 */
export interface SprayCounter {
  /**
   * Takes one point of `key` atomically, opening a window of `windowSeconds` if none is open.
   * `taken: false` when the key already holds `failures` points (or is blocked): nothing is kept.
   * `count`: the key's points after this one (taken only); `msLeft`: until the window (or block) ends.
   */
  take(key: string): Promise<{ readonly taken: boolean; readonly count: number; readonly msLeft: number }>;
  /** Gives one point back to `key` (a check that did not fail); nothing when its window has ended. */
  give(key: string): Promise<void>;
  /** Blocks `key` for `ms`: every take is refused until then, whatever is given back meanwhile. */
  block(key: string, ms: number): Promise<void>;
}

/** A point taken by one check: given back unless the check fails. */
export interface ThrottleTicket {
  /** The address block, e.g. `203.0.113.7/32`, `2001:db8::/64`. */
  readonly ip: string;
  /** This check took the block's last point: if it fails, the block is throttled. */
  readonly last: boolean;
}

/** A `throttle` event: an address block reached its limit and is throttled until `until`. */
export interface ThrottleEvent {
  readonly type: 'throttle';
  /** The address block (`203.0.113.7/32`, `2001:db8:1:2::/64`), never a user. */
  readonly ip: string;
  /** When its checks are evaluated again (ms since the epoch). */
  readonly until: number;
  /** The failed checks that throttled it (the configured limit). */
  readonly failures: number;
  /** Who made the check that throttled it (the sidecar: the token's name), for audit lines; not recorded as event data. */
  readonly caller?: string;
}

export interface SprayThrottleHooks {
  /** The instance id: counters are per instance, across its orgs. */
  readonly instanceId: string;
  /** Told of every block throttled. Must not throw. */
  readonly onEvent?: (event: ThrottleEvent) => void;
  /** fail-open: a counter that cannot be reached lets checks through unthrottled. Default fail-closed (503). */
  readonly failOpen?: boolean;
  /** Told of a counter error that was not thrown (a point not given back, a block not written). Must not throw. */
  readonly onError?: (error: unknown) => void;
}

/** Spray throttling on a counter. See the module comment for what it guarantees. */
export class SprayThrottle {
  readonly config: SprayThrottleConfig;

  constructor(
    config: SprayThrottleConfig,
    private readonly counter: SprayCounter,
    private readonly hooks: SprayThrottleHooks,
  ) {
    this.config = config;
  }

  /** The address block a client IP is counted in, or undefined (not an IP: not throttled). */
  blockOf(clientIp: string | undefined): string | undefined {
    return clientIp === undefined ? undefined : ipBlock(clientIp, this.config.ipv6Prefix);
  }

  private key(block: string): string {
    return `${this.hooks.instanceId}:${block}`;
  }

  /**
   * Before anything is evaluated: takes one point of the client's block. Throws ThrottledError
   * when the block is throttled (nothing else may happen then), StoreUnavailableError when the
   * counter cannot be reached (fail-closed). Undefined ticket: not throttled (no client IP, or
   * fail-open with the counter down).
   */
  async admit(clientIp: string | undefined): Promise<ThrottleTicket | undefined> {
    const ip = this.blockOf(clientIp);
    if (ip === undefined) return undefined;
    let r: Awaited<ReturnType<SprayCounter['take']>>;
    try {
      r = await this.counter.take(this.key(ip));
    } catch (error) {
      if (this.hooks.failOpen) {
        this.report(error);
        return undefined;
      }
      throw error instanceof StoreUnavailableError
        ? error
        : new StoreUnavailableError('Spray throttle counter unavailable', { cause: error });
    }
    if (!r.taken) throw new ThrottledError(Math.max(1, r.msLeft));
    return { ip, last: r.count >= this.config.failures };
  }

  /**
   * After the check: a failure keeps its point (and, when it took the last one, throttles the
   * block); a success or a release gives it back. Never throws (an error goes to onError: a point
   * not given back counts against the block until its window ends — the safe side).
   */
  async settle(ticket: ThrottleTicket | undefined, outcome: SettleOutcome, caller?: string): Promise<void> {
    if (ticket === undefined) return;
    try {
      if (outcome !== 'failure') {
        await this.counter.give(this.key(ticket.ip));
        return;
      }
      if (!ticket.last) return;
      const ms = this.config.blockSeconds * 1000;
      if (ms > 0) await this.counter.block(this.key(ticket.ip), ms);
      this.tell({
        type: 'throttle',
        ip: ticket.ip,
        until: Date.now() + (ms > 0 ? ms : this.config.windowSeconds * 1000),
        failures: this.config.failures,
        ...(caller !== undefined ? { caller } : {}),
      });
    } catch (error) {
      this.report(error);
    }
  }

  /** A ticket as text (the sidecar's attempt ids carry it from reserve to settle). */
  static encode(ticket: ThrottleTicket): string {
    return Buffer.from(JSON.stringify([ticket.ip, ticket.last ? 1 : 0])).toString('base64url');
  }

  /** A ticket from its text, or undefined when malformed. */
  decode(text: string): ThrottleTicket | undefined {
    if (text.length > 200 || !/^[A-Za-z0-9_-]+$/.test(text)) return undefined;
    try {
      const parts: unknown = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
      if (!Array.isArray(parts) || parts.length !== 2) return undefined;
      const [ip, last] = parts as unknown[];
      // Only a block this throttle would make (canonical text) is accepted.
      if (typeof ip !== 'string' || (last !== 0 && last !== 1)) return undefined;
      const slash = ip.lastIndexOf('/');
      if (slash <= 0 || ipBlock(ip.slice(0, slash), this.config.ipv6Prefix) !== ip) return undefined;
      return { ip, last: last === 1 };
    } catch {
      return undefined;
    }
  }

  private tell(event: ThrottleEvent): void {
    try {
      this.hooks.onEvent?.(event);
    } catch {
      // an observer must not change the answer
    }
  }

  private report(error: unknown): void {
    try {
      this.hooks.onError?.(error);
    } catch {
      // a failing logger must not change the answer
    }
  }
}

/**
 * One check inside the throttle: admit (ThrottledError before anything is evaluated), then
 * `check` with an evaluation that settles the throttle as soon as the credential is judged — in
 * parallel with the engine's own settle, so a check costs one sequential round trip more (the
 * admit), not two. Nothing evaluated (locked, busy, an error, a timeout): the point is given back.
 * No throttle (off), or no client IP: `check(evaluate)` as it is.
 */
export async function throttledCheck<T>(
  throttle: SprayThrottle | undefined,
  clientIp: string | undefined,
  evaluate: () => Promise<boolean> | boolean,
  check: (evaluate: () => Promise<boolean>) => Promise<T>,
  caller?: string,
): Promise<T> {
  const ticket = throttle ? await throttle.admit(clientIp) : undefined;
  if (throttle === undefined || ticket === undefined) return check(async () => evaluate());
  let settled: Promise<void> | undefined;
  const settleOnce = (outcome: SettleOutcome): Promise<void> =>
    (settled ??= throttle.settle(ticket, outcome, caller));
  const judged = async (): Promise<boolean> => {
    let ok: boolean;
    try {
      ok = await evaluate();
    } catch (error) {
      void settleOnce('release');
      throw error;
    }
    void settleOnce(ok === true ? 'success' : 'failure');
    return ok;
  };
  try {
    return await check(judged);
  } finally {
    await settleOnce('release');
  }
}
