/**
 * The sidecar decision service: `createLockout` (the one composition root of the engine, the
 * verifiers, the codes and the API routers, shared with the middleware) on the configured store,
 * plus what only a server has: /healthz, /readyz, /metrics, /openapi.json, the reverse proxy,
 * logs, audit lines and a graceful stop.
 *
 * `startSidecar(config)` resolves once the server listens and answers its real address (port 0
 * picks a free port); `close()` stops accepting, drains in-flight requests (up to
 * `shutdownTimeoutMs`), then closes the store and its Redis client.
 */
import { readFileSync } from 'node:fs';
import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import type { z } from 'zod';
import express, { type Express, type RequestHandler } from 'express';
import {
  LockoutEngine,
  type CompensationEvent,
  type FailOpenNotice,
  type LockoutEvent,
} from '../core/engine';
import { StoreUnavailableError } from '../core/errors';
import type { LockoutStore } from '../core/store';
import { persistenceWarning, readRedisPersistence, type RedisPersistence } from '../store/redis/persistence';
import { createLockout } from '../express/lockout';
import type { AuditEntry } from '../http/routers';
import { createTokenAuthorizer, type Authorize } from '../http/auth';
import { combineAuthorizers, createJwtAuthorizer } from '../http/jwt';
import { createErrorHandler, createNotFoundHandler, sendError } from '../http/errors';
import type { HealthBody, ReadinessBody } from '../http/schemas';
import { createIssueLimiter } from '../verify/issue-limiter';
import type { SidecarConfig } from './config';
import { createLogger, redactPath, type Logger } from './logger';
import { createMetrics, type SidecarMetrics } from './metrics';
import { buildOpenApiDocument } from './openapi';
import { createProxy, type LockgateProxy } from './proxy/proxy';
import { createSidecarEvents } from './events';
import { createSidecarStore, waitForRedis, type SidecarStore } from './store';

type Readiness = z.output<typeof ReadinessBody>;

export interface StartSidecarOptions {
  /** Where logs go. Default: a pino logger on stdout at `config.log.level`. */
  readonly logger?: Logger;
  /**
   * How long to wait at start for Redis to accept connections (default 5000 ms). The sidecar
   * starts anyway after that: /readyz answers 503 and checks answer 503 (or fail open) until
   * Redis is reachable, and it connects by itself when Redis comes up.
   */
  readonly redisConnectTimeoutMs?: number;
}

export interface SidecarHandle {
  /** `http://host:port` of the listening server. */
  readonly url: string;
  /** Base URL of the reverse proxy when it has its own listener (proxy.listen). */
  readonly proxyUrl?: string;
  /** `<url>/console/`: the admin console (unless console.enabled is false or the reverse proxy shares the listener). */
  readonly consoleUrl?: string;
  readonly port: number;
  /** The Express app (tests walk its router stack). */
  readonly app: Express;
  readonly engine: LockoutEngine;
  readonly store: LockoutStore;
  readonly metrics: SidecarMetrics;
  /**
   * Replaces the authorizer with one built from `config.auth` (static tokens, and JWTs when
   * `auth.jwt` is set). Only `auth` is applied: a change in any other section is logged at warn
   * level as needing a restart. Throws when the new authorizer cannot be built; the old one stays.
   */
  reloadAuth(config: SidecarConfig): void;
  /** Stops accepting, drains in-flight requests, closes the store. Idempotent. */
  close(): Promise<void>;
}

/** Starts the sidecar on `config.server.host:port`. */
export async function startSidecar(
  config: SidecarConfig,
  options: StartSidecarOptions = {},
): Promise<SidecarHandle> {
  const logger = options.logger ?? createLogger(config.log.level);
  const metrics = createMetrics();

  const sidecarStore: SidecarStore = createSidecarStore(
    config,
    (operation) => metrics.storeError(operation),
    {
      // The memory store warns when it evicts idle users to stay under store.memory.maxUsers.
      onWarning: (message) => logger.warn({ store: 'memory' }, message),
    },
  );
  const { store } = sidecarStore;
  metrics.watchStore(store);
  // Issue 14: the event record and, when endpoints are configured, the webhook sender.
  const sidecarEvents = createSidecarEvents(config, sidecarStore.client, metrics, logger);
  if (sidecarStore.client) {
    const ready = await waitForRedis(sidecarStore.client, options.redisConnectTimeoutMs ?? 5000);
    if (!ready) logger.warn({ store: 'redis' }, 'Redis is not reachable yet; answering 503 until it is');
  }
  // Without AOF or RDB a Redis restart loses every lock: warned at start (and whenever the client
  // connects again to a Redis without it), and shown in /readyz.
  const redisClient = sidecarStore.client;
  let persistence: RedisPersistence | undefined;
  let persistenceReadAt = 0;
  const readPersistence = async (): Promise<void> => {
    if (!redisClient) return;
    persistenceReadAt = Date.now();
    const read = await readRedisPersistence(redisClient);
    const warning = persistenceWarning(read);
    if (warning && read.state !== persistence?.state)
      logger.warn({ store: 'redis', persistence: read }, warning);
    persistence = read;
  };
  if (redisClient) {
    if (redisClient.status === 'ready') await readPersistence();
    redisClient.on('ready', () => void readPersistence());
  }

  const onEvent = (event: LockoutEvent): void => {
    metrics.onEvent(event);
    // Admin locks, unlocks and settings changes are audited by the router, with the token's name.
    // A lock by failures is audited here, with the name of the token whose check locked the user.
    if (event.type === 'lock' && event.reason === 'failures') {
      logger.info(
        {
          audit: true,
          action: 'user.lock',
          reason: 'failures',
          factor: event.factor,
          principal: event.caller,
          orgId: event.org,
          userId: event.user,
          ...(event.lockedUntil !== undefined
            ? { lockedUntil: new Date(event.lockedUntil).toISOString() }
            : {}),
          ...(event.scope !== undefined ? { scope: event.scope } : {}),
          outcome: 'ok',
        },
        'audit: user locked after failed checks',
      );
    }
    // Defences (issue 12): what a defence did, for the audit log (never a password or its hash).
    if (event.type === 'unlock' && event.reason === 'automatic') {
      logger.info(
        {
          audit: true,
          action: 'user.unlock',
          reason: 'automatic',
          orgId: event.org,
          userId: event.user,
          outcome: 'ok',
        },
        'audit: temporary lock ended',
      );
    } else if (event.type === 'forgiven') {
      logger.info(
        {
          audit: true,
          action: 'check.forgiven',
          factor: event.factor,
          principal: event.caller,
          orgId: event.org,
          userId: event.user,
          outcome: 'ok',
        },
        'audit: repeated wrong password not counted again',
      );
    }
    // Spray throttling: an address block (never a user) throttled after failed checks across users.
    if (event.type === 'throttle') {
      logger.info(
        {
          audit: true,
          action: 'client.throttle',
          reason: 'failures',
          ip: event.ip,
          failures: event.failures,
          until: new Date(event.until).toISOString(),
          principal: event.caller,
          outcome: 'ok',
        },
        'audit: client address block throttled after failed checks across users',
      );
    }
  };
  const onFailOpen = (notice: FailOpenNotice): void => {
    metrics.failOpen(notice.factor ?? 'unknown');
    logger.warn(
      {
        failOpen: true,
        operation: notice.operation,
        orgId: notice.org,
        userId: notice.user,
        factor: notice.factor,
      },
      'store unavailable: answered without lockout (onStoreError: fail-open)',
    );
  };
  const onCompensation = (event: CompensationEvent): void => {
    metrics.compensation(event);
    if (event.type !== 'abandoned') return;
    const { task } = event;
    logger.warn(
      {
        compensation: event.reason,
        operation: task.origin,
        outcome: task.outcome,
        orgId: task.subject.org,
        userId: task.subject.user,
        factor: task.factor,
        ...(event.error !== undefined ? { err: errorSummary(event.error) } : {}),
      },
      'store write of unknown outcome could not be compensated before its lease ended',
    );
  };
  // The sidecar is createLockout (the engine, the verifiers, the codes and the API routers: the
  // one composition root it shares with the middleware) plus what only a server has: health,
  // metrics, OpenAPI, the reverse proxy, logs and signals.
  // Static tokens, then JWTs when auth.jwt is set (buildAuthorizer). Swappable: reloadAuth
  // (SIGHUP) replaces it, and the `authorize` closure below reads it on every request.
  let tokenOrJwt: Authorize = buildAuthorizer(config.auth, config.instance.id, logger);
  // The audit lines of what a check caused name its caller (CheckOptions.caller, set by the
  // check routes from the token): no AsyncLocalStorage, whose promise hooks, once on, cost every
  // promise of the process (issue 16: async_hooks 2-4 % of a proxied login's CPU profile).
  const authorize: Authorize = (req, permission, target) => tokenOrJwt(req, permission, target);
  if (config.otp.pepper === undefined && config.store.type === 'redis') {
    logger.warn(
      'otp.pepper is not set: SMS/Email codes issued by this process can be checked only by this process',
    );
  }
  const lockout = createLockout({
    store,
    instanceId: config.instance.id,
    instance: {
      maxPasswordAttempts: config.instance.maxPasswordAttempts,
      maxOtpAttempts: config.instance.maxOtpAttempts,
    },
    leaseMs: config.leaseMs,
    ...(config.evaluationTimeoutMs !== undefined ? { evaluationTimeoutMs: config.evaluationTimeoutMs } : {}),
    onStoreError: config.onStoreError,
    ...(config.defences !== undefined ? { defences: config.defences } : {}),
    onFailOpen,
    onCompensation,
    onEvent,
    ...(sidecarEvents.eventLog ? { eventLog: sidecarEvents.eventLog } : {}),
    // Abandoned compensations are logged by onCompensation; the sidecar uses no guards or checks.
    onError: (error, context) => {
      if (context.operation !== 'router' || !context.req) return;
      logger.error(
        { err: error, method: context.req.method, path: redactPath(context.req.path) },
        'request failed',
      );
    },
    password: {
      ...config.password.argon2,
      onWarning: (message) => logger.warn({ setting: 'password.argon2' }, message),
    },
    codes: {
      ttlMs: { sms: config.otp.smsTtlSeconds * 1000, email: config.otp.emailTtlSeconds * 1000 },
      ...(config.otp.pepper !== undefined ? { pepper: config.otp.pepper } : {}),
      limiter: createIssueLimiter({
        ...(sidecarStore.client
          ? { redis: sidecarStore.client, keyPrefix: `${config.store.redis.prefix}:otp-issue` }
          : {}),
        points: config.otp.issueLimit.points,
        durationSec: config.otp.issueLimit.durationSeconds,
      }),
    },
    authorize,
    audit: (entry: AuditEntry): void => {
      logger.info({ audit: true, ...entry }, `audit: ${entry.action}`);
    },
    bodyLimit: config.server.bodyLimit,
  });
  const { engine } = lockout;
  if (lockout.throttle) {
    const { failures, windowSeconds, blockSeconds, ipv6Prefix } = lockout.throttle.config;
    logger.info(
      { sprayThrottle: { failures, windowSeconds, blockSeconds, ipv6Prefix } },
      'spray throttling on: check and attempt requests are throttled by their clientIp (a request without one cannot be); proxy logins by their client address',
    );
  }
  metrics.watchEngine(engine);

  const version = packageVersion();
  const openApi = JSON.stringify(buildOpenApiDocument({ version }));
  let storeUp = true;
  let closing = false;

  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', config.server.trustProxy);
  app.set('etag', false);
  /** What every request gets first, through the app or straight to the proxy. */
  const startRequest = (req: IncomingMessage, res: ServerResponse): void => {
    if (closing) res.setHeader('Connection', 'close');
    // The request line is a debug line: no timer, listener or closure per request below that level.
    if (logger.isLevelEnabled('debug')) logRequest(req, res);
  };
  const requestStart: RequestHandler = (req, res, next) => {
    startRequest(req, res);
    next();
  };
  const logRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const started = process.hrtime.bigint();
    res.once('finish', () => {
      logger.debug(
        {
          method: req.method,
          path: redactPath(pathOf(req.url)),
          status: res.statusCode,
          ms: Number(process.hrtime.bigint() - started) / 1e6,
        },
        'request',
      );
    });
  };
  app.use(requestStart);

  app.get('/healthz', (_req, res) => {
    res.setHeader('Cache-Control', 'no-store');
    const answer: z.output<typeof HealthBody> = { status: 'ok' };
    res.json(answer);
  });
  app.get('/readyz', async (_req, res) => {
    res.setHeader('Cache-Control', 'no-store');
    try {
      await store.ping();
      metrics.setStoreUp(true);
      if (!storeUp) logger.info({ store: store.kind }, 'store reachable again');
      storeUp = true;
      // The sidecar's store is a memory or a Redis store (createSidecarStore).
      const kind = store.kind as Readiness['store'];
      if (!redisClient) {
        res.json({ status: 'ok', store: kind } satisfies Readiness);
        return;
      }
      if (Date.now() - persistenceReadAt >= 10_000) await readPersistence();
      const warning = persistence ? persistenceWarning(persistence) : undefined;
      res.json({
        status: 'ok',
        store: kind,
        persistence: persistence?.state ?? 'unknown',
        ...(warning ? { warning } : {}),
      } satisfies Readiness);
    } catch (error) {
      metrics.setStoreUp(false);
      if (storeUp) logger.warn({ store: store.kind, err: errorSummary(error) }, 'store unreachable');
      storeUp = false;
      sendError(res, error instanceof StoreUnavailableError ? error : new StoreUnavailableError());
    }
  });
  app.get('/metrics', async (_req, res) => {
    res.setHeader('Cache-Control', 'no-store');
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  app.get('/openapi.json', (_req, res) => {
    res.type('application/json').send(openApi);
  });

  // The admin console (static files calling the API above with the user's token). Not when the
  // reverse proxy shares this listener: there every other path belongs to the auth service,
  // which may have a /console of its own (give the proxy its own listener, proxy.listen).
  const proxyShares = config.proxy !== undefined && config.proxy.listen === undefined;
  const serveConsole = config.console.enabled && !proxyShares;
  if (serveConsole) app.use('/console', lockout.routers.console());

  app.use(
    lockout.routers.all({
      observeCheck: (factor, outcome, seconds) => metrics.observeCheckLatency(factor, outcome, seconds),
      ...(sidecarEvents.deadLetters ? { deadLetters: sidecarEvents.deadLetters } : {}),
      onNoClientIp: (route) => metrics.noClientIp(route),
    }),
  );
  // Reverse-proxy mode: everything that is not lockgate's own goes to the auth service.
  const proxy: LockgateProxy | undefined = config.proxy
    ? createProxy({
        engine,
        config: config.proxy,
        logger,
        ...(lockout.throttle ? { throttle: lockout.throttle } : {}),
        onLogin: (event) => metrics.proxyLogin(event.factor, event.outcome, event.seconds),
      })
    : undefined;
  // On its own listener (proxy.listen) the proxy answers every request there; else it takes
  // every request lockgate's own routes did not.
  const proxyApart = proxy !== undefined && config.proxy?.listen !== undefined;
  if (proxy && !proxyApart) app.use(proxy.handle);
  else app.use(createNotFoundHandler());
  // Proxied requests never enter Express: its request pipeline (prototype swaps, the router's
  // walk over every layer) cost three times the proxying itself (issue 16: pass-through on
  // node:http 13 700 req/s, behind Express 4 000, same run). The proxy reads nothing Express adds
  // and answers its own errors. Shared listener: a path whose
  // first segment is none of lockgate's own goes straight to the proxy; any other still goes
  // through the app, whose routes answer it or fall through to the proxy as before.
  const proxyDirect: RequestListener | undefined = proxy
    ? (req, res) => {
        startRequest(req, res);
        proxy.handle(req, res);
      }
    : undefined;
  app.use(
    createErrorHandler({
      onError: (error, req) =>
        logger.error({ err: error, method: req.method, path: redactPath(req.path) }, 'request failed'),
    }),
  );

  const front: RequestListener =
    proxyDirect && !proxyApart
      ? (req, res) => (isOwnPath(req.url) ? app(req, res) : proxyDirect(req, res))
      : app;
  const server = await listen(front, config.server.host, config.server.port).catch(async (error: unknown) => {
    await sidecarEvents.close();
    await proxy?.close();
    await lockout.close(0);
    await sidecarStore.close();
    throw error;
  });
  const proxyServer =
    proxyDirect && proxyApart && config.proxy?.listen
      ? await listen(proxyDirect, config.proxy.listen.host, config.proxy.listen.port).catch(
          async (error: unknown) => {
            server.close();
            await proxy.close();
            await lockout.close(0);
            await sidecarStore.close();
            throw error;
          },
        )
      : undefined;
  const servers = proxyServer ? [server, proxyServer] : [server];
  sidecarEvents.start();
  const sockets = new Set<Socket>();
  for (const s of servers) {
    s.keepAliveTimeout = 5000;
    s.on('connection', (socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
    });
  }

  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  const proxyAddress = proxyServer?.address() as AddressInfo | undefined;
  const proxyUrl = proxyAddress
    ? `http://${proxyAddress.family === 'IPv6' ? `[${proxyAddress.address}]` : proxyAddress.address}:${proxyAddress.port}`
    : undefined;

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closed ??= (async () => {
      closing = true;
      logger.info({ timeoutMs: config.shutdownTimeoutMs }, 'shutting down: draining in-flight requests');
      const deadline = Date.now() + config.shutdownTimeoutMs;
      const drained = Promise.all(
        servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
      );
      for (const s of servers) s.closeIdleConnections();
      // The proxy refuses new requests and settles the logins in flight (it closes its upstream pool).
      const proxyClosed = proxy
        ?.close()
        .catch((error: unknown) => logger.warn({ err: error }, 'proxy close failed'));
      // Connections that finish their request become idle: close them as they do.
      const sweep = setInterval(() => servers.forEach((s) => s.closeIdleConnections()), 50);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        drained.then(() => false),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(true), config.shutdownTimeoutMs);
        }),
      ]);
      clearInterval(sweep);
      clearTimeout(timer);
      if (timedOut) {
        logger.warn({ open: sockets.size }, 'shutdown timeout: closing the remaining connections');
        for (const s of servers) s.closeAllConnections();
        await drained;
      }
      await proxyClosed;
      // Webhook deliveries in flight are aborted (retried later, by this or another process).
      await sidecarEvents.close();
      // Writes of unknown outcome (G5) still queued are made before the store closes, within
      // what is left of shutdownTimeoutMs; those still pending then are abandoned (and logged).
      const pending = engine.compensationStats().pending;
      if (pending > 0) logger.info({ pending }, 'shutting down: finishing store writes of unknown outcome');
      await lockout.close(Math.max(0, deadline - Date.now()));
      await sidecarStore.close();
      logger.info('stopped');
    })());

  const reloadAuth = (next: SidecarConfig): void => {
    // Built first: a bad one throws here and the current authorizer stays in place.
    const built = buildAuthorizer(next.auth, config.instance.id, logger);
    tokenOrJwt = built;
    const notApplied = changedPaths(withoutAuth(config), withoutAuth(next));
    if (notApplied.length > 0) {
      logger.warn(
        { notApplied },
        `configuration reload: changes outside auth need a restart and were not applied: ${notApplied.join(', ')}`,
      );
    }
  };

  return {
    url,
    port: address.port,
    ...(proxyUrl ? { proxyUrl } : {}),
    ...(serveConsole ? { consoleUrl: `${url}/console/` } : {}),
    app,
    engine,
    store,
    metrics,
    reloadAuth,
    close,
  };
}

/**
 * Static tokens first (digest lookup, no I/O), then, when auth.jwt is set, JWTs checked against
 * the issuer's keys. A refused token answers the same 401 either way; why a JWT was refused is a
 * debug line (never the token). Throws when an authorizer cannot be built.
 */
function buildAuthorizer(auth: SidecarConfig['auth'], instanceId: string, logger: Logger): Authorize {
  const tokenAuthorizer = createTokenAuthorizer({ tokens: auth.tokens });
  const jwtConfig = auth.jwt;
  if (!jwtConfig) return tokenAuthorizer;
  const jwtAuthorizer = createJwtAuthorizer({
    ...jwtConfig,
    defaultOrg: instanceId,
    onReject: (reason) => logger.debug({ auth: 'jwt', reason }, 'JWT refused'),
    onKeysUnavailable: (reason) =>
      logger.warn({ auth: 'jwt', reason }, 'JWT not verified: the issuer keys could not be fetched (503)'),
  });
  if (
    !/^https:/.test(
      jwtConfig.jwksUri === 'discovery' ? jwtConfig.issuer : (jwtConfig.jwksUri ?? jwtConfig.issuer),
    )
  ) {
    logger.warn(
      { auth: 'jwt' },
      'auth.jwt: the issuer keys are fetched over plain http; use https outside tests',
    );
  }
  return combineAuthorizers(tokenAuthorizer, jwtAuthorizer);
}

function withoutAuth(config: SidecarConfig): Record<string, unknown> {
  const { auth: _auth, ...rest } = config;
  return rest;
}

/** The dotted paths (names only, never values) at which `a` and `b` differ. */
function changedPaths(a: unknown, b: unknown, prefix = ''): string[] {
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  if (isObject(a) && isObject(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => changedPaths(a[k], b[k], prefix ? `${prefix}.${k}` : k));
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [prefix || '(root)'];
}

/**
 * The first path segments (lower case) of every route lockgate serves itself: the API of
 * API.md (`/v1`, `/v2`, `/admin/v1`, `/management/v1`) and the server's own. With the reverse
 * proxy on the same listener, a request whose path starts with none of them cannot be one of
 * lockgate's (Express matches paths case-insensitively, on the undecoded path) and goes
 * straight to the proxy. The console is not served when the proxy shares the listener.
 * sidecar-server.test.ts checks every route the app has against this list.
 */
export const OWN_PATH_SEGMENTS: ReadonlySet<string> = new Set([
  'v1',
  'v2',
  'admin',
  'management',
  'healthz',
  'readyz',
  'metrics',
  'openapi.json',
]);

/** True when `url` may be one of lockgate's own routes (anything not an origin-form path is). */
export function isOwnPath(url: string | undefined): boolean {
  if (url === undefined || url.charCodeAt(0) !== 47 /* / */) return true;
  let end = 1;
  while (end < url.length) {
    const c = url.charCodeAt(end);
    if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */) break;
    end += 1;
  }
  return OWN_PATH_SEGMENTS.has(url.slice(1, end).toLowerCase());
}

/** The path of a request target, without its query. */
function pathOf(url: string | undefined): string {
  if (url === undefined) return '';
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}

function listen(handler: RequestListener, host: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer(handler).listen(port, host);
    const onError = (error: Error) => {
      server.off('listening', onListening);
      reject(error);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve(server);
    };
    server.once('error', onError);
    server.once('listening', onListening);
  });
}

/** A log-safe summary of an error: its class and stable code, never driver text with data. */
function errorSummary(error: unknown): { type: string; code?: string; cause?: string } {
  if (error instanceof Error) {
    const { cause, code } = error as { cause?: unknown; code?: unknown };
    return {
      type: error.name,
      ...(typeof code === 'string' ? { code } : {}),
      ...(cause instanceof Error ? { cause: cause.message } : {}),
    };
  }
  return { type: typeof error };
}

/** The version in the package's package.json (from src/sidecar or dist/cjs/sidecar). */
function packageVersion(): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i += 1) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'lockgate' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not here
    }
    dir = path.dirname(dir);
  }
  return '0.0.0';
}
