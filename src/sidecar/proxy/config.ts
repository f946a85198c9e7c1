/**
 * The `proxy` section of the sidecar's configuration (reverse-proxy mode): the upstream auth
 * service, how requests are forwarded, and the login routes whose answers are judged.
 *
 * `proxyConfigSchema` is a zod (v4) schema, merged into the sidecar's schema as its `proxy` key.
 * Parsing is idempotent: a parsed ProxyConfig parses again to the same value, so createProxy
 * accepts both the raw file section and an already parsed one.
 */
import proxyAddr from 'proxy-addr';
import { pathToRegexp } from 'path-to-regexp';
import { z } from 'zod';
import { InvalidArgumentError } from '../../core/errors';
import { parseSize } from '../../core/option-checks';

/** Bytes of a size (`64kb`, `1mb`, a number of bytes); one reading for every body limit. */
export { parseSize };
import { FACTORS, MAX_ID_LENGTH, validateId } from '../../core/subjects';
import { HTTP_TOKEN } from './read';

/** An HTTP token (RFC 9110 5.6.2): method and header names. */
const TOKEN = new RegExp(`^${HTTP_TOKEN}$`);
/** A header value without CR, LF or NUL. */
const HEADER_VALUE = /^[^\r\n\0]*$/;
const MAX_BODY_LIMIT = 64 * 1024 * 1024;

const intIn = (min: number, max: number) => {
  const error = `expected an integer from ${min} to ${max}`;
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error });
};

/** An id as the engine takes it (validateId): checked here so that a bad one fails at start, not per login. */
const id = (what: string) => {
  const error = `expected ${what}: a string of 1 to ${MAX_ID_LENGTH} characters without control characters`;
  return z.string({ error }).refine(isId, { error });
};

function isId(value: string): boolean {
  try {
    validateId(value, 'id');
    return true;
  } catch {
    return false;
  }
}

const size = z
  .union([z.number(), z.string()], { error: 'expected a number of bytes or a size such as "64kb" or "1mb"' })
  .transform((value, ctx) => {
    const bytes = parseSize(value);
    if (bytes === undefined || bytes > MAX_BODY_LIMIT) {
      ctx.issues.push({
        code: 'custom',
        message: `expected a number of bytes or a size such as "64kb" or "1mb" (1 byte to ${MAX_BODY_LIMIT / 1024 / 1024}mb)`,
        input: value,
      });
      return z.NEVER;
    }
    return bytes;
  });

/** An inclusive range of HTTP status codes. */
export interface StatusRange {
  readonly min: number;
  readonly max: number;
}

const STATUS_ERROR = 'expected a status (401), a class ("4xx") or a range ("400-499") of codes 100 to 599';

/** 401, "401", "4xx", "400-499", or an already parsed { min, max }. */
const statusRange = z
  .union([z.number(), z.string(), z.strictObject({ min: z.number(), max: z.number() })], {
    error: STATUS_ERROR,
  })
  .transform((value, ctx): StatusRange => {
    const r = parseStatusRange(value);
    if (!r) {
      ctx.issues.push({ code: 'custom', message: STATUS_ERROR, input: value });
      return z.NEVER;
    }
    return r;
  });

function parseStatusRange(value: number | string | StatusRange): StatusRange | undefined {
  let min: number;
  let max: number;
  if (typeof value === 'number') {
    min = max = value;
  } else if (typeof value === 'object') {
    ({ min, max } = value);
  } else {
    const s = value.trim();
    let m: RegExpExecArray | null;
    if ((m = /^([1-5])xx$/i.exec(s))) {
      min = Number(m[1]) * 100;
      max = min + 99;
    } else if ((m = /^([0-9]{3})\s*-\s*([0-9]{3})$/.exec(s))) {
      min = Number(m[1]);
      max = Number(m[2]);
    } else if (/^[0-9]{3}$/.test(s)) {
      min = max = Number(s);
    } else {
      return undefined;
    }
  }
  const ok = (n: number) => Number.isInteger(n) && n >= 100 && n <= 599;
  return ok(min) && ok(max) && min <= max ? { min, max } : undefined;
}

/** Where a value is read from in a login request. */
export const SOURCES = ['json', 'form', 'header', 'query', 'param'] as const;
export type Source = (typeof SOURCES)[number];

const sourceShape = {
  /**
   * json / form: a field of the login body, read as its Content-Type says (application/json: a
   * dotted path such as `checks.user.loginName`; application/x-www-form-urlencoded: the field of
   * that name); header: a request header; query: a query parameter; param: a named parameter of
   * the route's path (`/users/:userId/login`). `json` and `form` are the same source: the body is
   * always read the way the upstream reads it, whatever the route was written for.
   */
  from: z.enum(SOURCES, { error: `expected one of ${SOURCES.join(', ')}` }),
  /** The field, header, query parameter or path parameter name. */
  name: z.string({ error: 'expected a name' }).min(1, { error: 'expected a name' }),
};

const flag = (fallback: boolean) => z.boolean({ error: 'expected true or false' }).default(fallback);

/**
 * Where the login name is read from. By default it is normalized before counting (Unicode NFKC,
 * white space trimmed, case-folded), so that the spellings a case-insensitive upstream takes for
 * one account share one counter; set the flags to false for an upstream that tells them apart.
 */
const userSource = z.strictObject({
  ...sourceShape,
  /** Case-fold the value before counting (default true). */
  lowercase: flag(true),
  /** Trim white space around the value before counting (default true). */
  trim: flag(true),
  /** Unicode NFKC normalization before counting (default true). */
  nfkc: flag(true),
});

/** Sources the client chooses freely: an org read from them needs an allow-list. */
export const CLIENT_SOURCES: ReadonlySet<Source> = new Set<Source>([
  'json',
  'form',
  'header',
  'query',
  'param',
]);

const orgSource = z.union(
  [
    z.strictObject({
      ...sourceShape,
      /** Org ids are compared as they are: no normalization unless asked. */
      lowercase: flag(false),
      trim: flag(false),
      nfkc: flag(false),
      /** The org when the request does not name one (else the request is answered 400). */
      default: id('an org id').optional(),
      /**
       * The orgs a request may name (required: the client chooses this value, and rotating it
       * would give a fresh counter per org). Any other org: 400, never forwarded.
       */
      allow: z.array(id('an org id')).min(1, { error: 'expected at least one org id' }).optional(),
    }),
    z.strictObject({
      /** Every request of the route counts against this org. */
      fixed: id('an org id'),
    }),
  ],
  { error: 'expected { from, name, allow } or { fixed: "<org id>" }' },
);

/** Verdicts a judge rule may give. */
export const VERDICTS = ['success', 'failure', 'release'] as const;

/**
 * A rule judging by the upstream's answer body (first match wins, before the status lists):
 * for upstreams that answer 200 with an error, or 400 for both a wrong password and a bad request.
 */
const judgeRule = z
  .strictObject({
    /** The statuses the rule applies to. */
    status: z.array(statusRange).min(1, { error: 'expected at least one status' }),
    /** A field of the JSON answer (dotted path); matches when present and not null/false/"" (or one of `equals`). */
    json: z.string().min(1).optional(),
    /** The values of `json` that match (strings). */
    equals: z.array(z.string()).min(1).optional(),
    /** A text the answer body contains. */
    text: z.string().min(1).optional(),
    verdict: z.enum(VERDICTS, { error: `expected one of ${VERDICTS.join(', ')}` }),
  })
  .refine((r) => r.equals === undefined || r.json !== undefined, {
    error: 'equals needs json (the field compared)',
    path: ['equals'],
  });

/** Judge presets. `oauth2-token`: RFC 6749 5.2, 400 `invalid_grant` is a failure, other 400s are not counted. */
export const JUDGE_PRESETS = ['oauth2-token'] as const;

const judge = z
  .strictObject({
    /** Upstream statuses that mean "the credential was correct": the factor's counter is reset. */
    success: z.array(statusRange).default([{ min: 200, max: 299 }]),
    /** Upstream statuses that mean "the credential was wrong": counted, and may lock. */
    failure: z.array(statusRange).default([
      { min: 400, max: 400 },
      { min: 401, max: 401 },
      { min: 403, max: 403 },
    ]),
    /** Rules on the answer body, tried first (see judgeRule). */
    rules: z.array(judgeRule).default([]),
    /** `oauth2-token`: a 400 counts only with `{"error":"invalid_grant"}` (after `rules`). */
    preset: z.enum(JUDGE_PRESETS, { error: `expected ${JUDGE_PRESETS.join(', ')}` }).optional(),
  })
  .prefault({})
  .superRefine((j, ctx) => {
    j.failure.forEach((f, i) => {
      const overlap = j.success.find((s) => s.min <= f.max && f.min <= s.max);
      if (overlap) {
        ctx.addIssue({
          code: 'custom',
          path: ['failure', i],
          message: `overlaps success ${describeRange(overlap)}: a status must be success, failure or neither`,
        });
      }
    });
  });

function describeRange(r: StatusRange): string {
  return r.min === r.max ? String(r.min) : `${r.min}-${r.max}`;
}

const route = z
  .strictObject({
    /** The method, e.g. POST (case-insensitive), or "*" for any method. Default POST. */
    method: z
      .string({ error: 'expected an HTTP method such as POST, or "*"' })
      .regex(TOKEN, { error: 'expected an HTTP method such as POST, or "*"' })
      .transform((m) => m.toUpperCase())
      .default('POST'),
    /**
     * The path: exact (`/login`) or an Express 5 pattern (`/orgs/:orgId/login`, `/login/*rest`).
     * Matched case-insensitively, with an optional trailing slash, against the request path after
     * percent-decoding, `;params` removal, dot-segment resolution and slash collapsing (so that
     * spellings the upstream may treat as the same path cannot slip past the lockout).
     */
    path: z
      .string({ error: 'expected a path starting with /' })
      .startsWith('/', { error: 'expected a path starting with /' }),
    /** The factor counted (default password). */
    factor: z.enum(FACTORS, { error: `expected one of ${FACTORS.join(', ')}` }).default('password'),
    /** Where the user id (login name) is read from. */
    user: userSource,
    /** Where the org is read from, or a fixed org. Default: the instance id as the org. */
    org: orgSource.optional(),
    /**
     * The password field of the login body (json or form), for repeat-password forgiveness
     * (issue 12): a wrong password the user tried before is not counted again. Optional: without
     * it every failure counts. Read only to hash it (HMAC) for the store; never logged.
     */
    password: z
      .strictObject({
        from: z.enum(['json', 'form'], { error: 'expected json or form (a field of the login body)' }),
        name: z.string({ error: 'expected a name' }).min(1, { error: 'expected a name' }),
      })
      .optional(),
    /** How the upstream's answer is judged. Default: 2xx success, 400/401/403 failure, anything else uncounted. */
    judge,
  })
  .superRefine((r, ctx) => {
    let params: Set<string>;
    try {
      params = new Set(pathToRegexp(r.path).keys.map((k) => k.name));
    } catch (error) {
      ctx.addIssue({
        code: 'custom',
        path: ['path'],
        message: `is not a valid path pattern: ${error instanceof Error ? error.message.split('\n')[0] : 'syntax error'}`,
      });
      return;
    }
    const check = (field: 'user' | 'org', source: { from: Source; name: string } | { fixed: string }) => {
      if ('fixed' in source) return;
      if (source.from === 'param' && !params.has(source.name)) {
        ctx.addIssue({
          code: 'custom',
          path: [field, 'name'],
          message: `names no parameter of the path ${r.path} (write it as :${source.name})`,
        });
      }
      if (source.from === 'header' && !TOKEN.test(source.name)) {
        ctx.addIssue({ code: 'custom', path: [field, 'name'], message: 'expected a header name' });
      }
    };
    check('user', r.user);
    if (r.org) check('org', r.org);
    const org = r.org;
    if (org && !('fixed' in org) && CLIENT_SOURCES.has(org.from)) {
      if (org.allow === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['org', 'allow'],
          message: `the org is read from the client (${org.from} ${org.name}), which could name a fresh org per guess: list the orgs it may name (allow: [org-a, org-b]) or use org: { fixed: <org id> }`,
        });
      } else if (org.default !== undefined && !org.allow.includes(org.default)) {
        ctx.addIssue({
          code: 'custom',
          path: ['org', 'default'],
          message: 'is not in org.allow',
        });
      }
    }
  });

/** The answer to a login of a locked user. Default: 423 with the ZITADEL error body (Errors.User.Locked). */
const lockedResponse = z.strictObject({
  /** HTTP status, e.g. the upstream's own failure status so that the lock is not revealed. */
  status: intIn(200, 599),
  /** A string is sent as it is; an object or list as JSON. Absent: an empty body. */
  body: z
    .union([z.string(), z.record(z.string(), z.unknown()), z.array(z.unknown())], {
      error: 'expected a string, or an object or list (sent as JSON)',
    })
    .optional(),
  /** Response headers (e.g. the upstream's content-type and WWW-Authenticate). */
  headers: z
    .record(
      z.string().regex(TOKEN, { error: 'expected a header name' }),
      z.string().regex(HEADER_VALUE, { error: 'expected a header value without line breaks' }),
    )
    .optional(),
});

type TrustProxyValue = boolean | number | string | string[];

const trustProxy = z
  .union([z.boolean(), intIn(0, 64), z.string().min(1), z.array(z.string().min(1)).min(1)], {
    error:
      'expected true, false, a number of hops, or addresses/subnets (a list, or a comma-separated string; "loopback", "linklocal" and "uniquelocal" allowed)',
  })
  .superRefine((value, ctx) => {
    try {
      compileTrust(value);
    } catch (error) {
      ctx.addIssue({
        code: 'custom',
        message: `${error instanceof Error ? error.message : 'invalid'} (expected addresses or subnets such as 10.0.0.0/8, or loopback)`,
      });
    }
  });

const upstream = z
  .string({ error: 'expected the upstream URL, e.g. http://auth:8080' })
  .transform((value, ctx) => {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      ctx.issues.push({ code: 'custom', message: 'expected a URL such as http://auth:8080', input: value });
      return z.NEVER;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      ctx.issues.push({ code: 'custom', message: 'expected an http:// or https:// URL', input: value });
      return z.NEVER;
    }
    if (
      url.username ||
      url.password ||
      (url.pathname !== '/' && url.pathname !== '') ||
      url.search ||
      url.hash
    ) {
      ctx.issues.push({
        code: 'custom',
        message: 'expected an origin only (scheme://host[:port]): requests keep their own path',
        input: value,
      });
      return z.NEVER;
    }
    return url.origin;
  });

export const proxyConfigSchema = z.strictObject({
  /** The auth service: scheme://host[:port]. Every request keeps its path and query. */
  upstream,
  /**
   * Serve the proxy on its own address instead of beside lockgate's API on server.port. Use it
   * when the upstream has routes of the same path as lockgate's (ZITADEL's /management/v1/…,
   * /v2/users/…): on one port lockgate's own routes would answer them.
   */
  listen: z
    .strictObject({
      host: z.string({ error: 'expected a host name or address' }).min(1).default('127.0.0.1'),
      port: intIn(0, 65535),
    })
    .optional(),
  /**
   * How long the upstream may take to answer (time to response headers, and the longest pause
   * while a body streams), in ms; slower: 504. Keep it below the engine's lease (leaseMs).
   */
  timeoutMs: intIn(1, 3_600_000).default(30_000),
  /**
   * Which peers are trusted proxies, as Express's "trust proxy": false (default), true, a hop
   * count, or addresses/subnets. The X-Forwarded-* headers of a trusted peer are kept (its
   * address appended to X-Forwarded-For); an untrusted peer's are replaced.
   */
  trustProxy: trustProxy.default(false),
  /** Forward the client's Host header (default) or send the upstream's host. */
  preserveHost: z.boolean({ error: 'expected true or false' }).default(true),
  /** Largest login request body (login routes only; bodies of other routes stream through unbounded). */
  bodyLimit: size.default(64 * 1024),
  /** Most connections to the upstream at once (default: no limit). Idle ones are kept alive. */
  connections: intIn(1, 65_535).optional(),
  /** The answer to a login of a locked user. Default: 423 with the ZITADEL error body. */
  lockedResponse: lockedResponse.optional(),
  /**
   * Mimic mode (opt-in): a locked user is answered with the upstream's own most recent failure
   * answer for that route (status, headers with a fresh Date, body), after a delay drawn from the
   * upstream's recently observed failure latencies (a reservoir of the last `samples`). Until the
   * route has seen a failure, `lockedResponse` answers. `true` = `{ samples: 256 }`.
   */
  mimic: z
    .union([z.boolean(), z.strictObject({ samples: intIn(1, 10_000).default(256) })], {
      error: 'expected true, false or { samples: <1 to 10000> }',
    })
    .optional(),
  /** The login routes: requests to them are counted; everything else passes through. */
  routes: z.array(route).min(1, { error: 'expected at least one login route' }),
});

/** The `proxy` section as written in the configuration file. */
export type ProxyConfigInput = z.input<typeof proxyConfigSchema>;
/** The parsed `proxy` section. */
export type ProxyConfig = z.output<typeof proxyConfigSchema>;
export type ProxyRouteConfig = ProxyConfig['routes'][number];
export type ProxyValueSource = ProxyRouteConfig['user'];
export type ProxyOrgSource = NonNullable<ProxyRouteConfig['org']>;
export type LockedResponseConfig = NonNullable<ProxyConfig['lockedResponse']>;
export type JudgeConfig = ProxyRouteConfig['judge'];
export type JudgeRuleConfig = JudgeConfig['rules'][number];

/**
 * Parses the `proxy` section. Throws InvalidArgumentError (`Errors.Options.Invalid`) whose
 * message names the first bad field: `proxy.routes[0].user.from: expected one of json, …`.
 */
export function parseProxyConfig(raw: unknown): ProxyConfig {
  const result = proxyConfigSchema.safeParse(raw);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const parts = issue ? [...issue.path] : [];
  if (issue?.code === 'unrecognized_keys' && issue.keys[0] !== undefined) parts.push(issue.keys[0]);
  const field = formatPath(['proxy', ...parts]);
  const message = issue?.code === 'unrecognized_keys' ? 'unknown option' : (issue?.message ?? 'invalid');
  throw new InvalidArgumentError('Errors.Options.Invalid', `${field}: ${message}`, field);
}

/** A configuration path as an error names it: `proxy.routes[0].user.name`. */
export function formatPath(parts: readonly PropertyKey[]): string {
  let out = '';
  for (const p of parts) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`;
  return out;
}

/**
 * The trust function of a `trustProxy` value, as Express compiles "trust proxy": called with an
 * address and its hop index (0 = the peer of the connection).
 */
export function compileTrust(value: TrustProxyValue): (address: string, hop: number) => boolean {
  if (value === true) return () => true;
  if (value === false) return () => false;
  if (typeof value === 'number') return (_address, hop) => hop < value;
  const list = typeof value === 'string' ? value.split(',').map((v) => v.trim()) : value;
  return proxyAddr.compile(list);
}
