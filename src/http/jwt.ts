import {
  createRemoteJWKSet,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
  type RemoteJWKSetOptions,
} from 'jose';
import type { AuthScope } from './auth';
import { describeOptionValue, invalidOption, isPlainObject } from '../core/option-checks';
import { validateId } from '../core/subjects';
import { headerOrg, isPermission, PERMISSIONS, type Authorize, type Permission } from './auth';
import { AuthUnavailableError, PermissionDeniedError, UnauthenticatedError } from './errors';

/**
 * OIDC/JWT bearer tokens (signed access tokens of an OpenID Connect issuer such as ZITADEL),
 * verified against the issuer's JWKS and mapped to the same AuthContext as the static tokens:
 * principal `jwt:<sub>`, the org the request acts on, and permissions from a claim.
 *
 * Every failure to authenticate answers the same 401 as an unknown static token; the reason goes
 * to `onReject` (the sidecar logs it at debug level), never the token. A token that could not be
 * verified because the issuer's keys could not be fetched answers 503 (AuthUnavailableError) and
 * goes to `onKeysUnavailable` (the sidecar logs a warning): an outage is not a wrong token.
 */

/** Asymmetric JWS algorithms that may be allowed. `none` and HS* (HMAC) never are. */
/** Permissions over the whole instance (its default settings): never from an org-scoped role. */
const INSTANCE_PERMISSIONS: ReadonlySet<Permission> = new Set(
  PERMISSIONS.filter((p) => p.startsWith('iam.')),
);

export const JWT_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
] as const;
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];
export const DEFAULT_JWT_ALGORITHMS: readonly JwtAlgorithm[] = ['RS256', 'ES256', 'EdDSA'];

/** ZITADEL's claims (access tokens with "Auth Token Type: JWT"). */
export const ZITADEL_ROLES_CLAIM = 'urn:zitadel:iam:org:project:roles';
export const ZITADEL_RESOURCE_OWNER_CLAIM = 'urn:zitadel:iam:user:resourceowner:id';

/** A value read from a claim of the token, or fixed by the configuration. */
export type ClaimOrFixed<T> = { readonly claim: string } | { readonly fixed: T };

export interface JwtPermissionsOptions {
  /**
   * The claim holding the token's roles: a list of role names, a space-separated string (like
   * `scope`), or an object whose keys are role names. In the object form, a value that is itself
   * an object (ZITADEL: `{ role: { orgId: domain } }`) grants the role only on the orgs it names.
   * Optional only with a preset (zitadel: `urn:zitadel:iam:org:project:roles`).
   */
  readonly claim?: string;
  /**
   * Role name → permissions it grants. Default: a role named like a permission (`lockout.check`)
   * grants that permission. Roles not in the map grant nothing.
   */
  readonly map?: Readonly<Record<string, readonly string[]>>;
}

export interface JwtAuthorizerOptions {
  /** Defaults for ZITADEL (see README): jwksUri, org, orgs, permissions.claim. */
  readonly preset?: 'zitadel';
  /** The expected `iss` (exactly, e.g. `https://my-instance.zitadel.cloud`). */
  readonly issuer: string;
  /** The expected `aud`: the token must name one of them. */
  readonly audience: string | readonly string[];
  /**
   * Where the issuer's keys are: a URL, or `discovery` (read `jwks_uri` from
   * `<issuer>/.well-known/openid-configuration`). Default `<issuer>/.well-known/jwks.json`
   * (preset zitadel: `<issuer>/oauth/v2/keys`).
   */
  readonly jwksUri?: string;
  /** Accepted `alg`s, from JWT_ALGORITHMS. Default RS256, ES256, EdDSA. */
  readonly algorithms?: readonly string[];
  /** Leeway for `exp` and `nbf`, in seconds. Default 30. */
  readonly clockToleranceSeconds?: number;
  /** The claim naming the caller: the principal is `jwt:<value>`. Default `sub`. */
  readonly principalClaim?: string;
  /** The home org (the org of a request without `x-zitadel-orgid`). Default `{ fixed: defaultOrg }`. */
  readonly org?: ClaimOrFixed<string>;
  /**
   * The orgs the token may act on: `'*'`, a list of ids, or `{ claim }` (a list, a string, or an
   * object whose keys are org ids); the home org is always included. Default: the home org only
   * (preset zitadel: `'*'`, limited by the orgs its roles are granted on).
   */
  readonly orgs?: '*' | readonly string[] | { readonly claim: string };
  /** Permissions from a roles claim, or `{ fixed: [...] }` for every valid token. */
  readonly permissions?: JwtPermissionsOptions | { readonly fixed: readonly string[] };
  /** The JWKS cache (jose's createRemoteJWKSet). */
  readonly jwks?: {
    /** After a fetch, no other fetch for this long, even for an unknown `kid` (default 30). */
    readonly cooldownSeconds?: number;
    /** Keys are fetched again when a token comes after this long (default 600). */
    readonly cacheMaxAgeSeconds?: number;
    /** A fetch that takes longer fails (default 5000). */
    readonly timeoutMs?: number;
  };
  /** The home org when `org` is not given (the sidecar passes its instance id). */
  readonly defaultOrg?: string;
  /** Told why a JWT was refused (never the token): for debug logs. */
  readonly onReject?: (reason: string) => void;
  /**
   * Told why the issuer's keys could not be obtained (JWKS or discovery fetch failed): for warning
   * logs. The request answers 503 (AuthUnavailableError), not 401: the token was not found wrong.
   */
  readonly onKeysUnavailable?: (reason: string) => void;
}

/** Three base64url parts: what a JWS in compact form looks like. */
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** Whether a bearer value looks like a JWT (three base64url parts). */
export function looksLikeJwt(token: string): boolean {
  return JWT_SHAPE.test(token);
}

interface Grant {
  readonly permissions: readonly Permission[];
  /** undefined: every org the token may act on. */
  readonly orgs?: ReadonlySet<string>;
}

interface Identity {
  readonly principal: string;
  readonly home: string;
  /** undefined: every org. */
  readonly orgs?: ReadonlySet<string>;
  readonly grants: readonly Grant[];
}

class Rejected extends Error {}

function nonEmptyString(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw invalidOption(field, `must be a non-empty string, got ${describeOptionValue(value)}`);
  }
  return value;
}

function httpUrl(value: string, field: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalidOption(field, `must be an http(s) URL, got ${describeOptionValue(value)}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw invalidOption(field, `must be an http(s) URL, got ${describeOptionValue(value)}`);
  }
  return url;
}

function checkPermissions(list: unknown, field: string): Permission[] {
  if (!Array.isArray(list)) throw invalidOption(field, 'must be a list of permissions');
  return list.map((p, i) => {
    if (!isPermission(p)) throw invalidOption(`${field}[${i}]`, `must be one of ${PERMISSIONS.join(', ')}`);
    return p;
  });
}

/** The string values of a claim that lists names: a list, a space-separated string, or an object's keys. */
function namesOf(value: unknown): string[] {
  if (typeof value === 'string') return value.split(' ').filter((s) => s.length > 0);
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string');
  if (isPlainObject(value)) return Object.keys(value);
  return [];
}

/** The JWKS key getter: a remote key set, or one found by OIDC discovery on first use. */
function keyGetter(
  issuer: string,
  jwksUri: string,
  jose: RemoteJWKSetOptions,
  cooldownMs: number,
  timeoutMs: number,
): JWTVerifyGetKey {
  if (jwksUri !== 'discovery') return createRemoteJWKSet(httpUrl(jwksUri, 'jwksUri'), jose);
  let remote: JWTVerifyGetKey | undefined;
  let pending: Promise<JWTVerifyGetKey> | undefined;
  let failedAt = -Infinity;
  const discover = async (): Promise<JWTVerifyGetKey> => {
    const where = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    const res = await fetch(where, { signal: AbortSignal.timeout(timeoutMs), redirect: 'error' });
    if (!res.ok) throw new Error(`OIDC discovery answered HTTP ${res.status}`);
    const doc: unknown = await res.json();
    if (!isPlainObject(doc) || doc.issuer !== issuer) {
      throw new Error('OIDC discovery document does not name the configured issuer');
    }
    if (typeof doc.jwks_uri !== 'string') throw new Error('OIDC discovery document has no jwks_uri');
    const url = new URL(doc.jwks_uri);
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error('jwks_uri is not http(s)');
    return createRemoteJWKSet(url, jose);
  };
  return async (header, token) => {
    if (remote === undefined) {
      if (pending === undefined) {
        if (Date.now() - failedAt < cooldownMs) throw new Error('OIDC discovery failed recently');
        pending = discover().then(
          (getter) => {
            remote = getter;
            pending = undefined;
            return getter;
          },
          (error: unknown) => {
            failedAt = Date.now();
            pending = undefined;
            throw error;
          },
        );
      }
      return (await pending)(header, token);
    }
    return remote(header, token);
  };
}

/** Why the issuer's keys could not be obtained (a fetch failed): not a verdict on the token. */
class KeysUnavailable extends Error {}

/**
 * Errors of jose's key set that say the keys could not be obtained (timeout, a non-200 or non-JSON
 * answer, a malformed key set), as opposed to a verdict on the token (no key matches its kid, its
 * alg is not supported). An error without a jose code is a network error or a failed discovery.
 */
const UNAVAILABLE_KEY_ERRORS = new Set(['ERR_JWKS_TIMEOUT', 'ERR_JWKS_INVALID', 'ERR_JOSE_GENERIC']);

/** After a failed key fetch, no other fetch for this long: the time an outage answers 503 at once. */
const KEY_FAILURE_BACKOFF_MS = 1000;

/**
 * `getKey`, with every failure to obtain the keys thrown as KeysUnavailable; for
 * KEY_FAILURE_BACKOFF_MS after one, it throws without fetching (jose's key set retries at every
 * call while it has no keys: anyone sending JWT-shaped junk would make us fetch at their pace).
 */
function unavailableAsSuch(getKey: JWTVerifyGetKey): JWTVerifyGetKey {
  let failedAt = -Infinity;
  return async (header, token) => {
    if (Date.now() - failedAt < KEY_FAILURE_BACKOFF_MS) {
      throw new KeysUnavailable('the last key fetch failed less than a second ago');
    }
    try {
      return await getKey(header, token);
    } catch (error) {
      const code = (error as { code?: unknown })?.code;
      if (typeof code === 'string' && code.startsWith('ERR_J') && !UNAVAILABLE_KEY_ERRORS.has(code))
        throw error;
      failedAt = Date.now();
      const message = (error as { message?: unknown })?.message;
      throw new KeysUnavailable(typeof message === 'string' ? message : 'key fetch failed', { cause: error });
    }
  };
}

/**
 * An Authorize for JWT bearer tokens. Throws InvalidArgumentError naming the option when the
 * options are wrong. A bearer value that does not look like a JWT is refused without any work.
 * Combine it with the static tokens with `combineAuthorizers(createTokenAuthorizer(…), createJwtAuthorizer(…))`.
 */
export function createJwtAuthorizer(options: JwtAuthorizerOptions): Authorize {
  if (!isPlainObject(options))
    throw invalidOption('jwt', 'must be an object such as { issuer, audience, … }');
  const zitadel = options.preset === 'zitadel';
  if (options.preset !== undefined && !zitadel) {
    throw invalidOption('jwt.preset', `must be zitadel, got ${describeOptionValue(options.preset)}`);
  }
  const issuer = nonEmptyString(options.issuer, 'jwt.issuer');
  httpUrl(issuer, 'jwt.issuer');
  const audience: string[] = (Array.isArray(options.audience) ? options.audience : [options.audience]).map(
    (a: unknown, i) =>
      nonEmptyString(a, Array.isArray(options.audience) ? `jwt.audience[${i}]` : 'jwt.audience'),
  );
  if (audience.length === 0) throw invalidOption('jwt.audience', 'must name at least one audience');
  const algorithms = [...(options.algorithms ?? DEFAULT_JWT_ALGORITHMS)];
  if (algorithms.length === 0) throw invalidOption('jwt.algorithms', 'must name at least one algorithm');
  algorithms.forEach((a, i) => {
    if (!(JWT_ALGORITHMS as readonly string[]).includes(a)) {
      throw invalidOption(
        `jwt.algorithms[${i}]`,
        `must be one of ${JWT_ALGORITHMS.join(', ')} (none and HS* are never allowed), got ${describeOptionValue(a)}`,
      );
    }
  });
  const tolerance = options.clockToleranceSeconds ?? 30;
  if (!Number.isInteger(tolerance) || tolerance < 0 || tolerance > 600) {
    throw invalidOption('jwt.clockToleranceSeconds', 'must be an integer from 0 to 600');
  }
  const principalClaim = nonEmptyString(options.principalClaim ?? 'sub', 'jwt.principalClaim');
  const org: ClaimOrFixed<string> =
    options.org ??
    (zitadel
      ? { claim: ZITADEL_RESOURCE_OWNER_CLAIM }
      : { fixed: nonEmptyString(options.defaultOrg, 'jwt.org') });
  if ('claim' in org) nonEmptyString(org.claim, 'jwt.org.claim');
  else validateId(org.fixed, 'jwt.org.fixed');
  const orgsOption = options.orgs ?? (zitadel ? '*' : undefined);
  // The preset's '*' lets org-scoped roles reach the orgs they were granted on; a grant that is
  // not scoped to orgs (fixed permissions, a role without org keys) then reaches the home org only.
  const unscopedHomeOnly = options.orgs === undefined && zitadel;
  let fixedOrgs: ReadonlySet<string> | undefined;
  if (Array.isArray(orgsOption)) {
    fixedOrgs = new Set(orgsOption.map((o: unknown, i) => validateId(o, `jwt.orgs[${i}]`)));
  } else if (isPlainObject(orgsOption)) {
    nonEmptyString(orgsOption.claim, 'jwt.orgs.claim');
  } else if (orgsOption !== undefined && orgsOption !== '*') {
    throw invalidOption('jwt.orgs', "must be '*', a list of org ids or { claim }");
  }
  const permissionsOption: JwtAuthorizerOptions['permissions'] =
    options.permissions ?? (zitadel ? { claim: ZITADEL_ROLES_CLAIM } : undefined);
  if (permissionsOption === undefined || !isPlainObject(permissionsOption as unknown)) {
    throw invalidOption('jwt.permissions', 'must be { claim, map } or { fixed: [permissions] }');
  }
  let fixedPermissions: readonly Permission[] | undefined;
  let roleClaim: string | undefined;
  let roleMap: ReadonlyMap<string, readonly Permission[]> | undefined;
  if ('fixed' in permissionsOption) {
    fixedPermissions = checkPermissions(permissionsOption.fixed, 'jwt.permissions.fixed');
  } else {
    roleClaim = nonEmptyString(
      permissionsOption.claim ?? (zitadel ? ZITADEL_ROLES_CLAIM : undefined),
      'jwt.permissions.claim',
    );
    if (permissionsOption.map !== undefined) {
      if (!isPlainObject(permissionsOption.map))
        throw invalidOption('jwt.permissions.map', 'must map role names to permission lists');
      roleMap = new Map(
        Object.entries(permissionsOption.map).map(([role, list]) => [
          role,
          checkPermissions(list, `jwt.permissions.map.${role}`),
        ]),
      );
    }
  }
  const jwks = options.jwks ?? {};
  const cooldownSeconds = jwks.cooldownSeconds ?? 30;
  // At least 1 s: with none, every request with an unknown kid would make the sidecar fetch the
  // issuer's keys (an amplification anyone without a token can drive).
  if (!Number.isInteger(cooldownSeconds) || cooldownSeconds < 1 || cooldownSeconds > 3600) {
    throw invalidOption('jwt.jwks.cooldownSeconds', 'must be an integer from 1 to 3600');
  }
  const cooldownMs = cooldownSeconds * 1000;
  const timeoutMs = jwks.timeoutMs ?? 5000;
  const base = issuer.replace(/\/+$/, '');
  const jwksUri = options.jwksUri ?? (zitadel ? `${base}/oauth/v2/keys` : `${base}/.well-known/jwks.json`);
  const getKey = unavailableAsSuch(
    keyGetter(
      issuer,
      jwksUri,
      {
        cooldownDuration: cooldownMs,
        cacheMaxAge: (jwks.cacheMaxAgeSeconds ?? 600) * 1000,
        timeoutDuration: timeoutMs,
      },
      cooldownMs,
      timeoutMs,
    ),
  );
  const onReject = options.onReject;
  const onKeysUnavailable = options.onKeysUnavailable;

  const identify = (claims: JWTPayload): Identity => {
    const subject = claims[principalClaim];
    if (typeof subject !== 'string' || subject.length === 0) {
      throw new Rejected(`claim ${principalClaim} (the principal) is missing`);
    }
    let home: string;
    if ('claim' in org) {
      const value = claims[org.claim];
      if (typeof value !== 'string') throw new Rejected(`claim ${org.claim} (the home org) is missing`);
      try {
        home = validateId(value, org.claim);
      } catch {
        throw new Rejected(`claim ${org.claim} (the home org) is not an org id`);
      }
    } else {
      home = org.fixed;
    }
    let orgs: Set<string> | undefined;
    if (fixedOrgs) orgs = new Set([...fixedOrgs, home]);
    else if (isPlainObject(orgsOption)) orgs = new Set([...namesOf(claims[orgsOption.claim]), home]);
    else if (orgsOption === undefined) orgs = new Set([home]);
    const homeOnly = unscopedHomeOnly ? new Set([home]) : undefined;
    let grants: Grant[];
    if (fixedPermissions) {
      grants = [
        homeOnly ? { permissions: fixedPermissions, orgs: homeOnly } : { permissions: fixedPermissions },
      ];
    } else {
      const roles = claims[roleClaim!];
      const names = namesOf(roles);
      grants = [];
      for (const role of names) {
        const mapped = roleMap ? roleMap.get(role) : isPermission(role) ? [role] : undefined;
        if (!mapped || mapped.length === 0) continue;
        const scope = isPlainObject(roles) ? roles[role] : undefined;
        if (isPlainObject(scope)) {
          // A role granted on some orgs never carries instance permissions (iam.*): an org's
          // admin (ZITADEL project grants) could otherwise change every org's lockout.
          const permissions = mapped.filter((p) => !INSTANCE_PERMISSIONS.has(p));
          if (permissions.length > 0) grants.push({ permissions, orgs: new Set(Object.keys(scope)) });
        } else {
          grants.push(homeOnly ? { permissions: mapped, orgs: homeOnly } : { permissions: mapped });
        }
      }
    }
    return { principal: `jwt:${subject}`, home, ...(orgs ? { orgs } : {}), grants };
  };

  const invalid = (reason: string): UnauthenticatedError => {
    onReject?.(reason);
    return new UnauthenticatedError('Errors.Token.Invalid', 'Token is invalid');
  };

  return async (req, permission, target) => {
    const header = req.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer[ \t]+(.+)$/i.exec(header.trim()) : null;
    const presented = m?.[1]?.trim();
    if (!presented) {
      throw new UnauthenticatedError('Errors.Token.Missing', 'Authorization: Bearer token required');
    }
    if (!looksLikeJwt(presented)) throw invalid('matches no static token and is not a JWT');
    let identity: Identity;
    try {
      const { payload } = await jwtVerify(presented, getKey, {
        issuer,
        audience,
        algorithms,
        clockTolerance: tolerance,
        requiredClaims: ['exp'],
      });
      identity = identify(payload);
    } catch (error) {
      if (error instanceof Rejected) throw invalid(error.message);
      if (error instanceof KeysUnavailable) {
        onKeysUnavailable?.(error.message);
        throw new AuthUnavailableError('Errors.Token.KeysUnavailable', 'Token keys unavailable, retry later');
      }
      const e = error as { code?: unknown; message?: unknown };
      const code = typeof e?.code === 'string' ? `${e.code}: ` : '';
      throw invalid(`${code}${typeof e?.message === 'string' ? e.message : 'verification failed'}`);
    }
    const orgId =
      target?.orgId !== undefined ? validateId(target.orgId, 'orgId') : (headerOrg(req) ?? identity.home);
    const scoped = identity.grants.filter((g) => g.orgs === undefined || g.orgs.has(orgId));
    const orgScopedOnly = identity.grants.length > 0 && identity.grants.every((g) => g.orgs !== undefined);
    if (
      (identity.orgs !== undefined && !identity.orgs.has(orgId)) ||
      (orgScopedOnly && scoped.length === 0)
    ) {
      throw new PermissionDeniedError('Errors.Token.OrgDenied', 'Token may not act on this organization');
    }
    if (!scoped.some((g) => g.permissions.includes(permission))) {
      throw new PermissionDeniedError(
        'Errors.Token.PermissionDenied',
        `Token lacks the permission ${permission}`,
      );
    }
    return {
      principal: identity.principal,
      orgId,
      scope: scopeOf(identity),
      actor: { type: 'jwt', subject: identity.principal.slice('jwt:'.length) },
    };
  };
}

/**
 * The orgs a verified JWT reaches: the orgs it may act on (identity.orgs, else every org) where
 * at least one of its grants applies. Only GET /v1/me reads it (the console's org picker).
 */
function scopeOf(identity: Identity): AuthScope {
  const unscoped = identity.grants.some((g) => g.orgs === undefined);
  if (identity.orgs !== undefined) {
    const orgs = [...identity.orgs].filter((o) => unscoped || identity.grants.some((g) => g.orgs?.has(o)));
    return { home: identity.home, orgs };
  }
  if (unscoped) return { home: identity.home, orgs: '*' };
  const orgs = new Set<string>();
  for (const g of identity.grants) for (const o of g.orgs ?? []) orgs.add(o);
  return { home: identity.home, orgs: [...orgs] };
}

/**
 * One Authorize from several, tried in order: the first that authenticates the request decides
 * (its answer, or its 403/400). When none does, the first one's 401 is thrown, so the answer does
 * not tell which kinds of token are accepted or why one was refused.
 */
export function combineAuthorizers(...authorizers: readonly Authorize[]): Authorize {
  if (authorizers.length === 0 || !authorizers.every((a) => typeof a === 'function')) {
    throw invalidOption('authorizers', 'must be one or more authorize functions');
  }
  return async (req, permission, target) => {
    let first: unknown;
    for (const authorize of authorizers) {
      try {
        return await authorize(req, permission, target);
      } catch (error) {
        if (!(error instanceof UnauthenticatedError)) throw error;
        first ??= error;
      }
    }
    throw first;
  };
}
