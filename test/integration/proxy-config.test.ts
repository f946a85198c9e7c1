/**
 * The `proxy` configuration section: defaults, one-line errors naming the field, idempotent parsing.
 */
import { parse as parseYaml } from 'yaml';
import { LockoutEngine } from '../../src/core/engine';
import {
  parseProxyConfig,
  proxyConfigSchema,
  type ProxyConfig,
  type ProxyConfigInput,
} from '../../src/sidecar/proxy/config';
import { createProxy, normalizePath, type ProxyOptions } from '../../src/sidecar/proxy/proxy';
import { MemoryStore } from '../../src/store';

const minimal: ProxyConfigInput = {
  upstream: 'http://auth:8080/',
  routes: [{ path: '/login', user: { from: 'json', name: 'user' } }],
};

test('defaults', () => {
  const c = parseProxyConfig(minimal);
  expect(c).toEqual({
    upstream: 'http://auth:8080',
    timeoutMs: 30_000,
    trustProxy: false,
    preserveHost: true,
    bodyLimit: 64 * 1024,
    routes: [
      {
        method: 'POST',
        path: '/login',
        factor: 'password',
        user: { from: 'json', name: 'user', lowercase: true, trim: true, nfkc: true },
        judge: {
          success: [{ min: 200, max: 299 }],
          rules: [],
          failure: [
            { min: 400, max: 400 },
            { min: 401, max: 401 },
            { min: 403, max: 403 },
          ],
        },
      },
    ],
  });
});

test('parsing is idempotent: a parsed config parses to itself', () => {
  const c: ProxyConfig = parseProxyConfig({
    ...minimal,
    bodyLimit: '1.5kb',
    trustProxy: ['loopback', '10.0.0.0/8'],
    lockedResponse: { status: 401, body: { error: 'x' }, headers: { 'WWW-Authenticate': 'Basic' } },
    mimic: { samples: 50 },
    routes: [
      {
        method: 'put',
        path: '/orgs/:org/login',
        factor: 'totp',
        user: { from: 'form', name: 'u' },
        org: { from: 'param', name: 'org', allow: ['o-1', 'o-2'] },
        judge: {
          success: ['3xx', 200],
          failure: ['400-499'],
          preset: 'oauth2-token',
          rules: [{ status: [200], json: 'error', verdict: 'failure' }],
        },
      },
    ],
  });
  expect(c.bodyLimit).toBe(1536);
  expect(c.routes[0]!.method).toBe('PUT');
  expect(c.routes[0]!.judge.success).toEqual([
    { min: 300, max: 399 },
    { min: 200, max: 200 },
  ]);
  expect(parseProxyConfig(c)).toEqual(c);
});

test('a worked YAML example parses', () => {
  const yaml = `
upstream: http://zitadel-login:3000
timeoutMs: 10000
trustProxy: [loopback, 10.0.0.0/8]
bodyLimit: 32kb
lockedResponse:
  status: 401
  headers: { content-type: application/json }
  body: { error: invalid_grant }
routes:
  - method: POST
    path: /ui/login/password
    factor: password
    user: { from: form, name: loginName, lowercase: true, trim: true }
    org: { from: header, name: x-zitadel-orgid, default: "69629023906488334", allow: ["69629023906488334"] }
    judge: { success: [302], failure: [200, 401] }
  - path: /v2/sessions
    user: { from: json, name: checks.user.loginName }
    org: { fixed: "69629023906488334" }
`;
  const c = parseProxyConfig(parseYaml(yaml));
  expect(c.routes).toHaveLength(2);
  expect(c.routes[0]!.judge.failure).toEqual([
    { min: 200, max: 200 },
    { min: 401, max: 401 },
  ]);
  expect(proxyConfigSchema.safeParse(parseYaml(yaml)).success).toBe(true);
});

test.each([
  [{ ...minimal, upstream: 'ftp://x' }, 'proxy.upstream: expected an http:// or https:// URL'],
  [{ ...minimal, upstream: 'http://auth:8080/base' }, 'proxy.upstream: expected an origin only'],
  [{ ...minimal, upstream: 'not a url' }, 'proxy.upstream: expected a URL'],
  [{ ...minimal, timeoutMs: 0 }, 'proxy.timeoutMs: expected an integer from 1 to 3600000'],
  [{ ...minimal, bodyLimit: '12 parsecs' }, 'proxy.bodyLimit: expected a number of bytes'],
  [{ ...minimal, trustProxy: ['10.0.0.0/99'] }, 'proxy.trustProxy: '],
  [{ ...minimal, routes: [] }, 'proxy.routes: expected at least one login route'],
  [{ ...minimal, colour: 'red' }, 'proxy.colour: unknown option'],
  [
    { ...minimal, routes: [{ path: 'login', user: { from: 'json', name: 'u' } }] },
    'proxy.routes[0].path: expected a path starting with /',
  ],
  [
    { ...minimal, routes: [{ path: '/login', user: { from: 'body', name: 'u' } }] },
    'proxy.routes[0].user.from: expected one of json, form, header, query, param',
  ],
  [
    { ...minimal, routes: [{ path: '/login', factor: 'pin', user: { from: 'json', name: 'u' } }] },
    'proxy.routes[0].factor: expected one of password',
  ],
  [
    { ...minimal, routes: [{ path: '/login', user: { from: 'param', name: 'u' } }] },
    'proxy.routes[0].user.name: names no parameter of the path /login',
  ],
  [
    { ...minimal, routes: [{ path: '/login', user: { from: 'json', name: 'u' }, org: { fixed: '' } }] },
    'proxy.routes[0].org',
  ],
  [
    {
      ...minimal,
      routes: [{ path: '/login', user: { from: 'json', name: 'u' }, judge: { failure: ['2xx'] } }],
    },
    'proxy.routes[0].judge.failure[0]: overlaps success 200-299',
  ],
  [
    {
      ...minimal,
      routes: [{ path: '/login', user: { from: 'json', name: 'u' }, judge: { success: ['600'] } }],
    },
    'proxy.routes[0].judge.success[0]: expected a status',
  ],
  [
    {
      ...minimal,
      routes: [
        {
          path: '/login',
          user: { from: 'json', name: 'u' },
          org: { from: 'header', name: 'x-zitadel-orgid' },
        },
      ],
    },
    'proxy.routes[0].org.allow: the org is read from the client (header x-zitadel-orgid), which could name a fresh org per guess',
  ],
  [
    {
      ...minimal,
      routes: [
        {
          path: '/login',
          user: { from: 'json', name: 'u' },
          org: { from: 'json', name: 'org', default: 'z', allow: ['a'] },
        },
      ],
    },
    'proxy.routes[0].org.default: is not in org.allow',
  ],
  [
    {
      ...minimal,
      routes: [
        {
          path: '/login',
          user: { from: 'json', name: 'u' },
          judge: { rules: [{ status: [200], equals: ['x'], verdict: 'failure' }] },
        },
      ],
    },
    'proxy.routes[0].judge.rules[0].equals: equals needs json',
  ],
  [{ ...minimal, mimic: { samples: 0 } }, 'proxy.mimic'],
  [
    { ...minimal, lockedResponse: { status: 99 } },
    'proxy.lockedResponse.status: expected an integer from 200 to 599',
  ],
  [
    { ...minimal, lockedResponse: { status: 401, headers: { 'x-a': 'b\r\nc' } } },
    'proxy.lockedResponse.headers.x-a: expected a header value',
  ],
])('an invalid section names its field (%#)', (raw, message) => {
  expect(() => parseProxyConfig(raw)).toThrow(message);
});

test('createProxy validates its options and its config', () => {
  const engine = new LockoutEngine({ store: new MemoryStore({ purgeIntervalMs: 0 }) });
  try {
    expect(() => createProxy({ engine: {} as LockoutEngine, config: minimal })).toThrow(
      'engine must be a LockoutEngine',
    );
    expect(() => createProxy({ engine, config: { ...minimal, upstream: 'nope' } })).toThrow('proxy.upstream');
    expect(() =>
      createProxy({ engine, config: minimal, onStoreError: 'fail-open' } as unknown as ProxyOptions),
    ).toThrow("onStoreError is the engine's option now");
  } finally {
    engine.close();
  }
});

test.each([
  ['/login', '/login'],
  ['/LOGIN/', '/LOGIN'],
  ['//a///b/', '/a/b'],
  ['/a/./b/../c', '/a/c'],
  ['/../../login', '/login'],
  ['/log%69n', '/login'],
  ['/%256cogin', '/login'],
  ['/a%2Fb', '/a/b'],
  ['/login;jsessionid=1/x;y', '/login/x'],
  ['\\login', '/login'],
  ['/%E2%9C%93', '/✓'],
  ['/%FF', '/\uFFFD'],
])('normalizePath(%s) = %s', (input, expected) => {
  expect(normalizePath(input)).toBe(expected);
});
