/**
 * proxy.listen: the sidecar serves the proxy on its own address, so an upstream's routes that
 * share a path with lockgate's own (ZITADEL's /management/v1/…) reach the upstream there, while
 * the admin API on server.port keeps answering and governs the proxied logins.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig, parseConfig } from '../../src/sidecar/config';
import { startSidecar, type SidecarHandle } from '../../src/sidecar/server';
import { loginHandler, postJson, rawRequest, startUpstream, type Upstream } from './proxy-harness';

const ADMIN = 'proxy-listen-admin-token';
const ORG = 'org-pl';

let upstream: Upstream;
let sidecar: SidecarHandle;

beforeAll(async () => {
  upstream = await startUpstream(loginHandler(new Map([['pat', 'right']])));
  sidecar = await startSidecar(
    parseConfig({
      server: { port: 0 },
      instance: { id: 'proxy-listen', maxPasswordAttempts: 2 },
      log: { level: 'silent' },
      auth: {
        tokens: [
          { name: 'root', token: ADMIN, org: ORG, orgs: ['*'], permissions: ['user.read', 'user.write'] },
        ],
      },
      proxy: {
        upstream: upstream.url,
        listen: { port: 0 },
        routes: [{ path: '/login', user: { from: 'json', name: 'user' }, org: { fixed: ORG } }],
      },
    }),
  );
});

afterAll(async () => {
  await sidecar?.close();
  await upstream?.close();
});

const admin = { authorization: `Bearer ${ADMIN}` };

it('serves the proxy on its own port: upstream paths equal to lockgate routes reach the upstream', async () => {
  expect(sidecar.proxyUrl).toBeDefined();
  const proxyUrl = sidecar.proxyUrl!;
  const before = upstream.hits.length;
  const viaProxy = await rawRequest(proxyUrl, '/management/v1/policies/lockout', { method: 'GET' });
  expect(upstream.hits.length).toBe(before + 1);
  expect(viaProxy.headers['x-upstream']).toBe('auth');
  // on the API port the same path is lockgate's own (and needs a lockgate token)
  const viaApi = await rawRequest(sidecar.url, '/management/v1/policies/lockout', { method: 'GET' });
  expect(viaApi.status).toBe(401);
  expect(upstream.hits.length).toBe(before + 1);
  // and the API port forwards nothing
  expect((await rawRequest(sidecar.url, '/somewhere', { method: 'GET' })).status).toBe(404);
});

it('counts logins on the proxy port; the admin API on the other port sees and unlocks them', async () => {
  const proxyUrl = sidecar.proxyUrl!;
  expect((await postJson(proxyUrl, '/login', { user: 'pat', password: 'wrong' })).status).toBe(401);
  expect((await postJson(proxyUrl, '/login', { user: 'pat', password: 'wrong' })).status).toBe(401);
  const hits = upstream.hits.length;
  expect((await postJson(proxyUrl, '/login', { user: 'pat', password: 'right' })).status).toBe(423);
  expect(upstream.hits.length).toBe(hits); // a locked user never reaches the upstream
  const status = await rawRequest(sidecar.url, '/v1/users/pat/lockout', { method: 'GET', headers: admin });
  expect((status.json as { state?: string }).state).toBe('USER_STATE_LOCKED');
  const unlock = await rawRequest(sidecar.url, '/v2/users/pat/unlock', { method: 'POST', headers: admin });
  expect(unlock.status).toBe(200);
  expect((await postJson(proxyUrl, '/login', { user: 'pat', password: 'right' })).status).toBe(200);
});

it("README's proxy walkthrough config (examples/auth-upstream/proxy.yaml) loads as written", () => {
  const config = loadConfig(
    { LOCKGATE_CONFIG: join(__dirname, '../../examples/auth-upstream/proxy.yaml') },
    (p) => readFileSync(p, 'utf8'),
  );
  expect(config.proxy?.listen).toEqual({ host: '127.0.0.1', port: 8081 });
  expect(config.proxy?.routes[0]?.path).toBe('/login');
  expect(config.instance.maxPasswordAttempts).toBe(5);
});
