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

export abstract class LockgateError extends Error {
  /** Stable machine-readable id, e.g. `Errors.User.Locked`. */
  abstract readonly code: string;
  /** gRPC status code the faces answer with. */
  abstract readonly grpcCode: GrpcCode;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad input: an id, a settings value, an option. */
export class InvalidArgumentError extends LockgateError {
  readonly grpcCode = GrpcCode.InvalidArgument;
  constructor(
    readonly code: string,
    message: string,
    /** The offending field, when there is one. */
    readonly field?: string,
  ) {
    super(message);
  }
}

/** Something that must exist does not (org settings to update or reset, an attempt to settle). */
export class NotFoundError extends LockgateError {
  readonly grpcCode = GrpcCode.NotFound;
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Org settings already exist (add on an org that has custom settings). */
export class AlreadyExistsError extends LockgateError {
  readonly grpcCode = GrpcCode.AlreadyExists;
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A change that changes nothing: same settings values, lock of a locked user, unlock of an active one. */
export class NotChangedError extends LockgateError {
  readonly grpcCode = GrpcCode.FailedPrecondition;
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** The user is locked: the credential was not evaluated. */
export class UserLockedError extends LockgateError {
  readonly grpcCode = GrpcCode.FailedPrecondition;
  readonly code = 'Errors.User.Locked';
  constructor(readonly lockedAt: number | undefined) {
    super('User is locked');
  }
}

/** More checks of this user and factor are in flight than attempts remain (G2): retry later. */
export class BusyError extends LockgateError {
  readonly grpcCode = GrpcCode.ResourceExhausted;
  readonly code = 'Errors.Lockout.Busy';
  constructor(readonly retryAfterMs: number) {
    super('Too many checks of this user in flight, retry later');
  }
}

/** The store (Redis) cannot be reached or answered with an error. G4 is applied by the faces. */
export class StoreUnavailableError extends LockgateError {
  readonly grpcCode = GrpcCode.Unavailable;
  readonly code = 'Errors.Store.Unavailable';
  constructor(message = 'Lockout store unavailable', options?: { cause?: unknown }) {
    super(message, options);
  }
}

/**
 * A check whose credential evaluation outlived `evaluationTimeoutMs` (G5): its reservation was
 * released uncounted and the check answers 503 (the caller may retry). Never a credential answer.
 */
export class CheckTimeoutError extends LockgateError {
  readonly grpcCode = GrpcCode.Unavailable;
  readonly code = 'Errors.Check.Timeout';
  constructor(readonly timeoutMs: number) {
    super('Credential evaluation took too long, retry later');
  }
}

/**
 * A check whose reservation was gone when it was settled (its lease ended, or an admin unlock or
 * a password change cleared it meanwhile): the outcome of the check is not known, so it answers
 * 503 (never 404: a check route only answers 200/401/423/429/503).
 */
export class CheckAbortedError extends LockgateError {
  readonly grpcCode = GrpcCode.Unavailable;
  readonly code = 'Errors.Check.Aborted';
  constructor() {
    super('The attempt ended before it was settled, retry');
  }
}

export function isLockgateError(e: unknown): e is LockgateError {
  return e instanceof LockgateError;
}
