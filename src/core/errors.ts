/**
 * Coded errors of the lockout engine. Every error has a stable `code` (a string that never
 * changes between releases, documented in README) and the gRPC status code that the HTTP faces
 * map it to. Faces never show `cause` or a stack to a client.
 */

/** gRPC status codes used by lockgate (as ZITADEL's error bodies). */
export const GrpcCode = {
  InvalidArgument: 3,
  NotFound: 5,
  AlreadyExists: 6,
  PermissionDenied: 7,
  ResourceExhausted: 8,
  FailedPrecondition: 9,
  Internal: 13,
  Unavailable: 14,
  Unauthenticated: 16,
} as const;
export type GrpcCode = (typeof GrpcCode)[keyof typeof GrpcCode];

/** A detail of an error body: ZITADEL's ErrorDetail, or a CredentialsCheckError with `failedAttempts`. */
export interface ErrorDetail {
  readonly '@type': string;
  readonly id: string;
  readonly message: string;
  /** CredentialsCheckError only: the factor's failed attempts (uint64 as a string). */
  readonly failedAttempts?: string;
}

const NO_DETAILS: readonly ErrorDetail[] = Object.freeze([]);

/** `Retry-After` in whole seconds: rounded up, at least 1. */
export function retryAfterSeconds(ms: number): string {
  const s = Number.isFinite(ms) ? Math.ceil(ms / 1000) : 1;
  return String(Math.max(1, s));
}

/**
 * An error that knows its answer: each class declares its HTTP status and gRPC code, and its
 * stable id (`code`) is fixed by the class or given where it is thrown. The faces answer
 * `{code: grpcCode, message: publicMessage, details: [{id: code, …}, …extraDetails]}` with
 * `httpStatus` and `httpHeaders` (see toHttpError) — nothing else decides the answer.
 */
export abstract class LockgateError extends Error {
  /** Stable machine-readable id, e.g. `Errors.User.Locked`. */
  abstract readonly code: string;
  /** gRPC status code the faces answer with. */
  abstract readonly grpcCode: GrpcCode;
  /** HTTP status the faces answer with. */
  abstract readonly httpStatus: number;
  /** Milliseconds until a retry may succeed: the answer then carries `Retry-After`. */
  declare readonly retryAfterMs?: number;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }

  /** The message a client is shown: `message`, unless it may name internals. */
  get publicMessage(): string {
    return this.message;
  }

  /** Headers of the HTTP answer: `Retry-After` (whole seconds) when the error says when to retry. */
  get httpHeaders(): Readonly<Record<string, string>> {
    const ms = this.retryAfterMs;
    return ms === undefined ? {} : { 'Retry-After': retryAfterSeconds(ms) };
  }

  /** Details of the body after the error's own ErrorDetail. */
  get extraDetails(): readonly ErrorDetail[] {
    return NO_DETAILS;
  }
}

/** A LockgateError whose stable id is given where it is thrown (one class, many ids). */
export abstract class IdentifiedError extends LockgateError {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Bad input: an id, a settings value, an option (400, code 3). */
export class InvalidArgumentError extends IdentifiedError {
  readonly grpcCode = GrpcCode.InvalidArgument;
  readonly httpStatus: number = 400;
  constructor(
    code: string,
    message: string,
    /** The offending field, when there is one. */
    readonly field?: string,
  ) {
    super(code, message);
  }
}

/**
 * A bad option of the engine, a store or a face, thrown when it is made (one that escapes to
 * a face answers 400 code 3). `code` is always `Errors.Options.Invalid`, the stable id; `check` names the check that
 * failed, one code per check (`<where>.<option>`, e.g. `RedisStore.prefix`) as
 * express-rate-limit's ValidationError codes do; the message names the option (after its
 * owner for a store: `RedisStore: prefix …`), what it got and what to pass instead, as helmet's
 * do.
 */
export class OptionError extends InvalidArgumentError {
  constructor(
    /** The check that failed, e.g. `LockoutEngine.leaseMs`. */
    readonly check: string,
    field: string | undefined,
    message: string,
  ) {
    super('Errors.Options.Invalid', message, field);
  }
}

/** Something that must exist does not: org settings to update or reset, an attempt to settle (404, code 5). */
export class NotFoundError extends IdentifiedError {
  readonly grpcCode = GrpcCode.NotFound;
  readonly httpStatus = 404;
}

/** Org settings already exist: add on an org that has custom settings (409, code 6). */
export class AlreadyExistsError extends IdentifiedError {
  readonly grpcCode = GrpcCode.AlreadyExists;
  readonly httpStatus = 409;
}

/**
 * A change that changes nothing: same settings values, lock of a locked user, unlock of an
 * active one (400, code 9).
 */
export class NotChangedError extends IdentifiedError {
  readonly grpcCode = GrpcCode.FailedPrecondition;
  readonly httpStatus = 400;
}

/** The user is locked: the credential was not evaluated (423, code 9). */
/** A request that cannot be done in the current state or configuration (400, code 9). */
export class FailedPreconditionError extends IdentifiedError {
  readonly grpcCode = GrpcCode.FailedPrecondition;
  readonly httpStatus = 400;
}

export class UserLockedError extends LockgateError {
  readonly grpcCode = GrpcCode.FailedPrecondition;
  readonly httpStatus = 423;
  readonly code = 'Errors.User.Locked';
  constructor(readonly lockedAt: number | undefined) {
    super('User is locked');
  }
}

/** More checks of this user and factor are in flight than attempts remain (G2): retry later (429, code 8). */
export class BusyError extends LockgateError {
  readonly grpcCode = GrpcCode.ResourceExhausted;
  readonly httpStatus = 429;
  readonly code = 'Errors.Lockout.Busy';
  constructor(override readonly retryAfterMs: number) {
    super('Too many checks of this user in flight, retry later');
  }
}

/**
 * The store (Redis) cannot be reached or answered with an error (503, code 14). Its message may
 * name driver details (timeouts, commands), so a client is shown a fixed text.
 */
export class StoreUnavailableError extends LockgateError {
  readonly grpcCode = GrpcCode.Unavailable;
  readonly httpStatus = 503;
  readonly code = 'Errors.Store.Unavailable';
  constructor(message = 'Lockout store unavailable', options?: { cause?: unknown }) {
    super(message, options);
  }

  override get publicMessage(): string {
    return 'Lockout store unavailable';
  }
}

/**
 * A check whose credential evaluation outlived `evaluationTimeoutMs` (G5): its reservation was
 * released uncounted and the check answers 503 code 14 (the caller may retry). Never a
 * credential answer.
 */
export class CheckTimeoutError extends LockgateError {
  readonly grpcCode = GrpcCode.Unavailable;
  readonly httpStatus = 503;
  readonly code = 'Errors.Check.Timeout';
  constructor(readonly timeoutMs: number) {
    super('Credential evaluation took too long, retry later');
  }
}

/**
 * A check whose reservation was gone when it was settled (its lease ended, or an admin unlock or
 * a password change cleared it meanwhile): the outcome of the check is not known, so it answers
 * 503 code 14 (never 404: a check route only answers 200/401/423/429/503).
 */
export class CheckAbortedError extends LockgateError {
  readonly grpcCode = GrpcCode.Unavailable;
  readonly httpStatus = 503;
  readonly code = 'Errors.Check.Aborted';
  constructor() {
    super('The attempt ended before it was settled, retry');
  }
}

export function isLockgateError(e: unknown): e is LockgateError {
  return e instanceof LockgateError;
}

/**
 * Spray throttling: too many failed checks came from this client's address block (an IP, an
 * IPv6 /64) across all users; the check was answered without evaluating anything (429, code 8,
 * `Retry-After`). The same answer whatever the user, so it tells nothing about accounts.
 */
export class ThrottledError extends LockgateError {
  readonly grpcCode = GrpcCode.ResourceExhausted;
  readonly httpStatus = 429;
  readonly code = 'Errors.Lockout.Throttled';
  constructor(
    override readonly retryAfterMs: number,
    options?: { cause?: unknown },
  ) {
    super('Too many failed checks from this client, retry later', options);
  }
}
