import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { LockoutEngine, Reservation, Settlement } from '../core/engine';
import {
  BusyError,
  InvalidArgumentError,
  StoreUnavailableError,
  UserLockedError,
  isLockgateError,
} from '../core/errors';
import type { SprayThrottle, ThrottleTicket } from '../core/spray-throttle';
import type { SettleOutcome } from '../core/store';
import { validateFactor, validateId, type Factor } from '../core/subjects';
import { clientIp } from '../http/client-ip';
import { sendError, toHttpError } from '../http/errors';
import { deviceCookieOf, type DeviceCookie } from '../http/device-cookie';
import {
  describe,
  optionError,
  validateRefusalResponse,
  type GuardRefusal,
  type LockoutErrorContext,
  type RefusalReason,
  type RefusalResponse,
} from './options';

/**
 * The guard middleware: takes the subject (org, user) from the request, refuses a locked or busy
 * user (or answers 503 while the store is down) before the handler runs, reserves one attempt,
 * and settles it exactly once — from an explicit `req.lockout.success()/failure()/release()`, else
 * from the status of the response the handler sends (2xx success, 401/403 failure, anything else
 * released uncounted). The settlement is written before the response leaves (as express-session
 * saves a session), so a client that gets its answer sees the counters already updated; the
 * response waits for it (one store round trip, at most the store's command timeout).
 *
 * A client that goes away mid-handler changes nothing: the handler's late answer (or the 500 that
 * Express sends for an error it throws) still settles the attempt, once. A handler that never
 * answers leaves the reservation to its lease, which counts it as a failure after `leaseMs`.
 */

/** The attempt of a guarded request, as `req.lockout`. */
export interface LockoutAttempt {
  readonly factor: Factor;
  readonly orgId: string;
  readonly userId: string;
  /**
   * false when the store could not be reached and `onStoreError` is `fail-open`: the request runs
   * without lockout, nothing is counted and the settle methods resolve
   * `{ failedAttempts: 0, locked: false, enforced: false }`.
   */
  readonly guarded: boolean;
  /** The reservation's attempt id (guarded requests only). */
  readonly attemptId?: string;
  /** When the reservation counts as a failure if still unsettled (ms since the epoch; guarded only). */
  readonly expiresAt?: number;
  /** How the attempt was settled, once it was (or is being) settled. */
  readonly outcome: SettleOutcome | undefined;
  /** The credential was right: resets the factor's counter. */
  success(): Promise<Settlement>;
  /** The credential was wrong: counts one failure (and may lock the user). */
  failure(): Promise<Settlement>;
  /** The credential was not evaluated (bad input, an error): forgets the attempt uncounted. */
  release(): Promise<Settlement>;
}

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** Set by a lockgate guard on the requests it lets through: settle the attempt explicitly here. */
      lockout?: LockoutAttempt;
    }
  }
}

/** Reads the org or user id of a request. */
export type SubjectExtractor = (req: Request) => string | Promise<string>;

export interface GuardOptions {
  /** The user's immutable id, from the request (e.g. `req => req.body.userId`; mount express.json() first). */
  readonly user: SubjectExtractor;
  /** The org id: a constant or a function of the request. Default: createLockout's `defaultOrg`. */
  readonly org?: string | SubjectExtractor;
  /**
   * The outcome of a response the handler sent without settling explicitly. Default: 2xx
   * success, 401 and 403 failure, anything else release.
   */
  readonly outcome?: (status: number, req: Request, res: Response) => SettleOutcome;
  /** Overrides createLockout's `lockedResponse` for this guard. */
  readonly lockedResponse?: RefusalResponse;
  /** Overrides createLockout's `busyResponse` for this guard. */
  readonly busyResponse?: RefusalResponse;
  /** Overrides createLockout's `unavailableResponse` for this guard. */
  readonly unavailableResponse?: RefusalResponse;
}

/** What a guard needs from createLockout. */
export interface GuardContext {
  readonly engine: LockoutEngine;
  readonly defaultOrg: string;
  readonly responses: Readonly<Record<RefusalReason, RefusalResponse | undefined>>;
  readonly report: (error: unknown, context: LockoutErrorContext) => void;
  /** Keeps track of a settlement in progress (close() waits for them). */
  readonly track: (settling: Promise<unknown>) => void;
  /** Spray throttling (defences.sprayThrottle), when on: the client is the request's `req.ip`. */
  readonly throttle?: SprayThrottle;
}

/** The default outcome of a response status. */
export function outcomeOfStatus(status: number): SettleOutcome {
  if (status >= 200 && status < 300) return 'success';
  if (status === 401 || status === 403) return 'failure';
  return 'release';
}

const noop = (): void => undefined;

/**
 * The attempt of a request: settled exactly once through the engine; the first settle wins.
 * Unguarded (fail-open, the store was down at reserve): the engine's settle changes nothing.
 * A settle the store could not take is compensated by the engine (retried until the lease ends)
 * and reported here as `unsettled`.
 */
class GuardedAttempt implements LockoutAttempt {
  readonly guarded: boolean;
  readonly factor: Factor;
  readonly orgId: string;
  readonly userId: string;
  /** The attempt's id (encoded on first use; guarded requests only). */
  get attemptId(): string | undefined {
    return this.guarded ? this.reservation.attemptId : undefined;
  }
  readonly expiresAt: number | undefined;
  outcome: SettleOutcome | undefined;
  /** The settlement, once started. */
  private settling?: Promise<Settlement>;
  /** The settlement, observed: resolves when it has finished, never rejects. */
  private observed?: Promise<void>;
  /** Whether the settlement has finished (successfully or not). */
  done = false;
  /** Device cookies: the device token a successful settlement answered, for the response's cookie. */
  deviceToken?: string;

  constructor(
    private readonly reservation: Reservation,
    private readonly ctx: GuardContext,
    private readonly req: Request,
    private readonly ticket?: ThrottleTicket,
  ) {
    this.guarded = reservation.enforced !== false;
    this.factor = reservation.factor;
    this.orgId = reservation.orgId;
    this.userId = reservation.userId;
    this.expiresAt = reservation.expiresAt;
  }

  private report(error: unknown): void {
    this.ctx.report(error, {
      operation: 'settle',
      outcome: 'unsettled',
      factor: this.factor,
      orgId: this.orgId,
      userId: this.userId,
      req: this.req,
    });
  }

  /** Settles once; later calls answer the first settlement. Never an unhandled rejection. */
  settle(outcome: SettleOutcome): Promise<Settlement> {
    if (this.settling) return this.settling;
    this.outcome = outcome;
    const engineSettling = this.ctx.engine.settle(this.reservation, outcome);
    // Spray throttling settles beside the engine (in parallel, never rejects): a failure keeps the point.
    const settling =
      this.ticket === undefined
        ? engineSettling
        : Promise.all([engineSettling, this.ctx.throttle?.settle(this.ticket, outcome)]).then(([s]) => s);
    this.settling = settling;
    // `observed` never rejects: it marks the end, reports a failed settlement, and is what
    // close() and the deferred res.end wait for. The caller's promise may still reject.
    this.observed = settling.then(
      (s) => {
        this.done = true;
        if (s.deviceToken !== undefined) this.deviceToken = s.deviceToken;
        // fail-open: a real reservation whose settle failed (the engine compensates it)
        if (s.enforced === false && this.guarded) this.report(s.storeError);
      },
      (error: unknown) => {
        this.done = true;
        this.report(error);
      },
    );
    this.ctx.track(this.observed);
    return settling;
  }

  /** Whether a settlement was started (explicitly or from the response). */
  get started(): boolean {
    return this.settling !== undefined;
  }

  /** Resolves when the settlement (started already) has finished, whatever its result. */
  finished(): Promise<void> {
    return this.observed ?? Promise.resolve();
  }

  success(): Promise<Settlement> {
    return this.settle('success');
  }
  failure(): Promise<Settlement> {
    return this.settle('failure');
  }
  release(): Promise<Settlement> {
    return this.settle('release');
  }
}

/**
 * Wraps `res.end` so that the attempt is settled (from the status, unless settled explicitly)
 * before the response is ended. This also covers a client that went away: the handler's late
 * answer still settles the attempt once; an answer never given leaves the reservation to its lease.
 */
function settleBeforeEnd(
  req: Request,
  res: Response,
  attempt: GuardedAttempt,
  classify: (status: number, req: Request, res: Response) => SettleOutcome,
  report: GuardContext['report'],
  deviceCookie: DeviceCookie | undefined,
): void {
  const end = res.end;
  let called = false;
  const wrapped = function (this: Response, ...args: unknown[]): Response {
    const self = this ?? res;
    const endNow = () => (end as (...a: unknown[]) => Response).apply(self, args);
    if (called) return endNow();
    called = true;
    res.end = end;
    // Device cookies: a success's device token becomes the response's cookie (while the headers
    // are still unsent: a handler that streamed its body has sent them).
    const settled = () => {
      if (deviceCookie && attempt.deviceToken !== undefined && !res.headersSent) {
        res.append('Set-Cookie', deviceCookie.serialize(attempt.deviceToken));
      }
      return endNow();
    };
    if (attempt.done) return settled();
    const status = res.statusCode;
    // One microtask later, so that an explicit settle made right after sending (same tick) wins.
    queueMicrotask(() => {
      if (!attempt.started) {
        let outcome: SettleOutcome;
        try {
          outcome = classify(status, req, res);
          validateOutcome(outcome);
        } catch (error) {
          report(error, {
            operation: 'settle',
            outcome: 'unsettled',
            factor: attempt.factor,
            orgId: attempt.orgId,
            userId: attempt.userId,
            req,
          });
          outcome = 'release';
        }
        // A failed settle is reported by the attempt (and compensated by the engine); this
        // promise is only the caller's view of it.
        void attempt.settle(outcome).catch(noop);
      }
      void attempt.finished().then(settled);
    });
    return self;
  };
  res.end = wrapped as Response['end'];
}

function validateOutcome(outcome: unknown): asserts outcome is SettleOutcome {
  if (outcome !== 'success' && outcome !== 'failure' && outcome !== 'release') {
    throw new InvalidArgumentError(
      'Errors.Options.Invalid',
      `guard: outcome() must return 'success', 'failure' or 'release', got ${describe(outcome)}`,
      'outcome',
    );
  }
}

function subjectError(field: 'orgId' | 'userId'): InvalidArgumentError {
  return new InvalidArgumentError(
    'Errors.Request.Subject',
    field === 'userId'
      ? 'The user could not be read from the request'
      : 'The organization could not be read from the request',
    field,
  );
}

/**
 * Reads one id with its extractor (synchronously when the extractor answers at once); any error
 * of the extractor, or a bad id, is a 400 (an InvalidArgumentError).
 */
function readId(
  req: Request,
  source: string | SubjectExtractor,
  field: 'orgId' | 'userId',
): string | Promise<string> {
  if (typeof source === 'string') return validateId(source, field);
  let value: unknown;
  try {
    value = source(req);
  } catch (error) {
    throw error instanceof InvalidArgumentError ? error : subjectError(field);
  }
  if (typeof (value as PromiseLike<unknown> | null)?.then === 'function') {
    return Promise.resolve(value).then(
      (v: unknown) => validateId(v, field),
      (error: unknown) => {
        throw error instanceof InvalidArgumentError ? error : subjectError(field);
      },
    );
  }
  return validateId(value, field);
}

async function answerRefusal(
  req: Request,
  res: Response,
  response: RefusalResponse | undefined,
  refusal: GuardRefusal,
): Promise<void> {
  const { standard } = refusal;
  if (typeof response === 'function') {
    await response(req, res, refusal);
    return;
  }
  const status = response?.status ?? standard.status;
  res.status(status);
  if (status === standard.status) {
    for (const [name, value] of Object.entries(standard.headers)) res.setHeader(name, value);
  }
  for (const [name, value] of Object.entries(response?.headers ?? {})) res.setHeader(name, value);
  const body = response && 'body' in response && response.body !== undefined ? response.body : standard.body;
  if (typeof body === 'string' || Buffer.isBuffer(body)) res.send(body);
  else res.json(body);
}

/** Validates a guard's options when the guard is made. */
function validateGuardOptions(where: string, options: GuardOptions): void {
  if (typeof options !== 'object' || options === null) {
    throw optionError(
      where,
      'options',
      `must be an object such as { user: (req) => req.body.userId }, got ${describe(options)}`,
    );
  }
  if (typeof options.user !== 'function') {
    throw optionError(
      where,
      'user',
      `must be a function that returns the user's immutable id from the request, e.g. (req) => req.body.userId; got ${describe(options.user)}`,
    );
  }
  const org = options.org;
  if (org !== undefined && typeof org !== 'function') {
    if (typeof org !== 'string') {
      throw optionError(where, 'org', `must be an org id or a function (req) => orgId, got ${describe(org)}`);
    }
    try {
      validateId(org, 'org');
    } catch (error) {
      throw optionError(
        where,
        'org',
        `must be a valid org id (1–256 characters, no control characters): ${(error as Error).message}`,
      );
    }
  }
  if (options.outcome !== undefined && typeof options.outcome !== 'function') {
    throw optionError(
      where,
      'outcome',
      `must be a function (status, req, res) => 'success' | 'failure' | 'release', got ${describe(options.outcome)}`,
    );
  }
  validateRefusalResponse(where, options.lockedResponse, 'lockedResponse');
  validateRefusalResponse(where, options.busyResponse, 'busyResponse');
  validateRefusalResponse(where, options.unavailableResponse, 'unavailableResponse');
}

/** Makes the guard middleware of one factor. */
export function createGuard(ctx: GuardContext, factor: Factor, options: GuardOptions): RequestHandler {
  const where = `guard(${typeof factor === 'string' ? factor : describe(factor)})`;
  try {
    validateFactor(factor);
  } catch {
    throw optionError(
      'guard',
      'factor',
      `must be one of password, totp, otp_sms, otp_email, recovery_code, got ${describe(factor)}`,
    );
  }
  validateGuardOptions(where, options);
  const { engine, report } = ctx;
  const orgSource = options.org ?? ctx.defaultOrg;
  const classify = options.outcome ?? ((status: number) => outcomeOfStatus(status));
  const responses: Record<RefusalReason, RefusalResponse | undefined> = {
    locked: options.lockedResponse ?? ctx.responses.locked,
    busy: options.busyResponse ?? ctx.responses.busy,
    unavailable: options.unavailableResponse ?? ctx.responses.unavailable,
  };

  const refuse = (
    req: Request,
    res: Response,
    reason: RefusalReason,
    error: UserLockedError | BusyError | StoreUnavailableError,
    orgId: string,
    userId: string,
  ): Promise<void> =>
    answerRefusal(req, res, responses[reason], {
      reason,
      error,
      factor,
      orgId,
      userId,
      standard: toHttpError(error),
    });

  const deviceCookie = deviceCookieOf(engine.defences);
  return async function lockgateGuard(req: Request, res: Response, next: NextFunction): Promise<void> {
    let orgId: string;
    let userId: string;
    try {
      const org = readId(req, orgSource, 'orgId');
      orgId = typeof org === 'string' ? org : await org;
      const user = readId(req, options.user, 'userId');
      userId = typeof user === 'string' ? user : await user;
    } catch (error) {
      sendError(res, error);
      return;
    }

    // Spray throttling: before anything is reserved or evaluated (429 whatever the user).
    let ticket: ThrottleTicket | undefined;
    if (ctx.throttle) {
      try {
        ticket = await ctx.throttle.admit(clientIp(req));
      } catch (error) {
        if (error instanceof StoreUnavailableError) {
          report(error, { operation: 'reserve', factor, orgId, userId, req, outcome: 'refused' });
          await refuse(req, res, 'unavailable', error, orgId, userId);
          return;
        }
        sendError(res, error);
        return;
      }
    }

    let reserved: Awaited<ReturnType<LockoutEngine['reserve']>>;
    try {
      // Device cookies: the request's device cookie picks the scope (a success sets it again:
      // settleBeforeEnd).
      const deviceToken = deviceCookie?.read(req.headers.cookie);
      reserved = await engine.reserve(
        orgId,
        userId,
        factor,
        deviceToken === undefined ? undefined : { deviceToken },
      );
    } catch (error) {
      void ctx.throttle?.settle(ticket, 'release');
      // fail-closed (fail-open is the engine's: it admits an unenforced reservation instead)
      if (error instanceof StoreUnavailableError) {
        report(error, { operation: 'reserve', factor, orgId, userId, req, outcome: 'refused' });
        await refuse(req, res, 'unavailable', error, orgId, userId);
        return;
      }
      if (isLockgateError(error)) {
        sendError(res, error);
        return;
      }
      throw error;
    }

    if (reserved.status !== 'admitted') void ctx.throttle?.settle(ticket, 'release');
    switch (reserved.status) {
      case 'locked':
        await refuse(req, res, 'locked', new UserLockedError(reserved.lockedAt), orgId, userId);
        return;
      case 'busy':
        await refuse(req, res, 'busy', new BusyError(reserved.retryAfterMs), orgId, userId);
        return;
      case 'admitted': {
        const { reservation } = reserved;
        if (reservation.enforced === false) {
          report(reservation.storeError, {
            operation: 'reserve',
            factor,
            orgId,
            userId,
            req,
            outcome: 'unguarded',
          });
        }
        const attempt = new GuardedAttempt(reservation, ctx, req, ticket);
        req.lockout = attempt;
        settleBeforeEnd(req, res, attempt, classify, report, deviceCookie);
        next();
      }
    }
  };
}
