import type { Request, RequestHandler, Response, Router } from 'express';
import { createActivity, type Activity } from '../core/activity';
import { createConsoleHandler, type ConsoleOptions } from '../console/console';
import { LockoutEngine } from '../core/engine';
import { StoreUnavailableError } from '../core/errors';
import type { LockoutStore } from '../core/store';
import type { Factor } from '../core/subjects';
import { createTokenAuthorizer, type Authorize, type TokenOptions } from '../http/auth';
import { deviceCookieOf } from '../http/device-cookie';
import { SprayThrottle } from '../core/spray-throttle';
import { MemoryStore } from '../store/memory/memory-store';
import { RedisStore } from '../store/redis/redis-store';
import { createSprayCounter } from '../store/spray-counter';
import { createOtpCodes } from '../verify/otp-codes';
import { createPasswordVerifier, type PasswordVerifier } from '../verify/password';
import { createTotpVerifier } from '../verify/totp';
import { createChecks, type LockoutChecks } from './checks';
import { createGuard, type GuardOptions } from './guard';
import {
  describe,
  optionError,
  resolveLockoutOptions,
  withPrefix,
  type LockoutConfig,
  type LockoutErrorContext,
  type LockoutOptions,
} from './options';
import {
  createApiRouter,
  createChecksRouter,
  createSettingsRouter,
  createUsersRouter,
  type AuditEntry,
  type ObservedCheckOutcome,
  type RouterBaseOptions,
} from '../http/routers';

/** Options of one mounted router; omitted ones come from createLockout's. */
export interface LockoutRouterOptions {
  /** Authorization of this router, instead of createLockout's `authorize` / `tokens`. */
  readonly authorize?: Authorize;
  /** Tokens of this router, instead of createLockout's `authorize` / `tokens`. */
  readonly tokens?: readonly TokenOptions[];
  readonly audit?: (entry: AuditEntry) => void;
  readonly bodyLimit?: string | number;
  /** Check routes (checks(), all()): told of each check's factor, outcome and duration (metrics). Must not throw. */
  readonly observeCheck?: (factor: Factor, outcome: ObservedCheckOutcome, seconds: number) => void;
  /** The webhook dead letters of an org (GET /v1/webhooks/dead-letters): a DeliveryQueue's deadLetters. */
  readonly deadLetters?: RouterBaseOptions['deadLetters'];
  /** Check routes, spray throttling on: told of each check or attempt request without `clientIp` (metrics). Must not throw. */
  readonly onNoClientIp?: (route: string) => void;
}

/** The admin routers of API.md 2.1 and 2.2, to mount in the app (`app.use('/admin', lockout.routers.users())`). */
export interface LockoutRouters {
  /** Lockout settings: management (org), admin (instance) and v2 settings routes. */
  settings(options?: LockoutRouterOptions): Router;
  /** User status, locked users, admin lock/unlock, password changed. */
  users(options?: LockoutRouterOptions): Router;
  /** The sidecar's check, code and attempt routes. */
  checks(options?: LockoutRouterOptions): Router;
  /** All of them. */
  all(options?: LockoutRouterOptions): Router;
  /**
   * The admin console (static files; README "Console"): mount it where you like
   * (`app.use('/console', lockout.routers.console({ apiBase: '/admin' }))`) next to the settings
   * and users routers it calls with the signed-in user's token.
   */
  console(options?: ConsoleOptions): RequestHandler;
}

/** Guard shorthands, one per factor: `lockout.guards.password({ user })`. */
export interface LockoutGuards {
  password(options: GuardOptions): RequestHandler;
  totp(options: GuardOptions): RequestHandler;
  otpSms(options: GuardOptions): RequestHandler;
  otpEmail(options: GuardOptions): RequestHandler;
  recoveryCode(options: GuardOptions): RequestHandler;
}

/** What createLockout returns. */
export interface Lockout {
  /** The underlying engine (settings, status, lock/unlock, reserve/settle). */
  readonly engine: LockoutEngine;
  /** The store in use. */
  readonly store: LockoutStore;
  /** The resolved options. */
  readonly config: LockoutConfig;
  /**
   * A middleware that guards the route behind it for `factor`: it answers 400 (the subject
   * cannot be read), 423 locked, 429 busy (Retry-After) or 503 store unavailable itself, and
   * otherwise reserves an attempt, sets `req.lockout`, and settles it from `req.lockout.*()` or
   * from the response status (2xx success, 401/403 failure, anything else release).
   */
  guard(factor: Factor, options: GuardOptions): RequestHandler;
  readonly guards: LockoutGuards;
  /** Checks that wrap the verifiers (password, TOTP, SMS/Email codes, any async function). */
  readonly checks: LockoutChecks;
  /** The admin routers, with createLockout's `tokens` or `authorize`. */
  readonly routers: LockoutRouters;
  /** Failures, locks and unlocks per org and minute, counted in this process (GET /v1/activity). */
  readonly activity: Activity;
  /**
   * Device cookies (issue 12; present when `defences.deviceCookies` has keys): `read(req)` the
   * client's device token to pass to `checks.*` ({ deviceToken }), and `write(res, token)` the
   * `deviceToken` a success answered (HttpOnly, Secure unless configured otherwise, SameSite, Path).
   */
  readonly deviceCookie?: {
    readonly name: string;
    read(req: Request): string | undefined;
    write(res: Response, token: string): void;
  };
  /** Spray throttling, when `defences.sprayThrottle` is on (the sidecar's proxy uses it too). */
  readonly throttle?: SprayThrottle;
  /** Resolves when every settlement under way has finished. */
  drain(): Promise<void>;
  /**
   * Waits for settlements under way and for store writes of unknown outcome still being retried
   * (G5; at most `timeoutMs`, default 5000, after which those are abandoned), then stops the
   * engine and closes the store (its own resources: a RedisStore's subscriber; the ioredis
   * client you gave it stays open). Idempotent.
   */
  close(timeoutMs?: number): Promise<void>;
}

function defaultReport(error: unknown, context: LockoutErrorContext): void {
  const who = [context.orgId, context.userId].filter((x) => x !== undefined).join('/');
  const what = [context.operation, context.factor].filter(Boolean).join(' ');
  const why = error instanceof Error ? error.message : String(error);
  console.warn(`lockgate: ${what}${who ? ` of ${who}` : ''} failed (${context.outcome}): ${why}`);
}

/**
 * Creates lockout for an Express login app: guards, checks and admin routers on one engine.
 *
 * ```ts
 * const lockout = createLockout({ store: new RedisStore({ client }), instance: { maxPasswordAttempts: 5, maxOtpAttempts: 5 } });
 * app.post('/login', express.json(), lockout.guard('password', { user: (req) => req.body.userId }), loginHandler);
 * ```
 *
 * Every option is validated now; a bad one throws an InvalidArgumentError naming it.
 */
export function createLockout(options: LockoutOptions = {}): Lockout {
  const config = resolveLockoutOptions(options);
  const store: LockoutStore = options.store ?? new MemoryStore();
  const onError = options.onError;
  const report = (error: unknown, context: LockoutErrorContext): void => {
    try {
      (onError ?? defaultReport)(error, context);
    } catch {
      // a failing logger must not change the answer
    }
  };

  // Fed by the engine's events; read by GET /v1/activity (the console's chart).
  const activity = createActivity();
  const onEvent = options.onEvent;
  const engine = withPrefix(
    'createLockout',
    () =>
      new LockoutEngine({
        store,
        instanceId: config.instanceId,
        defaults: config.defaults,
        ...(config.leaseMs !== undefined ? { leaseMs: config.leaseMs } : {}),
        ...(config.evaluationTimeoutMs !== undefined
          ? { evaluationTimeoutMs: config.evaluationTimeoutMs }
          : {}),
        onStoreError: config.onStoreError,
        ...(config.defences !== undefined ? { defences: config.defences } : {}),
        ...(options.onFailOpen ? { onFailOpen: options.onFailOpen } : {}),
        onCompensation: (event) => {
          try {
            options.onCompensation?.(event);
          } catch {
            // an observer must not change what is compensated
          }
          // A write whose outcome is unknown and could not be compensated before its lease ended.
          if (event.type !== 'abandoned') return;
          const { task } = event;
          report(event.error ?? new StoreUnavailableError(`compensation ${event.reason}`), {
            operation: task.origin,
            outcome: 'uncompensated',
            factor: task.factor,
            orgId: task.subject.org,
            userId: task.subject.user,
          });
        },
        ...(config.settingsCacheTtlMs !== undefined ? { settingsCacheTtlMs: config.settingsCacheTtlMs } : {}),
        onEvent: onEvent
          ? (event) => {
              activity.record(event);
              onEvent(event);
            }
          : (event) => activity.record(event),
        ...(options.eventLog ? { eventLog: options.eventLog } : {}),
      }),
  );
  const throttle = config.sprayThrottle.enabled
    ? new SprayThrottle(config.sprayThrottle, sprayCounterOf(store, config.sprayThrottle), {
        instanceId: config.instanceId,
        failOpen: config.failOpen,
        // Through the engine: to onEvent, the activity counter and the event log alike.
        onEvent: (event) => engine.publish(event),
        onError: (error) => report(error, { operation: 'settle', outcome: 'unsettled' }),
      })
    : undefined;
  const totpVerifier = withPrefix(
    'createLockout',
    () => createTotpVerifier({ ...options.totp, store }),
    'totp',
  );
  const otpCodes = withPrefix('createLockout', () => createOtpCodes({ ...options.codes, store }), 'codes');
  const defaultAuthorize: Authorize | undefined =
    options.authorize ??
    (options.tokens !== undefined
      ? withPrefix('createLockout', () => createTokenAuthorizer({ tokens: options.tokens! }))
      : undefined);

  // The password verifier hashes its dummy (64 MiB by default) when it is made. With `password`
  // options it is made now (so they are validated now); with the defaults, when first needed.
  const makePasswordVerifier = (): PasswordVerifier =>
    withPrefix('createLockout', () => createPasswordVerifier(options.password ?? {}), 'password');
  let passwordVerifier: PasswordVerifier | undefined =
    options.password !== undefined ? makePasswordVerifier() : undefined;
  const getPasswordVerifier = (): PasswordVerifier => (passwordVerifier ??= makePasswordVerifier());

  // Settlements under way (their observed promises, which never reject), for drain() and close().
  const pending = new Set<Promise<unknown>>();
  const track = (settling: Promise<unknown>): void => {
    pending.add(settling);
    void settling.then(() => pending.delete(settling));
  };

  const guard = (factor: Factor, guardOptions: GuardOptions): RequestHandler =>
    createGuard(
      {
        engine,
        defaultOrg: config.defaultOrg,
        responses: {
          locked: config.lockedResponse,
          busy: config.busyResponse,
          unavailable: config.unavailableResponse,
        },
        report,
        track,
        ...(throttle ? { throttle } : {}),
      },
      factor,
      guardOptions,
    );

  const checks = createChecks({
    engine,
    passwordVerifier: getPasswordVerifier,
    totpVerifier,
    otpCodes,
    report,
    ...(throttle ? { throttle } : {}),
  });

  const routerBase = (where: string, o: LockoutRouterOptions = {}): RouterBaseOptions => {
    if (typeof o !== 'object' || o === null) {
      throw optionError(
        where,
        'options',
        `must be an object such as { authorize } or omitted, got ${describe(o)}`,
      );
    }
    if (o.authorize !== undefined && o.tokens !== undefined) {
      throw optionError(
        where,
        'tokens',
        'and authorize cannot both be given: authorize replaces the token model',
      );
    }
    const authorize =
      o.authorize ??
      (o.tokens !== undefined
        ? withPrefix(where, () => createTokenAuthorizer({ tokens: o.tokens! }))
        : undefined) ??
      defaultAuthorize;
    if (authorize === undefined) {
      throw optionError(
        where,
        'authorize',
        'is needed: pass createLockout({ tokens: [{ name, token, org, permissions }] }) or createLockout({ authorize: (req, permission, target) => ... }) (or give them to this router)',
      );
    }
    const audit = o.audit ?? options.audit;
    const bodyLimit = o.bodyLimit ?? options.bodyLimit;
    return {
      engine,
      authorize,
      activity,
      ...(audit ? { audit } : {}),
      ...(bodyLimit !== undefined ? { bodyLimit } : {}),
      ...(o.deadLetters !== undefined ? { deadLetters: o.deadLetters } : {}),
      onError: (error: unknown, req: Request) =>
        report(error, { operation: 'router', outcome: 'refused', req }),
    };
  };
  const checksOptions = (where: string, o?: LockoutRouterOptions) => ({
    ...routerBase(where, o),
    passwordVerifier: getPasswordVerifier(),
    totpVerifier,
    otpCodes,
    ...(throttle ? { throttle } : {}),
    ...(o?.observeCheck !== undefined ? { observeCheck: o.observeCheck } : {}),
    ...(o?.onNoClientIp !== undefined ? { onNoClientIp: o.onNoClientIp } : {}),
  });

  const routers: LockoutRouters = {
    settings: (o) =>
      withPrefix('routers.settings', () => createSettingsRouter(routerBase('routers.settings', o))),
    users: (o) => withPrefix('routers.users', () => createUsersRouter(routerBase('routers.users', o))),
    checks: (o) => withPrefix('routers.checks', () => createChecksRouter(checksOptions('routers.checks', o))),
    all: (o) => withPrefix('routers.all', () => createApiRouter(checksOptions('routers.all', o))),
    console: (o) => withPrefix('routers.console', () => createConsoleHandler(o)),
  };

  const drain = async (): Promise<void> => {
    while (pending.size > 0) await Promise.allSettled([...pending]);
  };

  let closing: Promise<void> | undefined;
  const cookie = deviceCookieOf(config.defences);
  return {
    engine,
    store,
    config,
    guard,
    guards: {
      password: (o) => guard('password', o),
      totp: (o) => guard('totp', o),
      otpSms: (o) => guard('otp_sms', o),
      otpEmail: (o) => guard('otp_email', o),
      recoveryCode: (o) => guard('recovery_code', o),
    },
    checks,
    routers,
    activity,
    ...(cookie !== undefined
      ? {
          deviceCookie: {
            name: cookie.name,
            read: (req: Request) => cookie.read(req.headers.cookie),
            write: (res: Response, token: string) => {
              res.append('Set-Cookie', cookie.serialize(token));
            },
          },
        }
      : {}),
    ...(throttle ? { throttle } : {}),
    drain,
    close(timeoutMs = 5000) {
      closing ??= (async () => {
        const deadline = Date.now() + timeoutMs;
        await drain();
        await engine.flushCompensations(deadline - Date.now());
        engine.close();
        await store.close();
      })();
      return closing;
    },
  };
}

/**
 * The spray throttle's counter on the engine's store: the RedisStore's own ioredis client (and
 * key prefix, and command timeout), or in process beside a MemoryStore. Another store has no
 * counter to share: an OptionError.
 */
function sprayCounterOf(store: LockoutStore, config: LockoutConfig['sprayThrottle']) {
  const counted = { points: config.failures, windowSeconds: config.windowSeconds };
  if (store instanceof RedisStore) {
    return createSprayCounter({
      ...counted,
      redis: store.client,
      keyPrefix: `${store.prefix}:spray`,
      timeoutMs: store.timeoutMs,
    });
  }
  if (store instanceof MemoryStore) return createSprayCounter({ ...counted, keyPrefix: 'lg:spray' });
  throw optionError(
    'createLockout',
    'defences.sprayThrottle',
    `needs a MemoryStore or a RedisStore (its counter lives beside the lockout state), got a ${store.kind} store`,
  );
}
