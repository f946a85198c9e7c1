import { createHash, timingSafeEqual } from 'node:crypto';
import type { Request } from 'express';
import { describeOptionValue, invalidOption } from '../core/option-checks';
import { validateId } from '../core/subjects';
import { InvalidArgumentError } from '../core/errors';
import type { Actor } from '../core/events';
import { PermissionDeniedError, UnauthenticatedError } from './errors';
import { Id, parseParameter } from './schemas';

/**
 * Authentication and org context of the HTTP API: bearer tokens from the configuration, the
 * request's org (header `x-zitadel-orgid`, else the token's home org) and permissions.
 */

/** Every permission a token may hold (API.md 2). */
export const PERMISSIONS = [
  'policy.read',
  'policy.write',
  'policy.delete',
  'iam.policy.read',
  'iam.policy.write',
  'user.read',
  'user.write',
  'lockout.check',
] as const;
export type Permission = (typeof PERMISSIONS)[number];

/** The header that names the org of a request (ZITADEL's). */
export const ORG_HEADER = 'x-zitadel-orgid';

/** Who made an authorized request, and the org it acts on. */
export interface AuthContext {
  /** A name for audit logs (the token's name); never the token itself. */
  readonly principal: string;
  /** The org the request acts on. */
  readonly orgId: string;
  /**
   * What the credential may reach, when the authorizer can tell (GET /v1/me answers it, so the
   * console offers only those orgs). Optional: a custom Authorize may leave it out.
   */
  readonly scope?: AuthScope;
  /**
   * Who, for the event record (issue 14): a configured token's name or a JWT's subject. An
   * `authorize` hook that leaves it out is recorded as `{ type: 'app', name: principal }`.
   */
  readonly actor?: Actor;
}

/** The home org of a credential and the orgs it may act on. */
export interface AuthScope {
  /** The org of a request without `x-zitadel-orgid`. */
  readonly home: string;
  /** The orgs it may act on: ids, or `*` for every org. */
  readonly orgs: readonly string[] | '*';
}

/** An org the request acts on that does not come from the header (an attempt id's org, `?ctx.orgId=`). */
export interface AuthorizeTarget {
  readonly orgId?: string;
}

/**
 * The authorization hook of the routers: authenticates the request and answers who makes it and
 * for which org, or rejects with UnauthenticatedError (401), PermissionDeniedError (403) or
 * InvalidArgumentError (400, a bad org id). When `target.orgId` is given, the request acts on that
 * org instead of the header's; the routers also check that the answered `orgId` equals it.
 * Apps embedding the routers may plug their own (sessions, JWTs…).
 */
export type Authorize = (
  req: Request,
  permission: Permission,
  target?: AuthorizeTarget,
) => Promise<AuthContext>;

/** One token as configured (API.md 4). */
export interface TokenOptions {
  /** A name for audit logs. */
  readonly name: string;
  /** The token in plain text (give this or `sha256`). */
  readonly token?: string;
  /** Lower- or upper-case hex SHA-256 of the token (give this or `token`). */
  readonly sha256?: string;
  /** The home org: the org of requests without `x-zitadel-orgid`. */
  readonly org: string;
  /** The orgs the token may act on: ids, or `['*']` (or `'*'`) for all. Default: the home org only. */
  readonly orgs?: readonly string[] | '*';
  /** Its permissions (see PERMISSIONS). */
  readonly permissions: readonly string[];
}

export interface TokenAuthorizerOptions {
  readonly tokens: readonly TokenOptions[];
}

/** A resolved token: only its digest is kept. */
export interface TokenConfig {
  readonly name: string;
  readonly digest: Buffer;
  readonly org: string;
  /** undefined: every org. */
  readonly orgs?: ReadonlySet<string>;
  readonly permissions: ReadonlySet<Permission>;
}

/** Hex SHA-256 of a token, as written in the configuration's `sha256:`. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function isPermission(value: unknown): value is Permission {
  return typeof value === 'string' && (PERMISSIONS as readonly string[]).includes(value);
}

/** Validates and resolves configured tokens; throws InvalidArgumentError naming the field. */
export function resolveTokens(tokens: readonly TokenOptions[]): TokenConfig[] {
  if (!Array.isArray(tokens)) {
    throw invalidOption(
      'tokens',
      `must be a list of { name, token, org, permissions }, got ${describeOptionValue(tokens)}`,
    );
  }
  const digests: Buffer[] = [];
  const names = new Set<string>();
  return tokens.map((t: TokenOptions, i) => {
    const at = `tokens[${i}]`;
    if (typeof t !== 'object' || t === null) throw invalidOption(at, 'must be an object');
    if (typeof t.name !== 'string' || t.name.length === 0)
      throw invalidOption(`${at}.name`, 'must be a non-empty string');
    if (names.has(t.name)) throw invalidOption(`${at}.name`, `repeats the name "${t.name}"`);
    names.add(t.name);
    let digest: Buffer;
    if (t.token !== undefined && t.sha256 !== undefined) {
      throw invalidOption(at, 'must have either token or sha256, not both');
    } else if (t.token !== undefined) {
      if (typeof t.token !== 'string' || t.token.length === 0) {
        throw invalidOption(`${at}.token`, 'must be a non-empty string');
      }
      digest = createHash('sha256').update(t.token, 'utf8').digest();
    } else if (t.sha256 !== undefined) {
      if (typeof t.sha256 !== 'string' || !/^[0-9a-fA-F]{64}$/.test(t.sha256)) {
        throw invalidOption(`${at}.sha256`, 'must be 64 hex digits (the SHA-256 of the token)');
      }
      digest = Buffer.from(t.sha256, 'hex');
    } else {
      throw invalidOption(at, 'must have token or sha256');
    }
    if (digests.some((d) => d.equals(digest)))
      throw invalidOption(at, 'repeats the token of an earlier entry');
    digests.push(digest);
    const org = validateId(t.org, `${at}.org`);
    let orgs: Set<string> | undefined;
    const rawOrgs = t.orgs ?? [org];
    if (rawOrgs === '*' || (Array.isArray(rawOrgs) && rawOrgs.length === 1 && rawOrgs[0] === '*')) {
      orgs = undefined;
    } else if (Array.isArray(rawOrgs)) {
      orgs = new Set(rawOrgs.map((o, j) => validateId(o, `${at}.orgs[${j}]`)));
      if (orgs.has('*')) throw invalidOption(`${at}.orgs`, "must be ['*'] alone or a list of org ids");
      if (!orgs.has(org))
        throw invalidOption(`${at}.orgs`, `must include the home org "${org}" (or be ['*'])`);
    } else {
      throw invalidOption(`${at}.orgs`, "must be a list of org ids or ['*']");
    }
    if (!Array.isArray(t.permissions)) throw invalidOption(`${at}.permissions`, 'must be a list');
    const permissions = new Set<Permission>();
    t.permissions.forEach((p, j) => {
      if (!isPermission(p)) {
        throw invalidOption(`${at}.permissions[${j}]`, `must be one of ${PERMISSIONS.join(', ')}`);
      }
      permissions.add(p);
    });
    return { name: t.name, digest, org, ...(orgs ? { orgs } : {}), permissions };
  });
}

/** The bearer token of a request, or undefined. */
function bearerOf(req: Request): string | undefined {
  const header = req.headers.authorization;
  if (typeof header !== 'string') return undefined;
  const m = /^Bearer[ \t]+(.+)$/i.exec(header.trim());
  return m?.[1]?.trim() || undefined;
}

/** The org named by `x-zitadel-orgid`, parsed as an Id (its documented schema); undefined when the header is absent. */
export function headerOrg(req: Request): string | undefined {
  const value = req.headers[ORG_HEADER];
  if (value === undefined) return undefined;
  // Node joins repeated header lines with ", ": one org header sent twice is two readings of the
  // request (G6), refused rather than read as an org named "a, b" (as the proxy reads headers).
  if ((req.headersDistinct?.[ORG_HEADER]?.length ?? 1) > 1) {
    throw new InvalidArgumentError('Errors.Request.Invalid', `${ORG_HEADER} must be sent once`, ORG_HEADER);
  }
  return parseParameter(Id, Array.isArray(value) ? value.join(',') : value, ORG_HEADER);
}

/**
 * Finds the token whose digest equals the presented one's. Every configured token is compared
 * (crypto.timingSafeEqual on 32-byte digests, no early exit), so the time taken does not tell
 * which one matched or how far a guess got.
 */
function findToken(tokens: readonly TokenConfig[], presented: string): TokenConfig | undefined {
  const digest = createHash('sha256').update(presented, 'utf8').digest();
  let found: TokenConfig | undefined;
  for (const t of tokens) {
    const equal = timingSafeEqual(digest, t.digest);
    found = equal && found === undefined ? t : found;
  }
  return found;
}

/** The default Authorize: bearer tokens from the configuration (API.md 2 and 4). */
export function createTokenAuthorizer(options: TokenAuthorizerOptions): Authorize {
  const tokens = resolveTokens(options?.tokens);
  // Made once per token, not per request.
  const scopes = new Map<TokenConfig, AuthScope>(
    tokens.map((t) => [t, { home: t.org, orgs: t.orgs === undefined ? '*' : [...t.orgs] }]),
  );
  return async (req, permission, target) => {
    const presented = bearerOf(req);
    if (presented === undefined) {
      throw new UnauthenticatedError('Errors.Token.Missing', 'Authorization: Bearer token required');
    }
    const token = findToken(tokens, presented);
    if (!token) throw new UnauthenticatedError('Errors.Token.Invalid', 'Token is invalid');
    const orgId =
      target?.orgId !== undefined ? validateId(target.orgId, 'orgId') : (headerOrg(req) ?? token.org);
    if (token.orgs !== undefined && !token.orgs.has(orgId)) {
      throw new PermissionDeniedError('Errors.Token.OrgDenied', 'Token may not act on this organization');
    }
    if (!token.permissions.has(permission)) {
      throw new PermissionDeniedError(
        'Errors.Token.PermissionDenied',
        `Token lacks the permission ${permission}`,
      );
    }
    return {
      principal: token.name,
      orgId,
      scope: scopes.get(token)!,
      actor: { type: 'token', name: token.name },
    };
  };
}
