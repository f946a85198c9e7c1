/**
 * Structured logs (pino). Credentials never reach a log line: the sidecar logs no request bodies,
 * and the paths below are redacted in case one ever slips into an object that is logged.
 */
import pino, { type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from './config';

/** Paths that are always censored: authorization headers, credentials, secrets, tokens. */
export const REDACT_PATHS = [
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.cookie',
  'body',
  'req.body',
  'password',
  '*.password',
  'encodedHash',
  '*.encodedHash',
  'secret',
  '*.secret',
  'token',
  '*.token',
  'pepper',
  '*.pepper',
  'otp',
  '*.otp',
  // Attempt ids are bearer capabilities: whoever holds one may settle the attempt.
  'attemptId',
  '*.attemptId',
];

/** What a redacted value is replaced with, in objects (pino) and in paths. */
export const REDACTED = '[redacted]';

// `/v1/attempts/{attemptId}/…` under any mount prefix; Express matches routes case-insensitively.
const ATTEMPT_PATH = /(\/v1\/attempts\/)[^/]+/gi;

/**
 * A request path fit for a log line: the attempt id of `/v1/attempts/{attemptId}/success|failure`
 * is a bearer capability (whoever holds it may settle the attempt), so it is replaced by
 * `[redacted]`, as tokens are.
 */
export function redactPath(path: string): string {
  return path.replace(ATTEMPT_PATH, `$1${REDACTED}`);
}

export type { Logger };

/**
 * The sidecar's logger: JSON lines on stdout (or `destination`), with `service: "lockgate"`.
 *
 * Stdout is written synchronously: lines keep their order, nothing is lost at exit, and no exit
 * handler has to flush a buffer — pino's asynchronous default flushes at exit in a loop that
 * never ends once stdout's reader is gone (EPIPE), which would keep a SIGTERM from exiting.
 * The sidecar logs little at info level (start, stop, audit, warnings), so the cost is small.
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: 'lockgate' },
    redact: { paths: REDACT_PATHS, censor: REDACTED },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return pino(options, destination ?? pino.destination({ dest: 1, sync: true }));
}
