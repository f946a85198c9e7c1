/**
 * Forwarding to the upstream over undici (a Pool, keep-alive): pass-through requests stream in
 * both directions without buffering (`stream()`); a login's answer is read (whole, or its first
 * bytes) to be judged, then relayed. An upstream that fails is a 502, one too slow a 504.
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { Pool, type Dispatcher } from 'undici';
import { UPSTREAM_FAILED, UPSTREAM_TIMEOUT, writeAnswer } from './answers';
import type { ProxyConfig } from './config';
import { downstreamHeaders, hasBody, type UpstreamHeaders } from './headers';

/** The subset of a pino logger the proxy uses. */
export interface ProxyLogger {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export const noop = (): void => {};

/** The upstream's connection pool: every timeout is `timeoutMs`; idle connections kept 4 s. */
export function createPool(config: ProxyConfig): Pool {
  const timeoutMs = config.timeoutMs;
  return new Pool(config.upstream, {
    connections: config.connections ?? null,
    connectTimeout: timeoutMs,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    keepAliveTimeout: 4_000,
  });
}

// ---- upstream errors ----------------------------------------------------------------------

/** Stands for "the login's own deadline passed" in upstreamFailed. */
export const TIMED_OUT = Object.freeze({ code: 'LOCKGATE_UPSTREAM_TIMEOUT' });

export function errorCode(error: unknown): string {
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

/**
 * Answers an upstream failure (502, or 504 when too slow) unless the client is gone; a response
 * already under way is broken off. Returns the status.
 */
export function upstreamFailed(
  logger: ProxyLogger,
  error: unknown,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
): number {
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
}

// ---- pass-through -------------------------------------------------------------------------

export type PassThrough = (req: IncomingMessage, res: ServerResponse, target: string, path: string) => void;

const factory: Dispatcher.StreamFactory<ServerResponse> = ({ statusCode, headers, opaque }) => {
  opaque.writeHead(statusCode, downstreamHeaders(headers));
  return opaque;
};

/** Streams a request that is not a login to the upstream and its answer back, untouched. */
export function createPassThrough(
  pool: Dispatcher,
  upstreamHeaders: UpstreamHeaders,
  logger: ProxyLogger,
): PassThrough {
  return (req, res, target, path) => {
    // undici takes an EventEmitter as its abort signal, cheaper than an AbortController's
    // EventTarget: `npm run bench -- proxy`, both in one run (issue 11), proxy event-loop time per
    // request: pass-through 156-203 µs against 198-209, login 345-357 µs against 399-400.
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
        upstreamFailed(logger, error, req, res, path);
      });
  };
}

// ---- relaying a login's answer --------------------------------------------------------------

/** Largest upstream answer read whole (to judge it by its body, or to record it for mimic mode). */
export const ANSWER_READ_LIMIT = 64 * 1024;

export interface ReadAnswer {
  /** The bytes read (all of them when complete). */
  readonly body: Buffer;
  /** False: the answer was longer than the limit; the rest is still in the stream. */
  readonly complete: boolean;
}

/** Reads an upstream answer whole, up to `limit` bytes (then stops, leaving the rest unread). */
export function readAnswer(body: Dispatcher.ResponseData['body'], limit: number): Promise<ReadAnswer> {
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

/** Relays the upstream's answer: the bytes already read (if any), then the rest as it streams. */
export function relay(
  up: Dispatcher.ResponseData,
  res: ServerResponse,
  headers: OutgoingHttpHeaders,
  read?: ReadAnswer,
): void {
  if (read?.complete) {
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
  // pipe(), not stream.pipeline(): pipeline aborts an AbortController (building a DOMException
  // with its stack) at the end of every response, a measurable cost per login.
  const body = up.body;
  body.once('error', () => res.destroy());
  res.once('close', () => {
    if (!body.readableEnded) body.destroy();
  });
  if (read === undefined) {
    body.pipe(res);
    return;
  }
  res.write(read.body);
  body.pipe(res);
  body.resume();
}
