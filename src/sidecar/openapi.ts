/**
 * The OpenAPI 3.1 document of the sidecar's HTTP API (served at /openapi.json). Every route the
 * sidecar's Express app serves is listed in ROUTES; a test walks the app's router stack and
 * checks that the two agree, so a route cannot be added without documenting it. Another
 * (test/integration/openapi-responses.test.ts) calls every route for real and validates its
 * answers — success and errors — against this document's schemas, which are closed
 * (`additionalProperties: false`) wherever an answer's shape is fixed: a field added to or dropped
 * from an answer fails it until the document says so.
 */

// Registers the response components of GET /v1/me and GET /v1/activity.
import '../http/console-schemas';
import {
  Id,
  parameterJsonSchema,
  requestBodySchemas,
  responseComponentSchemas,
  type RequestBodyName,
} from '../http/schemas';

type Json = Record<string, unknown>;

export type HttpMethod = 'get' | 'post' | 'put' | 'delete';

export interface RouteDoc {
  readonly method: HttpMethod;
  /** OpenAPI path (`/v1/users/{userId}/lockout`). */
  readonly path: string;
  readonly operationId: string;
  readonly summary: string;
  readonly tag: 'settings' | 'users' | 'checks' | 'attempts' | 'otp' | 'service' | 'events';
  /** The permission the token needs; undefined: no authentication (unless anyPermission). */
  readonly permission?: string;
  /** Authenticated, but any valid credential may call it (GET /v1/me). */
  readonly anyPermission?: true;
  /**
   * Answered without the lockout store (GET /v1/me, GET /v1/activity): a store outage does not make
   * it 503. It still answers 503 when a JWT's issuer keys cannot be fetched, as every authenticated route.
   */
  readonly noStore?: true;
  /** The request body: a schema of src/http/schemas.ts, the one its handler parses the body with. */
  readonly body?: RequestBodyName;
  readonly query?: ReadonlyArray<{ name: string; description: string; schema: Json }>;
  /** Success status and the schema of its body (a component name), or a literal media type. */
  readonly success: { status: string; schema?: string; description: string; contentType?: string };
  /** Error statuses this route can answer besides 400/401/403/503 of every authenticated route. */
  readonly errors?: readonly string[];
}

const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });

/**
 * The schema of each id parameter, generated from the zod schema its handler parses it with
 * (parseParameter(Id, …)): the `userId` path parameter, `cursor`, `ctx.orgId`, `x-zitadel-orgid`.
 * The others are hand-written: `attemptId` (decodeAttemptId, not a zod schema), `limit` and
 * `minutes` (parsed from a string, documented as the integer they stand for) and `ctx.instance`
 * (`true`/`false`).
 */
const ID_PARAMETER = parameterJsonSchema(Id);

/** Path parameters whose schema is generated; another is a string. */
const PATH_PARAMETERS: Readonly<Record<string, Json>> = { userId: ID_PARAMETER };

const CHECK_ERRORS = ['401', '423', '429'];

/** Every route of the sidecar. */
export const ROUTES: readonly RouteDoc[] = [
  // ---- ZITADEL-compatible settings ----
  {
    method: 'get',
    path: '/management/v1/policies/lockout',
    operationId: 'GetLockoutPolicy',
    summary: "The org's effective lockout settings (its own, else the instance's)",
    tag: 'settings',
    permission: 'policy.read',
    success: { status: '200', schema: 'GetPolicyResponse', description: 'The effective settings' },
  },
  {
    method: 'get',
    path: '/management/v1/policies/default/lockout',
    operationId: 'GetDefaultLockoutPolicy',
    summary: 'The instance lockout settings',
    tag: 'settings',
    permission: 'policy.read',
    success: { status: '200', schema: 'PolicyResponse', description: 'The instance settings' },
  },
  {
    method: 'post',
    path: '/management/v1/policies/lockout',
    operationId: 'AddCustomLockoutPolicy',
    summary: 'Gives the org custom lockout settings',
    tag: 'settings',
    permission: 'policy.write',
    body: 'SettingsRequest',
    success: { status: '200', schema: 'DetailsResponse', description: 'Added' },
    errors: ['409'],
  },
  {
    method: 'put',
    path: '/management/v1/policies/lockout',
    operationId: 'UpdateCustomLockoutPolicy',
    summary: "Changes the org's custom lockout settings",
    tag: 'settings',
    permission: 'policy.write',
    body: 'SettingsRequest',
    success: { status: '200', schema: 'DetailsResponse', description: 'Changed' },
    errors: ['404'],
  },
  {
    method: 'delete',
    path: '/management/v1/policies/lockout',
    operationId: 'ResetLockoutPolicyToDefault',
    summary: "Removes the org's custom settings: it falls back to the instance's",
    tag: 'settings',
    permission: 'policy.delete',
    success: { status: '200', schema: 'DetailsResponse', description: 'Removed' },
    errors: ['404'],
  },
  {
    method: 'get',
    path: '/admin/v1/policies/lockout',
    operationId: 'GetInstanceLockoutPolicy',
    summary: 'The instance lockout settings',
    tag: 'settings',
    permission: 'iam.policy.read',
    success: { status: '200', schema: 'PolicyResponse', description: 'The instance settings' },
  },
  ...(['/admin/v1/policies/password/lockout', '/admin/v1/policies/lockout'] as const).map(
    (path, i): RouteDoc => ({
      method: 'put',
      path,
      operationId: i === 0 ? 'UpdateInstanceLockoutPolicy' : 'UpdateInstanceLockoutPolicyV1Alias',
      summary:
        i === 0
          ? 'Changes the instance lockout settings'
          : "Changes the instance lockout settings (ZITADEL's current admin path for the same call)",
      tag: 'settings',
      permission: 'iam.policy.write',
      body: 'SettingsRequest',
      success: { status: '200', schema: 'DetailsResponse', description: 'Changed' },
    }),
  ),
  {
    method: 'get',
    path: '/v2/settings/lockout',
    operationId: 'GetLockoutSettings',
    summary:
      "Lockout settings of an org (ctx.orgId), of the instance (ctx.instance=true), else of the request's org",
    tag: 'settings',
    permission: 'policy.read',
    query: [
      { name: 'ctx.orgId', description: 'The org whose effective settings to read', schema: ID_PARAMETER },
      { name: 'ctx.instance', description: 'true: the instance settings', schema: { type: 'boolean' } },
    ],
    success: { status: '200', schema: 'SettingsV2Response', description: 'The settings' },
  },
  // ---- defence settings (lockgate's own, issue 12; 400 code 9 without a defences section) ----
  {
    method: 'get',
    path: '/v1/policies/defences',
    operationId: 'GetDefenceSettings',
    summary: "The org's effective defence settings (per defence its own, else the instance's); never a key",
    tag: 'settings',
    permission: 'policy.read',
    success: { status: '200', schema: 'DefenceSettings', description: 'The effective defence settings' },
  },
  {
    method: 'post',
    path: '/v1/policies/defences',
    operationId: 'AddCustomDefenceSettings',
    summary: 'Gives the org defence settings of its own (a defence left out is inherited)',
    tag: 'settings',
    permission: 'policy.write',
    body: 'DefenceSettingsRequest',
    success: { status: '200', schema: 'DetailsResponse', description: 'Added' },
    errors: ['409'],
  },
  {
    method: 'put',
    path: '/v1/policies/defences',
    operationId: 'UpdateCustomDefenceSettings',
    summary: "Changes the org's defence settings (same values: 400 code 9)",
    tag: 'settings',
    permission: 'policy.write',
    body: 'DefenceSettingsRequest',
    success: { status: '200', schema: 'DetailsResponse', description: 'Changed' },
    errors: ['404'],
  },
  {
    method: 'delete',
    path: '/v1/policies/defences',
    operationId: 'ResetDefenceSettingsToDefault',
    summary: "Removes the org's defence settings: every defence is the instance's again",
    tag: 'settings',
    permission: 'policy.delete',
    success: { status: '200', schema: 'DetailsResponse', description: 'Removed' },
    errors: ['404'],
  },
  // ---- users ----
  ...(['/management/v1/users/{userId}/_lock', '/v2/users/{userId}/lock'] as const).map(
    (path, i): RouteDoc => ({
      method: 'post',
      path,
      operationId: i === 0 ? 'LockUser' : 'LockUserV2',
      summary: 'Locks the user (admin lock)',
      tag: 'users',
      permission: 'user.write',
      success: { status: '200', schema: 'DetailsResponse', description: 'Locked' },
    }),
  ),
  ...(['/management/v1/users/{userId}/_unlock', '/v2/users/{userId}/unlock'] as const).map(
    (path, i): RouteDoc => ({
      method: 'post',
      path,
      operationId: i === 0 ? 'UnlockUser' : 'UnlockUserV2',
      summary: 'Unlocks the user and resets all its failure counters',
      tag: 'users',
      permission: 'user.write',
      success: { status: '200', schema: 'DetailsResponse', description: 'Unlocked' },
    }),
  ),
  {
    method: 'get',
    path: '/v1/users/{userId}/lockout',
    operationId: 'GetUserLockout',
    summary: "The user's lock state, failure counters and effective settings",
    tag: 'users',
    permission: 'user.read',
    success: { status: '200', schema: 'UserLockout', description: 'The user state' },
  },
  {
    method: 'get',
    path: '/v1/lockouts',
    operationId: 'ListLockedUsers',
    summary: 'Locked users of the org, by user id',
    tag: 'users',
    permission: 'user.read',
    query: [
      {
        name: 'limit',
        description: 'Page size (1–1000, default 100)',
        schema: { type: 'integer', minimum: 1, maximum: 1000 },
      },
      { name: 'cursor', description: 'nextCursor of the previous page', schema: ID_PARAMETER },
    ],
    success: { status: '200', schema: 'LockedUsers', description: 'A page of locked users' },
  },
  {
    method: 'get',
    path: '/v1/me',
    operationId: 'GetMe',
    summary:
      "What the caller's credential may do: its permissions on the request's org and the orgs it may act on (the console's org picker)",
    tag: 'users',
    anyPermission: true,
    noStore: true,
    success: { status: '200', schema: 'Me', description: 'The credential and its permissions' },
  },
  {
    method: 'get',
    path: '/v1/activity',
    operationId: 'GetActivity',
    summary:
      "The org's failed checks, locks and unlocks per minute, counted in memory by the answering process (not shared across processes, reset by a restart)",
    tag: 'users',
    permission: 'user.read',
    noStore: true,
    query: [
      {
        name: 'minutes',
        description: 'How many minutes back (1 to the window kept, 180 by default; default 60)',
        schema: { type: 'integer', minimum: 1, maximum: 1440 },
      },
    ],
    success: { status: '200', schema: 'Activity', description: 'One entry per minute, oldest first' },
  },
  {
    method: 'post',
    path: '/v1/users/{userId}/password_changed',
    operationId: 'PasswordChanged',
    summary: "The user's password was changed or reset: resets its password counter (does not unlock)",
    tag: 'users',
    permission: 'user.write',
    success: { status: '200', schema: 'DetailsResponse', description: 'Reset' },
  },
  // ---- events (issue 14) ----
  ...(['/v1/events', '/v1/users/{userId}/events'] as const).map((path, i): RouteDoc => ({
    method: 'get',
    path,
    operationId: i === 0 ? 'ListEvents' : 'ListUserEvents',
    summary:
      i === 0
        ? 'Recorded events of the org (locks, unlocks, settings changes, password changes), newest first'
        : 'Recorded events of the user, newest first',
    tag: 'events',
    permission: 'user.read',
    query: [
      {
        name: 'limit',
        description: 'Most events in the page (1–1000, default 100)',
        schema: { type: 'integer', minimum: 1, maximum: 1000 },
      },
      { name: 'cursor', description: 'nextCursor of the previous page', schema: ID_PARAMETER },
      {
        name: 'type',
        description: 'Only events of this type (e.g. user.locked)',
        schema: ID_PARAMETER,
      },
      ...(i === 0 ? [{ name: 'userId', description: 'Only events of this user', schema: ID_PARAMETER }] : []),
    ],
    success: {
      status: '200',
      schema: 'Events',
      description:
        'A page of events; a page may hold fewer than `limit` events (filters look at 10 × limit entries at most) and still have a nextCursor',
    },
  })),
  {
    method: 'get',
    path: '/v1/webhooks/dead-letters',
    operationId: 'ListWebhookDeadLetters',
    summary: "Webhook deliveries of the org's events given up after their last attempt, newest first",
    tag: 'events',
    permission: 'user.read',
    query: [
      {
        name: 'limit',
        description: 'Most dead letters in the answer (1–1000, default 100)',
        schema: { type: 'integer', minimum: 1, maximum: 1000 },
      },
    ],
    success: { status: '200', schema: 'WebhookDeadLetters', description: 'The dead letters' },
  },
  // ---- checks ----
  {
    method: 'post',
    path: '/v1/checks/password',
    operationId: 'CheckPassword',
    summary: 'Verifies a password against an argon2 PHC hash, under lockout',
    tag: 'checks',
    permission: 'lockout.check',
    body: 'PasswordCheckRequest',
    success: { status: '200', schema: 'CheckSuccess', description: 'The password is correct' },
    errors: CHECK_ERRORS,
  },
  {
    method: 'post',
    path: '/v1/checks/totp',
    operationId: 'CheckTotp',
    summary: 'Verifies an RFC 6238 TOTP code (30 s step, ±1 step, each code once), under lockout',
    tag: 'checks',
    permission: 'lockout.check',
    body: 'TotpCheckRequest',
    success: { status: '200', schema: 'CheckSuccess', description: 'The code is correct' },
    errors: CHECK_ERRORS,
  },
  ...(['sms', 'email'] as const).flatMap((channel): RouteDoc[] => [
    {
      method: 'post',
      path: `/v1/otp/${channel}`,
      operationId: channel === 'sms' ? 'IssueSmsCode' : 'IssueEmailCode',
      summary: `Issues a 6-digit ${channel === 'sms' ? 'SMS' : 'email'} code (the caller delivers it)`,
      tag: 'otp',
      permission: 'lockout.check',
      body: 'UserRequest',
      success: { status: '201', schema: 'IssuedCode', description: 'The code and its expiry' },
      errors: ['423', '429'],
    },
    {
      method: 'post',
      path: `/v1/checks/otp_${channel}`,
      operationId: channel === 'sms' ? 'CheckSmsCode' : 'CheckEmailCode',
      summary: `Verifies the issued ${channel === 'sms' ? 'SMS' : 'email'} code, under lockout`,
      tag: 'checks',
      permission: 'lockout.check',
      body: 'CodeCheckRequest',
      success: { status: '200', schema: 'CheckSuccess', description: 'The code is correct' },
      errors: CHECK_ERRORS,
    },
  ]),
  // ---- attempts ----
  {
    method: 'post',
    path: '/v1/attempts',
    operationId: 'ReserveAttempt',
    summary: 'Reserves an attempt for a credential verified elsewhere; settle it with success or failure',
    tag: 'attempts',
    permission: 'lockout.check',
    body: 'AttemptRequest',
    success: { status: '201', schema: 'Attempt', description: 'Reserved' },
    errors: ['423', '429'],
  },
  ...(['success', 'failure'] as const).map((outcome): RouteDoc => ({
    method: 'post',
    path: `/v1/attempts/{attemptId}/${outcome}`,
    operationId: outcome === 'success' ? 'SettleAttemptSuccess' : 'SettleAttemptFailure',
    summary: `Settles a reserved attempt as ${outcome === 'success' ? 'a correct' : 'a wrong'} credential`,
    tag: 'attempts',
    permission: 'lockout.check',
    success: { status: '200', schema: 'Settlement', description: 'Settled' },
    errors: ['404'],
  })),
  // ---- the service ----
  {
    method: 'get',
    path: '/healthz',
    operationId: 'Healthz',
    summary: 'Liveness: 200 while the process runs',
    tag: 'service',
    success: { status: '200', schema: 'Health', description: 'Alive' },
  },
  {
    method: 'get',
    path: '/readyz',
    operationId: 'Readyz',
    summary: 'Readiness: 200 when the store answers, else 503 code 14',
    tag: 'service',
    success: { status: '200', schema: 'Readiness', description: 'Ready' },
    errors: ['503'],
  },
  {
    method: 'get',
    path: '/metrics',
    operationId: 'Metrics',
    summary: 'Prometheus metrics (text format)',
    tag: 'service',
    success: { status: '200', description: 'Prometheus text exposition format', contentType: 'text/plain' },
  },
  {
    method: 'get',
    path: '/openapi.json',
    operationId: 'OpenApi',
    summary: 'This document',
    tag: 'service',
    success: { status: '200', description: 'OpenAPI 3.1 document', contentType: 'application/json' },
  },
];

const ERROR_RESPONSES: Record<string, string> = {
  '400': 'Invalid argument (code 3) or failed precondition (code 9)',
  '401':
    'Missing or unknown token (code 16), or a wrong credential (code 3 with a CredentialsCheckError detail)',
  '403': 'The token may not act on the org or lacks the permission (code 7)',
  '404': 'Not found (code 5)',
  '409': 'Already exists (code 6)',
  '413': 'Body too large (code 8)',
  '415': 'The body is not JSON (Content-Type other than application/json; code 3)',
  '423': 'The user is locked (code 9, Errors.User.Locked): the credential was not evaluated',
  '429':
    'Busy, rate limited or spray-throttled (code 8: Errors.Lockout.Busy, Errors.Otp.TooManyCodes, Errors.Lockout.Throttled), retry after Retry-After seconds',
  '503': "The lockout store, or a JWT issuer's keys, are unavailable (code 14)",
};

function operation(route: RouteDoc): Json {
  const parameters: Json[] = [];
  for (const match of route.path.matchAll(/\{([A-Za-z]+)\}/g)) {
    const name = match[1]!;
    parameters.push({
      name,
      in: 'path',
      required: true,
      schema: PATH_PARAMETERS[name] ?? { type: 'string' },
    });
  }
  const authenticated = route.permission !== undefined || route.anyPermission === true;
  if (authenticated) {
    parameters.push({
      name: 'x-zitadel-orgid',
      in: 'header',
      required: false,
      description: "The org the request acts on (default: the token's home org)",
      schema: ID_PARAMETER,
    });
  }
  for (const q of route.query ?? []) {
    parameters.push({
      name: q.name,
      in: 'query',
      required: false,
      description: q.description,
      schema: q.schema,
    });
  }
  const responses: Json = {
    [route.success.status]: {
      description: route.success.description,
      content: {
        [route.success.contentType ?? 'application/json']: {
          schema: route.success.schema
            ? ref(route.success.schema)
            : { type: route.success.contentType === 'text/plain' ? 'string' : 'object' },
        },
      },
    },
  };
  const errorStatuses = new Set<string>(route.errors ?? []);
  if (authenticated) {
    for (const s of ['400', '401', '403']) errorStatuses.add(s);
    errorStatuses.add('503');
    if (route.body) {
      errorStatuses.add('413');
      errorStatuses.add('415');
    }
  }
  for (const status of [...errorStatuses].sort()) {
    const headers =
      status === '429'
        ? { 'Retry-After': { description: 'Seconds to wait', schema: { type: 'integer', minimum: 1 } } }
        : status === '401'
          ? {
              'WWW-Authenticate': {
                description: 'A missing or unknown token only (not a wrong credential)',
                schema: { type: 'string' },
              },
            }
          : undefined;
    responses[status] = {
      description: ERROR_RESPONSES[status] ?? 'Error',
      ...(headers ? { headers } : {}),
      content: { 'application/json': { schema: ref('Error') } },
    };
  }
  return {
    operationId: route.operationId,
    summary: route.summary,
    tags: [route.tag],
    ...(route.permission
      ? { security: [{ bearer: [] }], description: `Needs the permission \`${route.permission}\`.` }
      : route.anyPermission
        ? { security: [{ bearer: [] }], description: 'Any valid credential.' }
        : { security: [] }),
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(route.body
      ? { requestBody: { required: true, content: { 'application/json': { schema: ref(route.body) } } } }
      : {}),
    responses,
  };
}

/** Builds the OpenAPI 3.1 document. */
export function buildOpenApiDocument(options: { version?: string; serverUrl?: string } = {}): Json {
  const paths: Record<string, Json> = {};
  for (const route of ROUTES) {
    paths[route.path] = { ...(paths[route.path] ?? {}), [route.method]: operation(route) };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'lockgate sidecar',
      version: options.version ?? '0.0.0',
      description:
        'Account lockout decisions for login flows: ZITADEL-compatible lockout settings and user lock routes, ' +
        'credential checks under lockout, attempt reservations, health and metrics.',
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    ...(options.serverUrl ? { servers: [{ url: options.serverUrl }] } : {}),
    tags: [
      { name: 'settings', description: 'Lockout settings (ZITADEL management, admin and v2 API)' },
      { name: 'users', description: 'Lock, unlock and lockout state of users' },
      { name: 'checks', description: 'Credential checks under lockout' },
      { name: 'otp', description: 'One-time codes by SMS and email' },
      { name: 'attempts', description: 'Attempts for credentials verified elsewhere' },
      { name: 'service', description: 'Health, readiness, metrics and this document' },
      { name: 'events', description: 'Recorded lockout events and webhook dead letters' },
    ],
    paths,
    components: {
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          description:
            'A token from the configuration (auth.tokens), or a JWT of the configured OIDC issuer (auth.jwt)',
        },
      },
      // Generated: the request bodies from the zod schemas their handlers parse them with, the
      // response bodies (errors included) from the zod schemas their renderers are typed by.
      schemas: { ...responseComponentSchemas(), ...requestBodySchemas() },
    },
  };
}
