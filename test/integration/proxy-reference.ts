/**
 * A reference upstream for the reverse-proxy tests of issue 9: a typical Express 5 auth app
 * (`express.json()` + `express.urlencoded()`, Express 5's defaults) that records which user it
 * evaluated a credential for, plus a first-wins JSON reader (gjson/fastjson-style) on /fw/login.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Request, type Response } from 'express';

/** Login names as a case-insensitive upstream compares them: NFKC, trimmed, case-folded. */
export function foldName(name: string): string {
  return name.normalize('NFKC').trim().toUpperCase().toLowerCase().normalize('NFKC');
}

/** One credential evaluation at the upstream. */
export interface Evaluation {
  readonly route: string;
  /** The login name the upstream read (any type: it authenticates only strings). */
  readonly user: unknown;
  readonly ok: boolean;
}

export interface ReferenceUpstream {
  readonly url: string;
  readonly evaluations: Evaluation[];
  /** Delay (ms) before answering a failed login; default none. */
  failureDelay: (() => number) | undefined;
  close(): Promise<void>;
}

/** A first-wins JSON reader: of duplicate keys, the first one counts (unlike JSON.parse). */
export function parseFirstWins(text: string): unknown {
  JSON.parse(text); // same validity as JSON.parse
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const str = (): string => {
    const start = i++;
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const val = (): unknown => {
    ws();
    if (text[i] === '{') {
      i++;
      const o: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
      ws();
      if (text[i] === '}') return (i++, o);
      for (;;) {
        ws();
        const k = str();
        ws();
        i++;
        const v = val();
        if (!(k in o)) o[k] = v;
        ws();
        if (text[i++] === '}') return o;
      }
    }
    if (text[i] === '[') {
      i++;
      const a: unknown[] = [];
      ws();
      if (text[i] === ']') return (i++, a);
      for (;;) {
        a.push(val());
        ws();
        if (text[i++] === ']') return a;
      }
    }
    if (text[i] === '"') return str();
    const start = i;
    while (i < text.length && !' \t\n\r,]}'.includes(text[i]!)) i++;
    return JSON.parse(text.slice(start, i)) as unknown;
  };
  return val();
}

function get(obj: unknown, path: readonly string[]): unknown {
  let node = obj;
  for (const p of path) {
    if (typeof node !== 'object' || node === null || !Object.prototype.hasOwnProperty.call(node, p))
      return undefined;
    node = (node as Record<string, unknown>)[p];
  }
  return node;
}

/**
 * Starts the reference upstream. Every user of `users` has password `password`; names are
 * compared folded (case-insensitive, as most upstreams). Routes:
 * - POST /login, /form/login: `username` of req.body (JSON or form, whichever Express parsed)
 * - POST /q/login: req.query.username (Express 5's "simple" query parser, node:querystring)
 * - POST /v2/sessions: req.body.checks.user.loginName
 * - POST /fw/login: `username` of a first-wins JSON reading of the raw body
 * - POST /orgs/:org/users/:user/login: the path parameter
 * - POST /oauth/token: RFC 6749 password grant (400 invalid_grant / invalid_request)
 * Answers: 200 {"session"} or 401 {"error":"invalid credentials"}.
 */
export async function startReference(users: readonly string[], password = 'pw'): Promise<ReferenceUpstream> {
  const known = new Set(users.map(foldName));
  const evaluations: Evaluation[] = [];
  const state: { failureDelay: (() => number) | undefined } = { failureDelay: undefined };
  const app = express();
  const answer = (route: string, req: Request, res: Response, user: unknown, pw: unknown) => {
    const ok = typeof user === 'string' && known.has(foldName(user)) && pw === password;
    evaluations.push({ route, user, ok });
    const send = () => {
      if (ok) res.json({ session: `session-of-${foldName(user)}` });
      else res.status(401).json({ error: 'invalid credentials' });
    };
    const ms = ok ? 0 : (state.failureDelay?.() ?? 0);
    if (ms > 0) setTimeout(send, ms);
    else send();
  };
  app.post('/fw/login', express.raw({ type: () => true }), (req, res) => {
    let body: unknown;
    try {
      body = parseFirstWins((req.body as Buffer).toString('utf8'));
    } catch {
      res.status(400).json({ error: 'bad json' });
      return;
    }
    answer('/fw/login', req, res, get(body, ['username']), get(body, ['password']));
  });
  app.use(express.json());
  app.use(express.urlencoded());
  app.post(['/login', '/form/login'], (req, res) => {
    const body: unknown = req.body;
    answer('/login', req, res, get(body, ['username']), get(body, ['password']));
  });
  app.post('/q/login', (req, res) => {
    const body: unknown = req.body;
    answer('/q/login', req, res, req.query.username, get(body, ['password']));
  });
  app.post('/v2/sessions', (req, res) => {
    const body: unknown = req.body;
    answer('/v2/sessions', req, res, get(body, ['checks', 'user', 'loginName']), get(body, ['password']));
  });
  app.post('/orgs/:org/users/:user/login', (req, res) => {
    const body: unknown = req.body;
    answer('/orgs/:org/users/:user/login', req, res, req.params.user, get(body, ['password']));
  });
  app.post('/oauth/token', (req, res) => {
    const body: unknown = req.body;
    const user = get(body, ['username']);
    const pw = get(body, ['password']);
    if (get(body, ['grant_type']) !== 'password' || typeof user !== 'string' || typeof pw !== 'string') {
      res.status(400).json({ error: 'invalid_request' });
      return;
    }
    const ok = known.has(foldName(user)) && pw === password;
    evaluations.push({ route: '/oauth/token', user, ok });
    if (ok) res.json({ access_token: `token-of-${foldName(user)}`, token_type: 'Bearer' });
    else res.status(400).json({ error: 'invalid_grant', error_description: 'Invalid user credentials' });
  });
  // Errors (bad JSON, bad charset, too many parameters) answer as Express does, without a stack.
  app.use((err: { status?: number }, _req: Request, res: Response, _next: () => void) => {
    res.status(err.status ?? 500).json({ error: 'bad request' });
  });
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    evaluations,
    get failureDelay() {
      return state.failureDelay;
    },
    set failureDelay(f) {
      state.failureDelay = f;
    },
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
