/**
 * Reading a login request: its body, bounded (readBody), and the user and org in it
 * (LoginRequest) — one reading, the upstream's (G6).
 *
 * The user and org are read the way a typical upstream reads them (Express 5: `express.json()`,
 * `express.urlencoded()` with `extended: false`, the "simple" query parser), and anything that
 * another common reader could take differently is refused (400) rather than guessed: duplicate
 * keys (JSON too), a literal key that shadows a dotted path, a body that does not parse as its
 * declared type, a charset other than UTF-8, malformed percent-encoding, invalid UTF-8, a byte
 * order mark, a login name that is not a string.
 */
import type { IncomingMessage } from 'node:http';
import getRawBody from 'raw-body';
import { InvalidArgumentError } from '../../core/errors';
import { validateId } from '../../core/subjects';
import type { Source } from './config';
import type { Params } from './routes';

/** Thrown for a request that can be read two ways, or not at all: answered 400. */
export class AmbiguousRequestError extends InvalidArgumentError {
  constructor(message: string, field = 'body') {
    super('Errors.Request.Ambiguous', message, field);
  }
}

/** Thrown for a body whose Content-Type the upstream would not parse: answered 415. */
export class UnsupportedTypeError extends InvalidArgumentError {
  constructor(message: string) {
    super('Errors.Request.UnsupportedType', message, 'content-type');
  }
}

/** Most parameters in a form body or query string (body-parser's and node:querystring's limit). */
export const MAX_PARAMETERS = 1000;
/** Deepest JSON nesting read. */
const MAX_DEPTH = 64;

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The body's text as strict UTF-8 (no BOM, no invalid sequence). */
export function strictUtf8(bytes: Buffer, what: string): string {
  if (bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) {
    throw new AmbiguousRequestError(`${what} starts with a byte order mark`);
  }
  try {
    return UTF8.decode(bytes);
  } catch {
    throw new AmbiguousRequestError(`${what} is not valid UTF-8`);
  }
}

export type BodyType = 'json' | 'form' | 'none';

/**
 * The declared type of a login body: json (application/json), form
 * (application/x-www-form-urlencoded), or none (no body). A charset other than UTF-8 is a 400, any
 * other type a 415.
 */
export function bodyType(contentTypes: readonly string[], body: Buffer): BodyType {
  if (contentTypes.length > 1) throw new AmbiguousRequestError('Content-Type is given twice', 'content-type');
  // body-parser reads an empty body as {} (JSON) or {} (form): no field.
  if (body.length === 0) return 'none';
  const header = contentTypes[0];
  if (header === undefined) {
    throw new UnsupportedTypeError('Login requests need a Content-Type (application/json or a form)');
  }
  let parsed: { type: string; parameters: Record<string, string> };
  try {
    parsed = parseContentType(header);
  } catch {
    throw new AmbiguousRequestError('Content-Type is malformed', 'content-type');
  }
  const charset = parsed.parameters.charset?.toLowerCase();
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
    throw new AmbiguousRequestError('Login request bodies must be UTF-8 (charset=utf-8)', 'content-type');
  }
  if (parsed.type === 'application/json') return 'json';
  if (parsed.type === 'application/x-www-form-urlencoded') return 'form';
  throw new UnsupportedTypeError(
    'Login request bodies must be application/json or application/x-www-form-urlencoded',
  );
}

/** An HTTP token (RFC 9110 5.6.2), as a regular expression's source. */
export const HTTP_TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const MEDIA_TYPE = new RegExp(`^(${HTTP_TOKEN}/${HTTP_TOKEN})[ \\t]*`);

const PARAMETER = new RegExp(
  `^;[ \\t]*(${HTTP_TOKEN})=(${HTTP_TOKEN}|"(?:[^"\\\\\\x00-\\x08\\x0a-\\x1f\\x7f]|\\\\[^\\x00-\\x08\\x0a-\\x1f\\x7f])*")[ \\t]*`,
);

/** A Content-Type as RFC 9110 8.3.1 writes it (the `content-type` package's grammar). */
function parseContentType(header: string): { type: string; parameters: Record<string, string> } {
  let rest = header.trim();
  const m = MEDIA_TYPE.exec(rest);
  if (!m) throw new Error('malformed');
  const parameters: Record<string, string> = Object.create(null) as Record<string, string>;
  rest = rest.slice(m[0].length);
  while (rest !== '') {
    const p = PARAMETER.exec(rest);
    if (!p) throw new Error('malformed');
    const key = p[1]!.toLowerCase();
    if (key in parameters) throw new Error('duplicate parameter');
    let value = p[2]!;
    if (value.startsWith('"')) value = value.slice(1, -1).replace(/\\(.)/g, '$1');
    parameters[key] = value;
    rest = rest.slice(p[0].length);
  }
  return { type: m[1]!.toLowerCase(), parameters };
}

// ---- JSON -----------------------------------------------------------------------------------

/** A parsed JSON object: own keys (null prototype) and the keys given more than once. */
export interface JsonObject {
  readonly values: Map<string, unknown>;
  readonly duplicates: Set<string>;
}

export function isJsonObject(value: unknown): value is JsonObject {
  return value instanceof JsonObjectImpl;
}

class JsonObjectImpl implements JsonObject {
  readonly values = new Map<string, unknown>();
  readonly duplicates = new Set<string>();
}

/**
 * Parses JSON as `JSON.parse` does (it validates first), keeping the duplicate keys of every
 * object: the reader that counts must not pick one of two values silently.
 */
export function parseJson(text: string): unknown {
  try {
    JSON.parse(text);
  } catch {
    throw new InvalidArgumentError('Errors.Request.MalformedJson', 'Request body is not valid JSON', 'body');
  }
  let i = 0;
  const ws = (): void => {
    while (i < text.length) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
      else break;
    }
  };
  const string = (): string => {
    const start = i;
    i++; // "
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const value = (depth: number): unknown => {
    if (depth > MAX_DEPTH) throw new AmbiguousRequestError('Request body is nested too deeply');
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const obj = new JsonObjectImpl();
      ws();
      if (text[i] === '}') {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        const key = string();
        ws();
        i++; // :
        const v = value(depth + 1);
        if (obj.values.has(key)) obj.duplicates.add(key);
        else obj.values.set(key, v);
        ws();
        if (text[i++] === '}') return obj;
      }
    }
    if (c === '[') {
      i++;
      const arr: unknown[] = [];
      ws();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[i++] === ']') return arr;
      }
    }
    if (c === '"') return string();
    const start = i;
    while (i < text.length && !/[\s,\]}]/.test(text[i]!)) i++;
    return JSON.parse(text.slice(start, i)) as unknown;
  };
  return value(0);
}

/**
 * A field by dotted path (`checks.user.loginName`). Refused: a duplicate key on the path, and a
 * literal key with a dot that spells part of the path (`{"checks.user": …}`), which readers take
 * differently (lodash.get prefers it, a nested walk ignores it).
 */
export function jsonField(root: unknown, name: string, what: string): unknown {
  const parts = name.split('.');
  let node: unknown = root;
  for (let i = 0; i < parts.length; i++) {
    if (!isJsonObject(node)) return undefined;
    for (let j = i + 1; j < parts.length; j++) {
      if (node.values.has(parts.slice(i, j + 1).join('.'))) {
        throw new AmbiguousRequestError(
          `${what}: a literal key "${parts.slice(i, j + 1).join('.')}" shadows the path`,
        );
      }
    }
    const part = parts[i]!;
    if (node.duplicates.has(part)) throw new AmbiguousRequestError(`${what}: "${part}" is given twice`);
    node = node.values.get(part);
  }
  return node;
}

// ---- forms and query strings ----------------------------------------------------------------

/** Percent-decoding as decodeURIComponent, '+' as space; malformed or invalid UTF-8: 400. */
function decodeComponent(s: string, what: string): string {
  const plus = s.includes('+') ? s.replace(/\+/g, ' ') : s;
  if (!plus.includes('%')) return plus;
  try {
    return decodeURIComponent(plus);
  } catch {
    throw new AmbiguousRequestError(`${what}: malformed percent-encoding`);
  }
}

/**
 * The values of `name` in an application/x-www-form-urlencoded text (a body or a query string),
 * decoded strictly. Refused: more than MAX_PARAMETERS pairs, a pair that qs splits elsewhere
 * than node:querystring (`a]=b=c`), a key `[name]` (qs reads it as `name`).
 */
export function formValues(text: string, name: string, what: string): string[] {
  if (text === '') return [];
  const pairs = text.split('&');
  if (pairs.length > MAX_PARAMETERS)
    throw new AmbiguousRequestError(`${what}: more than ${MAX_PARAMETERS} parameters`);
  const out: string[] = [];
  for (const pair of pairs) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const bracket = pair.indexOf(']=');
    if (bracket !== -1 && bracket + 1 !== eq) {
      throw new AmbiguousRequestError(`${what}: a parameter readers split differently`);
    }
    const key = decodeComponent(eq < 0 ? pair : pair.slice(0, eq), what);
    const value = eq < 0 ? '' : decodeComponent(pair.slice(eq + 1), what);
    if (key === `[${name}]`)
      throw new AmbiguousRequestError(`${what}: "[${name}]" is read as "${name}" by some`);
    if (key === name) out.push(value);
  }
  return out;
}

// ---- login names ----------------------------------------------------------------------------

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

export interface Normalization {
  readonly trim: boolean;
  readonly lowercase: boolean;
  readonly nfkc: boolean;
}

/**
 * The login name as counted: NFKC, trimmed, case-folded (each as configured). Case folding is
 * upper- then lower-casing, which folds ß to ss and ſ to s as Unicode full case folding does.
 */
export function normalizeName(value: string, how: Normalization, what: string): string {
  if (LONE_SURROGATE.test(value)) throw new AmbiguousRequestError(`${what} is not well-formed Unicode`);
  let v = value;
  if (how.nfkc) v = v.normalize('NFKC');
  if (how.trim) v = v.trim();
  if (how.lowercase) v = v.toUpperCase().toLowerCase();
  if (how.nfkc && how.lowercase) v = v.normalize('NFKC');
  return v;
}

// ---- the login request ----------------------------------------------------------------------

/**
 * Reads the whole body, at most `limit` bytes (raw-body, as express.json reads it): a declared
 * Content-Length over the limit is refused unread; a body that grows past it is discarded.
 */
export async function readBody(
  req: IncomingMessage,
  limit: number,
): Promise<Buffer | 'too_large' | 'aborted'> {
  try {
    return await getRawBody(req, { length: req.headers['content-length'], limit });
  } catch (error) {
    const { type, received } = error as { type?: unknown; received?: unknown };
    if (type === 'stream.encoding.set') throw error;
    if (type !== 'entity.too.large') return 'aborted';
    // Over the limit while streaming: raw-body paused the request; the rest is read and dropped
    // while the answer closes the connection.
    if (received !== undefined) req.resume();
    return 'too_large';
  }
}

/** A value source of a route (user, or org read from the request). */
export type ValueSource = { readonly from: Source; readonly name: string } & Normalization;

/** Reads user and org from a buffered login request: one reading, the upstream's. */
export class LoginRequest {
  private type: BodyType | undefined;
  private json: unknown;
  private form: string | undefined;

  constructor(
    private readonly req: IncomingMessage,
    private readonly body: Buffer,
    private readonly target: string,
    private readonly params: Params,
  ) {}

  /**
   * The value of `source`, normalized as configured and validated as an id. A missing value is a
   * 400 (or `fallback`); a value given twice, or that readers could take differently, is a 400
   * too: the upstream might read the other one.
   */
  value(source: ValueSource, field: 'userId' | 'orgId', fallback?: string): string {
    const what = `${source.name} (${source.from})`;
    let raw: unknown;
    switch (source.from) {
      case 'json':
      case 'form':
        raw = this.bodyField(source.name, what);
        break;
      case 'query': {
        const q = this.target.indexOf('?');
        raw = single(formValues(q < 0 ? '' : this.target.slice(q + 1), source.name, 'query'), what);
        break;
      }
      case 'header': {
        const lower = source.name.toLowerCase();
        // CGI-style readers (PHP, WSGI, Rack) take X_User for X-User: a second spelling is a 400.
        const raw2 = this.req.rawHeaders;
        for (let i = 0; i < raw2.length; i += 2) {
          const n = raw2[i]!.toLowerCase();
          if (n !== lower && n.replace(/_/g, '-') === lower.replace(/_/g, '-')) {
            throw new AmbiguousRequestError(`${what} is also given as ${raw2[i]!}`, what);
          }
        }
        raw = single(this.req.headersDistinct[lower] ?? [], what);
        break;
      }
      case 'param': {
        const v = this.params[source.name];
        raw = Array.isArray(v) ? v.join('/') : v;
        break;
      }
    }
    if (raw !== undefined && typeof raw !== 'string') {
      throw new InvalidArgumentError('Errors.Request.Invalid', `${what} must be a string`, field);
    }
    let value = raw;
    if (value !== undefined) value = normalizeName(value, source, what);
    if (value === undefined || value === '') {
      if (fallback !== undefined) return fallback;
      throw new InvalidArgumentError('Errors.Request.Missing', `${what} is required`, field);
    }
    return validateId(value, field === 'userId' ? `user ${what}` : `org ${what}`);
  }

  /**
   * The password of the login body (repeat-password forgiveness, issue 12): its string, or
   * undefined when absent or not a string (then the failure simply counts). Given twice, or
   * readable two ways: a 400, as for the user — forgiveness must hash the password the upstream
   * evaluates, never another one.
   */
  password(source: { readonly from: 'json' | 'form'; readonly name: string }): string | undefined {
    const raw = this.bodyField(source.name, `${source.name} (${source.from})`);
    return typeof raw === 'string' ? raw : undefined;
  }

  /** A field of the body, read as its Content-Type says (as express.json / express.urlencoded). */
  private bodyField(name: string, what: string): unknown {
    this.type ??= bodyType(this.req.headersDistinct['content-type'] ?? [], this.body);
    switch (this.type) {
      case 'none':
        return undefined;
      case 'json':
        this.json ??= parseJson(strictUtf8(this.body, 'Request body'));
        if (!isJsonObject(this.json)) return undefined;
        return jsonField(this.json, name, what);
      case 'form':
        this.form ??= strictUtf8(this.body, 'Request body');
        return single(formValues(this.form, name, 'body'), what);
    }
  }
}

function single(values: readonly string[], what: string): string | undefined {
  if (values.length > 1) throw new AmbiguousRequestError(`${what} must be given once`, what);
  return values[0];
}
