import type { z } from 'zod';
import express, { Router, type Request, type RequestHandler, type Response } from 'express';
import { decodeAttemptId, type AttemptRef } from '../core/attempt-id';
import type { CheckOptions, CheckOutcome, CheckResult, LockoutEngine } from '../core/engine';
import {
  BusyError,
  GrpcCode,
  InvalidArgumentError,
  NotChangedError,
  StoreUnavailableError,
  ThrottledError,
  UserLockedError,
  isLockgateError,
} from '../core/errors';
import { renderEvent, type DeadLetter, type OperationContext } from '../core/events';
import { SprayThrottle, throttledCheck, type ThrottleTicket } from '../core/spray-throttle';
import { checkBodyLimit, invalidOption } from '../core/option-checks';
import type { CodeChannel } from '../core/store';
import { makeSubject, type Factor, type Subject } from '../core/subjects';
import { PERMISSIONS, type AuthContext, type Authorize, type Permission } from './auth';
import type { Activity } from '../core/activity';
import { ACTIVITY_MINUTES_MAX, type ActivityBody, type MeBody } from './console-schemas';
import { parseDefenceSettings } from './defence-schemas';
import {
  InvalidCredentialsError,
  PermissionDeniedError,
  RequestError,
  createErrorHandler,
  sendLocked,
} from './errors';
import {
  renderCheckSuccess,
  renderDetails,
  renderDefences,
  renderLockedPage,
  renderPolicy,
  renderSettingsV2,
  renderSettlement,
  renderUserStatus,
  rfc3339,
} from './render';
import {
  type AttemptBody,
  AttemptRequest,
  type BodySchema,
  type DetailsResponseBody,
  type GetPolicyResponseBody,
  Id,
  type IssuedCodeBody,
  type PolicyResponseBody,
  CodeCheckRequest,
  type DeadLettersBody,
  type EventsBody,
  PasswordCheckRequest,
  SettingsRequest,
  TotpCheckRequest,
  UserRequest,
  parseFields,
  parseParameter,
} from './schemas';
import type { OtpCodes } from '../verify/otp-codes';
import type { PasswordVerifier } from '../verify/password';
import type { TotpVerifier } from '../verify/totp';

/**
 * The routers of the HTTP API (API.md 2.1 and 2.2), shared by the sidecar and by apps that embed
 * lockgate: settings, users (status, lock, unlock, password changed) and checks (password, TOTP,
 * SMS/Email codes, attempts). Each router answers its own errors in ZITADEL's error body, parses
 * JSON only on its own routes (bounded by `bodyLimit`), and lets every other request through.
 */

/** One audit record: an admin action or a settings change. Never holds a credential or token. */
export interface AuditEntry {
  /** e.g. `settings.org.add`, `user.lock`. */
  readonly action: string;
  /** Who: the token's name (AuthContext.principal). */
  readonly principal: string;
  /** The org acted on (the instance id for instance settings). */
  readonly orgId: string;
  readonly userId?: string;
  /** `ok`, or the stable error id (`Errors.User.AlreadyLocked`, …), or `error`. */
  readonly outcome?: string;
}

/**
 * Outcome of a check route as observed for metrics: the engine's, `throttled` (spray throttling:
 * answered 429 unevaluated), or `error` (store down, bad input…).
 */
export type ObservedCheckOutcome = CheckOutcome | 'throttled' | 'error';

export interface RouterBaseOptions {
  readonly engine: LockoutEngine;
  /** Authentication, org context and permissions (see createTokenAuthorizer). */
  readonly authorize: Authorize;
  /** Largest JSON body accepted (express.json `limit`). Default `16kb`. */
  readonly bodyLimit?: string | number;
  /** Called after every admin action and settings change (success or refusal). Must not throw. */
  readonly audit?: (entry: AuditEntry) => void;
  /** Called with every error answered 500 (for the logs; its text never reaches the client). */
  readonly onError?: (error: unknown, req: Request) => void;
  /** Per-minute failures, locks and unlocks (createActivity): the users router serves them at GET /v1/activity; without it, that route is not served. */
  readonly activity?: Activity;
  /**
   * The webhook dead letters of an org, newest first (GET /v1/webhooks/dead-letters; issue 14).
   * Absent: that route answers 400 code 9 (no webhooks).
   */
  readonly deadLetters?: (orgId: string, limit: number) => Promise<readonly DeadLetter[]>;
}

export type SettingsRouterOptions = RouterBaseOptions;
export type UsersRouterOptions = RouterBaseOptions;

export interface ChecksRouterOptions extends RouterBaseOptions {
  readonly passwordVerifier: PasswordVerifier;
  readonly totpVerifier: TotpVerifier;
  readonly otpCodes: OtpCodes;
  /** Called once per check route request (password, TOTP, SMS/Email code) with its duration. Must not throw. */
  readonly observeCheck?: (factor: Factor, outcome: ObservedCheckOutcome, seconds: number) => void;
  /**
   * Spray throttling (defences.sprayThrottle), when on: the check and attempt routes count failures
   * per `clientIp` of the body (the end user's address, passed by the auth service); a body without
   * one is not throttled (`onNoClientIp` is told).
   */
  readonly throttle?: SprayThrottle;
  /** Told of each check or attempt request without `clientIp` while spray throttling is on. Must not throw. */
  readonly onNoClientIp?: (route: string) => void;
}

export type ApiRouterOptions = ChecksRouterOptions;

const DEFAULT_BODY_LIMIT = '16kb';
const ORG_LIST_LIMIT_MAX = 1000;

type DetailsResponse = z.output<typeof DetailsResponseBody>;
type PolicyResponse = z.output<typeof PolicyResponseBody>;
type GetPolicyResponse = z.output<typeof GetPolicyResponseBody>;

type AuthedHandler = (req: Request, res: Response, ctx: AuthContext) => Promise<void>;
type Body = Record<string, unknown>;

function validateBase(options: RouterBaseOptions): void {
  if (!options || typeof options !== 'object') throw invalidOption('options', 'must be an object');
  const engine = options.engine as Partial<LockoutEngine> | undefined;
  if (!engine || typeof engine.check !== 'function' || typeof engine.reserve !== 'function') {
    throw invalidOption('engine', 'must be a LockoutEngine (new LockoutEngine({ store }))');
  }
  if (typeof options.authorize !== 'function') {
    throw invalidOption(
      'authorize',
      'must be a function (req, permission, target?) => Promise<{ principal, orgId }>',
    );
  }
  checkBodyLimit(options.bodyLimit);
  if (options.audit !== undefined && typeof options.audit !== 'function')
    throw invalidOption('audit', 'must be a function');
  if (options.onError !== undefined && typeof options.onError !== 'function') {
    throw invalidOption('onError', 'must be a function');
  }
  if (options.activity !== undefined && typeof options.activity?.read !== 'function') {
    throw invalidOption('activity', 'must be an Activity (createActivity())');
  }
}

function validateChecks(options: ChecksRouterOptions): void {
  validateBase(options);
  if (typeof options.passwordVerifier?.verify !== 'function') {
    throw invalidOption('passwordVerifier', 'must be a PasswordVerifier (createPasswordVerifier())');
  }
  if (typeof options.totpVerifier?.verify !== 'function') {
    throw invalidOption('totpVerifier', 'must be a TotpVerifier (createTotpVerifier({ store }))');
  }
  if (typeof options.otpCodes?.issue !== 'function' || typeof options.otpCodes?.verify !== 'function') {
    throw invalidOption('otpCodes', 'must be OtpCodes (createOtpCodes({ store }))');
  }
  if (options.observeCheck !== undefined && typeof options.observeCheck !== 'function') {
    throw invalidOption('observeCheck', 'must be a function');
  }
}

/** Whether the request carries a body (as type-is's hasBody). */
function hasBody(req: Request): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** The parsed JSON object body; an empty body is `{}`. */
function readBody(req: Request): Body {
  const body: unknown = req.body;
  if (body === undefined) {
    if (hasBody(req)) {
      throw new RequestError(
        415,
        GrpcCode.InvalidArgument,
        'Errors.Request.UnsupportedMediaType',
        'Request body must be JSON (Content-Type: application/json)',
      );
    }
    return {};
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new InvalidArgumentError('Errors.Request.Invalid', 'Request body must be a JSON object', 'body');
  }
  return body as Body;
}

/** The JSON object body parsed by `schema` (src/http/schemas.ts): its typed fields, or the error of its first bad field. */
function parseBody<Fields>(schema: BodySchema<Fields>, req: Request): Fields {
  return parseFields(schema, readBody(req));
}

/** The query string, parsed independently of the app's `query parser` setting. */
function queryOf(req: Request): URLSearchParams {
  const url = req.originalUrl || req.url;
  const q = url.indexOf('?');
  return new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
}

function singleParam(query: URLSearchParams, name: string): string | undefined {
  const values = query.getAll(name);
  if (values.length > 1) {
    throw new InvalidArgumentError('Errors.Request.Invalid', `${name} must be given at most once`, name);
  }
  return values[0];
}

/** An id path parameter (`userId`), parsed by the schema the document's parameter is generated from. */
function pathParam(req: Request, name: string): string {
  return parseParameter(Id, req.params[name], name);
}

/** The operation context of an admin action: who made it (AuthContext.actor, else the principal). */
function by(ctx: AuthContext): OperationContext {
  return { actor: ctx.actor ?? { type: 'app', name: ctx.principal } };
}

/** The `limit` query parameter of the list routes: 1 to ORG_LIST_LIMIT_MAX. */
function limitParam(query: URLSearchParams): number | undefined {
  const rawLimit = singleParam(query, 'limit');
  if (rawLimit === undefined) return undefined;
  if (!/^[0-9]{1,10}$/.test(rawLimit) || Number(rawLimit) < 1 || Number(rawLimit) > ORG_LIST_LIMIT_MAX) {
    throw new InvalidArgumentError(
      'Errors.List.Limit',
      `limit must be an integer from 1 to ${ORG_LIST_LIMIT_MAX}`,
      'limit',
    );
  }
  return Number(rawLimit);
}

/** Reports `entry` to the audit hook, never letting the hook break the request. */
function emitAudit(audit: RouterBaseOptions['audit'], entry: AuditEntry): void {
  if (!audit) return;
  try {
    audit(entry);
  } catch {
    // an audit sink must not change the answer
  }
}

async function audited<T>(
  audit: RouterBaseOptions['audit'],
  entry: Omit<AuditEntry, 'outcome'>,
  action: () => Promise<T>,
): Promise<T> {
  try {
    const result = await action();
    emitAudit(audit, { ...entry, outcome: 'ok' });
    return result;
  } catch (error) {
    emitAudit(audit, { ...entry, outcome: isLockgateError(error) ? error.code : 'error' });
    throw error;
  }
}

/** Route building blocks shared by the routers. */
function toolkit(options: RouterBaseOptions) {
  const { authorize } = options;
  const json = express.json({ limit: options.bodyLimit ?? DEFAULT_BODY_LIMIT });
  const contexts = new WeakMap<Request, AuthContext>();

  /** Authenticates and authorizes before the body is read (401/403 come before 400). */
  const guard =
    (permission: Permission): RequestHandler =>
    async (req, _res, next) => {
      contexts.set(req, await authorize(req, permission));
      next();
    };

  const run =
    (handler: AuthedHandler): RequestHandler =>
    async (req, res) => {
      const ctx = contexts.get(req);
      if (!ctx) throw new Error('lockgate: route reached without authorization');
      await handler(req, res, ctx);
    };

  return {
    /** A route without a body. */
    plain: (permission: Permission, handler: AuthedHandler): RequestHandler[] => [
      guard(permission),
      run(handler),
    ],
    /** A route with a JSON body. */
    withBody: (permission: Permission, handler: AuthedHandler): RequestHandler[] => [
      guard(permission),
      json,
      run(handler),
    ],
    /** Authorizes for an org that the request names outside the header (an attempt's, `ctx.orgId`). */
    async authorizeFor(
      req: Request,
      permission: Permission,
      orgId: string | undefined,
    ): Promise<AuthContext> {
      const ctx = await authorize(req, permission, orgId === undefined ? undefined : { orgId });
      // A custom hook that ignored the target must not widen access.
      if (orgId !== undefined && ctx.orgId !== orgId) {
        throw new PermissionDeniedError('Errors.Token.OrgDenied', 'Token may not act on this organization');
      }
      return ctx;
    },
  };
}

function finish(router: Router, options: RouterBaseOptions): Router {
  router.use(createErrorHandler({ onError: options.onError }));
  return router;
}

// ---- settings ---------------------------------------------------------------------------

/**
 * The lockout settings routes (API.md 2.1): management (org), admin (instance) and v2 settings.
 */
export function createSettingsRouter(options: SettingsRouterOptions): Router {
  validateBase(options);
  const { engine, audit } = options;
  const t = toolkit(options);
  const router = Router();

  router.get(
    '/management/v1/policies/lockout',
    ...t.plain('policy.read', async (_req, res, ctx) => {
      const settings = await engine.getEffectiveSettings(ctx.orgId);
      res.json({ policy: renderPolicy(settings), isDefault: settings.isDefault } satisfies GetPolicyResponse);
    }),
  );

  router.get(
    '/management/v1/policies/default/lockout',
    ...t.plain('policy.read', async (_req, res) => {
      res.json({ policy: renderPolicy(await engine.getInstanceSettings()) } satisfies PolicyResponse);
    }),
  );

  // The settings values are parsed inside `audited`: a refused value is audited, as every refusal of the engine.
  router.post(
    '/management/v1/policies/lockout',
    ...t.withBody('policy.write', async (req, res, ctx) => {
      const body = readBody(req);
      const details = await audited(
        audit,
        { action: 'settings.org.add', principal: ctx.principal, orgId: ctx.orgId },
        () => engine.addOrgSettings(ctx.orgId, parseFields(SettingsRequest, body), by(ctx)),
      );
      res.json({ details: renderDetails(details) } satisfies DetailsResponse);
    }),
  );

  router.put(
    '/management/v1/policies/lockout',
    ...t.withBody('policy.write', async (req, res, ctx) => {
      const body = readBody(req);
      const details = await audited(
        audit,
        { action: 'settings.org.update', principal: ctx.principal, orgId: ctx.orgId },
        () => engine.updateOrgSettings(ctx.orgId, parseFields(SettingsRequest, body), by(ctx)),
      );
      res.json({ details: renderDetails(details) } satisfies DetailsResponse);
    }),
  );

  router.delete(
    '/management/v1/policies/lockout',
    ...t.plain('policy.delete', async (_req, res, ctx) => {
      const details = await audited(
        audit,
        { action: 'settings.org.reset', principal: ctx.principal, orgId: ctx.orgId },
        () => engine.resetOrgSettings(ctx.orgId, by(ctx)),
      );
      res.json({ details: renderDetails(details) } satisfies DetailsResponse);
    }),
  );

  router.get(
    '/admin/v1/policies/lockout',
    ...t.plain('iam.policy.read', async (_req, res) => {
      res.json({ policy: renderPolicy(await engine.getInstanceSettings()) } satisfies PolicyResponse);
    }),
  );

  const updateInstance = t.withBody('iam.policy.write', async (req, res, ctx) => {
    const body = readBody(req);
    const details = await audited(
      audit,
      { action: 'settings.instance.update', principal: ctx.principal, orgId: engine.instanceId },
      () => engine.updateInstanceSettings(parseFields(SettingsRequest, body), by(ctx)),
    );
    res.json({ details: renderDetails(details) } satisfies DetailsResponse);
  });
  // API.md's path, and ZITADEL's current admin path for the same call.
  router.put('/admin/v1/policies/password/lockout', ...updateInstance);
  router.put('/admin/v1/policies/lockout', ...updateInstance);

  router.get('/v2/settings/lockout', async (req, res) => {
    const query = queryOf(req);
    const orgParam = singleParam(query, 'ctx.orgId');
    const instanceParam = singleParam(query, 'ctx.instance');
    let badOrg: unknown;
    try {
      if (orgParam !== undefined) parseParameter(Id, orgParam, 'ctx.orgId');
    } catch (error) {
      badOrg = error;
    }
    // 401/403 come before 400: a bad ctx.orgId is reported once the request is authorized.
    const ctx = await t.authorizeFor(req, 'policy.read', badOrg === undefined ? orgParam : undefined);
    if (badOrg !== undefined) throw badOrg;
    if (instanceParam !== undefined && instanceParam !== 'true' && instanceParam !== 'false') {
      throw new InvalidArgumentError(
        'Errors.Request.Invalid',
        'ctx.instance must be true or false',
        'ctx.instance',
      );
    }
    const instance = instanceParam === 'true';
    if (instance && orgParam !== undefined) {
      throw new InvalidArgumentError(
        'Errors.Request.Invalid',
        'give ctx.orgId or ctx.instance, not both',
        'ctx',
      );
    }
    const settings = instance
      ? await engine.getInstanceSettings()
      : await engine.getEffectiveSettings(ctx.orgId);
    res.json(renderSettingsV2(settings));
  });

  addDefenceRoutes(router, engine, t, audit);

  return finish(router, options);
}

/**
 * lockgate's own defence settings routes (issue 12), beside the ZITADEL-compatible ones and with
 * their permissions: the org's effective defences (each its own, else the instance's, which an org
 * without defence settings of its own shows), and the org's add/update/remove. Keys are never answered. Without a `defences`
 * section on the instance every one answers 400 code 9 (Errors.Defences.Disabled).
 */
function addDefenceRoutes(
  router: Router,
  engine: LockoutEngine,
  t: ReturnType<typeof toolkit>,
  audit: RouterBaseOptions['audit'],
): void {
  router.get(
    '/v1/policies/defences',
    ...t.plain('policy.read', async (_req, res, ctx) => {
      res.json(renderDefences(await engine.getEffectiveDefences(ctx.orgId)));
    }),
  );
  const write = (op: 'add' | 'update') =>
    t.withBody('policy.write', async (req, res, ctx) => {
      const body = readBody(req);
      const details = await audited(
        audit,
        { action: `defences.org.${op}`, principal: ctx.principal, orgId: ctx.orgId },
        () => engine.writeOrgDefences(ctx.orgId, { op, values: parseDefenceSettings(body) }, by(ctx)),
      );
      res.json({ details: renderDetails(details) } satisfies DetailsResponse);
    });
  router.post('/v1/policies/defences', ...write('add'));
  router.put('/v1/policies/defences', ...write('update'));
  router.delete(
    '/v1/policies/defences',
    ...t.plain('policy.delete', async (_req, res, ctx) => {
      const details = await audited(
        audit,
        { action: 'defences.org.reset', principal: ctx.principal, orgId: ctx.orgId },
        () => engine.writeOrgDefences(ctx.orgId, { op: 'remove' }, by(ctx)),
      );
      res.json({ details: renderDetails(details) } satisfies DetailsResponse);
    }),
  );
}

// ---- users ------------------------------------------------------------------------------

/**
 * The user routes: status, locked users, admin lock/unlock (ZITADEL v1 and v2 paths) and
 * password changed.
 */
export function createUsersRouter(options: UsersRouterOptions): Router {
  validateBase(options);
  const { engine, audit } = options;
  const t = toolkit(options);
  const router = Router();

  router.get(
    '/v1/users/:userId/lockout',
    ...t.plain('user.read', async (req, res, ctx) => {
      const userId = pathParam(req, 'userId');
      res.json(renderUserStatus(await engine.getUserStatus(ctx.orgId, userId)));
    }),
  );

  router.get(
    '/v1/lockouts',
    ...t.plain('user.read', async (req, res, ctx) => {
      const query = queryOf(req);
      const limit = limitParam(query);
      const cursor = singleParam(query, 'cursor');
      if (cursor !== undefined) parseParameter(Id, cursor, 'cursor');
      const page = await engine.listLocked(ctx.orgId, {
        ...(limit !== undefined ? { limit } : {}),
        ...(cursor !== undefined ? { cursor } : {}),
      });
      res.json(renderLockedPage(page));
    }),
  );

  const lock = t.plain('user.write', async (req, res, ctx) => {
    const userId = pathParam(req, 'userId');
    const { lockedAt } = await audited(
      audit,
      { action: 'user.lock', principal: ctx.principal, orgId: ctx.orgId, userId },
      () => engine.lockUser(ctx.orgId, userId, by(ctx)),
    );
    res.json({
      details: renderDetails({ sequence: 0, changeDate: lockedAt, resourceOwner: ctx.orgId }),
    } satisfies DetailsResponse);
  });
  router.post('/management/v1/users/:userId/_lock', ...lock);
  router.post('/v2/users/:userId/lock', ...lock);

  const unlock = t.plain('user.write', async (req, res, ctx) => {
    const userId = pathParam(req, 'userId');
    await audited(audit, { action: 'user.unlock', principal: ctx.principal, orgId: ctx.orgId, userId }, () =>
      engine.unlockUser(ctx.orgId, userId, by(ctx)),
    );
    res.json({
      details: renderDetails({ sequence: 0, changeDate: Date.now(), resourceOwner: ctx.orgId }),
    } satisfies DetailsResponse);
  });
  router.post('/management/v1/users/:userId/_unlock', ...unlock);
  router.post('/v2/users/:userId/unlock', ...unlock);

  // What the caller's credential may do on the request's org, for the console: each permission is
  // asked of `authorize` (so a custom hook answers too); its orgs when the authorizer tells them.
  router.get('/v1/me', async (req, res) => {
    let ctx: AuthContext | undefined;
    let refusal: unknown;
    const permissions: Permission[] = [];
    for (const permission of PERMISSIONS) {
      try {
        const granted = await options.authorize(req, permission);
        ctx ??= granted;
        permissions.push(permission);
      } catch (error) {
        // 401 and 400 are the answer; a 403 only says this permission (or org) is not granted.
        if (!(error instanceof PermissionDeniedError)) throw error;
        refusal ??= error;
      }
    }
    // Nothing granted on this org: its first refusal (an org the credential may not act on: 403).
    if (ctx === undefined) throw refusal;
    res.setHeader('Cache-Control', 'no-store');
    res.json({
      principal: ctx.principal,
      orgId: ctx.orgId,
      ...(ctx.scope
        ? { homeOrg: ctx.scope.home, orgs: ctx.scope.orgs === '*' ? '*' : [...ctx.scope.orgs] }
        : {}),
      permissions,
    } satisfies z.output<typeof MeBody>);
  });

  const { activity } = options;
  if (activity) {
    router.get(
      '/v1/activity',
      ...t.plain('user.read', async (req, res, ctx) => {
        const raw = singleParam(queryOf(req), 'minutes');
        const max = Math.min(activity.windowMinutes, ACTIVITY_MINUTES_MAX);
        let minutes = Math.min(60, max);
        if (raw !== undefined) {
          if (!/^[0-9]{1,4}$/.test(raw) || Number(raw) < 1 || Number(raw) > max) {
            throw new InvalidArgumentError(
              'Errors.Activity.Minutes',
              `minutes must be an integer from 1 to ${max}`,
              'minutes',
            );
          }
          minutes = Number(raw);
        }
        res.setHeader('Cache-Control', 'no-store');
        res.json({
          orgId: ctx.orgId,
          scope: 'process',
          stepSeconds: 60,
          minutes: activity.read(ctx.orgId, minutes).map((m) => ({
            start: rfc3339(m.start),
            failures: m.failures,
            locks: m.locks,
            unlocks: m.unlocks,
          })),
        } satisfies z.output<typeof ActivityBody>);
      }),
    );
  }
  // ---- events (issue 14) ----
  const events = async (res: Response, orgId: string, query: URLSearchParams, user?: string) => {
    const limit = limitParam(query);
    const cursor = singleParam(query, 'cursor');
    const type = singleParam(query, 'type');
    const userFilter = user ?? singleParam(query, 'userId');
    if (cursor !== undefined) parseParameter(Id, cursor, 'cursor');
    if (type !== undefined) parseParameter(Id, type, 'type');
    if (userFilter !== undefined && user === undefined) parseParameter(Id, userFilter, 'userId');
    const log = engine.events;
    if (!log) {
      throw new NotChangedError(
        'Errors.Events.Disabled',
        'Events are not recorded (events.enabled is false)',
      );
    }
    const page = await log.list(orgId, {
      ...(limit !== undefined ? { limit } : {}),
      ...(cursor !== undefined ? { cursor } : {}),
      ...(userFilter !== undefined ? { user: userFilter } : {}),
      ...(type !== undefined ? { type } : {}),
    });
    const answer: z.output<typeof EventsBody> = {
      events: page.events.map(renderEvent),
      ...(page.nextCursor !== undefined ? { nextCursor: page.nextCursor } : {}),
    };
    res.setHeader('Cache-Control', 'no-store');
    res.json(answer);
  };
  router.get(
    '/v1/events',
    ...t.plain('user.read', async (req, res, ctx) => {
      await events(res, ctx.orgId, queryOf(req));
    }),
  );
  router.get(
    '/v1/users/:userId/events',
    ...t.plain('user.read', async (req, res, ctx) => {
      const userId = pathParam(req, 'userId');
      await events(res, ctx.orgId, queryOf(req), userId);
    }),
  );
  router.get(
    '/v1/webhooks/dead-letters',
    ...t.plain('user.read', async (req, res, ctx) => {
      const limit = limitParam(queryOf(req)) ?? 100;
      if (!options.deadLetters) {
        throw new NotChangedError('Errors.Webhooks.Disabled', 'No webhooks are configured');
      }
      let letters: readonly DeadLetter[];
      try {
        letters = await options.deadLetters(ctx.orgId, limit);
      } catch (error) {
        throw isLockgateError(error)
          ? error
          : new StoreUnavailableError('Redis command failed', { cause: error });
      }
      const answer: z.output<typeof DeadLettersBody> = {
        deadLetters: letters.map((l) => ({
          endpoint: l.endpoint,
          event: renderEvent(l.event),
          attempts: String(l.attempts),
          ...(l.lastStatus !== undefined ? { lastStatus: l.lastStatus } : {}),
          ...(l.lastError === 'timeout' || l.lastError === 'network' ? { lastError: l.lastError } : {}),
          time: rfc3339(l.time),
        })),
      };
      res.setHeader('Cache-Control', 'no-store');
      res.json(answer);
    }),
  );

  router.post(
    '/v1/users/:userId/password_changed',
    ...t.plain('user.write', async (req, res, ctx) => {
      const userId = pathParam(req, 'userId');
      await audited(
        audit,
        { action: 'user.password_changed', principal: ctx.principal, orgId: ctx.orgId, userId },
        () => engine.passwordChanged(ctx.orgId, userId, by(ctx)),
      );
      res.json({
        details: renderDetails({ sequence: 0, changeDate: Date.now(), resourceOwner: ctx.orgId }),
      } satisfies DetailsResponse);
    }),
  );

  return finish(router, options);
}

// ---- checks and attempts ----------------------------------------------------------------

/** Evaluates a credential for a subject: true when correct. Built from the body before the store is touched. */
type Evaluate = (subject: Subject) => Promise<boolean>;

/**
 * The check routes (password, TOTP, SMS/Email codes), code issuance and the attempt routes for
 * credentials verified elsewhere. A locked user is refused before its credential is evaluated.
 */
export function createChecksRouter(options: ChecksRouterOptions): Router {
  validateChecks(options);
  const { engine, passwordVerifier, totpVerifier, otpCodes, observeCheck, throttle } = options;
  const t = toolkit(options);
  const router = Router();

  /** The body's clientIp for spray throttling (and telling when it is missing while throttling is on). */
  const throttledIp = (req: Request, clientIp: string | undefined): string | undefined => {
    if (throttle && clientIp === undefined && options.onNoClientIp) {
      try {
        options.onNoClientIp(req.path);
      } catch {
        // an observer must not change the answer
      }
    }
    return clientIp;
  };

  const observe = (factor: Factor, outcome: ObservedCheckOutcome, started: bigint): void => {
    if (!observeCheck) return;
    try {
      observeCheck(factor, outcome, Number(process.hrtime.bigint() - started) / 1e9);
    } catch {
      // metrics must not change the answer
    }
  };

  /**
   * The engine's check. G4 is the engine's (its onStoreError): fail-open answers from the
   * credential alone (`enforced: false`, nothing counted); codes that need the store (TOTP
   * replay protection, SMS/Email codes) answer 503 either way. A check never answers 404: an
   * evaluation that outlives `evaluationTimeoutMs`, or an attempt cleared meanwhile, is a 503.
   */
  const runCheck = (
    orgId: string,
    userId: string,
    factor: Factor,
    evaluate: Evaluate,
    clientIp: string | undefined,
    checkOptions: CheckOptions,
  ): Promise<CheckResult> =>
    throttle
      ? throttledCheck(
          throttle,
          clientIp,
          () => evaluate(makeSubject(engine.instanceId, orgId, userId)),
          (judged) => engine.check(orgId, userId, factor, judged, checkOptions),
          checkOptions.caller,
        )
      : engine.check(
          orgId,
          userId,
          factor,
          () => evaluate(makeSubject(engine.instanceId, orgId, userId)),
          checkOptions,
        );

  /** A check route: its body (`schema`: userId, then the credential's fields) and the evaluation of a parsed body. */
  const checkRoute = <Fields extends { userId: string; clientIp?: string | undefined }>(
    factor: Factor,
    schema: BodySchema<Fields>,
    evaluation: (body: Fields) => Evaluate,
  ): RequestHandler[] =>
    t.withBody('lockout.check', async (req, res, ctx) => {
      const body = parseBody(schema, req);
      const { userId } = body;
      const evaluate = evaluation(body);
      const started = process.hrtime.bigint();
      let outcome: ObservedCheckOutcome = 'error';
      try {
        // The password itself goes to the engine only for repeat-password forgiveness (keyed hash);
        // the device token (device cookies) picks the scope the check counts on.
        const { password, deviceToken } = body as { password?: unknown; deviceToken?: unknown };
        const checkOptions: CheckOptions = {
          ...(factor === 'password' && typeof password === 'string' ? { password } : {}),
          ...(typeof deviceToken === 'string' ? { deviceToken } : {}),
          caller: ctx.principal,
        };
        let result: CheckResult;
        try {
          result = await runCheck(
            ctx.orgId,
            userId,
            factor,
            evaluate,
            throttledIp(req, body.clientIp),
            checkOptions,
          );
        } catch (error) {
          if (error instanceof ThrottledError) outcome = 'throttled';
          throw error;
        }
        outcome = result.outcome;
        switch (result.outcome) {
          case 'success':
            res.json(renderCheckSuccess(userId, factor, result));
            return;
          case 'failure':
            throw new InvalidCredentialsError(factor, result.failedAttempts);
          case 'locked':
            // The answer of a UserLockedError, without making one (the hot path of a locked user).
            sendLocked(res);
            return;
          case 'busy':
            throw new BusyError(result.retryAfterMs);
        }
      } finally {
        observe(factor, outcome, started);
      }
    });

  router.post(
    '/v1/checks/password',
    ...checkRoute('password', PasswordCheckRequest, ({ password, encodedHash }) => {
      // No hash (unknown user): the verifier runs a dummy verification and answers false.
      const hash = encodedHash ? encodedHash : undefined;
      return () => passwordVerifier.verify(hash, password);
    }),
  );

  router.post(
    '/v1/checks/totp',
    ...checkRoute(
      'totp',
      TotpCheckRequest,
      ({ code, secret }) =>
        (subject) =>
          totpVerifier.verify(subject, secret, code),
    ),
  );

  const codeCheck = (factor: Factor, channel: CodeChannel): RequestHandler[] =>
    checkRoute(
      factor,
      CodeCheckRequest,
      ({ code }) =>
        (subject) =>
          otpCodes.verify(subject, channel, code),
    );
  router.post('/v1/checks/otp_sms', ...codeCheck('otp_sms', 'sms'));
  router.post('/v1/checks/otp_email', ...codeCheck('otp_email', 'email'));

  const issue = (channel: CodeChannel): RequestHandler[] =>
    t.withBody('lockout.check', async (req, res, ctx) => {
      const { userId } = parseBody(UserRequest, req);
      // A locked user's codes would be refused anyway: do not send one (cost, SMS pumping).
      const status = await engine.getUserStatus(ctx.orgId, userId);
      if (status.locked) throw new UserLockedError(status.lockedAt);
      const issued = await otpCodes.issue(makeSubject(engine.instanceId, ctx.orgId, userId), channel);
      res.setHeader('Cache-Control', 'no-store');
      const answer: z.output<typeof IssuedCodeBody> = {
        code: issued.code,
        expiresAt: rfc3339(issued.expiresAt),
      };
      res.status(201).json(answer);
    });
  router.post('/v1/otp/sms', ...issue('sms'));
  router.post('/v1/otp/email', ...issue('email'));

  router.post(
    '/v1/attempts',
    ...t.withBody('lockout.check', async (req, res, ctx) => {
      const { userId, factor, deviceToken, clientIp } = parseBody(AttemptRequest, req);
      // Spray throttling: the point taken here travels in the attempt id to its settle.
      const ticket = throttle ? await throttle.admit(throttledIp(req, clientIp)) : undefined;
      let r: Awaited<ReturnType<LockoutEngine['reserve']>>;
      try {
        r = await engine.reserve(
          ctx.orgId,
          userId,
          factor,
          deviceToken === undefined ? undefined : { deviceToken },
        );
      } catch (error) {
        void throttle?.settle(ticket, 'release');
        throw error;
      }
      if (r.status !== 'admitted') void throttle?.settle(ticket, 'release');
      switch (r.status) {
        case 'admitted': {
          res.setHeader('Cache-Control', 'no-store');
          const answer: z.output<typeof AttemptBody> = {
            attemptId:
              ticket === undefined
                ? r.reservation.attemptId
                : `${r.reservation.attemptId}${TICKET_SEPARATOR}${SprayThrottle.encode(ticket)}`,
            expiresAt: rfc3339(r.reservation.expiresAt),
          };
          res.status(201).json(answer);
          return;
        }
        case 'locked':
          throw new UserLockedError(r.lockedAt);
        case 'busy':
          throw new BusyError(r.retryAfterMs);
      }
    }),
  );

  const settle =
    (outcome: 'success' | 'failure'): RequestHandler =>
    async (req, res) => {
      let ref: AttemptRef | undefined;
      let malformed: unknown;
      // A spray-throttled attempt's id ends with its throttle ticket (`~…`).
      const [attemptId, ticketText, extra] = String(req.params.attemptId).split(TICKET_SEPARATOR);
      let ticket: ThrottleTicket | undefined;
      try {
        const decoded = decodeAttemptId(attemptId!);
        if (ticketText !== undefined) {
          ticket = extra === undefined ? throttle?.decode(ticketText) : undefined;
          if (ticket === undefined && (throttle || extra !== undefined)) throw malformedAttempt();
        }
        ref = decoded;
      } catch (error) {
        malformed = error;
      }
      // 401/403 come before 400; an attempt of an org the token may not act on is a 403.
      const ctx = await t.authorizeFor(req, 'lockout.check', ref?.org);
      if (!ref) throw malformed;
      const settlement = await engine.settle(attemptId!, outcome, { caller: ctx.principal });
      // After the engine's settle (never for an attempt it did not know: a settle sent twice
      // gives nothing back twice); a failure keeps the point.
      if (ticket !== undefined) await throttle?.settle(ticket, outcome, ctx.principal);
      res.json(renderSettlement(settlement));
    };
  router.post('/v1/attempts/:attemptId/success', settle('success'));
  router.post('/v1/attempts/:attemptId/failure', settle('failure'));

  return finish(router, options);
}

/** Between an attempt id and its spray-throttle ticket (not a base64url character). */
const TICKET_SEPARATOR = '~';

function malformedAttempt(): InvalidArgumentError {
  return new InvalidArgumentError('Errors.Attempt.Invalid', 'attemptId is malformed', 'attemptId');
}

// ---- everything -------------------------------------------------------------------------

/**
 * Every route of API.md 2.1 and 2.2 except /healthz, /readyz, /metrics and /openapi.json (the
 * sidecar adds those). Routes that do not match fall through to the next handler.
 */
export function createApiRouter(options: ApiRouterOptions): Router {
  validateChecks(options);
  const router = Router();
  // The check routes first: they are the hot ones, and Express walks every earlier route's layer
  // (a path match each) before reaching them. No path of one router is a path of another, so the
  // order changes nothing else.
  router.use(createChecksRouter(options));
  router.use(createSettingsRouter(options));
  router.use(createUsersRouter(options));
  return router;
}
