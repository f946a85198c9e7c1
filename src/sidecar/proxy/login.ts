/**
 * The login flow: read the request (bounded), reserve one attempt in the engine BEFORE the
 * upstream sees the credential, forward, judge the upstream's answer, settle the reservation
 * exactly once, then relay the answer. A locked user never reaches the upstream (mimic mode
 * answers as the upstream answers a wrong password).
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import type { LockoutEngine, Reservation, Settlement } from '../../core/engine';
import { deviceCookieOf } from '../../http/device-cookie';
import {
  BusyError,
  InvalidArgumentError,
  StoreUnavailableError,
  ThrottledError,
  isLockgateError,
} from '../../core/errors';
import type { SprayThrottle, ThrottleTicket } from '../../core/spray-throttle';
import type { Factor } from '../../core/subjects';
import { clientIp, type TrustProxy } from '../../http/client-ip';
import { toHttpError } from '../../http/errors';
import {
  INTERNAL,
  TOO_LARGE,
  UNSUPPORTED_ENCODING,
  UNSUPPORTED_TYPE,
  lockedAnswer,
  toAnswer,
  writeAnswer,
  writeReplay,
  type Answer,
} from './answers';
import type { ProxyConfig, ProxyRouteConfig } from './config';
import {
  ANSWER_READ_LIMIT,
  TIMED_OUT,
  errorCode,
  noop,
  readAnswer,
  relay,
  upstreamFailed,
  type ProxyLogger,
  type ReadAnswer,
} from './forward';
import { downstreamHeaders, hasBody, type UpstreamHeaders } from './headers';
import { bodyRulesFor, judge, type Verdict } from './judge';
import { createMimic, type Mimic } from './mimic';
import { LoginRequest, UnsupportedTypeError, readBody } from './read';
import type { Params } from './routes';

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
  /** Refused before anything was reserved: the client's address block is spray-throttled (429). */
  | 'throttled'
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

export interface LoginContext {
  readonly engine: LockoutEngine;
  readonly config: ProxyConfig;
  readonly logger: ProxyLogger;
  /** Tells the observer how a login ended (never throws). */
  readonly report: (event: ProxyLoginEvent) => void;
  readonly pool: Dispatcher;
  readonly upstreamHeaders: UpstreamHeaders;
  /** Mimic mode's randomness: an integer in [0, n). */
  readonly randomInt: (n: number) => number;
  /** Spray throttling, when on: counted per client address (as `trust` reads it). */
  readonly throttle?: SprayThrottle;
  /** The compiled `trustProxy`: which peers' X-Forwarded-For is believed (the client address). */
  readonly trust: TrustProxy;
}

/** Serves one login request: the request, its matched route and path parameters, its target and path. */
export type Login = (
  req: IncomingMessage,
  res: ServerResponse,
  route: ProxyRouteConfig,
  params: Params,
  target: string,
  path: string,
) => Promise<void>;

/** Fields of a login request the proxy sets itself. */
const LOGIN_SKIP: ReadonlySet<string> = new Set(['content-length']);

export function createLogin(ctx: LoginContext): Login {
  const { engine, config, logger, report, pool, upstreamHeaders, throttle } = ctx;
  // A login whose upstream outlives the reservation's lease would be counted as a failure by the
  // store before the proxy could release it: the upstream is the evaluation, bounded as the
  // engine bounds every evaluation (evaluationTimeoutMs, settled before the lease ends).
  const evaluationMs = engine.config.evaluationTimeoutMs;
  const deviceCookie = deviceCookieOf(engine.defences);
  const timeoutMs = config.timeoutMs;
  const locked = lockedAnswer(config.lockedResponse);
  const mimicSamples = config.mimic === true ? 256 : config.mimic ? config.mimic.samples : 0;
  const mimics = new Map<ProxyRouteConfig, Mimic>();
  if (mimicSamples > 0)
    for (const r of config.routes) mimics.set(r, createMimic(mimicSamples, ctx.randomInt));

  return async (req, res, route, params, target, path) => {
    const started = process.hrtime.bigint();
    let orgId: string | undefined;
    let userId: string | undefined;
    /** The login's password, when the route names its field (repeat-password forgiveness). */
    let password: string | undefined;
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
      if (route.password !== undefined) password = request.password(route.password);
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

    // 3. spray throttling, then reserve, before the upstream sees the credential
    let ticket: ThrottleTicket | undefined;
    if (throttle) {
      try {
        ticket = await throttle.admit(clientIp(req, ctx.trust));
      } catch (error) {
        if (error instanceof ThrottledError) {
          refuse('throttled', toAnswer(toHttpError(error)));
          return;
        }
        if (error instanceof StoreUnavailableError) {
          refuse('store_unavailable', toAnswer(toHttpError(error)));
          return;
        }
        throw error;
      }
    }
    let reservation: Reservation;
    const reservedAt = process.hrtime.bigint();
    const mimic = mimics.get(route);
    /** A locked user's answer. Mimic mode: the upstream's own failure answer (after one of its own failure latencies when `wait`). */
    const answerLocked = async (wait: boolean): Promise<void> => {
      const replay = mimic?.answer();
      if (!replay) return refuse('locked', locked);
      if (wait) await mimic!.wait(res);
      writeReplay(res, replay);
      done('locked', replay.status);
    };
    let answeredAt: bigint;
    try {
      // Device cookies: the client's device cookie picks the scope the login counts on.
      const deviceToken = deviceCookie?.read(req.headersDistinct.cookie);
      const r = await engine.reserve(
        orgId,
        userId,
        route.factor,
        deviceToken === undefined ? undefined : { deviceToken },
      );
      answeredAt = process.hrtime.bigint();
      if (r.status !== 'admitted') void throttle?.settle(ticket, 'release');
      if (r.status === 'locked') {
        await answerLocked(true);
        return;
      }
      if (r.status === 'busy') {
        refuse('busy', toAnswer(toHttpError(new BusyError(r.retryAfterMs))));
        return;
      }
      reservation = r.reservation;
    } catch (error) {
      void throttle?.settle(ticket, 'release');
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
      // Spray throttling settles beside the engine (in parallel; it never rejects).
      const throttleSettled = throttle?.settle(ticket, verdict);
      try {
        return await engine.settle(
          reservation,
          verdict,
          verdict === 'failure' && password !== undefined ? { password } : undefined,
        );
      } catch (error) {
        logger.warn(
          { orgId, userId, factor: route.factor, verdict, error: errorCode(error) },
          'lockgate proxy: the store did not confirm a settle; the engine writes it again until the lease ends',
        );
        return undefined;
      } finally {
        await throttleSettled;
      }
    };

    // 5. forward the buffered body byte for byte. A client that goes away does not abort it:
    // the upstream may already be evaluating the credential, so its answer is still judged.
    const headers = upstreamHeaders(req, LOGIN_SKIP);
    const sendBody = body.length > 0 || hasBody(req);
    if (sendBody) headers.push('content-length', String(body.length));
    // The login's deadline: timeoutMs, and never past the lease (a native timer: undici's own
    // timers are coarse, about 1 s). An EventEmitter as undici's signal, as in forward.ts: an
    // AbortController costs a login about 45 µs more (bench, issue 11).
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
      const status = upstreamFailed(logger, timedOut ? TIMED_OUT : error, req, res, path);
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
        const status = upstreamFailed(logger, error, req, res, path);
        done('upstream_error', status);
        return;
      }
    }
    const verdict = judge(route, up.statusCode, read?.complete ? read.body : undefined);
    const s = await settle(verdict);
    const outHeaders = downstreamHeaders(up.headers);
    if (verdict === 'success' && s?.deviceToken !== undefined && deviceCookie !== undefined) {
      // Device cookies: the upstream's cookies and the device cookie
      const set = outHeaders['set-cookie'];
      const mine = deviceCookie.serialize(s.deviceToken);
      outHeaders['set-cookie'] =
        set === undefined ? [mine] : [...(Array.isArray(set) ? set : [String(set)]), mine];
    }
    if (verdict === 'success' && s?.locked) {
      // Locked (by an admin) while the upstream evaluated: the lock wins, as engine.check's.
      if (read === undefined || !read.complete) up.body.dump().catch(noop);
      await answerLocked(false);
      return;
    }
    if (verdict === 'failure' && mimic !== undefined && read?.complete && enforced) {
      mimic.record(
        { status: up.statusCode, statusText: up.statusText, headers: outHeaders, body: read.body },
        Number(process.hrtime.bigint() - answeredAt) / 1e6,
        userId,
      );
    }
    relay(up, res, outHeaders, read);
    done(enforced ? verdict : 'fail_open', up.statusCode);
  };
}
