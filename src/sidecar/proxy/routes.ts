/**
 * Routing: which requests are logins. A request's target is matched against the configured login
 * routes in two readings of its path, Express's and a normalized one; either makes it a login.
 */
import type { IncomingMessage } from 'node:http';
import { match } from 'path-to-regexp';
import type { ProxyRouteConfig } from './config';

/** Path parameters of a matched route. */
export type Params = Partial<Record<string, string | string[]>>;

/** The login route a request matched. */
export interface RouteMatch {
  readonly route: ProxyRouteConfig;
  readonly params: Params;
  /** The two readings of the path give a parameter the route reads different values: a 400. */
  readonly ambiguous: boolean;
}

/** The login route of a request (method and path without the query), or undefined: pass-through. */
export type FindRoute = (method: string, path: string) => RouteMatch | undefined;

export function compileRoutes(configs: readonly ProxyRouteConfig[]): FindRoute {
  const routes = configs.map((config) => ({
    config,
    match: match<Params>(config.path, { decode: false, sensitive: false, trailing: true, end: true }),
  }));
  return (method, path) => {
    const normalized = normalizePath(path);
    for (const r of routes) {
      if (r.config.method !== '*' && r.config.method !== method) continue;
      // Two readings of the path: Express's (the raw path, parameters decoded once) and the
      // normalized one (decoded, dot segments resolved, …). Either makes the request a login;
      // path parameters they both give must agree.
      const express = r.match(path);
      const loose = r.match(normalized);
      if (!express && !loose) continue;
      let params: Params = {};
      let ambiguous = false;
      if (loose) params = loose.params;
      if (express) {
        const decoded = decodeParams(express.params);
        if (decoded === undefined || (loose && !sameParams(decoded, loose.params, r.config)))
          ambiguous = true;
        else params = decoded;
      }
      return { route: r.config, params, ambiguous };
    }
    return undefined;
  };
}

/** The request target in origin form (path and query), as received; undefined when unusable. */
export function requestTarget(req: IncomingMessage): string | undefined {
  const url = (req as IncomingMessage & { originalUrl?: string }).originalUrl ?? req.url ?? '/';
  if (url.startsWith('/')) return url;
  // absolute form: URL would drop a fragment silently; the caller refuses it
  if (url.includes('#')) return url;
  try {
    const parsed = new URL(url);
    return parsed.pathname + parsed.search;
  } catch {
    return undefined;
  }
}

/**
 * The path a login route is matched against: percent-decoded (repeatedly, so double encoding
 * does not hide a login path), backslashes as slashes, `;params` removed from each segment, `.`
 * and `..` resolved, empty segments dropped. Upstreams differ in which of these they apply;
 * applying all of them can only make more requests count as logins, never fewer. (Express's own
 * reading, the raw path with parameters decoded once, is matched too: see compileRoutes.)
 */
export function normalizePath(path: string): string {
  let p = path;
  for (let i = 0; i < 3 && p.includes('%'); i++) p = percentDecode(p);
  const out: string[] = [];
  for (const raw of p.replace(/\\/g, '/').split('/')) {
    const semi = raw.indexOf(';');
    const segment = semi < 0 ? raw : raw.slice(0, semi);
    if (segment === '' || segment === '.') continue;
    if (segment === '..') out.pop();
    else out.push(segment);
  }
  return `/${out.join('/')}`;
}

function percentDecode(s: string): string {
  return s.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) =>
    Buffer.from(run.replace(/%/g, ''), 'hex').toString('utf8'),
  );
}

/** Path parameters decoded once, as Express does; undefined when one is malformed. */
function decodeParams(params: Params): Params | undefined {
  const out: Params = {};
  try {
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined) continue;
      out[k] = Array.isArray(v) ? v.map((x) => decodeURIComponent(x)) : decodeURIComponent(v);
    }
  } catch {
    return undefined;
  }
  return out;
}

/** Whether two readings give the same value to every path parameter the route reads. */
function sameParams(a: Params, b: Params, route: ProxyRouteConfig): boolean {
  const names: string[] = [];
  if (route.user.from === 'param') names.push(route.user.name);
  if (route.org && !('fixed' in route.org) && route.org.from === 'param') names.push(route.org.name);
  const flat = (v: string | string[] | undefined) => (Array.isArray(v) ? v.join('/') : v);
  return names.every((n) => flat(a[n]) === flat(b[n]));
}
