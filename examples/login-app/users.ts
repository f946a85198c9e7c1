import { hashPassword, type Argon2Cost } from '../../src';

/**
 * The demo's user directory, in memory. A real app keeps this in its database; lockgate only
 * ever sees the immutable user id (`id`), never the typed login name.
 */

/** The second factor a user signs in with after the password. */
export type SecondFactor = 'totp' | 'sms' | 'email';

export interface User {
  /** Immutable id: what lockgate counts by. */
  readonly id: string;
  /** Login name (case-insensitive). */
  readonly username: string;
  /** argon2id PHC string. */
  passwordHash: string;
  phone?: string;
  email?: string;
  /** Second factor, if any. */
  mfa?: SecondFactor;
  /** Base32 TOTP secret once enrolled and confirmed. */
  totpSecret?: string;
  /** A TOTP secret handed out by enrollment, not confirmed yet. */
  pendingTotpSecret?: string;
}

/** The seeded demo users and their passwords (printed at start, used by the README). */
export const DEMO_USERS = [
  { id: 'u-alice', username: 'alice', password: 'correct-horse-battery', email: 'alice@example.com' },
  {
    id: 'u-bob',
    username: 'bob',
    password: 'hunter2-but-longer',
    phone: '+1 555 0100',
    mfa: 'sms' as const,
  },
  {
    id: 'u-carol',
    username: 'carol',
    password: 'open-sesame-42',
    email: 'carol@example.com',
    mfa: 'email' as const,
  },
] as const;

export class UserDirectory {
  private readonly byName = new Map<string, User>();
  private readonly byId = new Map<string, User>();

  add(user: User): void {
    this.byName.set(user.username.toLowerCase(), user);
    this.byId.set(user.id, user);
  }

  findByUsername(username: unknown): User | undefined {
    return typeof username === 'string' ? this.byName.get(username.toLowerCase()) : undefined;
  }

  findById(id: string): User | undefined {
    return this.byId.get(id);
  }

  /**
   * The id lockgate counts a login attempt by. An unknown login name gets a stable pseudo id of
   * its own, so that unknown and known names behave alike (both lock after the same number of
   * failures): the answers do not tell which names exist.
   */
  lockoutIdFor(username: unknown): string {
    if (typeof username !== 'string' || username.length === 0 || username.length > 200) {
      // The guard answers 400 for an empty id.
      return '';
    }
    return this.findByUsername(username)?.id ?? `unknown:${username.toLowerCase()}`;
  }
}

/** A directory with the demo users, their passwords hashed with argon2id at `cost`. */
export async function seedUsers(cost: Argon2Cost): Promise<UserDirectory> {
  const directory = new UserDirectory();
  for (const demo of DEMO_USERS) {
    const { password, ...fields } = demo;
    directory.add({ ...fields, passwordHash: await hashPassword(password, cost) });
  }
  return directory;
}
