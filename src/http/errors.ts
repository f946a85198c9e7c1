import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import {
  GrpcCode,
  IdentifiedError,
  LockgateError,
  NotFoundError,
  UserLockedError,
  isLockgateError,
  type ErrorDetail,
} from '../core/errors';
import type { Factor } from '../core/subjects';

export { retryAfterSeconds, type ErrorDetail } from '../core/errors';

/**
 * ZITADEL-compatible error bodies and HTTP statuses, shared by every router and the sidecar.
 *
 * Body: `{"code": <gRPC code>, "message", "details": [{"@type": ErrorDetail, "id", "message"}]}`.
 * A wrong credential adds a second detail of type CredentialsCheckError with `failedAttempts`.
 * Nothing internal (stack, cause, driver text) ever reaches a body: errors that are not
 * LockgateErrors answer 500 with a generic message and are handed to `onError` for the logs.
 */

export const ERROR_DETAIL_TYPE = 'type.googleapis.com/zitadel.v1.ErrorDetail';
export const CREDENTIALS_CHECK_ERROR_TYPE = 'type.googleapis.com/zitadel.v1.CredentialsCheckError';

export interface ErrorBody {
  readonly code: number;
  readonly message: string;
  readonly details: ErrorDetail[];
}

/** An error turned into an HTTP answer. */
export interface HttpError {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: ErrorBody;
}

/** Missing or unknown bearer token (401, code 16). Never carries a CredentialsCheckError detail. */
export class UnauthenticatedError extends IdentifiedError {
  readonly grpcCode = GrpcCode.Unauthenticated;
  readonly httpStatus = 401;

  override get httpHeaders(): Readonly<Record<string, string>> {
    return { 'WWW-Authenticate': 'Bearer realm="lockgate"' };
  }
}

/** The token may not act on the org, or lacks the permission (403, code 7). */
export class PermissionDeniedError extends IdentifiedError {
  readonly grpcCode = GrpcCode.PermissionDenied;
  readonly httpStatus = 403;
}

/**
 * The identity provider's keys (JWKS, OIDC discovery) could not be obtained, so a JWT could not be
 * verified either way (503, code 14). Not a 401: the token was not found wrong, and a caller must
 * not be told to sign in again because the issuer is down. Never names the issuer's answer.
 */
export class AuthUnavailableError extends IdentifiedError {
  readonly grpcCode = GrpcCode.Unavailable;
  readonly httpStatus = 503;
}

/** Stable ids of a wrong credential, per factor (as ZITADEL's). */
export const INVALID_CREDENTIAL_IDS: Readonly<Record<Factor, string>> = {
  password: 'Errors.User.Password.Invalid',
  totp: 'Errors.User.MFA.OTP.InvalidCode',
  otp_sms: 'Errors.User.Code.Invalid',
  otp_email: 'Errors.User.Code.Invalid',
  recovery_code: 'Errors.User.MFA.RecoveryCodes.InvalidCode',
};

const INVALID_CREDENTIAL_MESSAGES: Readonly<Record<Factor, string>> = {
  password: 'Password is invalid',
  totp: 'Code is invalid',
  otp_sms: 'Code is invalid',
  otp_email: 'Code is invalid',
  recovery_code: 'Recovery code is invalid',
};

/**
 * A wrong credential: 401, code 3 (as ZITADEL's invalid password), with a CredentialsCheckError
 * detail that carries the factor's failed attempts after this one.
 */
export class InvalidCredentialsError extends LockgateError {
  readonly grpcCode = GrpcCode.InvalidArgument;
  readonly httpStatus = 401;
  readonly code: string;
  constructor(
    readonly factor: Factor,
    readonly failedAttempts: number,
  ) {
    super(INVALID_CREDENTIAL_MESSAGES[factor]);
    this.code = INVALID_CREDENTIAL_IDS[factor];
  }

  override get extraDetails(): readonly ErrorDetail[] {
    return [
      {
        '@type': CREDENTIALS_CHECK_ERROR_TYPE,
        id: this.code,
        message: this.message,
        failedAttempts: String(this.failedAttempts),
      },
    ];
  }
}

/** A request error that is not the client's data but the request itself (body type, size). */
export class RequestError extends IdentifiedError {
  constructor(
    /** The HTTP status (also `httpStatus`). */
    readonly status: number,
    readonly grpcCode: GrpcCode,
    code: string,
    message: string,
  ) {
    super(code, message);
  }

  get httpStatus(): number {
    return this.status;
  }
}

function body(code: number, id: string, message: string, extra: readonly ErrorDetail[] = []): ErrorBody {
  return { code, message, details: [{ '@type': ERROR_DETAIL_TYPE, id, message }, ...extra] };
}

const INTERNAL: HttpError = {
  status: 500,
  headers: {},
  body: body(GrpcCode.Internal, 'Errors.Internal', 'Internal error'),
};

/** The request errors that an error of body-parser, express or http-errors is classified as. */
const MALFORMED_JSON = new RequestError(
  400,
  GrpcCode.InvalidArgument,
  'Errors.Request.MalformedJson',
  'Request body is not valid JSON',
);
const TOO_LARGE = new RequestError(
  413,
  GrpcCode.ResourceExhausted,
  'Errors.Request.TooLarge',
  'Request body is too large',
);
const UNSUPPORTED_MEDIA_TYPE = new RequestError(
  415,
  GrpcCode.InvalidArgument,
  'Errors.Request.UnsupportedMediaType',
  'Request body must be JSON in UTF-8 (Content-Type: application/json)',
);
const INVALID_REQUEST = new RequestError(
  400,
  GrpcCode.InvalidArgument,
  'Errors.Request.Invalid',
  'Request is invalid',
);

/**
 * An error of body-parser, express or http-errors (a 4xx `status` or `statusCode` it does not mark
 * `expose: false`, and a `type`), as the RequestError it stands for. Its own text is never shown.
 */
function fromHttpLibrary(error: unknown): RequestError | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const e = error as { status?: unknown; statusCode?: unknown; type?: unknown; expose?: unknown };
  const status = typeof e.status === 'number' ? e.status : e.statusCode;
  if (typeof status !== 'number' || status < 400 || status > 499 || e.expose === false) return undefined;
  if (e.type === 'entity.parse.failed') return MALFORMED_JSON;
  if (e.type === 'entity.too.large' || status === 413) return TOO_LARGE;
  if (status === 415) return UNSUPPORTED_MEDIA_TYPE;
  return INVALID_REQUEST;
}

/**
 * Maps any error to its HTTP answer. A LockgateError carries its own: status, headers, gRPC
 * code, stable id, the message a client may see and any further details (a wrong credential's
 * CredentialsCheckError). An error of body-parser or express answers as the RequestError it
 * stands for; anything else is a 500 with a generic message.
 */
export function toHttpError(error: unknown): HttpError {
  const e = isLockgateError(error) ? error : fromHttpLibrary(error);
  if (e === undefined) return INTERNAL;
  return {
    status: e.httpStatus,
    headers: e.httpHeaders,
    body: body(e.grpcCode, e.code, e.publicMessage, e.extraDetails),
  };
}

/** Sends an error as its ZITADEL-compatible answer. */
export function sendError(res: Response, error: unknown): void {
  writeHttpError(res, toHttpError(error));
}

function writeHttpError(res: Response, answer: HttpError): void {
  res.status(answer.status);
  for (const name in answer.headers) res.setHeader(name, answer.headers[name]!);
  res.json(answer.body);
}

/** The answer to a locked user (423): the same for every request, so serialized once. */
const LOCKED_BODY = toHttpError(new UserLockedError(undefined)).body;
const LOCKED_JSON = JSON.stringify(LOCKED_BODY);

/**
 * Sends the answer of a UserLockedError (423, as `sendError(res, new UserLockedError(...))`)
 * without making an Error: the body does not depend on the lock, so it is serialized once.
 * Kept because `npm run bench -- sidecar` shows it (issue 11, one run each on the shared 2-core
 * machine): a locked user's check at 0.64–0.72× of bare Express and 302–384 µs server CPU per
 * request with it, 0.58× and 371 µs when the route throws a UserLockedError instead.
 */
export function sendLocked(res: Response): void {
  res.status(423);
  const { app } = res;
  // An app that changes how res.json serializes gets its own serialization.
  if (app.get('json replacer') || app.get('json spaces') || app.get('json escape')) {
    res.json(LOCKED_BODY);
    return;
  }
  // As res.json: application/json unless a Content-Type is set already; send adds the charset.
  if (!res.get('Content-Type')) res.set('Content-Type', 'application/json');
  res.send(LOCKED_JSON);
}

export interface ErrorHandlerOptions {
  /**
   * Called with every error answered 500 (unknown errors), for the logs. Its text never reaches
   * the client. Must not throw.
   */
  readonly onError?: (error: unknown, req: Request) => void;
}

/**
 * Express error middleware: answers every error with the ZITADEL error body (malformed JSON 400
 * code 3, body too large 413, unknown errors 500 code 13). Mount it after the routes.
 */
export function createErrorHandler(options: ErrorHandlerOptions = {}): ErrorRequestHandler {
  const { onError } = options;
  return (error: unknown, req, res, next) => {
    if (res.headersSent) {
      next(error);
      return;
    }
    const answer = toHttpError(error);
    if (answer.status >= 500 && answer.status !== 503 && onError) {
      try {
        onError(error, req);
      } catch {
        // a failing logger must not change the answer
      }
    }
    writeHttpError(res, answer);
  };
}

const ROUTE_NOT_FOUND = new NotFoundError('Errors.Route.NotFound', 'Route not found');

/** A 404 code 5 for routes that do not exist; mount it last. */
export function createNotFoundHandler(): RequestHandler {
  return (_req, res) => {
    sendError(res, ROUTE_NOT_FOUND);
  };
}
