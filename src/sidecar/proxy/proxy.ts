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
  type ProxyRouteConfig,
  type ProxyValueSource,
} from './config';

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
  /** The lockout engine (a FailOpenEngine works too). The proxy does not close it. */
  readonly engine: LockoutEngine;
  /** The `proxy` section of the configuration, raw or parsed (see proxyConfigSchema). */
  readonly config: ProxyConfigInput | ProxyConfig;
  /** Where warnings go (upstream failures, settle failures, fail-open). Default: nowhere. */
  readonly logger?: ProxyLogger;
  /**
   * G4, store unreachable on a login route: `fail-closed` (default) answers 503 code 14 and the
   * upstream is never reached unchecked; `fail-open` forwards the login without lockout (warned).
   */
  readonly onStoreError?: 'fail-closed' | 'fail-open';
  /** Told once per login request. Must not throw. */
  readonly onLogin?: (event: ProxyLoginEvent) => void;
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

interface CompiledRoute {
  readonly config: ProxyRouteConfig;
  readonly match: MatchFunction<Partial<Record<string, string | string[]>>>;
}

interface Answer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
}

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
  const { engine, logger = NO_LOGGER, onStoreError = 'fail-closed', onLogin } = options;
  if (!engine || typeof engine.reserve !== 'function' || typeof engine.settle !== 'function') {
    throw new InvalidArgumentError(
      'Errors.Options.Invalid',
      'engine must be a LockoutEngine (new LockoutEngine({ store }))',
      'engine',
    );
  }
  if (onStoreError !== 'fail-closed' && onStoreError !== 'fail-open') {
    throw new InvalidArgumentError(
      'Errors.Options.Invalid',
      'onStoreError must be fail-closed or fail-open',
      'onStoreError',
    );
  }
  const config = parseProxyConfig(options.config);
  // A login whose upstream outlives the reservation's lease would be counted as a failure by the
  // store before the proxy could release it: login routes time out a little before the lease.
  const leaseMs = engine.config.leaseMs;
  const leaseMarginMs = Math.min(1000, Math.floor(leaseMs / 10));

  const trust = compileTrust(config.trustProxy);
  const routes: CompiledRoute[] = config.routes.map((r) => ({
    config: r,
    match: match(r.path, { decode: false, sensitive: false, trailing: true, end: true }),
  }));
  const locked = lockedAnswer(config.lockedResponse);
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

  /** The headers sent upstream: hop-by-hop removed, Host and X-Forwarded-* set. */
  const upstreamHeaders = (req: IncomingMessage): Record<string, string | string[]> => {
    const src = req.headers;
    const listed = connectionTokens(src.connection);
    const peer = peerAddress(req);
    const trusted = peer !== '' && trust(peer, 0);
    const out: Record<string, string | string[]> = {};
    for (const name of Object.keys(src)) {
      if (HOP_BY_HOP_HEADERS.has(name) || name === 'host' || name === 'expect') continue;
      if (listed !== undefined && listed.has(name)) continue;
      // An untrusted peer's forwarding claims are dropped: the upstream must not believe them.
      if (!trusted && (name.startsWith('x-forwarded-') || name === 'forwarded' || name === 'x-real-ip'))
        continue;
      const value = src[name];
      if (value !== undefined) out[name] = value;
    }
    const host = src.host;
    if (config.preserveHost && host !== undefined) out.host = host;
    const priorFor = trusted ? src['x-forwarded-for'] : undefined;
    if (peer !== '') out['x-forwarded-for'] = priorFor ? `${priorFor}, ${peer}` : peer;
    else if (priorFor) out['x-forwarded-for'] = priorFor;
    if (!(trusted && src['x-forwarded-proto'])) {
      out['x-forwarded-proto'] = (req.socket as TLSSocket).encrypted ? 'https' : 'http';
    }
    if (!(trusted && src['x-forwarded-host']) && host !== undefined) out['x-forwarded-host'] = host;
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
    params: Partial<Record<string, string | string[]>>,
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
      else orgId = request.value(org, 'orgId', org.default);
    } catch (error) {
      refuse('bad_request', toAnswer(toHttpError(error)));
      return;
    }

    // 3. reserve before the upstream sees the credential
    let reservation: Reservation | undefined;
    const reservedAt = process.hrtime.bigint();
    try {
      const r = await engine.reserve(orgId, userId, route.factor);
      if (r.status === 'locked') {
        refuse('locked', locked);
        return;
      }
      if (r.status === 'busy') {
        refuse('busy', toAnswer(toHttpError(new BusyError(r.retryAfterMs))));
        return;
      }
      reservation = r.reservation;
    } catch (error) {
      if (!(error instanceof StoreUnavailableError)) {
        const internal = !isLockgateError(error);
        if (internal) logger.error({ err: error, path }, 'lockgate proxy: reserve failed');
        refuse(internal ? 'error' : 'bad_request', toAnswer(toHttpError(error)));
        return;
      }
      if (onStoreError === 'fail-closed') {
        refuse('store_unavailable', toAnswer(toHttpError(error)));
        return;
      }
      logger.warn(
        { failOpen: true, orgId, userId, factor: route.factor, path },
        'store unavailable: login forwarded without lockout (onStoreError: fail-open)',
      );
    }

    // 4. settle exactly once
    let settled = false;
    const settle = async (verdict: Verdict): Promise<Settlement | undefined> => {
      if (settled || reservation === undefined) return undefined;
      settled = true;
      try {
        return await engine.settle(reservation, verdict);
      } catch (error) {
        logger.warn(
          { orgId, userId, factor: route.factor, verdict, error: errorCode(error) },
          'lockgate proxy: could not settle a login (an unsettled reservation counts as a failure when its lease ends)',
        );
        return undefined;
      }
    };

    // 5. forward the buffered body byte for byte. A client that goes away does not abort it:
    // the upstream may already be evaluating the credential, so its answer is still judged.
    const headers = upstreamHeaders(req);
    const sendBody = body.length > 0 || hasBody(req);
    if (sendBody) headers['content-length'] = String(body.length);
    // The login's deadline: timeoutMs, and never past the lease (a native timer: undici's own
    // timers are coarse, about 1 s).
    const leaseLeftMs = leaseMs - leaseMarginMs - Number(process.hrtime.bigint() - reservedAt) / 1e6;
    const budgetMs = reservation ? Math.max(1, Math.min(timeoutMs, Math.floor(leaseLeftMs))) : timeoutMs;
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

    // 6. judge, settle, then relay (so that the client's next try sees this one counted)
    const verdict = judge(route, up.statusCode);
    const s = await settle(verdict);
    if (verdict === 'success' && s?.locked) {
      // Locked (by an admin) while the upstream evaluated: the lock wins, as engine.check's.
      up.body.dump().catch(noop);
      refuse('locked', locked);
      return;
    }
    relay(up, res);
    done(reservation === undefined ? 'fail_open' : verdict, up.statusCode);
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
    if (target === undefined) {
      writeAnswer(res, BAD_TARGET);
      req.resume();
      return;
    }
    const q = target.indexOf('?');
    const path = q < 0 ? target : target.slice(0, q);
    const method = req.method ?? 'GET';
    let found: { route: ProxyRouteConfig; params: Partial<Record<string, string | string[]>> } | undefined;
    const normalized = normalizePath(path);
    for (const r of routes) {
      if (r.config.method !== '*' && r.config.method !== method) continue;
      const m = r.match(normalized);
      if (m) {
        found = { route: r.config, params: m.params };
        break;
      }
    }
    if (!found) {
      passThrough(req, res, target, path);
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

function relay(up: Dispatcher.ResponseData, res: ServerResponse): void {
  if (res.destroyed || res.writableEnded) {
    up.body.dump().catch(noop);
    return;
  }
  res.writeHead(up.statusCode, up.statusText || undefined, downstreamHeaders(up.headers));
  // pipe(), not stream.pipeline(): pipeline aborts an AbortController (building a DOMException
  // with its stack) at the end of every response, a measurable cost per login.
  const body = up.body;
  body.once('error', () => res.destroy());
  res.once('close', () => {
    if (!body.readableEnded) body.destroy();
  });
  body.pipe(res);
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
  try {
    const parsed = new URL(url);
    return parsed.pathname + parsed.search;
  } catch {
    return undefined;
  }
}

/**
 * The path a login route is matched against: percent-decoded (repeatedly, so double encoding
 * does not hide a login path), backslashes as slashes, `;params` removed from each segment, `.`
 * and `..` resolved, empty segments dropped. Upstreams differ in which of these they apply;
 * applying all of them can only make more requests count as logins, never fewer.
 */
export function normalizePath(path: string): string {
  let p = path;
  for (let i = 0; i < 3 && p.includes('%'); i++) p = percentDecode(p);
  const out: string[] = [];
  for (const raw of p.replace(/\\/g, '/').split('/')) {
    const semi = raw.indexOf(';');
    const segment = semi < 0 ? raw : raw.slice(0, semi);
    if (segment === '' || segment === '.') continue;
    if (segment === '..') out.pop();
    else out.push(segment);
  }
  return `/${out.join('/')}`;
}

function percentDecode(s: string): string {
  return s.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) =>
    Buffer.from(run.replace(/%/g, ''), 'hex').toString('utf8'),
  );
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

/** Reads user and org from a buffered login request. */
class LoginRequest {
  private json: unknown;
  private jsonParsed = false;
  private form: URLSearchParams | undefined;
  private query: URLSearchParams | undefined;

  constructor(
    private readonly req: IncomingMessage,
    private readonly body: Buffer,
    private readonly target: string,
    private readonly params: Partial<Record<string, string | string[]>>,
  ) {}

  /**
   * The value of `source`, normalized as configured and validated as an id. A missing value is a
   * 400 (or `fallback`); a value given twice is a 400 too: the upstream might read the other one.
   */
  value(source: ProxyValueSource, field: 'userId' | 'orgId', fallback?: string): string {
    const what = `${source.name} (${source.from})`;
    let raw: unknown;
    switch (source.from) {
      case 'json':
        raw = jsonField(this.parsedJson(), source.name);
        break;
      case 'form':
        this.form ??= new URLSearchParams(this.body.toString('utf8'));
        raw = single(this.form.getAll(source.name), what);
        break;
      case 'query': {
        const q = this.target.indexOf('?');
        this.query ??= new URLSearchParams(q < 0 ? '' : this.target.slice(q + 1));
        raw = single(this.query.getAll(source.name), what);
        break;
      }
      case 'header':
        raw = single(this.req.headersDistinct[source.name.toLowerCase()] ?? [], what);
        break;
      case 'param': {
        const v = this.params[source.name];
        raw = Array.isArray(v) ? v.join('/') : v;
        break;
      }
    }
    if (typeof raw === 'number' && Number.isSafeInteger(raw)) raw = String(raw);
    if (raw !== undefined && raw !== null && typeof raw !== 'string') {
      throw new InvalidArgumentError('Errors.Request.Invalid', `${what} must be a string`, field);
    }
    let value = raw ?? undefined;
    if (value !== undefined && source.trim) value = value.trim();
    if (value !== undefined && source.lowercase) value = value.toLowerCase();
    if (value === undefined || value === '') {
      if (fallback !== undefined) return fallback;
      throw new InvalidArgumentError('Errors.Request.Missing', `${what} is required`, field);
    }
    return validateId(value, field === 'userId' ? `user ${what}` : `org ${what}`);
  }

  private parsedJson(): unknown {
    if (!this.jsonParsed) {
      this.jsonParsed = true;
      try {
        this.json = JSON.parse(this.body.toString('utf8'));
      } catch {
        throw new InvalidArgumentError(
          'Errors.Request.MalformedJson',
          'Request body is not valid JSON',
          'body',
        );
      }
    }
    return this.json;
  }
}

function single(values: readonly string[], what: string): string | undefined {
  if (values.length > 1) {
    throw new InvalidArgumentError('Errors.Request.Invalid', `${what} must be given once`, what);
  }
  return values[0];
}

/** A field of a JSON object by name, or by dotted path (`checks.user.loginName`). */
function jsonField(json: unknown, name: string): unknown {
  if (!isObject(json)) return undefined;
  if (Object.prototype.hasOwnProperty.call(json, name)) return json[name];
  let node: unknown = json;
  for (const part of name.split('.')) {
    if (!isObject(node) || !Object.prototype.hasOwnProperty.call(node, part)) return undefined;
    node = node[part];
  }
  return node;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function judge(route: ProxyRouteConfig, status: number): Verdict {
  const within = (ranges: readonly { min: number; max: number }[]) =>
    ranges.some((r) => status >= r.min && status <= r.max);
  if (within(route.judge.success)) return 'success';
  if (within(route.judge.failure)) return 'failure';
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
