/**
 * Where the sidecar serves the admin console: at /console by default (SidecarHandle.consoleUrl);
 * not with console.enabled false; and not when the reverse proxy shares the listener (there
 * /console is the auth service's), but on the API listener when the proxy has its own.
 */
import { parseConfig } from '../../src/sidecar/config';
import { startSidecar, type SidecarHandle } from '../../src/sidecar/server';
import { loginHandler, rawRequest, startUpstream, type Upstream } from './proxy-harness';

const base = (extra: Record<string, unknown> = {}) =>
  parseConfig({
    server: { port: 0 },
    instance: { id: 'sidecar-console' },
    log: { level: 'silent' },
    auth: {
      tokens: [{ name: 'root', token: 'sidecar-console-token', org: 'o', permissions: ['user.read'] }],
    },
    ...extra,
  });

let upstream: Upstream;
const sidecars: SidecarHandle[] = [];
const start = async (config: ReturnType<typeof parseConfig>): Promise<SidecarHandle> => {
  const s = await startSidecar(config);
  sidecars.push(s);
  return s;
};

beforeAll(async () => {
  upstream = await startUpstream(loginHandler(new Map([['pat', 'right']])));
});
afterAll(async () => {
  for (const s of sidecars) await s.close();
  await upstream?.close();
});

const proxy = (listen: boolean) => ({
  proxy: {
    upstream: upstream.url,
    ...(listen ? { listen: { port: 0 } } : {}),
    routes: [{ path: '/login', user: { from: 'json', name: 'user' }, org: { fixed: 'o' } }],
  },
});

it('serves the console at /console/ by default and names it in consoleUrl', async () => {
  const s = await start(base());
  expect(s.consoleUrl).toBe(`${s.url}/console/`);
  const page = await rawRequest(s.url, '/console/', { method: 'GET' });
  expect(page.status).toBe(200);
  expect(page.headers['content-security-policy']).toContain("frame-ancestors 'none'");
});

it('console.enabled false: /console/ is an unknown route (404 code 5)', async () => {
  const s = await start(base({ console: { enabled: false } }));
  expect(s.consoleUrl).toBeUndefined();
  const page = await rawRequest(s.url, '/console/', { method: 'GET' });
  expect(page.status).toBe(404);
  expect((page.json as { code?: number }).code).toBe(5);
});

it('a reverse proxy on the same listener: /console/ goes to the auth service', async () => {
  const s = await start(base(proxy(false)));
  expect(s.consoleUrl).toBeUndefined();
  const before = upstream.hits.length;
  const page = await rawRequest(s.url, '/console/', { method: 'GET' });
  expect(upstream.hits.length).toBe(before + 1);
  expect(page.headers['x-upstream']).toBe('auth');
});

it('a reverse proxy on its own listener: the console stays on the API listener', async () => {
  const s = await start(base(proxy(true)));
  expect(s.consoleUrl).toBe(`${s.url}/console/`);
  expect((await rawRequest(s.url, '/console/', { method: 'GET' })).status).toBe(200);
});
