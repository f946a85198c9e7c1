import express from 'express';
import { createLockout, hashPassword, createPasswordVerifier } from '../../src'; // in your app: from 'lockgate'

const users = new Map<string, { id: string; hash: Promise<string> }>([
  ['alice', { id: 'u-1', hash: hashPassword('correct-horse-battery') }],
]);
const passwords = createPasswordVerifier();

export const lockout = createLockout({
  // store: new RedisStore({ client: new Redis(url, { enableOfflineQueue: false }) }),
  instance: { maxPasswordAttempts: 5, maxOtpAttempts: 5 },
  tokens: [
    {
      name: 'helpdesk',
      token: process.env.ADMIN_TOKEN ?? 'change-me',
      org: 'default',
      permissions: ['user.read', 'user.write'],
    },
  ],
});

export const app = express();
app.use(express.json());
app.post(
  '/login',
  // refuses a locked user (423) or a surplus check (429) before the handler runs, and settles
  // from its status: 2xx success, 401/403 failure, anything else uncounted
  lockout.guards.password({
    user: (req) => users.get(req.body?.username)?.id ?? `unknown:${req.body?.username}`,
  }),
  async (req, res) => {
    const user = users.get(req.body.username);
    const ok = await passwords.verify(user ? await user.hash : undefined, String(req.body.password ?? ''));
    if (!ok) return void res.status(401).json({ error: 'invalid_credentials' });
    res.json({ userId: user!.id });
  },
);
app.use('/admin', lockout.routers.users()); // status, lock, unlock: GET /admin/v1/users/u-1/lockout …

// Listen unless a test runner imports the app (Jest sets NODE_ENV=test); unlike
// `require.main === module`, this works in CommonJS and in ES modules alike.
if (process.env.NODE_ENV !== 'test') {
  app.listen(3000, '127.0.0.1', () => console.log('listening on http://127.0.0.1:3000'));
}
