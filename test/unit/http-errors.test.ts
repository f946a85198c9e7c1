import {
  AlreadyExistsError,
  BusyError,
  CheckAbortedError,
  CheckTimeoutError,
  InvalidArgumentError,
  NotChangedError,
  NotFoundError,
  StoreUnavailableError,
  UserLockedError,
} from '../../src/core/errors';
import {
  InvalidCredentialsError,
  PermissionDeniedError,
  RequestError,
  UnauthenticatedError,
  toHttpError,
  type HttpError,
} from '../../src/http';
import { AmbiguousRequestError, UnsupportedTypeError } from '../../src/sidecar/proxy/read';
import { RateLimitedError } from '../../src/verify';

const DETAIL = 'type.googleapis.com/zitadel.v1.ErrorDetail';

function answer(
  status: number,
  code: number,
  id: string,
  message: string,
  headers: Record<string, string> = {},
): HttpError {
  return { status, headers, body: { code, message, details: [{ '@type': DETAIL, id, message }] } };
}

/** Every LockgateError class, answered exactly (status, headers, body, key order). */
const TABLE: [string, unknown, HttpError][] = [
  [
    'InvalidArgumentError',
    new InvalidArgumentError('Errors.X', 'x is bad', 'x'),
    answer(400, 3, 'Errors.X', 'x is bad'),
  ],
  ['NotFoundError', new NotFoundError('Errors.X', 'none'), answer(404, 5, 'Errors.X', 'none')],
  ['AlreadyExistsError', new AlreadyExistsError('Errors.X', 'exists'), answer(409, 6, 'Errors.X', 'exists')],
  ['NotChangedError', new NotChangedError('Errors.X', 'same'), answer(400, 9, 'Errors.X', 'same')],
  ['UserLockedError', new UserLockedError(12), answer(423, 9, 'Errors.User.Locked', 'User is locked')],
  [
    'BusyError',
    new BusyError(1500),
    answer(429, 8, 'Errors.Lockout.Busy', 'Too many checks of this user in flight, retry later', {
      'Retry-After': '2',
    }),
  ],
  [
    'StoreUnavailableError',
    new StoreUnavailableError('ECONNREFUSED 10.0.0.1:6379', { cause: new Error('x') }),
    answer(503, 14, 'Errors.Store.Unavailable', 'Lockout store unavailable'),
  ],
  [
    'CheckTimeoutError',
    new CheckTimeoutError(100),
    answer(503, 14, 'Errors.Check.Timeout', 'Credential evaluation took too long, retry later'),
  ],
  [
    'CheckAbortedError',
    new CheckAbortedError(),
    answer(503, 14, 'Errors.Check.Aborted', 'The attempt ended before it was settled, retry'),
  ],
  [
    'UnauthenticatedError',
    new UnauthenticatedError('Errors.Token.Missing', 'who'),
    answer(401, 16, 'Errors.Token.Missing', 'who', { 'WWW-Authenticate': 'Bearer realm="lockgate"' }),
  ],
  ['PermissionDeniedError', new PermissionDeniedError('Errors.X', 'no'), answer(403, 7, 'Errors.X', 'no')],
  [
    'RequestError',
    new RequestError(415, 3, 'Errors.Request.Y', 'not json'),
    answer(415, 3, 'Errors.Request.Y', 'not json'),
  ],
  [
    'RateLimitedError',
    new RateLimitedError(60_001),
    answer(429, 8, 'Errors.Otp.TooManyCodes', 'Too many codes issued, retry later', { 'Retry-After': '61' }),
  ],
  [
    'AmbiguousRequestError',
    new AmbiguousRequestError('a is given twice', 'a'),
    answer(400, 3, 'Errors.Request.Ambiguous', 'a is given twice'),
  ],
  [
    'UnsupportedTypeError',
    new UnsupportedTypeError('no type'),
    answer(400, 3, 'Errors.Request.UnsupportedType', 'no type'),
  ],
  [
    'InvalidCredentialsError',
    new InvalidCredentialsError('password', 3),
    {
      status: 401,
      headers: {},
      body: {
        code: 3,
        message: 'Password is invalid',
        details: [
          { '@type': DETAIL, id: 'Errors.User.Password.Invalid', message: 'Password is invalid' },
          {
            '@type': 'type.googleapis.com/zitadel.v1.CredentialsCheckError',
            id: 'Errors.User.Password.Invalid',
            message: 'Password is invalid',
            failedAttempts: '3',
          },
        ],
      },
    },
  ],
  ['Error', new Error('boom'), answer(500, 13, 'Errors.Internal', 'Internal error')],
  [
    'a body-parser error',
    Object.assign(new Error('Unexpected token'), { status: 400, type: 'entity.parse.failed' }),
    answer(400, 3, 'Errors.Request.MalformedJson', 'Request body is not valid JSON'),
  ],
  [
    'a too large body',
    Object.assign(new Error('too large'), { status: 413, type: 'entity.too.large' }),
    answer(413, 8, 'Errors.Request.TooLarge', 'Request body is too large'),
  ],
  [
    'an unsupported media type',
    Object.assign(new Error('nope'), { status: 415 }),
    answer(
      415,
      3,
      'Errors.Request.UnsupportedMediaType',
      'Request body must be JSON in UTF-8 (Content-Type: application/json)',
    ),
  ],
  [
    'another 4xx',
    Object.assign(new Error('nope'), { statusCode: 405 }),
    answer(400, 3, 'Errors.Request.Invalid', 'Request is invalid'),
  ],
  [
    'an unexposed 4xx',
    Object.assign(new Error('x'), { status: 400, expose: false }),
    answer(500, 13, 'Errors.Internal', 'Internal error'),
  ],
];

describe('toHttpError answers every error class exactly as before', () => {
  it.each(TABLE)('%s', (_name, error, expected) => {
    const got = toHttpError(error);
    expect(got).toEqual(expected);
    // byte-identical: same keys in the same order
    expect(JSON.stringify(got.body)).toBe(JSON.stringify(expected.body));
    expect(JSON.stringify(got.headers)).toBe(JSON.stringify(expected.headers));
  });
});
