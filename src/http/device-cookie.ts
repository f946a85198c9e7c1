import type { DefencesConfig } from '../core/defences';

/**
 * The device cookie of device cookies (issue 12), shared by the middleware and the reverse proxy
 * (the sidecar's check routes answer the token as `deviceToken` instead, for the auth service to
 * set): read from a `Cookie` header, written as a `Set-Cookie` value — HttpOnly, Secure unless
 * configured otherwise, SameSite Lax or Strict, Path, Max-Age the token's maximum age.
 */
export interface DeviceCookie {
  readonly name: string;
  /** The token in a request's Cookie header(s), or undefined (a second copy: undefined too). */
  read(cookieHeader: string | readonly string[] | undefined): string | undefined;
  /** The Set-Cookie value that stores `token`. */
  serialize(token: string): string;
}

/** The instance's device cookie, or undefined when device cookies have no keys configured. */
export function deviceCookieOf(defences: DefencesConfig | undefined): DeviceCookie | undefined {
  const tokens = defences?.deviceTokens;
  if (tokens === undefined) return undefined;
  const c = defences?.deviceCookie ?? { name: 'lockgate_device', secure: true, sameSite: 'lax', path: '/' };
  const maxAge = Math.floor(tokens.maxAgeMs / 1000);
  return {
    name: c.name,
    read(header) {
      const lines = header === undefined ? [] : typeof header === 'string' ? [header] : header;
      let found: string | undefined;
      for (const line of lines) {
        for (const part of line.split(';')) {
          const eq = part.indexOf('=');
          if (eq < 0 || part.slice(0, eq).trim() !== c.name) continue;
          // two cookies of that name (e.g. set for two paths): neither is trusted
          if (found !== undefined) return undefined;
          found = part.slice(eq + 1).trim();
        }
      }
      return found === undefined || found === '' ? undefined : found;
    },
    serialize(token) {
      const sameSite = c.sameSite === 'strict' ? 'Strict' : 'Lax';
      return `${c.name}=${token}; Max-Age=${maxAge}; Path=${c.path}; HttpOnly; SameSite=${sameSite}${c.secure ? '; Secure' : ''}`;
    },
  };
}
