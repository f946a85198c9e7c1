// The console's client of lockgate's HTTP API: every request carries the signed-in token in the
// Authorization header (never a cookie: credentials 'omit'), and the chosen org in
// x-zitadel-orgid. Errors come back as ApiError with the status and ZITADEL's error body.

const TOKEN_KEY = 'lockgate.console.token';
const ORG_KEY = 'lockgate.console.org';

/** Where the API is: the page's <meta name="lockgate-api"> (the console's apiBase option). */
export function apiBase() {
  const meta = document.querySelector('meta[name="lockgate-api"]');
  return meta ? meta.getAttribute('content') || '' : '';
}

export class ApiError extends Error {
  constructor(status, body) {
    const message = body && typeof body.message === 'string' ? body.message : `HTTP ${status}`;
    super(message);
    this.status = status;
    this.code = body && typeof body.code === 'number' ? body.code : undefined;
    const detail = body && Array.isArray(body.details) ? body.details[0] : undefined;
    this.id = detail && typeof detail.id === 'string' ? detail.id : undefined;
  }
}

/** The token and org kept for this tab only (sessionStorage: gone when the tab closes). */
export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  org: () => sessionStorage.getItem(ORG_KEY),
  save(token, org) {
    sessionStorage.setItem(TOKEN_KEY, token);
    if (org) sessionStorage.setItem(ORG_KEY, org);
    else sessionStorage.removeItem(ORG_KEY);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(ORG_KEY);
  },
};

/**
 * A client for one token and org. `onUnauthenticated` is told of a 401 (the token was revoked or
 * expired since sign-in), before the request rejects.
 */
export function createClient(token, org, onUnauthenticated) {
  const base = apiBase();
  async function request(method, path, body) {
    const headers = { authorization: `Bearer ${token}`, accept: 'application/json' };
    if (org) headers['x-zitadel-orgid'] = org;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
      referrerPolicy: 'no-referrer',
    });
    const text = await res.text();
    let parsed;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (res.status === 401 && onUnauthenticated) onUnauthenticated();
    if (!res.ok) throw new ApiError(res.status, parsed);
    return parsed;
  }
  const user = (id) => encodeURIComponent(id);
  return {
    org,
    me: () => request('GET', '/v1/me'),
    lockouts: (limit, cursor) =>
      request('GET', `/v1/lockouts?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`),
    status: (id) => request('GET', `/v1/users/${user(id)}/lockout`),
    lock: (id) => request('POST', `/v2/users/${user(id)}/lock`),
    unlock: (id) => request('POST', `/v2/users/${user(id)}/unlock`),
    passwordChanged: (id) => request('POST', `/v1/users/${user(id)}/password_changed`),
    /**
     * The user's recent events ({ events: [{ id, time, type, actor, data }] }, newest first), or
     * null when there are none to show: no events API (404), or events not recorded (400 code 9).
     */
    async userEvents(id) {
      try {
        return await request('GET', `/v1/users/${user(id)}/events?limit=20`);
      } catch (error) {
        if (error instanceof ApiError && (error.status === 404 || error.status === 400)) return null;
        throw error;
      }
    },
    orgSettings: () => request('GET', '/management/v1/policies/lockout'),
    addOrgSettings: (values) => request('POST', '/management/v1/policies/lockout', values),
    updateOrgSettings: (values) => request('PUT', '/management/v1/policies/lockout', values),
    resetOrgSettings: () => request('DELETE', '/management/v1/policies/lockout'),
    instanceSettings: () => request('GET', '/admin/v1/policies/lockout'),
    updateInstanceSettings: (values) => request('PUT', '/admin/v1/policies/password/lockout', values),
    activity: (minutes) => request('GET', `/v1/activity?minutes=${minutes}`),
  };
}
