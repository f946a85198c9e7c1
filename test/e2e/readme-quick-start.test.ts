/**
 * README's middleware quick start is examples/quick-start/app.ts, verbatim (but for the import
 * path): this test checks that the two agree and that the app does what README says.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';

const root = join(__dirname, '../..');

it('README shows examples/quick-start/app.ts as it is', () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const file = readFileSync(join(root, 'examples/quick-start/app.ts'), 'utf8')
    .replace(" from '../../src'; // in your app: from 'lockgate'", " from 'lockgate';")
    .trimEnd();
  expect(readme).toContain('```ts\n' + file + '\n```');
});

it('locks after 5 wrong passwords, refuses the right one, and unlocks through the mounted router', async () => {
  process.env.ADMIN_TOKEN = 'quick-start-admin';
  const { app, lockout } =
    require('../../examples/quick-start/app') as typeof import('../../examples/quick-start/app');
  const login = (password: string) => request(app).post('/login').send({ username: 'alice', password });
  for (let i = 0; i < 5; i++) expect((await login('wrong')).status).toBe(401);
  const locked = await login('correct-horse-battery');
  expect(locked.status).toBe(423);
  expect(locked.body.details[0].id).toBe('Errors.User.Locked');
  const admin = { authorization: 'Bearer quick-start-admin' };
  const status = await request(app).get('/admin/v1/users/u-1/lockout').set(admin);
  expect(status.body).toMatchObject({ userId: 'u-1', state: 'USER_STATE_LOCKED' });
  expect((await request(app).post('/admin/v2/users/u-1/unlock').set(admin)).status).toBe(200);
  const ok = await login('correct-horse-battery');
  expect(ok.status).toBe(200);
  expect(ok.body).toEqual({ userId: 'u-1' });
  await lockout.close();
});
