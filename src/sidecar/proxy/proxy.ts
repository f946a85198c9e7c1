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
 * Transport: undici (a Pool per upstream, keep-alive). `stream()` writes the upstream's body
 * straight into the client's response for pass-through; `request()` serves login routes, whose
 * status must be judged (and settled) before the answer is relayed.
 */
import { randomInt } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { match, type MatchFunction } from 'path-to-regexp';
import { Pool, type Dispatcher } from 'undici';
import type { LockoutEngine, Reservation, Settlement } from '../../core/engine';
import {
  BusyError,
  InvalidArgumentError,
  StoreUnavailableError,
  UserLockedError,
  isLockgateError,
} from '../../core/errors';
import { validateId, type Factor } from '../../core/subjects';
import { ERROR_DETAIL_TYPE, toHttpError, type HttpError } from '../../http/errors';
import {
  compileTrust,
  parseProxyConfig,
  type LockedResponseConfig,
  type ProxyConfig,
  type ProxyConfigInput,
  type JudgeRuleConfig,
  type ProxyRouteConfig,
  type Source,
  type StatusRange,
} from './config';
import { createMimic, type Mimic, type RecordedAnswer } from './mimic';
import {
  AmbiguousRequestError,
  UnsupportedTypeError,
  bodyType,
  formValues,
  isJsonObject,
  jsonField,
  normalizeName,
  normalizePath,
  parseJson,
  strictUtf8,
  type BodyType,
  type Normalization,
} from './read';

export { normalizePath } from './read';

/** The subset of a pino logger the proxy uses. */
export interface ProxyLogger {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

/** How one login request ended, for metrics and audit (never carries a credential). */
export type ProxyLoginOutcome =
  /** The upstream answered and its status was judged success / failure / neither (released). */
  | 'success'
  | 'failure'
  | 'release'
  /** Refused before the upstream: locked user, busy (G2), store down (fail-closed). */
  | 'locked'
  | 'busy'
  | 'store_unavailable'
  /** Store down and onStoreError fail-open: forwarded without lockout. */
  | 'fail_open'
  /** Refused before the upstream: no user/org, bad JSON, body too large. */
  | 'bad_request'
  | 'too_large'
  /** The upstream failed (502) or was too slow (504): released uncounted. */
  | 'upstream_error'
  | 'upstream_timeout'
  /** The client went away before its body was read: nothing reserved, nothing forwarded. */
  | 'aborted'
  /** An unexpected error (500, logged). */
  | 'error';

export interface ProxyLoginEvent {
  /** The route's path pattern as configured. */
  readonly route: string;
  readonly factor: Factor;
  readonly outcome: ProxyLoginOutcome;
  /** The status answered to the client. */
  readonly status: number;
  readonly orgId?: string;
  readonly userId?: string;
  readonly seconds: number;
}

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

/**
 * Hop-by-hop fields (RFC 9110 7.6.1, and RFC 2616 13.5.1's Proxy-* fields): never forwarded, in
 * either direction, nor are the fields named in Connection. `expect` is answered by node:http
 * itself (100 Continue) and `host` is set separately.
 */
export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
]);

type Verdict = 'success' | 'failure' | 'release';

type Params = Partial<Record<string, string | string[]>>;

interface CompiledRoute {
  readonly config: ProxyRouteConfig;
  readonly match: MatchFunction<Params>;
}

interface Answer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
}

/**
 * Client-IP fields (lower case, `_` read as `-`): an untrusted peer's are dropped, whatever their
 * spelling, so that the upstream never believes an address the client chose.
 */
const CLIENT_IP_HEADERS: ReadonlySet<string> = new Set([
  'forwarded',
  'x-real-ip',
  'true-client-ip',
  'x-client-ip',
  'client-ip',
  'cf-connecting-ip',
  'cf-connecting-ipv6',
  'fastly-client-ip',
  'x-cluster-client-ip',
  'fly-client-ip',
  'x-originating-ip',
  'x-remote-ip',
  'x-remote-addr',
  'x-proxyuser-ip',
  'x-envoy-external-address',
  'x-appengine-user-ip',
  'akamai-client-ip',
]);

/** Whether a header name (any case, `_` or `-`) carries a client address. */
export function isClientIpHeader(name: string): boolean {
  const n = name.toLowerCase().replace(/_/g, '-');
  return CLIENT_IP_HEADERS.has(n) || n.startsWith('x-forwarded-') || n.startsWith('x-original-forwarded-');
}

/** Largest upstream answer read whole (to judge it by its body, or to record it for mimic mode). */
const ANSWER_READ_LIMIT = 64 * 1024;

const noop = (): void => {};
/** Stands for "the login's own deadline passed" in upstreamFailed. */
const TIMED_OUT = Object.freeze({ code: 'LOCKGATE_UPSTREAM_TIMEOUT' });
const NO_LOGGER: ProxyLogger = { warn: noop, error: noop, debug: noop };
const CLOSE_GRACE_MS = 1000;

/** Creates the reverse proxy. Throws InvalidArgumentError naming the bad option or field. */
export function createProxy(options: ProxyOptions): LockgateProxy {
  if (!options || typeof options !== 'object') {
    throw new InvalidArgumentError('Errors.Options.Invalid', 'options must be an object', 'options');
  }
  const { engine, logger = NO_LOGGER, onLogin } = options;
  const pickInt = options.randomInt ?? ((n: number) => randomInt(n));
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
  // A login whose upstream outlives the reservation's lease would be counted as a failure by the
  // store before the proxy could release it: the upstream is the evaluation, bounded as the
  // engine bounds every evaluation (evaluationTimeoutMs, settled before the lease ends).
  const evaluationMs = engine.config.evaluationTimeoutMs;

  const trust = compileTrust(config.trustProxy);
  const routes: CompiledRoute[] = config.routes.map((r) => ({
    config: r,
    match: match(r.path, { decode: false, sensitive: false, trailing: true, end: true }),
  }));
  const locked = lockedAnswer(config.lockedResponse);
  const mimicSamples = config.mimic === true ? 256 : config.mimic ? config.mimic.samples : 0;
  const mimics = new Map<ProxyRouteConfig, Mimic>();
  if (mimicSamples > 0) for (const r of config.routes) mimics.set(r, createMimic(mimicSamples, pickInt));
  const timeoutMs = config.timeoutMs;
  const pool = new Pool(config.upstream, {
    connections: config.connections ?? null,
    connectTimeout: timeoutMs,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    keepAliveTimeout: 4_000,
  });
  const inFlight = new Set<Promise<void>>();
  let closing = false;

  // ---- shared helpers ---------------------------------------------------------------------

  const report = (event: ProxyLoginEvent): void => {
    if (!onLogin) return;
    try {
      onLogin(event);
    } catch {
      // an observer must not change the answer
    }
  };

  /**
   * The headers sent upstream, from rawHeaders so that repeated lines arrive as sent: hop-by-hop
   * fields, Host and Expect removed (Host set again per preserveHost), an untrusted peer's
   * client-IP fields dropped, X-Forwarded-For/Proto/Host set. A flat [name, value, …] list.
   */
  const upstreamHeaders = (req: IncomingMessage, skip?: ReadonlySet<string>): string[] => {
    const src = req.headers;
    const listed = connectionTokens(src.connection);
    const peer = peerAddress(req);
    const trusted = peer !== '' && trust(peer, 0);
    const out: string[] = [];
    const raw = req.rawHeaders;
    const priorFor: string[] = [];
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i]!;
      const value = raw[i + 1]!;
      const lower = name.toLowerCase();
      if (HOP_BY_HOP_HEADERS.has(lower) || lower === 'host' || lower === 'expect') continue;
      if (listed !== undefined && listed.has(lower)) continue;
      if (skip !== undefined && skip.has(lower)) continue;
      if (lower === 'x-forwarded-for') {
        if (trusted) priorFor.push(value);
        continue;
      }
      // An untrusted peer's forwarding claims are dropped: the upstream must not believe them.
      if (!trusted && isClientIpHeader(lower)) continue;
      out.push(name, value);
    }
    const host = src.host;
    if (config.preserveHost && host !== undefined) out.push('host', host);
    const chain = [...priorFor, ...(peer !== '' ? [peer] : [])].join(', ');
    if (chain !== '') out.push('x-forwarded-for', chain);
    if (!(trusted && src['x-forwarded-proto'])) {
      out.push('x-forwarded-proto', (req.socket as TLSSocket).encrypted ? 'https' : 'http');
    }
    if (!(trusted && src['x-forwarded-host']) && host !== undefined) out.push('x-forwarded-host', host);
    return out;
  };

  const upstreamFailed = (
    error: unknown,
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
  ): number => {
    const timeout = isTimeout(error);
    const status = timeout ? 504 : 502;
    if (isAbort(error) || res.destroyed) return status;
    logger.warn(
      { method: req.method, path, error: errorCode(error) },
      timeout ? 'upstream too slow: 504' : 'upstream failed: 502',
    );
    if (res.headersSent) {
      // Part of the answer is out: the client must see a broken response, not a short one.
      res.destroy();
      return status;
    }
    if (!req.complete) {
      res.setHeader('connection', 'close');
      req.resume();
    }
    writeAnswer(res, timeout ? UPSTREAM_TIMEOUT : UPSTREAM_FAILED);
    return status;
  };

  // ---- pass-through -----------------------------------------------------------------------

  const factory: Dispatcher.StreamFactory<ServerResponse> = ({ statusCode, headers, opaque }) => {
    opaque.writeHead(statusCode, downstreamHeaders(headers));
    return opaque;
  };

  const passThrough = (req: IncomingMessage, res: ServerResponse, target: string, path: string): void => {
    // undici takes an EventEmitter as its abort signal: much cheaper per request than an
    // AbortController (whose EventTarget listeners cost more than the rest of the hop).
    const clientGone = new EventEmitter();
    res.once('close', () => {
      if (!res.writableFinished) clientGone.emit('abort');
    });
    pool
      .stream(
        {
          path: target,
          method: req.method ?? 'GET',
          headers: upstreamHeaders(req),
          body: hasBody(req) ? req : null,
          signal: clientGone,
          opaque: res,
        },
        factory,
      )
      .catch((error: unknown) => {
        upstreamFailed(error, req, res, path);
      });
  };

  // ---- login routes -----------------------------------------------------------------------

  const login = async (
    req: IncomingMessage,
    res: ServerResponse,
    route: ProxyRouteConfig,
    params: Params,
    target: string,
    path: string,
  ): Promise<void> => {
    const started = process.hrtime.bigint();
    let orgId: string | undefined;
    let userId: string | undefined;
    const done = (outcome: ProxyLoginOutcome, status: number): void =>
      report({
        route: route.path,
        factor: route.factor,
        outcome,
        status,
        ...(orgId !== undefined ? { orgId } : {}),
        ...(userId !== undefined ? { userId } : {}),
        seconds: Number(process.hrtime.bigint() - started) / 1e9,
      });
    const refuse = (outcome: ProxyLoginOutcome, answer: Answer): void => {
      writeAnswer(res, answer);
      done(outcome, answer.status);
    };

    // 1. the body, bounded
    if (req.readableEnded) {
      logger.error(
        { method: req.method, path },
        'lockgate proxy: the login body was consumed before the proxy (mount it before body parsers)',
      );
      refuse('error', INTERNAL);
      return;
    }
    const encoding = req.headers['content-encoding'];
    if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
      req.resume();
      refuse('bad_request', UNSUPPORTED_ENCODING);
      return;
    }
    const body = await readBody(req, config.bodyLimit);
    if (body === 'aborted') {
      done('aborted', 499);
      return;
    }
    if (body === 'too_large') {
      res.setHeader('connection', 'close');
      refuse('too_large', TOO_LARGE);
      return;
    }

    // 2. who
    try {
      const request = new LoginRequest(req, body, target, params);
      userId = request.value(route.user, 'userId');
      const org = route.org;
      if (org === undefined) orgId = engine.instanceId;
      else if ('fixed' in org) orgId = org.fixed;
      else {
        orgId = request.value(org, 'orgId', org.default);
        if (org.allow !== undefined && !org.allow.includes(orgId)) {
          throw new InvalidArgumentError(
            'Errors.Request.OrgNotAllowed',
            `org ${org.name} (${org.from}) is not one of the allowed orgs`,
            'orgId',
          );
        }
      }
    } catch (error) {
      if (error instanceof UnsupportedTypeError) {
        refuse('bad_request', UNSUPPORTED_TYPE);
        return;
      }
      refuse('bad_request', toAnswer(toHttpError(error)));
      return;
    }

    // 3. reserve before the upstream sees the credential
    let reservation: Reservation;
    const reservedAt = process.hrtime.bigint();
    const mimic = mimics.get(route);
    let answeredAt: bigint;
    try {
      const r = await engine.reserve(orgId, userId, route.factor);
      answeredAt = process.hrtime.bigint();
      if (r.status === 'locked') {
        // Mimic mode: the upstream's own failure answer, after one of its own failure latencies.
        const replay = mimic?.answer();
        if (replay) {
          await mimic!.wait(res);
          writeReplay(res, replay);
          done('locked', replay.status);
          return;
        }
        refuse('locked', locked);
        return;
      }
      if (r.status === 'busy') {
        refuse('busy', toAnswer(toHttpError(new BusyError(r.retryAfterMs))));
        return;
      }
      reservation = r.reservation;
    } catch (error) {
      // Fail-closed: the engine has already queued the release of this attempt (G5).
      if (error instanceof StoreUnavailableError) {
        refuse('store_unavailable', toAnswer(toHttpError(error)));
        return;
      }
      const internal = !isLockgateError(error);
      if (internal) logger.error({ err: error, path }, 'lockgate proxy: reserve failed');
      refuse(internal ? 'error' : 'bad_request', toAnswer(toHttpError(error)));
      return;
    }
    const enforced = reservation.enforced !== false;
    if (!enforced) {
      logger.warn(
        { failOpen: true, orgId, userId, factor: route.factor, path },
        'store unavailable: login forwarded without lockout (onStoreError: fail-open)',
      );
    }

    // 4. settle exactly once
    let settled = false;
    const settle = async (verdict: Verdict): Promise<Settlement | undefined> => {
      if (settled) return undefined;
      settled = true;
      try {
        return await engine.settle(reservation, verdict);
      } catch (error) {
        logger.warn(
          { orgId, userId, factor: route.factor, verdict, error: errorCode(error) },
          'lockgate proxy: the store did not confirm a settle; the engine writes it again until the lease ends',
        );
        return undefined;
      }
    };

    // 5. forward the buffered body byte for byte. A client that goes away does not abort it:
    // the upstream may already be evaluating the credential, so its answer is still judged.
    const headers = upstreamHeaders(req, LOGIN_SKIP);
    const sendBody = body.length > 0 || hasBody(req);
    if (sendBody) headers.push('content-length', String(body.length));
    // The login's deadline: timeoutMs, and never past the lease (a native timer: undici's own
    // timers are coarse, about 1 s).
    const leftMs = evaluationMs - Number(process.hrtime.bigint() - reservedAt) / 1e6;
    const budgetMs = enforced ? Math.max(1, Math.min(timeoutMs, Math.floor(leftMs))) : timeoutMs;
    const deadline = new EventEmitter();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      deadline.emit('abort');
    }, budgetMs);
    let up: Dispatcher.ResponseData;
    try {
      up = await pool.request({
        path: target,
        method: req.method ?? 'POST',
        headers,
        body: sendBody ? body : null,
        idempotent: false,
        signal: deadline,
      });
    } catch (error) {
      await settle('release');
      const status = upstreamFailed(timedOut ? TIMED_OUT : error, req, res, path);
      done(status === 504 ? 'upstream_timeout' : 'upstream_error', status);
      return;
    } finally {
      clearTimeout(timer);
    }

    // 6. judge (by status, and by body where a rule or mimic mode needs it), settle, then relay
    // (so that the client's next try sees this one counted)
    const needBody = mimic !== undefined || bodyRulesFor(route, up.statusCode);
    let read: ReadAnswer | undefined;
    if (needBody) {
      try {
        read = await readAnswer(up.body, ANSWER_READ_LIMIT);
      } catch (error) {
        await settle('release');
        const status = upstreamFailed(error, req, res, path);
        done('upstream_error', status);
        return;
      }
    }
    const verdict = judge(route, up.statusCode, read?.complete ? read.body : undefined);
    const s = await settle(verdict);
    const outHeaders = downstreamHeaders(up.headers);
    if (verdict === 'success' && s?.locked) {
      // Locked (by an admin) while the upstream evaluated: the lock wins, as engine.check's.
      if (read === undefined || !read.complete) up.body.dump().catch(noop);
      const replay = mimic?.answer();
      if (replay) writeReplay(res, replay);
      else refuse('locked', locked);
      if (replay) done('locked', replay.status);
      return;
    }
    if (verdict === 'failure' && mimic !== undefined && read?.complete && enforced) {
      mimic.record(
        { status: up.statusCode, statusText: up.statusText, headers: outHeaders, body: read.body },
        Number(process.hrtime.bigint() - answeredAt) / 1e6,
        userId,
      );
    }
    if (read === undefined) relay(up, res, outHeaders);
    else relayRead(up, res, outHeaders, read);
    done(enforced ? verdict : 'fail_open', up.statusCode);
  };

  // ---- the handler ------------------------------------------------------------------------

  const handle: ProxyHandler = (req, res) => {
    if (closing) {
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
    const method = req.method ?? 'GET';
    let found: { route: ProxyRouteConfig; params: Params } | undefined;
    let ambiguous = false;
    const normalized = normalizePath(path);
    for (const r of routes) {
      if (r.config.method !== '*' && r.config.method !== method) continue;
      // Two readings of the path: Express's (the raw path, parameters decoded once) and the
      // normalized one (decoded, dot segments resolved, …). Either makes the request a login;
      // path parameters they both give must agree.
      const express = r.match(path);
      const loose = r.match(normalized);
      if (!express && !loose) continue;
      let params: Params = {};
      if (loose) params = loose.params;
      if (express) {
        const decoded = decodeParams(express.params);
        if (decoded === undefined || (loose && !sameParams(decoded, loose.params, r.config)))
          ambiguous = true;
        else params = decoded;
      }
      found = { route: r.config, params };
      break;
    }
    if (!found) {
      passThrough(req, res, target, path);
      return;
    }
    if (ambiguous) {
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
    inFlight.add(work);
    void work.finally(() => inFlight.delete(work));
  };

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closed ??= (async () => {
      closing = true;
      await Promise.allSettled([...inFlight]);
      let timer: NodeJS.Timeout | undefined;
      const graceful = pool.close().then(() => true);
      const late = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), Math.min(timeoutMs, 30_000) + CLOSE_GRACE_MS);
        timer.unref();
      });
      const ok = await Promise.race([graceful, late]);
      clearTimeout(timer);
      if (!ok) await pool.destroy().catch(noop);
    })());

  return { handle, config, close };
}

// ---- answers ------------------------------------------------------------------------------

function errorAnswer(status: number, code: number, id: string, message: string): Answer {
  return toAnswer({
    status,
    headers: {},
    body: { code, message, details: [{ '@type': ERROR_DETAIL_TYPE, id, message }] },
  });
}

function toAnswer(e: HttpError): Answer {
  return {
    status: e.status,
    headers: { ...e.headers, 'content-type': 'application/json' },
    body: Buffer.from(JSON.stringify(e.body)),
  };
}

/** gRPC DeadlineExceeded, not in GrpcCode (no engine error carries it). */
const DEADLINE_EXCEEDED = 4;
const UPSTREAM_FAILED = errorAnswer(502, 14, 'Errors.Upstream.Unavailable', 'Upstream unavailable');
const UPSTREAM_TIMEOUT = errorAnswer(
  504,
  DEADLINE_EXCEEDED,
  'Errors.Upstream.Timeout',
  'Upstream did not answer in time',
);
const TOO_LARGE = errorAnswer(413, 8, 'Errors.Request.TooLarge', 'Request body is too large');
const UNSUPPORTED_ENCODING = errorAnswer(
  415,
  3,
  'Errors.Request.UnsupportedEncoding',
  'Login request bodies must not be compressed (Content-Encoding)',
);
const BAD_TARGET = errorAnswer(400, 3, 'Errors.Request.Invalid', 'Request target is invalid');
const AMBIGUOUS_PATH = errorAnswer(
  400,
  3,
  'Errors.Request.Ambiguous',
  'Request path reads differently to different servers',
);
const UNSUPPORTED_TYPE = errorAnswer(
  415,
  3,
  'Errors.Request.UnsupportedType',
  'Login request bodies must be application/json or application/x-www-form-urlencoded',
);
/** Fields of a login request the proxy sets itself. */
const LOGIN_SKIP: ReadonlySet<string> = new Set(['content-length']);
const SHUTTING_DOWN = errorAnswer(503, 14, 'Errors.Proxy.ShuttingDown', 'Shutting down');
const INTERNAL = errorAnswer(500, 13, 'Errors.Internal', 'Internal error');

function lockedAnswer(config: LockedResponseConfig | undefined): Answer {
  if (!config) return toAnswer(toHttpError(new UserLockedError(undefined)));
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(config.headers ?? {})) headers[name.toLowerCase()] = value;
  let body = Buffer.alloc(0);
  if (typeof config.body === 'string') {
    body = Buffer.from(config.body);
    headers['content-type'] ??= 'text/plain; charset=utf-8';
  } else if (config.body !== undefined) {
    body = Buffer.from(JSON.stringify(config.body));
    headers['content-type'] ??= 'application/json';
  }
  return { status: config.status, headers, body };
}

function writeAnswer(res: ServerResponse, answer: Answer): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(answer.status, { ...answer.headers, 'content-length': answer.body.length });
  res.end(answer.body);
}

function relay(up: Dispatcher.ResponseData, res: ServerResponse, headers: OutgoingHttpHeaders): void {
  if (res.destroyed || res.writableEnded) {
    up.body.dump().catch(noop);
    return;
  }
  res.writeHead(up.statusCode, up.statusText || undefined, headers);
  // pipe(), not stream.pipeline(): pipeline aborts an AbortController (building a DOMException
  // with its stack) at the end of every response, a measurable cost per login.
  const body = up.body;
  body.once('error', () => res.destroy());
  res.once('close', () => {
    if (!body.readableEnded) body.destroy();
  });
  body.pipe(res);
}

interface ReadAnswer {
  /** The bytes read (all of them when complete). */
  readonly body: Buffer;
  /** False: the answer was longer than the limit; the rest is still in the stream. */
  readonly complete: boolean;
}

/** Reads an upstream answer whole, up to `limit` bytes (then stops, leaving the rest unread). */
function readAnswer(body: Dispatcher.ResponseData['body'], limit: number): Promise<ReadAnswer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = (): void => {
      body.off('data', onData);
      body.off('end', onEnd);
      body.off('error', onError);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      if (size > limit) {
        cleanup();
        body.pause();
        resolve({ body: Buffer.concat(chunks, size), complete: false });
      }
    };
    const onEnd = (): void => {
      cleanup();
      resolve({ body: Buffer.concat(chunks, size), complete: true });
    };
    const onError = (error: Error): void => {
      cleanup();
      reject(error);
    };
    body.on('data', onData);
    body.on('end', onEnd);
    body.on('error', onError);
  });
}

/** Relays an answer whose first bytes (or all) were read. */
function relayRead(
  up: Dispatcher.ResponseData,
  res: ServerResponse,
  headers: OutgoingHttpHeaders,
  read: ReadAnswer,
): void {
  if (read.complete) {
    if (res.destroyed || res.writableEnded) return;
    res.writeHead(up.statusCode, up.statusText || undefined, headers);
    res.end(read.body);
    return;
  }
  if (res.destroyed || res.writableEnded) {
    up.body.dump().catch(noop);
    return;
  }
  res.writeHead(up.statusCode, up.statusText || undefined, headers);
  res.write(read.body);
  const body = up.body;
  body.once('error', () => res.destroy());
  res.once('close', () => {
    if (!body.readableEnded) body.destroy();
  });
  body.pipe(res);
  body.resume();
}

/** A recorded upstream failure answer, replayed with a fresh Date (mimic mode). */
function writeReplay(res: ServerResponse, replay: RecordedAnswer): void {
  if (res.headersSent || res.destroyed) return;
  const headers: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(replay.headers)) {
    headers[name] = name === 'date' ? new Date().toUTCString() : value;
  }
  res.writeHead(replay.status, replay.statusText || undefined, headers);
  res.end(replay.body);
}

// ---- headers ------------------------------------------------------------------------------

/** The lower-case field names listed in Connection, or undefined. */
function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  const set = new Set<string>();
  for (const part of Array.isArray(value) ? value : [value]) {
    for (const token of part.split(',')) {
      const t = token.trim().toLowerCase();
      if (t) set.add(t);
    }
  }
  return set;
}

/** The upstream's response headers without hop-by-hop fields. */
function downstreamHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const listed = connectionTokens(headers.connection);
  const out: OutgoingHttpHeaders = {};
  for (const name of Object.keys(headers)) {
    if (HOP_BY_HOP_HEADERS.has(name) || (listed !== undefined && listed.has(name))) continue;
    const value = headers[name];
    if (value !== undefined) out[name] = value;
  }
  return out;
}

function peerAddress(req: IncomingMessage): string {
  const address = req.socket.remoteAddress ?? '';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

// ---- requests -----------------------------------------------------------------------------

/** Whether the request has a body (as type-is's hasBody). */
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** The request target in origin form (path and query), as received; undefined when unusable. */
function requestTarget(req: IncomingMessage): string | undefined {
  const url = (req as IncomingMessage & { originalUrl?: string }).originalUrl ?? req.url ?? '/';
  if (url.startsWith('/')) return url;
  // absolute form: URL would drop a fragment silently; the caller refuses it
  if (url.includes('#')) return url;
  try {
    const parsed = new URL(url);
    return parsed.pathname + parsed.search;
  } catch {
    return undefined;
  }
}

/** Reads the whole body, at most `limit` bytes. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | 'too_large' | 'aborted'> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) return Promise.resolve('too_large');
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (result: Buffer | 'too_large' | 'aborted'): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onAbort);
      req.off('close', onAbort);
      resolve(result);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        // Discard the rest; the answer closes the connection.
        finish('too_large');
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => finish(Buffer.concat(chunks, size));
    const onAbort = (): void => finish('aborted');
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onAbort);
    req.on('close', onAbort);
  });
}

/** A value source of a route (user, or org read from the request). */
type ValueSource = { readonly from: Source; readonly name: string } & Normalization;

/** Reads user and org from a buffered login request: one reading, the upstream's. */
class LoginRequest {
  private type: BodyType | undefined;
  private json: unknown;
  private form: string | undefined;

  constructor(
    private readonly req: IncomingMessage,
    private readonly body: Buffer,
    private readonly target: string,
    private readonly params: Params,
  ) {}

  /**
   * The value of `source`, normalized as configured and validated as an id. A missing value is a
   * 400 (or `fallback`); a value given twice, or that readers could take differently, is a 400
   * too: the upstream might read the other one.
   */
  value(source: ValueSource, field: 'userId' | 'orgId', fallback?: string): string {
    const what = `${source.name} (${source.from})`;
    let raw: unknown;
    switch (source.from) {
      case 'json':
      case 'form':
        raw = this.bodyField(source.name, what);
        break;
      case 'query': {
        const q = this.target.indexOf('?');
        raw = single(formValues(q < 0 ? '' : this.target.slice(q + 1), source.name, 'query'), what);
        break;
      }
      case 'header': {
        const lower = source.name.toLowerCase();
        // CGI-style readers (PHP, WSGI, Rack) take X_User for X-User: a second spelling is a 400.
        const raw2 = this.req.rawHeaders;
        for (let i = 0; i < raw2.length; i += 2) {
          const n = raw2[i]!.toLowerCase();
          if (n !== lower && n.replace(/_/g, '-') === lower.replace(/_/g, '-')) {
            throw new AmbiguousRequestError(`${what} is also given as ${raw2[i]!}`, what);
          }
        }
        raw = single(this.req.headersDistinct[lower] ?? [], what);
        break;
      }
      case 'param': {
        const v = this.params[source.name];
        raw = Array.isArray(v) ? v.join('/') : v;
        break;
      }
    }
    if (raw !== undefined && typeof raw !== 'string') {
      throw new InvalidArgumentError('Errors.Request.Invalid', `${what} must be a string`, field);
    }
    let value = raw;
    if (value !== undefined) value = normalizeName(value, source, what);
    if (value === undefined || value === '') {
      if (fallback !== undefined) return fallback;
      throw new InvalidArgumentError('Errors.Request.Missing', `${what} is required`, field);
    }
    return validateId(value, field === 'userId' ? `user ${what}` : `org ${what}`);
  }

  /** A field of the body, read as its Content-Type says (as express.json / express.urlencoded). */
  private bodyField(name: string, what: string): unknown {
    this.type ??= bodyType(this.req.headersDistinct['content-type'] ?? [], this.body);
    switch (this.type) {
      case 'none':
        return undefined;
      case 'json':
        this.json ??= parseJson(strictUtf8(this.body, 'Request body'));
        if (!isJsonObject(this.json)) return undefined;
        return jsonField(this.json, name, what);
      case 'form':
        this.form ??= strictUtf8(this.body, 'Request body');
        return single(formValues(this.form, name, 'body'), what);
    }
  }
}

function single(values: readonly string[], what: string): string | undefined {
  if (values.length > 1) throw new AmbiguousRequestError(`${what} must be given once`, what);
  return values[0];
}

/** Path parameters decoded once, as Express does; undefined when one is malformed. */
function decodeParams(params: Params): Params | undefined {
  const out: Params = {};
  try {
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined) continue;
      out[k] = Array.isArray(v) ? v.map((x) => decodeURIComponent(x)) : decodeURIComponent(v);
    }
  } catch {
    return undefined;
  }
  return out;
}

/** Whether two readings give the same value to every path parameter the route reads. */
function sameParams(a: Params, b: Params, route: ProxyRouteConfig): boolean {
  const names: string[] = [];
  if (route.user.from === 'param') names.push(route.user.name);
  if (route.org && !('fixed' in route.org) && route.org.from === 'param') names.push(route.org.name);
  const flat = (v: string | string[] | undefined) => (Array.isArray(v) ? v.join('/') : v);
  return names.every((n) => flat(a[n]) === flat(b[n]));
}

// ---- judging --------------------------------------------------------------------------------

const OAUTH2_RULES: readonly JudgeRuleConfig[] = [
  { status: [{ min: 400, max: 400 }], json: 'error', equals: ['invalid_grant'], verdict: 'failure' },
  { status: [{ min: 400, max: 400 }], verdict: 'release' },
];

function within(status: number, ranges: readonly StatusRange[]): boolean {
  return ranges.some((r) => status >= r.min && status <= r.max);
}

function rulesOf(route: ProxyRouteConfig): readonly JudgeRuleConfig[] {
  return route.judge.preset === 'oauth2-token' ? [...route.judge.rules, ...OAUTH2_RULES] : route.judge.rules;
}

/** Whether judging this status needs the answer's body. */
function bodyRulesFor(route: ProxyRouteConfig, status: number): boolean {
  return rulesOf(route).some(
    (r) => (r.json !== undefined || r.text !== undefined) && within(status, r.status),
  );
}

function ruleMatches(rule: JudgeRuleConfig, status: number, body: Buffer | undefined): boolean {
  if (!within(status, rule.status)) return false;
  if (rule.json === undefined && rule.text === undefined) return true;
  if (body === undefined) return false;
  const text = body.toString('utf8');
  if (rule.text !== undefined && !text.includes(rule.text)) return false;
  if (rule.json !== undefined) {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      return false;
    }
    let node = doc;
    for (const part of rule.json.split('.')) {
      if (typeof node !== 'object' || node === null || !Object.prototype.hasOwnProperty.call(node, part))
        return false;
      node = (node as Record<string, unknown>)[part];
    }
    if (rule.equals !== undefined) return typeof node === 'string' && rule.equals.includes(node);
    return node !== undefined && node !== null && node !== false && node !== '';
  }
  return true;
}

function judge(route: ProxyRouteConfig, status: number, body: Buffer | undefined): Verdict {
  for (const rule of rulesOf(route)) if (ruleMatches(rule, status, body)) return rule.verdict;
  if (within(status, route.judge.success)) return 'success';
  if (within(status, route.judge.failure)) return 'failure';
  return 'release';
}

// ---- upstream errors ----------------------------------------------------------------------

function errorCode(error: unknown): string {
  if (typeof error === 'object' && error !== null) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    if (error instanceof Error) return error.name;
  }
  return typeof error;
}

function isTimeout(error: unknown): boolean {
  const code = errorCode(error);
  return (
    code === 'UND_ERR_HEADERS_TIMEOUT' ||
    code === 'UND_ERR_BODY_TIMEOUT' ||
    code === 'UND_ERR_CONNECT_TIMEOUT' ||
    code === 'ETIMEDOUT' ||
    code === TIMED_OUT.code
  );
}

function isAbort(error: unknown): boolean {
  const code = errorCode(error);
  return code === 'UND_ERR_ABORTED' || code === 'AbortError' || code === 'ABORT_ERR';
}
