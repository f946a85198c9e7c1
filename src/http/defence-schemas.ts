import { z } from 'zod';
import {
  DEFAULT_DEVICE_COOKIES,
  DEFAULT_REPEAT_PASSWORD,
  MAX_DEVICES,
  DEFAULT_TEMPORARY_LOCKOUT,
  MAX_LOCK_MS,
  MAX_REMEMBERED,
  MIN_LOCK_MS,
  type DefencesConfig,
  type DefenceValues,
} from '../core/defences';
import { InvalidArgumentError } from '../core/errors';

/**
 * The defences' schemas (issue 12), each ONE zod schema used three ways: the instance
 * configuration (the sidecar's `defences` section and createLockout({ defences })), the per-org
 * routes' request body, and the OpenAPI document. The instance schema is an object of
 * sub-schemas, one per defence, so that a defence is added by adding one key.
 */

const int = (min: number, max: number) =>
  z
    .number({ error: `expected an integer from ${min} to ${max}` })
    .int({ error: `expected an integer from ${min} to ${max}` })
    .min(min, { error: `expected an integer from ${min} to ${max}` })
    .max(max, { error: `expected an integer from ${min} to ${max}` });

/** Temporary lockout: a lock made by failures ends after durationMs × 2^(n−1), at most maxDurationMs. */
export const TemporaryLockoutSchema = z
  .strictObject({
    enabled: z.boolean({ error: 'expected true or false' }).default(false),
    durationMs: int(MIN_LOCK_MS, MAX_LOCK_MS)
      .default(DEFAULT_TEMPORARY_LOCKOUT.durationMs)
      .meta({ description: 'The first lock’s length (ms); it doubles with each consecutive lock' }),
    maxDurationMs: int(MIN_LOCK_MS, MAX_LOCK_MS)
      .default(DEFAULT_TEMPORARY_LOCKOUT.maxDurationMs)
      .meta({ description: 'The longest lock (ms)' }),
  })
  .refine((t) => t.maxDurationMs >= t.durationMs, {
    error: 'maxDurationMs must be at least durationMs',
    path: ['maxDurationMs'],
  });

/** Repeat-password forgiveness: how many recent wrong passwords are remembered (as keyed hashes). */
export const RepeatPasswordSchema = z.strictObject({
  enabled: z.boolean({ error: 'expected true or false' }).default(false),
  remember: int(1, MAX_REMEMBERED)
    .default(DEFAULT_REPEAT_PASSWORD.remember)
    .meta({ description: 'How many of the user’s latest wrong passwords are not counted again' }),
});

/** Device cookies: per org, whether they are on and how many device scopes a user keeps. */
export const DeviceCookiesSchema = z.strictObject({
  enabled: z.boolean({ error: 'expected true or false' }).default(false),
  maxDevices: int(1, MAX_DEVICES).default(DEFAULT_DEVICE_COOKIES.maxDevices).meta({
    description: 'Most device scopes per user; the least recently used unlocked one is forgotten past it',
  }),
});

/** The device cookie's attributes (middleware and proxy; the sidecar answers the token instead). */
export const DeviceCookieSchema = z
  .strictObject({
    name: z
      .string()
      .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/, { error: 'expected a cookie name' })
      .default('lockgate_device'),
    /** Secure (HTTPS only). Default true; false only for local development over http. */
    secure: z.boolean({ error: 'expected true or false' }).default(true),
    sameSite: z.enum(['lax', 'strict'], { error: 'expected lax or strict' }).default('lax'),
    path: z
      .string()
      .regex(/^\/[^;\s]*$/, { error: 'expected a path starting with /' })
      .default('/'),
  })
  .prefault({});

export type DeviceCookieOptions = z.output<typeof DeviceCookieSchema>;

/** An HMAC key: at least 32 characters (a string) or 32 bytes (a Buffer, middleware only). */
export const HmacKey = z.union([z.string().min(32), z.instanceof(Buffer).refine((b) => b.length >= 32)], {
  error: 'expected a secret of at least 32 characters (e.g. "${LOCKGATE_REPEAT_KEY}")',
});

/**
 * The instance's defences: the per-org values plus the secrets that only the instance has. `key`:
 * the schema of an HMAC key (the sidecar's config file passes its `${VAR}`-expanding one).
 */
export function defencesConfigSchema<K extends z.ZodType<string | Buffer>>(key: K) {
  return z.strictObject({
    deviceCookies: z
      .strictObject({
        ...DeviceCookiesSchema.shape,
        /** Device tokens' keys: the first signs, every one verifies (rotation). */
        keys: z
          .array(
            z.strictObject({
              id: z.string().regex(/^[A-Za-z0-9_-]{1,32}$/, { error: 'expected 1-32 of A-Z a-z 0-9 _ -' }),
              secret: key,
            }),
          )
          .min(1, { error: 'expected at least one key' })
          .optional(),
        /** How long a device token is valid (default 30 days). */
        maxAgeMs: int(60_000, MAX_LOCK_MS).default(30 * 86_400_000),
        cookie: DeviceCookieSchema,
      })
      .refine((d) => !d.enabled || d.keys !== undefined, {
        error: 'keys are required when deviceCookies is enabled',
        path: ['keys'],
      })
      .refine((d) => new Set((d.keys ?? []).map((k) => k.id)).size === (d.keys ?? []).length, {
        error: 'key ids must be unique',
        path: ['keys'],
      })
      .optional(),
    temporaryLockout: TemporaryLockoutSchema.optional(),
    repeatPassword: z
      .strictObject({ ...RepeatPasswordSchema.shape, key: key.optional() })
      .refine((r) => !r.enabled || r.key !== undefined, {
        error: 'key is required when repeatPassword is enabled',
        path: ['key'],
      })
      .optional(),
  });
}

export const DefencesConfigSchema = defencesConfigSchema(HmacKey);

export type DefencesOptions = z.input<typeof DefencesConfigSchema>;

/** An org's own defence settings (no secrets): a defence left out is inherited from the instance. */
export const DefenceSettingsRequest = z.strictObject({
  temporaryLockout: TemporaryLockoutSchema.optional(),
  repeatPassword: RepeatPasswordSchema.optional(),
  deviceCookies: DeviceCookiesSchema.optional(),
});

/** The first issue of a failed parse as "path: message". */
function firstIssue(error: z.ZodError, prefix: string): { path: string; message: string } {
  const issue = error.issues[0];
  const path = [prefix, ...(issue?.path ?? [])].filter((p) => p !== '').join('.');
  return { path, message: issue?.message ?? 'is invalid' };
}

/**
 * Resolves the instance's defences (config file or middleware option): values and keys. A bad
 * value throws an InvalidArgumentError naming the field (`defences.repeatPassword.key: …`); the
 * message never contains a key.
 */
export function resolveDefences(input: unknown, prefix = 'defences'): DefencesConfig {
  const parsed = DefencesConfigSchema.safeParse(input ?? {});
  if (!parsed.success) {
    const { path, message } = firstIssue(parsed.error, prefix);
    throw new InvalidArgumentError('Errors.Options.Invalid', `${path}: ${message}`, path);
  }
  const { temporaryLockout, repeatPassword, deviceCookies } = parsed.data;
  const values: DefenceValues = {
    ...(temporaryLockout ? { temporaryLockout } : {}),
    ...(repeatPassword
      ? { repeatPassword: { enabled: repeatPassword.enabled, remember: repeatPassword.remember } }
      : {}),
    ...(deviceCookies
      ? { deviceCookies: { enabled: deviceCookies.enabled, maxDevices: deviceCookies.maxDevices } }
      : {}),
  };
  const key = repeatPassword?.key;
  const keys = deviceCookies?.keys;
  return {
    values,
    ...(key !== undefined ? { repeatPasswordKey: bytes(key) } : {}),
    ...(keys !== undefined && deviceCookies
      ? {
          deviceTokens: {
            keys: keys.map((k) => ({ id: k.id, secret: bytes(k.secret) })),
            maxAgeMs: deviceCookies.maxAgeMs,
          },
          deviceCookie: deviceCookies.cookie,
        }
      : {}),
  };
}

function bytes(key: string | Buffer): Buffer {
  return typeof key === 'string' ? Buffer.from(key) : key;
}

/** Parses an org's defence settings body: the values, or a 400 naming the bad field. */
export function parseDefenceSettings(body: Record<string, unknown>): DefenceValues {
  const parsed = DefenceSettingsRequest.safeParse(body);
  if (!parsed.success) {
    const { path, message } = firstIssue(parsed.error, '');
    throw new InvalidArgumentError(
      'Errors.Defences.Invalid',
      `${path || 'body'}: ${message}`,
      path || 'body',
    );
  }
  return parsed.data;
}

// ---- response bodies (closed, as those of src/http/schemas.ts) ------------------------------

const Inherited = z
  .boolean()
  .meta({ description: 'true: the instance’s value (the org has none of its own)' });

/** The defence settings that apply to an org, or the instance's. */
export const DefenceSettingsBody = z.strictObject({
  defences: z.strictObject({
    temporaryLockout: z.strictObject({
      enabled: z.boolean(),
      durationMs: z.number().int(),
      maxDurationMs: z.number().int(),
      isDefault: Inherited,
    }),
    repeatPassword: z.strictObject({
      enabled: z.boolean(),
      remember: z.number().int(),
      isDefault: Inherited,
    }),
    deviceCookies: z.strictObject({
      enabled: z.boolean(),
      maxDevices: z.number().int(),
      isDefault: Inherited,
    }),
  }),
  isDefault: z.boolean().meta({ description: 'true when the org has no defence settings of its own' }),
  resourceOwnerType: z.enum(['RESOURCE_OWNER_TYPE_INSTANCE', 'RESOURCE_OWNER_TYPE_ORG']),
  details: z.strictObject({
    sequence: z.string().regex(/^[0-9]+$/),
    creationDate: z.string().meta({ format: 'date-time' }).optional(),
    changeDate: z.string().meta({ format: 'date-time' }).optional(),
    resourceOwner: z.string(),
  }),
});
