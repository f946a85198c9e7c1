/**
 * The HTTP client of the CLI: one request to a running sidecar at LOCKGATE_URL with the bearer
 * token LOCKGATE_TOKEN. A ZITADEL error body becomes an ApiError carrying the server's message;
 * a sidecar that cannot be reached becomes a ConnectError with one line saying so.
 */
import type { Env } from '../sidecar/config';

export const DEFAULT_URL = 'http://127.0.0.1:8080';
const TIMEOUT_MS = 30_000;

/** The server answered with an error: `message` is the server's. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly body: unknown,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The sidecar could not be reached (or LOCKGATE_URL is not a URL); `message` is the line to print. */
export class ConnectError extends Error {
  override name = 'ConnectError';
}

export interface ApiRequest {
  readonly method: 'GET' | 'POST' | 'PUT';
  /** Path and query, e.g. `/v1/users/u%2D1/lockout`. */
  readonly path: string;
  /** Sent as `x-zitadel-orgid` when set (else the token's home org applies). */
  readonly org?: string | undefined;
  readonly body?: unknown;
}

export interface ApiResult {
  readonly status: number;
  readonly body: unknown;
}

export function baseUrl(env: Env): string {
  const raw = env.LOCKGATE_URL === undefined || env.LOCKGATE_URL === '' ? DEFAULT_URL : env.LOCKGATE_URL;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConnectError(`LOCKGATE_URL: expected an http:// or https:// URL, got "${raw}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConnectError(`LOCKGATE_URL: expected an http:// or https:// URL, got "${raw}"`);
  }
  if (url.username !== '' || url.password !== '') {
    // Not echoed: it holds a credential. The token goes in LOCKGATE_TOKEN.
    throw new ConnectError('LOCKGATE_URL: must not contain a user name or password (set LOCKGATE_TOKEN)');
  }
  return url.href.replace(/\/+$/, '');
}

/** Sends one request; resolves for a 2xx answer, throws ApiError or ConnectError otherwise. */
export async function callApi(env: Env, request: ApiRequest): Promise<ApiResult> {
  const base = baseUrl(env);
  const headers: Record<string, string> = { accept: 'application/json' };
  const token = env.LOCKGATE_TOKEN;
  if (token !== undefined && token !== '') headers.authorization = `Bearer ${token}`;
  if (request.org !== undefined) headers['x-zitadel-orgid'] = request.org;
  let body: string | undefined;
  if (request.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(request.body);
  }
  let res: Response;
  try {
    res = await fetch(`${base}${request.path}`, {
      method: request.method,
      headers,
      ...(body !== undefined ? { body } : {}),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (error) {
    throw new ConnectError(connectMessage(base, error));
  }
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text === '' ? null : JSON.parse(text);
  } catch {
    // Not JSON (a proxy in between?): the text is the message.
  }
  if (res.status >= 200 && res.status < 300) return { status: res.status, body: parsed };
  const message =
    isRecord(parsed) && typeof parsed.message === 'string' && parsed.message !== ''
      ? parsed.message
      : typeof parsed === 'string' && parsed.trim() !== ''
        ? parsed.trim().split('\n')[0]!
        : res.statusText || 'request failed';
  throw new ApiError(res.status, message, parsed);
}

function connectMessage(base: string, error: unknown): string {
  if (error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError')) {
    return `cannot reach the sidecar at ${base}: no answer within ${TIMEOUT_MS / 1000} s`;
  }
  const cause = error instanceof Error ? (error.cause as NodeJS.ErrnoException | undefined) : undefined;
  const code = cause?.code;
  if (code === 'ECONNREFUSED') {
    return `cannot connect to the sidecar at ${base}: connection refused (is it running? set LOCKGATE_URL)`;
  }
  const reason = code ?? cause?.message ?? (error instanceof Error ? error.message : String(error));
  return `cannot reach the sidecar at ${base}: ${reason}`;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
