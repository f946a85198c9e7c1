import { randomBytes } from 'node:crypto';
import express, { type NextFunction, type Request, type Response } from 'express';
import {
  createErrorHandler,
  generateTotpSecret,
  type Lockout,
  type PasswordVerifier,
  type TokenOptions,
} from '../../src';
import type { SecondFactor, User, UserDirectory } from './users';

/**
 * The demo login app: password, then the user's second factor (TOTP, or a code by SMS or email),
 * then a session. lockgate guards every credential check and serves the admin routes.
 */

/** The org every demo user belongs to (a single-tenant app has one). */
export const ORG = 'demo';

/** Delivers one-time codes. The demo's prints them on the console. */
export interface CodeSender {
  send(channel: 'sms' | 'email', to: string, code: string): void | Promise<void>;
}

export const consoleSender: CodeSender = {
  send(channel, to, code) {
    console.log(`[${channel} to ${to}] Your demo login code is ${code}`);
  },
};

export interface LoginAppDeps {
  lockout: Lockout;
  users: UserDirectory;
  passwords: PasswordVerifier;
  sender: CodeSender;
}

/** A ticket: the password was right, the second factor is still to come. */
interface Ticket {
  readonly userId: string;
  readonly factor: SecondFactor;
  readonly expiresAt: number;
}

interface Session {
  readonly userId: string;
  readonly expiresAt: number;
}

const TICKET_TTL_MS = 5 * 60_000;
const SESSION_TTL_MS = 60 * 60_000;
const ISSUER = 'LockgateDemo';

const token = (): string => randomBytes(24).toString('base64url');

/** The admin token's permissions: everything the mounted routers offer. */
export function adminToken(value: string): TokenOptions {
  return {
    name: 'demo-admin',
    token: value,
    org: ORG,
    permissions: [
      'policy.read',
      'policy.write',
      'policy.delete',
      'iam.policy.read',
      'iam.policy.write',
      'user.read',
      'user.write',
    ],
  };
}

export function createLoginApp({ lockout, users, passwords, sender }: LoginAppDeps): express.Express {
  const tickets = new Map<string, Ticket>();
  const sessions = new Map<string, Session>();
  const app = express();
  app.disable('x-powered-by');

  const newSession = (user: User) => {
    const session = token();
    sessions.set(session, { userId: user.id, expiresAt: Date.now() + SESSION_TTL_MS });
    return { status: 'signed_in', session, userId: user.id };
  };

  /** Reads the ticket of a second-factor step; answers 401 itself when there is none. */
  const ticketOf = (req: Request, res: Response): (Ticket & { id: string }) | undefined => {
    const id = typeof req.body?.ticket === 'string' ? req.body.ticket : '';
    const ticket = tickets.get(id);
    if (!ticket || ticket.expiresAt < Date.now()) {
      tickets.delete(id);
      res.status(401).json({ error: 'invalid_ticket' });
      return undefined;
    }
    return { ...ticket, id };
  };

  /** Requires `Authorization: Bearer <session>`. */
  const signedIn = (req: Request, res: Response, next: NextFunction): void => {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    const session = m ? sessions.get(m[1]!) : undefined;
    const user = session && session.expiresAt > Date.now() ? users.findById(session.userId) : undefined;
    if (!user) {
      res.status(401).json({ error: 'not_signed_in' });
      return;
    }
    res.locals.user = user;
    next();
  };

  app.use(express.json({ limit: '8kb' }));

  // Step 1: the password. The guard refuses a locked user (423) before the handler runs, and
  // settles the attempt from the handler's answer: 2xx resets the counter, 401 counts a failure.
  app.post(
    '/login',
    lockout.guards.password({ org: ORG, user: (req) => users.lockoutIdFor(req.body?.username) }),
    async (req, res) => {
      const user = users.findByUsername(req.body.username);
      const password = typeof req.body.password === 'string' ? req.body.password : '';
      // An unknown user costs the same time as a known one (a dummy hash is verified).
      if (!(await passwords.verify(user?.passwordHash, password)) || !user) {
        // Settling explicitly tells us the count; without it, the 401 alone would count it.
        const { failedAttempts } = await req.lockout!.failure();
        res.status(401).json({ error: 'invalid_credentials', failedAttempts });
        return;
      }
      if (!user.mfa) {
        res.json(newSession(user));
        return;
      }
      const ticket = token();
      tickets.set(ticket, { userId: user.id, factor: user.mfa, expiresAt: Date.now() + TICKET_TTL_MS });
      if (user.mfa === 'sms' || user.mfa === 'email') {
        // lockgate issues the code (stored only as a hash) and refuses a locked user; we deliver it.
        const { code } = await lockout.checks.issueCode(ORG, user.id, user.mfa);
        await sender.send(user.mfa, (user.mfa === 'sms' ? user.phone : user.email) ?? '', code);
      }
      res.json({ status: 'second_factor_required', factor: user.mfa, ticket });
    },
  );

  // Step 2a: a TOTP code, with the checks API (a wrong code is a result, a lock an error).
  app.post('/login/totp', async (req, res) => {
    const ticket = ticketOf(req, res);
    if (!ticket) return;
    const user = users.findById(ticket.userId);
    if (!user?.totpSecret || ticket.factor !== 'totp') {
      res.status(400).json({ error: 'totp_not_enrolled' });
      return;
    }
    const result = await lockout.checks.totp(ORG, user.id, user.totpSecret, String(req.body.code ?? ''));
    if (!result.ok) {
      res.status(401).json({ error: 'invalid_code', failedAttempts: result.failedAttempts });
      return;
    }
    tickets.delete(ticket.id);
    res.json(newSession(user));
  });

  // Step 2b: the code sent by SMS or email.
  app.post('/login/code', async (req, res) => {
    const ticket = ticketOf(req, res);
    if (!ticket) return;
    const user = users.findById(ticket.userId);
    if (!user || (ticket.factor !== 'sms' && ticket.factor !== 'email')) {
      res.status(400).json({ error: 'no_code_step' });
      return;
    }
    const result = await lockout.checks.verifyCode(ORG, user.id, ticket.factor, String(req.body.code ?? ''));
    if (!result.ok) {
      res.status(401).json({ error: 'invalid_code', failedAttempts: result.failedAttempts });
      return;
    }
    tickets.delete(ticket.id);
    res.json(newSession(user));
  });

  app.get('/me', signedIn, (_req, res) => {
    const user = res.locals.user as User;
    res.json({ userId: user.id, username: user.username, mfa: user.mfa ?? null });
  });

  // TOTP enrollment: a new secret and its otpauth:// URL (show it as a QR code in a real app).
  app.post('/mfa/totp', signedIn, (_req, res) => {
    const user = res.locals.user as User;
    const secret = generateTotpSecret();
    user.pendingTotpSecret = secret;
    const label = encodeURIComponent(`${ISSUER}:${user.username}`);
    const otpauthUrl = `otpauth://totp/${label}?secret=${secret}&issuer=${ISSUER}&algorithm=SHA1&digits=6&period=30`;
    res.status(201).json({ secret, otpauthUrl });
  });

  // Confirms enrollment with a first code (counted by lockgate like any TOTP check).
  app.post('/mfa/totp/verify', signedIn, async (req, res) => {
    const user = res.locals.user as User;
    if (!user.pendingTotpSecret) {
      res.status(400).json({ error: 'no_enrollment_pending' });
      return;
    }
    const result = await lockout.checks.totp(
      ORG,
      user.id,
      user.pendingTotpSecret,
      String(req.body.code ?? ''),
    );
    if (!result.ok) {
      res.status(401).json({ error: 'invalid_code', failedAttempts: result.failedAttempts });
      return;
    }
    user.totpSecret = user.pendingTotpSecret;
    user.pendingTotpSecret = undefined;
    user.mfa = 'totp';
    res.json({ status: 'totp_enabled' });
  });

  // The admin API (ZITADEL-compatible): user status, lock/unlock, lockout settings.
  app.use('/admin', lockout.routers.users(), lockout.routers.settings());

  // lockgate's errors (locked 423, busy 429, store down 503, bad input 400) in ZITADEL's error body.
  app.use(createErrorHandler({ onError: (error) => console.error('login-app:', error) }));
  return app;
}
