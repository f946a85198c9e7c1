/**
 * The sidecar's configuration: one zod schema for the whole of it, filled from three layers
 * (later ones win): the shipped `config/default.yaml`, the YAML file named by `LOCKGATE_CONFIG`,
 * and `LOCKGATE_*` environment variables. A bad value is a ConfigError whose message is one line
 * naming the field: `lockgate: invalid configuration: server.port: expected an integer from 0 to 65535`.
 *
 * This module reads neither `process.env` nor the file system itself: `loadConfig` is given both
 * (main.ts passes the real ones, tests pass their own).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { hashToken, PERMISSIONS, type Permission, type TokenOptions } from '../http/auth';
import { JWT_ALGORITHMS } from '../http/jwt';
import { defencesConfigSchema } from '../http/defence-schemas';
import { isPlainObject } from '../core/option-checks';
import { MAX_SETTING_VALUE } from '../core/settings';
import { SPRAY_THROTTLE_DEFAULTS } from '../core/spray-throttle';
import { CONTROL_CHARACTERS, MAX_ID_LENGTH } from '../core/subjects';
import { formatPath, proxyConfigSchema } from './proxy/config';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The environment variables the sidecar reads (all optional). */
export const ENV = {
  config: 'LOCKGATE_CONFIG',
  port: 'LOCKGATE_PORT',
  host: 'LOCKGATE_HOST',
  redisUrl: 'LOCKGATE_REDIS_URL',
  adminToken: 'LOCKGATE_ADMIN_TOKEN',
  instanceId: 'LOCKGATE_INSTANCE_ID',
  logLevel: 'LOCKGATE_LOG_LEVEL',
  onStoreError: 'LOCKGATE_ON_STORE_ERROR',
  otpPepper: 'LOCKGATE_OTP_PEPPER',
  proxyUpstream: 'LOCKGATE_PROXY_UPSTREAM',
  proxyRoutes: 'LOCKGATE_PROXY_ROUTES',
  proxyPort: 'LOCKGATE_PROXY_PORT',
} as const;

/** The name of the token made from LOCKGATE_ADMIN_TOKEN (or generated at start). */
export const ADMIN_TOKEN_NAME = 'admin';

/** A bad configuration. `message` is the one line to print; `field` the first offending field. */
export class ConfigError extends Error {
  constructor(
    readonly detail: string,
    readonly field?: string,
  ) {
    super(`lockgate: invalid configuration: ${detail}`);
    this.name = 'ConfigError';
  }
}

export type Env = Readonly<Record<string, string | undefined>>;
/** Reads a file as UTF-8 text (main.ts: `(p) => fs.readFileSync(p, 'utf8')`). Throws when it cannot. */
export type FileReader = (path: string) => string;

// ---- the schema ---------------------------------------------------------------------------

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
const SHA256_PREFIX = 'sha256:';
const HEX64 = /^[0-9a-fA-F]{64}$/;
const WEBHOOK_SECRET = /^whsec_[A-Za-z0-9+/]{32,}={0,2}$/;

const intIn = (min: number, max: number) => {
  const error = `expected an integer from ${min} to ${max}`;
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error });
};

/**
 * `defences.sprayThrottle` (issue 12): failed checks per client address block across all users
 * and orgs of the instance (per instance only: an IP spraying several orgs is counted once).
 */
const sprayThrottleSchema = z
  .strictObject({
    enabled: z.boolean({ error: 'expected true or false' }).default(SPRAY_THROTTLE_DEFAULTS.enabled),
    /** Failed checks from one address block within the window that throttle it. */
    failures: intIn(1, 1_000_000).default(SPRAY_THROTTLE_DEFAULTS.failures),
    /** The counting window (s), opened by the block's first counted check. */
    windowSeconds: intIn(1, 30 * 86_400).default(SPRAY_THROTTLE_DEFAULTS.windowSeconds),
    /** How long a block stays throttled (s); 0 = until its window ends. */
    blockSeconds: intIn(0, 30 * 86_400).default(SPRAY_THROTTLE_DEFAULTS.blockSeconds),
    /** IPv6 addresses are counted per this prefix. */
    ipv6Prefix: intIn(1, 128).default(SPRAY_THROTTLE_DEFAULTS.ipv6Prefix),
  })
  .prefault({});

const id = (what: string) =>
  z
    .string({ error: `expected ${what}: a string of 1 to ${MAX_ID_LENGTH} characters` })
    .min(1, { error: `expected ${what}: a string of 1 to ${MAX_ID_LENGTH} characters` })
    .max(MAX_ID_LENGTH, { error: `expected ${what}: a string of 1 to ${MAX_ID_LENGTH} characters` })
    .refine((v) => !CONTROL_CHARACTERS.test(v), { error: `${what} must not contain control characters` });

const oneOf = <const T extends readonly [string, ...string[]]>(values: T) =>
  z.enum(values, { error: `expected one of ${values.join(', ')}` });

const hostPort = z.union(
  [
    z.strictObject({ host: z.string().min(1), port: intIn(1, 65535) }),
    z
      .string()
      .regex(/^[^\s:]+:[0-9]{1,5}$|^\[[0-9a-fA-F:.]+\]:[0-9]{1,5}$/)
      .transform((s) => {
        const colon = s.lastIndexOf(':');
        return { host: s.slice(0, colon).replace(/^\[|\]$/g, ''), port: Number(s.slice(colon + 1)) };
      })
      .pipe(z.strictObject({ host: z.string().min(1), port: intIn(1, 65535) })),
  ],
  { error: 'expected "host:port" or { host, port }' },
);

/**
 * Builds the schema. `env` serves `${VAR}` references in secret values (token values, the OTP
 * pepper, Redis URL and password): a reference to an unset or empty variable is an error.
 */
function buildSchema(env: Env) {
  /** A string in which `${VAR}` is replaced by the environment variable VAR. */
  const secret = (what: string) =>
    z.string({ error: `expected ${what} (a string)` }).transform((value, ctx) => {
      let missing: string | undefined;
      const out = value.replace(ENV_REF, (_, name: string) => {
        const v = env[name];
        if (v === undefined || v === '') missing ??= name;
        return v ?? '';
      });
      if (missing !== undefined) {
        ctx.issues.push({
          code: 'custom',
          message: `environment variable ${missing} (referenced as \${${missing}}) is not set`,
          input: value,
        });
        return z.NEVER;
      }
      return out;
    });

  const token = z
    .strictObject({
      /** Shown in audit logs as the actor. */
      name: id('a token name'),
      /** The bearer token ("${ENV_VAR}" is interpolated), or "sha256:<hex>" of it. */
      token: secret('a token').optional(),
      /** The SHA-256 digest of the token, as 64 hex digits (an alternative to `token`). */
      sha256: z
        .string()
        .regex(HEX64, { error: 'expected 64 hex digits (the SHA-256 of the token)' })
        .optional(),
      /** Home org: the org of a request without `x-zitadel-orgid`. Default: the instance id. */
      org: id('an org id').optional(),
      /** Orgs the token may act on, or ["*"] for all. Default: [org]. */
      orgs: z
        .array(z.union([z.literal('*'), id('an org id')]))
        .min(1, { error: 'expected at least one org (or "*")' })
        .optional(),
      permissions: z.array(oneOf(PERMISSIONS)).min(1, { error: 'expected at least one permission' }),
    })
    .superRefine((t, ctx) => {
      if ((t.token === undefined) === (t.sha256 === undefined)) {
        ctx.addIssue({ code: 'custom', message: 'set exactly one of token and sha256', path: ['token'] });
      } else if (
        t.token !== undefined &&
        t.token.startsWith(SHA256_PREFIX) &&
        !HEX64.test(t.token.slice(SHA256_PREFIX.length))
      ) {
        ctx.addIssue({
          code: 'custom',
          message: 'a "sha256:" token must be followed by 64 hex digits',
          path: ['token'],
        });
      } else if (t.token !== undefined && t.token.length === 0) {
        ctx.addIssue({ code: 'custom', message: 'expected a non-empty token', path: ['token'] });
      }
    });

  const claimName = (what: string) =>
    z.string({ error: `expected ${what}: a claim name` }).min(1, { error: `expected ${what}: a claim name` });
  const httpUrl = (what: string) =>
    z
      .string({ error: `expected ${what}: an http(s) URL` })
      .refine((v) => URL.canParse(v) && /^https?:$/.test(new URL(v).protocol), {
        error: `expected ${what}: an http(s) URL`,
      });
  const permissionList = z
    .array(oneOf(PERMISSIONS), { error: `expected a list of permissions (${PERMISSIONS.join(', ')})` })
    .min(1, { error: 'expected at least one permission' });

  /** OIDC/JWT bearer tokens (src/http/jwt.ts), beside the static tokens. */
  const jwt = z
    .strictObject({
      /** zitadel: jwksUri <issuer>/oauth/v2/keys, org and roles from ZITADEL's claims. */
      preset: oneOf(['zitadel']).optional(),
      issuer: httpUrl('the issuer'),
      audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)], {
        error: 'expected an audience or a non-empty list of audiences',
      }),
      /** A URL, or "discovery" (jwks_uri of <issuer>/.well-known/openid-configuration). */
      jwksUri: z
        .union([z.literal('discovery'), httpUrl('jwksUri')], {
          error: 'expected an http(s) URL or "discovery"',
        })
        .optional(),
      algorithms: z
        .array(
          z.enum(JWT_ALGORITHMS, {
            error: `expected one of ${JWT_ALGORITHMS.join(', ')} (none and HS* are never allowed)`,
          }),
        )
        .min(1, { error: 'expected at least one algorithm' })
        .optional(),
      clockToleranceSeconds: intIn(0, 600).default(30),
      principalClaim: claimName('principalClaim').optional(),
      org: z
        .union(
          [z.strictObject({ claim: claimName('org.claim') }), z.strictObject({ fixed: id('an org id') })],
          {
            error: 'expected { claim: <claim name> } or { fixed: <org id> }',
          },
        )
        .optional(),
      orgs: z
        .union(
          [
            z.literal('*'),
            z.array(id('an org id')).min(1),
            z.strictObject({ claim: claimName('orgs.claim') }),
          ],
          { error: 'expected "*", a list of org ids or { claim: <claim name> }' },
        )
        .optional(),
      permissions: z
        .union(
          [
            z.strictObject({
              /** Optional only with a preset (zitadel: its roles claim). */
              claim: claimName('permissions.claim').optional(),
              map: z.record(z.string().min(1), permissionList).optional(),
            }),
            z.strictObject({ fixed: permissionList }),
          ],
          {
            error:
              'expected { claim: <roles claim>, map: { <role>: [permissions] } } or { fixed: [permissions] }',
          },
        )
        .optional(),
      jwks: z
        .strictObject({
          cooldownSeconds: intIn(1, 3600).default(30),
          cacheMaxAgeSeconds: intIn(1, 86_400).default(600),
          timeoutMs: intIn(100, 60_000).default(5000),
        })
        .prefault({}),
    })
    .superRefine((j, ctx) => {
      if (j.preset === undefined && j.permissions === undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['permissions'],
          message:
            'is required without a preset: { claim: <roles claim>, map: { <role>: [permissions] } } or { fixed: [permissions] }',
        });
      } else if (
        j.preset === undefined &&
        j.permissions !== undefined &&
        'map' in j.permissions &&
        j.permissions.claim === undefined
      ) {
        ctx.addIssue({
          code: 'custom',
          path: ['permissions', 'claim'],
          message: 'is required without a preset: the claim that holds the roles',
        });
      }
    });

  const redis = z
    .strictObject({
      /** Standalone Redis: redis://[user:password@]host:port[/db] or rediss:// for TLS. */
      url: secret('a redis:// or rediss:// URL')
        .pipe(z.string().regex(/^rediss?:\/\/\S+$/, { error: 'expected a redis:// or rediss:// URL' }))
        .optional(),
      /** Redis Cluster: the seed nodes. */
      cluster: z
        .strictObject({ nodes: z.array(hostPort).min(1, { error: 'expected at least one node' }) })
        .optional(),
      /** Redis Sentinel: the sentinels and the master group name. */
      sentinel: z
        .strictObject({
          sentinels: z.array(hostPort).min(1, { error: 'expected at least one sentinel' }),
          name: z.string().min(1, { error: 'expected the master group name' }),
          password: secret('a password').optional(),
        })
        .optional(),
      /** Credentials for cluster and sentinel nodes (a URL carries its own). */
      username: z.string().min(1).optional(),
      password: secret('a password').optional(),
      /** TLS for cluster and sentinel nodes (a URL selects it with rediss://). */
      tls: z.boolean({ error: 'expected true or false' }).default(false),
      /** Key prefix. */
      prefix: z
        .string()
        .regex(/^[A-Za-z0-9_.-]{1,64}$/, { error: 'expected 1 to 64 characters of A-Z a-z 0-9 _ . -' })
        .default('lg'),
      /** A store operation that has not answered after this long fails (503, or fail-open). */
      commandTimeoutMs: intIn(1, 60_000).default(2000),
    })
    .prefault({});

  /** Issue 14: the event record (per-org Redis Streams, or an in-process ring) and webhooks. */
  const events = z
    .strictObject({
      /** Record lock, unlock, settings and password-changed events (the events API, webhooks). */
      enabled: z.boolean({ error: 'expected true or false' }).default(true),
      /** Most events kept per org stream (Redis) or in all (memory). */
      maxLength: intIn(1, 10_000_000).default(10_000),
      /** Redis: events older than this are trimmed as new ones arrive (0 = by length only). */
      maxAgeSeconds: intIn(0, 86_400 * 3650).default(0),
    })
    .prefault({});

  const webhookEndpoint = z.strictObject({
    /** A name for logs, metrics and the dead-letter list. */
    name: id('an endpoint name'),
    url: httpUrl('the endpoint URL'),
    /** Standard Webhooks secret: whsec_ + base64 of at least 24 random bytes ("${ENV_VAR}" is interpolated). */
    secret: secret('a webhook secret').pipe(
      z.string().regex(WEBHOOK_SECRET, {
        error: 'expected whsec_ followed by the base64 of at least 24 random bytes',
      }),
    ),
    /** Recorded event types (user.locked, user.unlocked, …), or ["*"]. */
    types: z.array(z.string().min(1).max(100)).min(1).default(['*']),
    /** Orgs, or ["*"]. */
    orgs: z
      .array(z.union([z.literal('*'), id('an org id')]))
      .min(1)
      .default(['*']),
    /** How long one delivery may take. */
    timeoutMs: intIn(100, 60_000).default(5000),
  });

  const webhooks = z
    .strictObject({
      endpoints: z.array(webhookEndpoint).default([]),
      retry: z
        .strictObject({
          initialDelayMs: intIn(1, 3_600_000).default(1000),
          maxDelayMs: intIn(1, 86_400_000).default(300_000),
          maxAttempts: intIn(1, 100).default(12),
        })
        .prefault({}),
      /** Pause between two rounds of the delivery worker. */
      pollIntervalMs: intIn(10, 60_000).default(500),
      /** Redis: a process that died holding deliveries; after this long another takes them over. */
      claimIdleMs: intIn(100, 3_600_000).default(60_000),
      /** Most dead letters kept. */
      deadLetterMax: intIn(1, 1_000_000).default(1000),
    })
    .prefault({})
    .superRefine((w, ctx) => {
      const names = new Set<string>();
      w.endpoints.forEach((e, i) => {
        if (names.has(e.name)) {
          ctx.addIssue({
            code: 'custom',
            path: ['endpoints', i, 'name'],
            message: `duplicate endpoint name "${e.name}"`,
          });
        }
        names.add(e.name);
        if (e.timeoutMs >= w.claimIdleMs) {
          ctx.addIssue({
            code: 'custom',
            path: ['endpoints', i, 'timeoutMs'],
            message: `must be below webhooks.claimIdleMs (${w.claimIdleMs}): a delivery must end before another process may take it over`,
          });
        }
      });
    });

  return z
    .strictObject({
      server: z
        .strictObject({
          host: z
            .string({ error: 'expected a host name or address' })
            .min(1, { error: 'expected a host name or address' })
            .default('127.0.0.1'),
          port: intIn(0, 65535).default(8080),
          /** Largest JSON body accepted: bytes, or a string such as "100kb". */
          bodyLimit: z
            .union([intIn(1, 1 << 30), z.string().regex(/^[0-9]+(\.[0-9]+)?\s*(b|kb|mb)$/i)], {
              error: 'expected a number of bytes or a size such as "100kb" or "1mb"',
            })
            .default('100kb'),
          /** Express "trust proxy": false, true, a hop count, or addresses/subnets. */
          trustProxy: z
            .union([z.boolean(), intIn(0, 64), z.string().min(1), z.array(z.string().min(1)).min(1)], {
              error: 'expected false, true, a hop count, or a list of addresses/subnets',
            })
            .default(false),
        })
        .prefault({}),
      instance: z
        .strictObject({
          id: id('an instance id').default('default'),
          /** Instance default settings, until changed at run time through the admin API. */
          maxPasswordAttempts: intIn(0, MAX_SETTING_VALUE).default(10),
          maxOtpAttempts: intIn(0, MAX_SETTING_VALUE).default(10),
        })
        .prefault({}),
      /** How long a reservation may stay unsettled before it counts as a failure (at least 1 s). */
      leaseMs: intIn(1000, 3_600_000).default(30_000),
      /**
       * How long a check may evaluate a credential (argon2 under load) before it answers 503 and
       * releases its attempt uncounted. Default min(leaseMs / 2, 10 000); at most leaseMs − 500.
       */
      evaluationTimeoutMs: intIn(1, 3_600_000).optional(),
      store: z
        .strictObject({
          type: oneOf(['memory', 'redis']).default('memory'),
          /** State of a user that is not locked expires this long after its last write (0 = never). */
          idleTtlMs: intIn(0, 2_147_483_647).default(86_400_000),
          memory: z
            .strictObject({
              /** Most users kept in process; past it idle users are evicted (a warning is logged). */
              maxUsers: intIn(1, 100_000_000).default(100_000),
            })
            .prefault({}),
          redis,
        })
        .prefault({})
        .superRefine((s, ctx) => {
          const modes = (['url', 'cluster', 'sentinel'] as const).filter((m) => s.redis[m] !== undefined);
          if (s.type === 'redis' && modes.length === 0) {
            ctx.addIssue({
              code: 'custom',
              path: ['type'],
              message:
                'is redis but no server is given: set store.redis.url, store.redis.cluster or store.redis.sentinel (or LOCKGATE_REDIS_URL)',
            });
          } else if (modes.length > 1) {
            ctx.addIssue({
              code: 'custom',
              path: ['redis', modes[1] ?? ''],
              message: `set only one of url, cluster and sentinel (found ${modes.join(', ')})`,
            });
          } else if (s.type === 'memory' && modes.length === 1) {
            ctx.addIssue({
              code: 'custom',
              path: ['type'],
              message: `is memory but store.redis.${modes[0] ?? ''} is set: set store.type to redis to use it`,
            });
          }
        }),
      /**
       * What checks do while the store is unreachable (G4). fail-open: passwords are answered from
       * the credential alone; TOTP and SMS/Email codes answer 503 (verifying them needs the store).
       */
      onStoreError: oneOf(['fail-closed', 'fail-open']).default('fail-closed'),
      auth: z
        .strictObject({
          tokens: z.array(token).default([]),
          jwt: jwt.optional(),
        })
        .prefault({}),
      /**
       * Opt-in defences against lockout abuse and spraying (issue 12; README "Defences"), one
       * sub-schema each, all off by default. The per-org defence routes answer 400 code 9 unless
       * temporaryLockout, repeatPassword or deviceCookies is named (even disabled).
       */
      defences: defencesConfigSchema(
        secret('an HMAC key').pipe(z.string().min(32, { error: 'expected at least 32 characters' })),
      )
        .extend({ sprayThrottle: sprayThrottleSchema })
        .prefault({}),
      otp: z
        .strictObject({
          smsTtlSeconds: intIn(1, 86_400).default(300),
          emailTtlSeconds: intIn(1, 86_400).default(600),
          /** HMAC key of stored code hashes: set the same one on every process sharing a store. */
          pepper: secret('a pepper')
            .pipe(z.string().min(16, { error: 'expected at least 16 characters' }))
            .optional(),
          issueLimit: z
            .strictObject({
              points: intIn(1, 1_000_000).default(5),
              durationSeconds: intIn(1, 86_400 * 30).default(900),
            })
            .prefault({}),
        })
        .prefault({}),
      password: z
        .strictObject({
          /** argon2 cost of the dummy hash verified for unknown users: use your users' hash cost. */
          argon2: z
            .strictObject({
              memoryCost: intIn(8, 4294967295).default(65536),
              timeCost: intIn(1, 4294967295).default(3),
              parallelism: intIn(1, 16_777_215).default(4),
            })
            .prefault({})
            .refine((c) => c.memoryCost >= 8 * c.parallelism, {
              error: 'memoryCost must be at least 8 × parallelism',
              path: ['memoryCost'],
            }),
        })
        .prefault({}),
      log: z.strictObject({ level: oneOf(LOG_LEVELS).default('info') }).prefault({}),
      /** The admin console at /console (static files; README "Console"). */
      console: z.strictObject({ enabled: z.boolean().default(true) }).prefault({}),
      /** On SIGTERM/SIGINT: how long in-flight requests may take before connections are closed. */
      shutdownTimeoutMs: intIn(0, 600_000).default(10_000),
      /** Reverse-proxy mode (src/sidecar/proxy): forward everything else to an auth service, judging its logins. */
      proxy: proxyConfigSchema.optional(),
      events,
      webhooks,
    })
    .superRefine((c, ctx) => {
      if (c.evaluationTimeoutMs !== undefined && c.evaluationTimeoutMs > c.leaseMs - 500) {
        ctx.addIssue({
          code: 'custom',
          path: ['evaluationTimeoutMs'],
          message: `must be at most leaseMs − 500 (${c.leaseMs - 500}) so that a check is settled before its lease ends: lower it or raise leaseMs`,
        });
      }
      if (c.webhooks.endpoints.length > 0 && !c.events.enabled) {
        ctx.addIssue({
          code: 'custom',
          path: ['events', 'enabled'],
          message: 'is false but webhooks.endpoints are set: webhooks deliver recorded events',
        });
      }
      const seen = new Set<string>();
      c.auth.tokens.forEach((t, i) => {
        if (seen.has(t.name)) {
          ctx.addIssue({
            code: 'custom',
            path: ['auth', 'tokens', i, 'name'],
            message: `duplicate token name "${t.name}"`,
          });
        }
        seen.add(t.name);
        const home = t.org ?? c.instance.id;
        if (t.orgs && !t.orgs.includes('*') && !t.orgs.includes(home)) {
          ctx.addIssue({
            code: 'custom',
            path: ['auth', 'tokens', i, 'orgs'],
            message: `must include the home org "${home}" (or "*")`,
          });
        }
      });
    });
}

type ParsedConfig = z.output<ReturnType<typeof buildSchema>>;

/**
 * A configured token, as the sidecar keeps it (the TokenOptions of src/http/auth.ts): only the
 * SHA-256 digest of the token, never the token.
 */
export interface SidecarToken extends TokenOptions {
  readonly name: string;
  /** SHA-256 of the token, 64 lower-case hex digits. */
  readonly sha256: string;
  /** Home org. */
  readonly org: string;
  /** Orgs it may act on; "*" = all. */
  readonly orgs: readonly string[] | '*';
  readonly permissions: readonly Permission[];
}

/** How the sidecar connects to Redis (`store.redis`). */
export type RedisConnectionConfig = SidecarConfig['store']['redis'];

/**
 * The resolved configuration of the sidecar: the schema's output (one definition: the schema
 * above), with the configured tokens resolved to their digests (`SidecarToken`).
 */
export type SidecarConfig = Omit<ParsedConfig, 'auth'> & {
  readonly auth: { readonly tokens: readonly SidecarToken[]; readonly jwt?: SidecarJwtConfig };
};

/** `auth.jwt` as validated (the JwtAuthorizerOptions of src/http/jwt.ts, less the hooks). */
export type SidecarJwtConfig = NonNullable<ParsedConfig['auth']['jwt']>;

// ---- loading ------------------------------------------------------------------------------

export interface LoadConfigOptions {
  /**
   * The base layer: the shipped `config/default.yaml` (found next to the package). `null`: no
   * base file (the schema's defaults, which are the same values, apply alone).
   */
  defaultsPath?: string | null;
}

/**
 * Loads the configuration: `config/default.yaml`, then the file named by LOCKGATE_CONFIG, then
 * the environment. Throws ConfigError (one line naming the field) for anything invalid.
 */
export function loadConfig(env: Env, fileReader: FileReader, options: LoadConfigOptions = {}): SidecarConfig {
  const defaultsPath = options.defaultsPath === undefined ? findDefaultConfigPath() : options.defaultsPath;
  let raw: Record<string, unknown> = {};
  if (defaultsPath) raw = readYaml(defaultsPath, fileReader, 'config/default.yaml');
  const file = nonEmpty(env[ENV.config]);
  if (file !== undefined) raw = deepMerge(raw, readYaml(file, fileReader, ENV.config));
  const fromEnv = new Map<string, string>();
  raw = applyEnv(raw, env, fromEnv);
  return parseConfig(raw, env, fromEnv);
}

/**
 * Validates an already merged configuration object (as read from YAML) and resolves it. Exported
 * for tests and for embedding; `env` serves `${VAR}` references and LOCKGATE_ADMIN_TOKEN is not applied.
 */
export function parseConfig(
  raw: unknown,
  env: Env = {},
  fromEnv: ReadonlyMap<string, string> = new Map(),
): SidecarConfig {
  const result = buildSchema(env).safeParse(raw);
  if (!result.success) throw toConfigError(result.error.issues, fromEnv);
  return resolve(result.data, env);
}

/** A token with every permission on every org (LOCKGATE_ADMIN_TOKEN, or the one made at start). */
export function adminToken(token: string, instanceId: string): SidecarToken {
  return {
    name: ADMIN_TOKEN_NAME,
    sha256: hashToken(token),
    org: instanceId,
    orgs: '*',
    permissions: [...PERMISSIONS],
  };
}

/** `config/default.yaml` of this package (from src/sidecar or dist/cjs/sidecar), or null. */
export function findDefaultConfigPath(): string | null {
  let dir = __dirname;
  for (let i = 0; i < 5; i += 1) {
    const candidate = path.join(dir, 'config', 'default.yaml');
    if (existsSync(candidate) && existsSync(path.join(dir, 'package.json'))) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return null;
}

function resolve(c: ParsedConfig, env: Env): SidecarConfig {
  const entries: Array<{ token: SidecarToken; label: string }> = c.auth.tokens.map((t, i) => {
    const org = t.org ?? c.instance.id;
    const orgs = !t.orgs ? [org] : t.orgs.includes('*') ? '*' : t.orgs;
    let sha256: string;
    if (t.sha256 !== undefined) sha256 = t.sha256.toLowerCase();
    else if (t.token!.startsWith(SHA256_PREFIX)) sha256 = t.token!.slice(SHA256_PREFIX.length).toLowerCase();
    else sha256 = hashToken(t.token!);
    return {
      token: { name: t.name, sha256, org, orgs, permissions: [...new Set(t.permissions)] },
      label: `auth.tokens[${i}]`,
    };
  });
  const admin = nonEmpty(env[ENV.adminToken]);
  if (admin !== undefined) {
    // The environment wins: it replaces a file token of the same name.
    const i = entries.findIndex((e) => e.token.name === ADMIN_TOKEN_NAME);
    if (i >= 0) entries.splice(i, 1);
    entries.push({ token: adminToken(admin, c.instance.id), label: ENV.adminToken });
  }
  for (const e of entries) {
    const first = entries.find((f) => f.token.sha256 === e.token.sha256);
    if (first && first !== e) {
      throw new ConfigError(
        `${e.label}: is the same token as ${first.label} (every token must be different)`,
        e.label,
      );
    }
  }
  const tokens = entries.map((e) => e.token);
  return { ...c, auth: { tokens, ...(c.auth.jwt ? { jwt: c.auth.jwt } : {}) } };
}

/** How an environment variable's text becomes a configuration value. */
type EnvReader = (text: string, variable: string) => unknown;

/** A number when the text is digits (else the text, for the schema to refuse with its message). */
const integer: EnvReader = (text) => (/^[0-9]{1,6}$/.test(text) ? Number(text) : text);
const text: EnvReader = (t) => t;
/** A JSON or YAML value (proxy.routes: the same list as in the file). */
const yamlValue: EnvReader = (t, variable) => {
  try {
    const doc = parseDocument(t, { prettyErrors: false, uniqueKeys: true });
    if (doc.errors.length > 0) throw doc.errors[0];
    return doc.toJS();
  } catch {
    throw new ConfigError(
      `proxy.routes (from ${variable}): expected a JSON or YAML list of routes`,
      'proxy.routes',
    );
  }
};

/**
 * Every environment variable that sets a configuration path: the one table of them
 * (LOCKGATE_CONFIG names the file, LOCKGATE_ADMIN_TOKEN is applied after validation).
 */
const ENV_PATHS: ReadonlyArray<{ variable: string; path: readonly string[]; read: EnvReader }> = [
  { variable: ENV.port, path: ['server', 'port'], read: integer },
  { variable: ENV.host, path: ['server', 'host'], read: text },
  { variable: ENV.instanceId, path: ['instance', 'id'], read: text },
  { variable: ENV.logLevel, path: ['log', 'level'], read: text },
  { variable: ENV.onStoreError, path: ['onStoreError'], read: text },
  { variable: ENV.otpPepper, path: ['otp', 'pepper'], read: text },
  { variable: ENV.proxyUpstream, path: ['proxy', 'upstream'], read: text },
  { variable: ENV.proxyRoutes, path: ['proxy', 'routes'], read: yamlValue },
  { variable: ENV.proxyPort, path: ['proxy', 'listen', 'port'], read: integer },
];

/** Environment variables onto the raw object; `fromEnv` records which path came from which variable. */
function applyEnv(
  raw: Record<string, unknown>,
  env: Env,
  fromEnv: Map<string, string>,
): Record<string, unknown> {
  const out = structuredClone(raw);
  for (const { variable, path: parts, read } of ENV_PATHS) {
    const value = nonEmpty(env[variable]);
    if (value === undefined) continue;
    let node = out;
    for (const part of parts.slice(0, -1)) {
      if (!isPlainObject(node[part])) node[part] = {};
      node = node[part] as Record<string, unknown>;
    }
    node[parts[parts.length - 1]!] = read(value, variable);
    fromEnv.set(parts.join('.'), variable);
  }
  const redisUrl = nonEmpty(env[ENV.redisUrl]);
  if (redisUrl !== undefined) {
    // A URL from the environment replaces whatever connection the file chose (and so sets
    // store.type too): the one variable that is more than a path.
    const store = isPlainObject(out.store) ? out.store : {};
    const redis = isPlainObject(store.redis) ? { ...store.redis } : {};
    delete redis.cluster;
    delete redis.sentinel;
    out.store = { ...store, type: 'redis', redis: { ...redis, url: redisUrl } };
    fromEnv.set('store.type', ENV.redisUrl);
    fromEnv.set('store.redis.url', ENV.redisUrl);
  }
  return out;
}

function readYaml(file: string, fileReader: FileReader, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = fileReader(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException)?.code;
    throw new ConfigError(`${what}: cannot read ${file}${code ? ` (${code})` : ''}`, what);
  }
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  const first = doc.errors[0];
  if (first) {
    const line = first.linePos?.[0]?.line;
    const reason = first.message.split('\n')[0] ?? 'syntax error';
    throw new ConfigError(`${file}${line !== undefined ? `:${line}` : ''}: YAML error: ${reason}`, what);
  }
  const value: unknown = doc.toJS();
  if (value === null || value === undefined) return {};
  if (!isPlainObject(value)) throw new ConfigError(`${file}: expected a YAML mapping at the top level`, what);
  return value;
}

function toConfigError(
  issues: readonly z.core.$ZodIssue[],
  fromEnv: ReadonlyMap<string, string>,
): ConfigError {
  const lines: string[] = [];
  let firstField: string | undefined;
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        const field = formatPath([...issue.path, key]);
        firstField ??= field;
        lines.push(`${field}: unknown option (check the spelling; see config/example.yaml)`);
      }
      continue;
    }
    const field = formatPath(issue.path) || '(top level)';
    firstField ??= field;
    const variable = fromEnv.get(issue.path.map(String).join('.'));
    lines.push(`${field}${variable ? ` (from ${variable})` : ''}: ${issue.message}`);
  }
  return new ConfigError(lines.join('; '), firstField);
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

/** Mappings merge key by key; anything else (lists included) is replaced. */
function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const prev = out[key];
    out[key] = isPlainObject(prev) && isPlainObject(value) ? deepMerge(prev, value) : value;
  }
  return out;
}
