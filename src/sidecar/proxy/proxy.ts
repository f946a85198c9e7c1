/**
 * Reverse-proxy mode: lockgate in front of an auth service that cannot change.
 *
 * Every request is forwarded to the upstream. Requests to a configured login route are judged:
 * the body is buffered (bounded), the user and org are read from it (or from a header, the query
 * or the path), one attempt is reserved in the engine BEFORE the upstream sees the credential,
 * and the reservation is settled exactly once from the upstream's status (success, failure, or
 * released uncounted). A locked user never reaches the upstream. Everything else streams through
 * untouched, in both directions, without buffering.
 *
 * createProxy composes the parts, one concern each: routes.ts (which requests are logins),
 * read.ts (reading a login request, G6), login.ts (reserve → forward → judge → settle → relay;
 * judge.ts, mimic.ts), headers.ts (forwarding headers), forward.ts (the upstream: undici Pool,
 * pass-through streaming, relaying, 502/504), answers.ts (the proxy's own answers) and
 * shutdown.ts.
 */
import { randomInt } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { LockoutEngine } from '../../core/engine';
import { InvalidArgumentError } from '../../core/errors';
import type { SprayThrottle } from '../../core/spray-throttle';
import { AMBIGUOUS_PATH, BAD_TARGET, INTERNAL, SHUTTING_DOWN, writeAnswer } from './answers';
import { compileTrust, parseProxyConfig, type ProxyConfig, type ProxyConfigInput } from './config';
import { createPassThrough, createPool, noop, type ProxyLogger } from './forward';
import { createUpstreamHeaders } from './headers';
import { createLogin, type ProxyLoginEvent } from './login';
import { compileRoutes, requestTarget } from './routes';
import { createShutdown } from './shutdown';

export { HOP_BY_HOP_HEADERS, isClientIpHeader } from './headers';
export { normalizePath } from './routes';
export type { ProxyLogger } from './forward';
export type { ProxyLoginEvent, ProxyLoginOutcome } from './login';

export interface ProxyOptions {
  /**
   * The lockout engine. The proxy does not close it. G4 is the engine's `onStoreError`: fail-closed
   * answers a login 503 code 14 while the store is down and the upstream is never reached
   * unchecked; fail-open forwards the login without lockout (the engine tells `onFailOpen`, and the
   * proxy warns). A settle the store did not confirm is compensated by the engine.
   */
  readonly engine: LockoutEngine;
  /** The `proxy` section of the configuration, raw or parsed (see proxyConfigSchema). */
  readonly config: ProxyConfigInput | ProxyConfig;
  /** Where warnings go (upstream failures, settle failures, fail-open). Default: nowhere. */
  readonly logger?: ProxyLogger;
  /** Told once per login request. Must not throw. */
  readonly onLogin?: (event: ProxyLoginEvent) => void;
  /**
   * Mimic mode's source of randomness: an integer in [0, n). Default: node:crypto's randomInt.
   * Tests pass a seeded one.
   */
  readonly randomInt?: (n: number) => number;
  /**
   * Spray throttling (createLockout's `lockout.throttle`, when `defences.sprayThrottle` is on):
   * login failures are counted per client address — the nearest X-Forwarded-For address that
   * `trustProxy` does not trust, else the peer — and a throttled client is answered 429 before
   * anything is reserved or forwarded.
   */
  readonly throttle?: SprayThrottle;
}

/** A request listener for node:http and an Express middleware at once (it never calls `next`). */
export type ProxyHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  next?: (error?: unknown) => void,
) => void;

export interface LockgateProxy {
  /** Mount with `app.use(proxy.handle)` (after lockgate's own routes, before any body parser) or `http.createServer(proxy.handle)`. */
  readonly handle: ProxyHandler;
  /** The parsed configuration. */
  readonly config: ProxyConfig;
  /**
   * Refuses new requests (503), waits for login requests in flight to be settled, then closes the
   * upstream connections (waiting up to `timeoutMs` for responses still streaming). Idempotent.
   */
  close(): Promise<void>;
}

const NO_LOGGER: ProxyLogger = { warn: noop, error: noop, debug: noop };

/** Creates the reverse proxy. Throws InvalidArgumentError naming the bad option or field. */
export function createProxy(options: ProxyOptions): LockgateProxy {
  if (!options || typeof options !== 'object') {
    throw new InvalidArgumentError('Errors.Options.Invalid', 'options must be an object', 'options');
  }
  const { engine, logger = NO_LOGGER, onLogin } = options;
  if (!engine || typeof engine.reserve !== 'function' || typeof engine.settle !== 'function') {
    throw new InvalidArgumentError(
      'Errors.Options.Invalid',
      'engine must be a LockoutEngine (new LockoutEngine({ store }))',
      'engine',
    );
  }
  if ('onStoreError' in options) {
    throw new InvalidArgumentError(
      'Errors.Options.Invalid',
      "onStoreError is the engine's option now: new LockoutEngine({ store, onStoreError })",
      'onStoreError',
    );
  }
  const config = parseProxyConfig(options.config);

  const report = (event: ProxyLoginEvent): void => {
    if (!onLogin) return;
    try {
      onLogin(event);
    } catch {
      // an observer must not change the answer
    }
  };
  const findRoute = compileRoutes(config.routes);
  const trust = compileTrust(config.trustProxy);
  const upstreamHeaders = createUpstreamHeaders({ trust, preserveHost: config.preserveHost });
  const pool = createPool(config);
  const passThrough = createPassThrough(pool, upstreamHeaders, logger);
  const login = createLogin({
    engine,
    config,
    logger,
    report,
    pool,
    upstreamHeaders,
    randomInt: options.randomInt ?? ((n: number) => randomInt(n)),
    trust,
    ...(options.throttle ? { throttle: options.throttle } : {}),
  });
  const shutdown = createShutdown(pool, config.timeoutMs);

  const handle: ProxyHandler = (req, res) => {
    // A listener of node:http's own (the sidecar's, or http.createServer(proxy.handle)) has no
    // Express around it to turn a throw into a 500: one here would end the process.
    try {
      route(req, res);
    } catch (error) {
      logger.error({ err: error }, 'lockgate proxy: request failed');
      if (!res.headersSent && !res.destroyed) writeAnswer(res, INTERNAL);
      req.resume();
    }
  };
  const route = (req: IncomingMessage, res: ServerResponse): void => {
    if (shutdown.closing) {
      res.setHeader('connection', 'close');
      writeAnswer(res, SHUTTING_DOWN);
      req.resume();
      return;
    }
    const target = requestTarget(req);
    // A fragment is never sent in a request target (RFC 9110 7.1): readers cut it or not.
    if (target === undefined || target.includes('#')) {
      writeAnswer(res, BAD_TARGET);
      req.resume();
      return;
    }
    const q = target.indexOf('?');
    const path = q < 0 ? target : target.slice(0, q);
    const found = findRoute(req.method ?? 'GET', path);
    if (!found) {
      passThrough(req, res, target, path);
      return;
    }
    if (found.ambiguous) {
      writeAnswer(res, AMBIGUOUS_PATH);
      req.resume();
      report({
        route: found.route.path,
        factor: found.route.factor,
        outcome: 'bad_request',
        status: 400,
        seconds: 0,
      });
      return;
    }
    const work = login(req, res, found.route, found.params, target, path).catch((error: unknown) => {
      logger.error({ err: error, path }, 'lockgate proxy: login request failed');
      if (!res.headersSent && !res.destroyed) writeAnswer(res, INTERNAL);
    });
    shutdown.track(work);
  };

  return { handle, config, close: () => shutdown.close() };
}
