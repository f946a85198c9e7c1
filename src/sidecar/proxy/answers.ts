/**
 * The answers the proxy gives itself (never the upstream's): refusals in the ZITADEL error body,
 * the locked answer (default or configured), and a mimic-mode replay.
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { UserLockedError } from '../../core/errors';
import { ERROR_DETAIL_TYPE, toHttpError, type HttpError } from '../../http/errors';
import type { LockedResponseConfig } from './config';
import type { RecordedAnswer } from './mimic';

/** An answer written whole, with its Content-Length. */
export interface Answer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
}

export function toAnswer(e: HttpError): Answer {
  return {
    status: e.status,
    headers: { ...e.headers, 'content-type': 'application/json' },
    body: Buffer.from(JSON.stringify(e.body)),
  };
}

function errorAnswer(status: number, code: number, id: string, message: string): Answer {
  return toAnswer({
    status,
    headers: {},
    body: { code, message, details: [{ '@type': ERROR_DETAIL_TYPE, id, message }] },
  });
}

/** gRPC DeadlineExceeded, not in GrpcCode (no engine error carries it). */
const DEADLINE_EXCEEDED = 4;
export const UPSTREAM_FAILED = errorAnswer(502, 14, 'Errors.Upstream.Unavailable', 'Upstream unavailable');
export const UPSTREAM_TIMEOUT = errorAnswer(
  504,
  DEADLINE_EXCEEDED,
  'Errors.Upstream.Timeout',
  'Upstream did not answer in time',
);
export const TOO_LARGE = errorAnswer(413, 8, 'Errors.Request.TooLarge', 'Request body is too large');
export const UNSUPPORTED_ENCODING = errorAnswer(
  415,
  3,
  'Errors.Request.UnsupportedEncoding',
  'Login request bodies must not be compressed (Content-Encoding)',
);
export const BAD_TARGET = errorAnswer(400, 3, 'Errors.Request.Invalid', 'Request target is invalid');
export const AMBIGUOUS_PATH = errorAnswer(
  400,
  3,
  'Errors.Request.Ambiguous',
  'Request path reads differently to different servers',
);
export const UNSUPPORTED_TYPE = errorAnswer(
  415,
  3,
  'Errors.Request.UnsupportedType',
  'Login request bodies must be application/json or application/x-www-form-urlencoded',
);
export const SHUTTING_DOWN = errorAnswer(503, 14, 'Errors.Proxy.ShuttingDown', 'Shutting down');
export const INTERNAL = errorAnswer(500, 13, 'Errors.Internal', 'Internal error');

/** The answer to a login of a locked user: `lockedResponse` as configured, else 423 Errors.User.Locked. */
export function lockedAnswer(config: LockedResponseConfig | undefined): Answer {
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

export function writeAnswer(res: ServerResponse, answer: Answer): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(answer.status, { ...answer.headers, 'content-length': answer.body.length });
  res.end(answer.body);
}

/** A recorded upstream failure answer, replayed with a fresh Date (mimic mode). */
export function writeReplay(res: ServerResponse, replay: RecordedAnswer): void {
  if (res.headersSent || res.destroyed) return;
  const headers: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(replay.headers)) {
    headers[name] = name === 'date' ? new Date().toUTCString() : value;
  }
  res.writeHead(replay.status, replay.statusText || undefined, headers);
  res.end(replay.body);
}
