import { z } from 'zod';
import { GrpcCode, InvalidArgumentError } from '../core/errors';
import { MAX_SETTING_VALUE, SETTING_VALUE_STRING } from '../core/settings';
import { ipBlock } from '../core/ip-block';
import { FACTORS, LONE_SURROGATE, MAX_ID_LENGTH } from '../core/subjects';
import { DefenceSettingsBody, DefenceSettingsRequest } from './defence-schemas';
import { CREDENTIALS_CHECK_ERROR_TYPE, ERROR_DETAIL_TYPE } from './errors';

/**
 * The request bodies of the HTTP API, each ONE zod schema: the routers parse bodies with them
 * (parseFields) and the OpenAPI document's request schemas are generated from them
 * (requestBodySchemas, z.toJSONSchema), so the two cannot drift.
 *
 * A field that fails answers the InvalidArgumentError the API has always answered for it (ids as
 * validateId, settings values as parseSettingValue, strings `Errors.Request.Missing`/`Invalid`):
 * each field schema is registered with the error it answers. Fields are checked in the order of
 * the object's shape; the first failing field is the one reported.
 */

/** The error a field answers: from its first zod issue and its raw value. */
type FieldError = (issue: z.core.$ZodIssue, field: string, value: unknown) => InvalidArgumentError;

const fieldErrors = new WeakMap<z.ZodType, FieldError>();

/** `schema`, answering `error` when it fails. */
function answering<T extends z.ZodType>(schema: T, error: FieldError): T {
  fieldErrors.set(schema, error);
  return schema;
}

/** Refuses C0 and C1 control characters and DEL (CONTROL_CHARACTERS of core/subjects). */
// eslint-disable-next-line no-control-regex
const NO_CONTROL_CHARACTERS = /^[^\u0000-\u001f\u007f-\u009f]*$/;

/**
 * An org or user id, as validateId: 1–256 UTF-16 code units, no control characters, no lone
 * surrogate. Also the schema of the id parameters (the `userId` path parameter, `cursor`,
 * `ctx.orgId`, the `x-zitadel-orgid` header), parsed with parseParameter.
 */
export const Id = answering(
  z
    .string()
    .min(1)
    .max(MAX_ID_LENGTH)
    .regex(NO_CONTROL_CHARACTERS)
    .refine((value) => !LONE_SURROGATE.test(value))
    .meta({ description: 'An opaque id, no control characters' }),
  (issue, field) => {
    switch (issue.code) {
      case 'too_big':
        return new InvalidArgumentError(
          'Errors.Id.TooLong',
          `${field} must be at most ${MAX_ID_LENGTH} characters`,
          field,
        );
      case 'invalid_format':
        return new InvalidArgumentError(
          'Errors.Id.Invalid',
          `${field} must not contain control characters`,
          field,
        );
      case 'custom':
        return new InvalidArgumentError(
          'Errors.Id.Invalid',
          `${field} must be well-formed Unicode (no lone surrogate)`,
          field,
        );
      default:
        // not a string, or empty
        return new InvalidArgumentError('Errors.Id.Missing', `${field} is required`, field);
    }
  },
);

/** A string: missing (absent or null) is `Errors.Request.Missing`, another type `Errors.Request.Invalid`. */
const requiredString = (meta: { description?: string } = {}) =>
  answering(
    z.string().meta(meta),
    (_issue, field, value) =>
      new InvalidArgumentError(
        value === undefined || value === null ? 'Errors.Request.Missing' : 'Errors.Request.Invalid',
        `${field} must be a string`,
        field,
      ),
  );

/** The factor of a credential. */
export const Factor = answering(
  z.enum(FACTORS),
  (_issue, field) =>
    new InvalidArgumentError('Errors.Factor.Invalid', `${field} must be one of ${FACTORS.join(', ')}`, field),
);

/**
 * A settings value, as parseSettingValue: a non-negative integer up to 2^32−1 given as a number or
 * a numeric string (uint64 values travel as strings in JSON); absent or null is 0.
 */
const SettingValue = answering(
  z
    .union([
      z.number().int().min(0).max(MAX_SETTING_VALUE),
      z
        .string()
        .regex(SETTING_VALUE_STRING)
        .refine((value) => Number(value) <= MAX_SETTING_VALUE),
    ])
    .nullish()
    .meta({
      description: 'An unsigned integer up to 2^32−1, as a number or a numeric string; 0 = never lock',
    })
    .transform((value) => (value === undefined || value === null ? 0 : Number(value))),
  (_issue, field, value) =>
    typeof value === 'number' || (typeof value === 'string' && SETTING_VALUE_STRING.test(value))
      ? new InvalidArgumentError(
          'Errors.Settings.Invalid',
          `${field} must be an integer from 0 to ${MAX_SETTING_VALUE}`,
          field,
        )
      : new InvalidArgumentError('Errors.Settings.Invalid', `${field} must be an unsigned integer`, field),
);

/**
 * The end user's IP address, as the auth service saw it (spray throttling, issue 12): IPv4 or
 * IPv6 (an IPv4-mapped IPv6 address counts as its IPv4 address). Optional: without it the check
 * is not spray-throttled.
 */
const ClientIp = answering(
  z
    .string()
    .max(64)
    .refine((value) => ipBlock(value) !== undefined)
    .optional()
    .meta({
      description:
        'The end user’s IP address (IPv4 or IPv6), for spray throttling: failed checks are counted per address (IPv6 per /64) across all users. Omitted: not throttled',
      examples: ['203.0.113.7'],
    }),
  (_issue, field) =>
    new InvalidArgumentError('Errors.Request.ClientIp', `${field} must be an IPv4 or IPv6 address`, field),
);

// ---- the request bodies -----------------------------------------------------------------

/** Lockout settings (org or instance); a value left out is 0, as ZITADEL's proto3 defaults. */
export const SettingsRequest = z.object({ maxPasswordAttempts: SettingValue, maxOtpAttempts: SettingValue });

/** A user (code issuance). */
export const UserRequest = z.object({ userId: Id });

/** Device cookies (issue 12): the client's device token, passed on by the auth service. */
const DeviceToken = answering(
  z.string().max(4096).optional().meta({
    description:
      'Device cookies: the device token a success answered earlier for this user (absent, invalid or expired: the check counts on the untrusted scope)',
  }),
  (_issue, field) =>
    new InvalidArgumentError(
      'Errors.Request.Invalid',
      `${field} must be a string of at most 4096 characters`,
      field,
    ),
);

export const PasswordCheckRequest = z.object({
  userId: Id,
  password: requiredString({
    description: 'At most the verifier’s maxPasswordLength characters (default 1024); longer is a 400',
  }),
  encodedHash: answering(
    z.string().nullish().meta({
      description:
        'argon2i/argon2id PHC string; omit (or empty, or null) for an unknown user (a dummy verification, then a failure)',
    }),
    (_issue, field) => new InvalidArgumentError('Errors.Request.Invalid', `${field} must be a string`, field),
  ),
  deviceToken: DeviceToken,
  clientIp: ClientIp,
});

export const TotpCheckRequest = z.object({
  userId: Id,
  code: requiredString({ description: 'The 6-digit code (another string is a wrong code)' }),
  secret: requiredString({ description: 'Base32 TOTP secret' }),
  deviceToken: DeviceToken,
  clientIp: ClientIp,
});

export const CodeCheckRequest = z.object({
  userId: Id,
  code: requiredString({ description: 'The 6-digit code issued (another string is a wrong code)' }),
  deviceToken: DeviceToken,
  clientIp: ClientIp,
});

export const AttemptRequest = z.object({
  userId: Id,
  factor: Factor,
  deviceToken: DeviceToken,
  clientIp: ClientIp,
});

/** Every request body, by its name in the OpenAPI document (`#/components/schemas/<name>`). */
export const REQUEST_BODIES = {
  SettingsRequest,
  UserRequest,
  PasswordCheckRequest,
  TotpCheckRequest,
  CodeCheckRequest,
  AttemptRequest,
  DefenceSettingsRequest,
} as const;

export type RequestBodyName = keyof typeof REQUEST_BODIES;

/** A request body schema: an object of fields (its `shape`), parsed into `Fields`. */
export type BodySchema<Fields = unknown> = z.ZodType<Fields> & {
  readonly shape: Readonly<Record<string, z.ZodType>>;
};

/**
 * Parses a JSON object body with `schema`: its parsed, typed fields, or the InvalidArgumentError
 * of the first field that fails.
 */
export function parseFields<Fields>(schema: BodySchema<Fields>, body: Record<string, unknown>): Fields {
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = issue?.path[0];
  if (issue && typeof field === 'string') {
    const fieldSchema = schema.shape[field];
    const answer = fieldSchema === undefined ? undefined : fieldErrors.get(fieldSchema);
    if (answer) throw answer(issue, field, body[field]);
  }
  // Not reached with the schemas above (every field answers its own error).
  throw new InvalidArgumentError('Errors.Request.Invalid', 'Request body is invalid', 'body');
}

// ---- parameters ------------------------------------------------------------------------

/**
 * Parses one path, query or header parameter with a field schema (as Id): its value, or the
 * InvalidArgumentError the schema answers, naming `field`.
 */
export function parseParameter<T>(schema: z.ZodType<T>, value: unknown, field: string): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const answer = fieldErrors.get(schema);
  if (issue && answer) throw answer(issue, field, value);
  // Not reached with the schemas above (each answers its own error).
  throw new InvalidArgumentError('Errors.Request.Invalid', `${field} is invalid`, field);
}

/** JSON Schema (2020-12, as OpenAPI 3.1) of what a parameter schema accepts. */
export function parameterJsonSchema(schema: z.ZodType): Record<string, unknown> {
  return requestJsonSchema(schema);
}

// ---- response bodies ---------------------------------------------------------------------
// Not parsed by the server: the renderers and handlers are typed by them (z.output) and the
// document's response schemas are generated from them. Every object is closed
// (`z.strictObject`: `additionalProperties: false`), so a field added to or dropped from an
// answer fails test/integration/openapi-responses.test.ts until its schema here says so.
// Each is registered in RESPONSE_COMPONENTS under its name in the document: a component used by
// another is a `$ref: '#/components/schemas/<name>'` there, not a copy.

/** The response components of the OpenAPI document, by name (`id`). */
export const RESPONSE_COMPONENTS = z.registry<{ id: string }>();

/** `schema`, as the component `id` of the document. */
export function component<T extends z.ZodType>(id: string, schema: T): T {
  RESPONSE_COMPONENTS.add(schema, { id });
  return schema;
}

/** uint64 as a decimal string (ZITADEL's JSON). */
const Uint = z
  .string()
  .regex(/^[0-9]+$/)
  .meta({ description: 'uint64 as a decimal string' });

/** A user's (or a scope's) failed attempts per factor, as decimal strings. */
const FailedAttemptsBody = z.strictObject({
  password: Uint,
  totp: Uint,
  otpSms: Uint,
  otpEmail: Uint,
  recoveryCode: Uint,
});
/** RFC 3339 (rfc3339 of src/http/render.ts). */
export const DateTime = z.string().meta({ format: 'date-time' });

/** The gRPC status codes an error body carries. */
const GRPC_CODES = Object.values(GrpcCode);

/** A detail of an error body: ZITADEL's ErrorDetail, or (a wrong credential only) a CredentialsCheckError. */
export const ErrorDetailBody = component(
  'ErrorDetail',
  z.discriminatedUnion('@type', [
    z.strictObject({
      '@type': z.literal(ERROR_DETAIL_TYPE),
      id: z.string().meta({ description: 'Stable error id, e.g. Errors.User.Locked' }),
      message: z.string(),
    }),
    z
      .strictObject({
        '@type': z.literal(CREDENTIALS_CHECK_ERROR_TYPE),
        id: z.string().meta({ description: 'Stable error id of the wrong credential' }),
        message: z.string(),
        failedAttempts: Uint.meta({ description: 'Failed attempts of the factor, this one included' }),
      })
      .meta({ description: 'A wrong credential (401 of the check routes) only' }),
  ]),
);

/** Every error answer (toHttpError of src/http/errors.ts). */
export const ErrorResponseBody = component(
  'Error',
  z.strictObject({
    code: z
      .literal(GRPC_CODES)
      .meta({ type: 'integer', description: `gRPC status code (${GRPC_CODES.join(', ')})` }),
    message: z.string(),
    details: z.array(ErrorDetailBody).min(1),
  }),
);

/** `details` of a settings object or change (management and admin API, v1). */
export const DetailsBody = component(
  'Details',
  z.strictObject({
    sequence: Uint,
    creationDate: DateTime.optional(),
    changeDate: DateTime.optional(),
    resourceOwner: z.string(),
  }),
);

/** `details` of the v2 settings API (no creationDate, as ZITADEL's v2). */
export const DetailsV2Body = component('DetailsV2', DetailsBody.omit({ creationDate: true }));

/** A settings change, a lock, an unlock, a password change. */
export const DetailsResponseBody = component('DetailsResponse', z.strictObject({ details: DetailsBody }));

/** A lockout policy (management and admin API, v1). */
export const PolicyBody = component(
  'Policy',
  z.strictObject({
    details: DetailsBody,
    maxPasswordAttempts: Uint,
    maxOtpAttempts: Uint,
    isDefault: z.boolean(),
  }),
);

/** The instance settings (management and admin API). */
export const PolicyResponseBody = component('PolicyResponse', z.strictObject({ policy: PolicyBody }));

/** `GET /management/v1/policies/lockout`: the org's effective settings. */
export const GetPolicyResponseBody = component(
  'GetPolicyResponse',
  z.strictObject({ policy: PolicyBody, isDefault: z.boolean() }),
);

export const ResourceOwnerTypeBody = component(
  'ResourceOwnerType',
  z.enum(['RESOURCE_OWNER_TYPE_INSTANCE', 'RESOURCE_OWNER_TYPE_ORG']),
);

/** `GET /v2/settings/lockout`. */
export const SettingsV2ResponseBody = component(
  'SettingsV2Response',
  z.strictObject({
    details: DetailsV2Body,
    settings: z.strictObject({
      maxPasswordAttempts: Uint,
      maxOtpAttempts: Uint,
      resourceOwnerType: ResourceOwnerTypeBody,
    }),
  }),
);

/** `GET /v1/users/{userId}/lockout`. */
export const UserLockoutBody = component(
  'UserLockout',
  z.strictObject({
    userId: Id,
    orgId: Id,
    state: z.enum(['USER_STATE_ACTIVE', 'USER_STATE_LOCKED']),
    lockedAt: DateTime.meta({ description: 'When the user was locked (USER_STATE_LOCKED only)' }).optional(),
    lockedUntil: DateTime.meta({
      description: 'Temporary lockout (defences): when the lock ends by itself; absent for a permanent lock',
    }).optional(),
    failedAttempts: FailedAttemptsBody,
    settings: PolicyBody.extend({ resourceOwnerType: ResourceOwnerTypeBody }).meta({
      description: 'The effective settings of the user’s org',
    }),
    scopes: z
      .array(
        z.strictObject({
          scope: z.string().meta({ description: '`untrusted` or `device:<id>`' }),
          state: z.enum(['USER_STATE_ACTIVE', 'USER_STATE_LOCKED']),
          lockedAt: DateTime.optional(),
          lockedUntil: DateTime.optional(),
          failedAttempts: FailedAttemptsBody,
        }),
      )
      .meta({
        description: 'Device cookies: the user’s scopes and their state (a scope locks only its clients)',
      })
      .optional(),
  }),
);

/** `GET /v1/lockouts`. */
export const LockedUsersBody = component(
  'LockedUsers',
  z.strictObject({
    users: z.array(
      z.strictObject({
        userId: Id,
        lockedAt: DateTime,
        scope: z
          .string()
          .meta({
            description: 'Device cookies: the scope locked (`untrusted`, `device:<id>`); absent: the user',
          })
          .optional(),
      }),
    ),
    nextCursor: z.string().meta({ description: 'Present when there may be a further page' }).optional(),
  }),
);

component('Factor', Factor);
/** `GET /v1/policies/defences` (issue 12). */
component('DefenceSettings', DefenceSettingsBody);

/** A successful check (a success resets the factor's counter: it is never locked). */
export const CheckSuccessBody = component(
  'CheckSuccess',
  z.strictObject({
    userId: Id,
    factor: Factor,
    failedAttempts: z.literal('0').meta({ description: 'A success resets the factor’s counter' }),
    locked: z.literal(false),
    deviceToken: z
      .string()
      .meta({ description: 'Device cookies: the device token to set as the client’s cookie' })
      .optional(),
  }),
);

/** A code issued by `POST /v1/otp/{sms,email}`. */
export const IssuedCodeBody = component(
  'IssuedCode',
  z.strictObject({
    code: z.string().regex(/^[0-9]{6}$/),
    expiresAt: DateTime,
  }),
);

/** An attempt reserved by `POST /v1/attempts`. */
export const AttemptBody = component(
  'Attempt',
  z.strictObject({
    attemptId: z.string().meta({
      description:
        'Opaque: pass it back as is to settle the attempt. With spray throttling on and a clientIp given, it ends with "~" and the throttle ticket (the client address block) that its settle needs',
    }),
    expiresAt: DateTime,
  }),
);

/** A settled attempt. */
export const SettlementBody = component(
  'Settlement',
  z.strictObject({
    failedAttempts: Uint,
    locked: z.boolean(),
    deviceToken: z
      .string()
      .meta({ description: 'Device cookies (a success): the device token to set as the client’s cookie' })
      .optional(),
  }),
);

/** `GET /healthz`. */
export const HealthBody = component('Health', z.strictObject({ status: z.literal('ok') }));

/** `GET /readyz` when the store answers. */
export const ReadinessBody = component(
  'Readiness',
  z.strictObject({
    status: z.literal('ok'),
    store: z.enum(['memory', 'redis']).meta({ description: 'The lockout store' }),
    persistence: z
      .enum(['persistent', 'none', 'unknown'])
      .meta({
        description: 'Redis only: whether Redis keeps locks and counters across a restart (AOF or RDB)',
      })
      .optional(),
    warning: z.string().meta({ description: 'Redis only, when persistence is not `persistent`' }).optional(),
  }),
);

/** JSON Schema (2020-12, as OpenAPI 3.1) of every response component, by name: a component used by another is a `$ref`. */
export function responseComponentSchemas(): Record<string, Record<string, unknown>> {
  const { schemas } = z.toJSONSchema(RESPONSE_COMPONENTS, {
    target: 'draft-2020-12',
    io: 'output',
    uri: (id) => `#/components/schemas/${id}`,
  });
  const out: Record<string, Record<string, unknown>> = {};
  for (const [name, schema] of Object.entries(schemas)) {
    const { $schema: _dialect, $id: _id, ...json } = schema as Record<string, unknown>;
    out[name] = json;
  }
  return out;
}

/** JSON Schema (2020-12, as OpenAPI 3.1) of what a request body schema accepts. */
export function requestJsonSchema(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _dialect, ...json } = z.toJSONSchema(schema, { target: 'draft-2020-12', io: 'input' });
  return json;
}

/** The request body schemas of the OpenAPI document, by name. */
export function requestBodySchemas(): Record<RequestBodyName, Record<string, unknown>> {
  const out = {} as Record<RequestBodyName, Record<string, unknown>>;
  for (const name of Object.keys(REQUEST_BODIES) as RequestBodyName[]) {
    out[name] = requestJsonSchema(REQUEST_BODIES[name]);
  }
  return out;
}

// ---- events (issue 14) -------------------------------------------------------------------

/** Who caused an event (core/events.ts Actor). */
export const EventActorBody = component(
  'EventActor',
  z.union([
    z.strictObject({
      type: z.literal('token'),
      name: z.string().meta({ description: 'The API token’s name' }),
    }),
    z.strictObject({
      type: z.literal('jwt'),
      subject: z.string().meta({ description: 'The JWT’s subject' }),
    }),
    z.strictObject({
      type: z.literal('app'),
      name: z.string().meta({ description: 'The principal of an embedding app’s authorize hook' }),
    }),
    z.strictObject({
      type: z.literal('system').meta({ description: 'lockgate itself (failed checks, automatic unlock)' }),
    }),
  ]),
);

/** One recorded event (renderEvent of core/events.ts): also the `data` of a webhook message. */
export const EventBody = component(
  'Event',
  z.strictObject({
    id: z.string().meta({ description: 'Unique event id: the webhook-id of its deliveries' }),
    time: DateTime,
    orgId: Id,
    userId: Id.optional(),
    type: z.string().meta({
      description:
        'user.locked, user.unlocked, user.password_changed, settings.changed, user.forgiven, client.throttled, defences.changed (a type lockgate adds later is recorded under its own name)',
    }),
    actor: EventActorBody,
    data: z.record(z.string(), z.unknown()).meta({
      description:
        'The event’s other fields: factor, reason, failedAttempts (locks); op, owner, before, after (settings); never a credential',
    }),
  }),
);

/** `GET /v1/events`, `GET /v1/users/{userId}/events`: newest first. */
export const EventsBody = component(
  'Events',
  z.strictObject({
    events: z.array(EventBody),
    nextCursor: z.string().meta({ description: 'Present when there may be a further page' }).optional(),
  }),
);

/** `GET /v1/webhooks/dead-letters`: events no attempt could deliver, newest first. */
export const DeadLettersBody = component(
  'WebhookDeadLetters',
  z.strictObject({
    deadLetters: z.array(
      z.strictObject({
        endpoint: z.string().meta({ description: 'The endpoint’s configured name' }),
        event: EventBody,
        attempts: Uint,
        lastStatus: z.number().int().optional(),
        lastError: z.enum(['timeout', 'network']).optional(),
        time: DateTime.meta({ description: 'When it was given up' }),
      }),
    ),
  }),
);
