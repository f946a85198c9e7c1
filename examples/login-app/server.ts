import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import {
  createLockout,
  createPasswordVerifier,
  DEFAULT_ARGON2_COST,
  MemoryStore,
  RedisStore,
  type Argon2Cost,
  type Lockout,
  type LockoutStore,
} from '../../src';
import { adminToken, consoleSender, createLoginApp, type CodeSender } from './app';
import { DEMO_USERS, seedUsers, type UserDirectory } from './users';

/**
 * Starts the demo login app: `npx ts-node examples/login-app/server.ts` (see README.md).
 * Environment: PORT (default 3000), HOST (127.0.0.1), REDIS_URL (unset: in-process memory),
 * ADMIN_TOKEN (unset: a random one, printed).
 */

export interface StartOptions {
  /** Port to listen on; 0 for any free one. Default 3000. */
  port?: number;
  host?: string;
  /** `redis://…`: keep lockout state in Redis (shared by every instance of the app). Default: memory. */
  redisUrl?: string;
  /** The bearer token of the admin routes. Default: a random one. */
  adminToken?: string;
  /** argon2 cost of the seeded hashes and of the dummy hash for unknown users. Default: argon2's. */
  argon2Cost?: Argon2Cost;
  /** Failed attempts that lock a user. Default 5 and 5. */
  maxPasswordAttempts?: number;
  maxOtpAttempts?: number;
  /** Delivers SMS/email codes. Default: printed on the console. */
  sender?: CodeSender;
  /** Instance id of the lockout counters. Default "login-app". */
  instanceId?: string;
}

export interface RunningApp {
  /** `http://host:port` */
  readonly url: string;
  readonly port: number;
  readonly adminToken: string;
  readonly lockout: Lockout;
  readonly users: UserDirectory;
  close(): Promise<void>;
}

export async function start(options: StartOptions = {}): Promise<RunningApp> {
  const cost = options.argon2Cost ?? DEFAULT_ARGON2_COST;
  const token = options.adminToken ?? randomBytes(18).toString('base64url');

  let redis: Redis | undefined;
  let store: LockoutStore;
  if (options.redisUrl) {
    // enableOfflineQueue: false — while Redis is down, checks fail at once (503) instead of queueing.
    redis = new Redis(options.redisUrl, { enableOfflineQueue: false, lazyConnect: true });
    redis.on('error', (error) => console.error('login-app: redis:', error.message));
    await redis.connect();
    store = new RedisStore({ client: redis });
  } else {
    store = new MemoryStore();
  }

  const lockout = createLockout({
    store,
    instanceId: options.instanceId ?? 'login-app',
    instance: {
      maxPasswordAttempts: options.maxPasswordAttempts ?? 5,
      maxOtpAttempts: options.maxOtpAttempts ?? 5,
    },
    tokens: [adminToken(token)],
    onError: (error, context) =>
      console.warn(
        `login-app: lockgate ${context.operation} (${context.outcome}):`,
        (error as Error).message,
      ),
  });
  const users = await seedUsers(cost);
  const passwords = createPasswordVerifier(cost);
  await passwords.ready();

  const app = createLoginApp({ lockout, users, passwords, sender: options.sender ?? consoleSender });
  const server = http.createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 3000, options.host ?? '127.0.0.1', () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${address.port}`,
    port: address.port,
    adminToken: token,
    lockout,
    users,
    close() {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeIdleConnections();
        });
        await lockout.close();
        if (redis) await redis.quit();
      })();
      return closing;
    },
  };
}

async function main(): Promise<void> {
  const port = process.env.PORT ? Number(process.env.PORT) : 3000;
  const running = await start({
    port,
    ...(process.env.HOST ? { host: process.env.HOST } : {}),
    ...(process.env.REDIS_URL ? { redisUrl: process.env.REDIS_URL } : {}),
    ...(process.env.ADMIN_TOKEN ? { adminToken: process.env.ADMIN_TOKEN } : {}),
  });
  console.log(`login-app listening on ${running.url} (lockout store: ${running.lockout.store.kind})`);
  if (!process.env.ADMIN_TOKEN) console.log(`admin token: ${running.adminToken}`);
  console.log('demo users:');
  for (const u of DEMO_USERS) {
    console.log(
      `  ${u.username.padEnd(6)} ${u.password.padEnd(22)} id ${u.id}${'mfa' in u ? `, then a code by ${u.mfa}` : ''}`,
    );
  }
  const stop = () => {
    console.log('login-app: stopping');
    running.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error('login-app: could not start:', error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
