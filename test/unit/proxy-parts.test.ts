/**
 * The proxy's parts on their own (issue 11 split them by concern): routing, judging, forwarding
 * headers, body sizes. The integration tests (test/integration/proxy-*) cover them through HTTP.
 */
import type { IncomingMessage } from 'node:http';
import { parseProxyConfig, parseSize } from '../../src/sidecar/proxy/config';
import { createUpstreamHeaders, downstreamHeaders, hasBody } from '../../src/sidecar/proxy/headers';
import { bodyRulesFor, judge } from '../../src/sidecar/proxy/judge';
import { compileRoutes, normalizePath } from '../../src/sidecar/proxy/routes';

const config = parseProxyConfig({
  upstream: 'http://auth:8080',
  routes: [
    { path: '/login', user: { from: 'json', name: 'user' } },
    {
      method: '*',
      path: '/users/:userId/login',
      user: { from: 'param', name: 'userId' },
      judge: { preset: 'oauth2-token' },
    },
  ],
});
const [login, byParam] = config.routes;

function request(rawHeaders: string[], remoteAddress = '203.0.113.7'): IncomingMessage {
  const headers: Record<string, string> = {};
  for (let i = 0; i < rawHeaders.length; i += 2) headers[rawHeaders[i]!.toLowerCase()] = rawHeaders[i + 1]!;
  return { rawHeaders, headers, socket: { remoteAddress } } as unknown as IncomingMessage;
}

describe('routes', () => {
  const find = compileRoutes(config.routes);

  test('a login by either reading of the path; anything else passes through', () => {
    expect(find('POST', '/login')?.route).toBe(login);
    expect(find('POST', '/LOGIN/')?.route).toBe(login);
    expect(find('POST', '/x/../%6cogin')?.route).toBe(login);
    expect(find('GET', '/login')).toBeUndefined();
    expect(find('POST', '/logout')).toBeUndefined();
    expect(normalizePath('/a/%252e%252e/b;x=1//c')).toBe('/b/c');
  });

  test('path parameters decoded once; two readings that disagree are ambiguous', () => {
    expect(find('PUT', '/users/al%20ice/login')).toEqual({
      route: byParam,
      params: { userId: 'al ice' },
      ambiguous: false,
    });
    // Express reads "%2561" as "%61", the normalized reading as "a".
    expect(find('POST', '/users/%2561/login')?.ambiguous).toBe(true);
    expect(find('POST', '/users/%E0%A4%A/login')?.ambiguous).toBe(true);
  });
});

describe('judge', () => {
  test('status lists by default; oauth2-token counts a 400 only for invalid_grant', () => {
    expect(judge(login!, 204, undefined)).toBe('success');
    expect(judge(login!, 401, undefined)).toBe('failure');
    expect(judge(login!, 500, undefined)).toBe('release');
    expect(bodyRulesFor(login!, 400)).toBe(false);
    expect(bodyRulesFor(byParam!, 400)).toBe(true);
    expect(judge(byParam!, 400, Buffer.from('{"error":"invalid_grant"}'))).toBe('failure');
    expect(judge(byParam!, 400, Buffer.from('{"error":"invalid_request"}'))).toBe('release');
    expect(judge(byParam!, 400, undefined)).toBe('release');
  });
});

describe('forwarding headers', () => {
  const raw = [
    'Host',
    'app.example',
    'Connection',
    'keep-alive, X-Drop',
    'X-Drop',
    '1',
    'X-Forwarded-For',
    '198.51.100.1',
    'X_Real_IP',
    '198.51.100.2',
    'Cookie',
    'a=1',
    'Cookie',
    'b=2',
  ];

  test("an untrusted peer's client-IP fields are dropped, repeated lines kept, X-Forwarded-* set", () => {
    const headers = createUpstreamHeaders({ trust: () => false, preserveHost: true })(request(raw));
    expect(headers).toEqual([
      'Cookie',
      'a=1',
      'Cookie',
      'b=2',
      'host',
      'app.example',
      'x-forwarded-for',
      '203.0.113.7',
      'x-forwarded-proto',
      'http',
      'x-forwarded-host',
      'app.example',
    ]);
  });

  test("a trusted peer's chain is extended", () => {
    const headers = createUpstreamHeaders({ trust: () => true, preserveHost: false })(request(raw));
    expect(headers).toContain('X_Real_IP');
    expect(headers).not.toContain('host');
    expect(headers.slice(headers.indexOf('x-forwarded-for'))).toEqual([
      'x-forwarded-for',
      '198.51.100.1, 203.0.113.7',
      'x-forwarded-proto',
      'http',
      'x-forwarded-host',
      'app.example',
    ]);
  });

  test('hop-by-hop fields and those named in Connection never come back', () => {
    expect(
      downstreamHeaders({ connection: 'x-secret', 'x-secret': '1', 'transfer-encoding': 'chunked', a: 'b' }),
    ).toEqual({ a: 'b' });
  });

  test('a request has a body when it declares one (type-is)', () => {
    expect(hasBody(request([]))).toBe(false);
    expect(hasBody(request(['Content-Length', '0']))).toBe(true);
    expect(hasBody(request(['Transfer-Encoding', 'chunked']))).toBe(true);
  });
});

describe('body sizes', () => {
  test.each([
    [2048, 2048],
    ['512b', 512],
    ['1.5kb', 1536],
    [' 2 MB ', 2 * 1024 * 1024],
    ['0.5', undefined],
    ['12 parsecs', undefined],
    ['1gb', undefined],
    [-1, undefined],
  ])('%p is %p bytes', (value, bytes) => {
    expect(parseSize(value)).toBe(bytes);
  });
});
