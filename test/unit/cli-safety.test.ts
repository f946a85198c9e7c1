/**
 * The CLI never shows a secret: `config check` masks the issuer's URLs of auth.jwt too, and
 * LOCKGATE_URL with a user name or password is refused without being echoed.
 */
import { baseUrl } from '../../src/cli/client';
import { maskConfig } from '../../src/cli/mask';
import { parseConfig } from '../../src/sidecar/config';

test('config check masks credentials in auth.jwt URLs', () => {
  const config = parseConfig({
    auth: {
      jwt: {
        issuer: 'https://idp.example.com',
        jwksUri: 'https://svc:jwks-secret-1@idp.example.com/keys?api_key=query-secret-2',
        audience: 'a',
        permissions: { fixed: ['user.read'] },
      },
    },
  });
  const printed = JSON.stringify(maskConfig(config));
  expect(printed).not.toContain('jwks-secret-1');
  expect(printed).not.toContain('query-secret-2');
  expect(printed).toContain('https://idp.example.com');
});

test('LOCKGATE_URL with credentials is refused, and the message does not repeat them', () => {
  expect(() => baseUrl({ LOCKGATE_URL: 'http://admin:hunter2-secret@127.0.0.1:8080' })).toThrow(
    /^LOCKGATE_URL: must not contain a user name or password \(set LOCKGATE_TOKEN\)$/,
  );
  expect(baseUrl({ LOCKGATE_URL: 'http://127.0.0.1:8080/' })).toBe('http://127.0.0.1:8080');
});

test('config check masks webhook secrets and credentials in webhook URLs', () => {
  const secret = `whsec_${Buffer.alloc(32, 9).toString('base64')}`;
  const config = parseConfig({
    webhooks: {
      endpoints: [
        { name: 'hd', url: 'https://hook:url-secret-3@hooks.example.com/in?sig=query-secret-4', secret },
      ],
    },
  });
  const printed = JSON.stringify(maskConfig(config));
  expect(printed).not.toContain(secret);
  expect(printed).not.toContain(secret.slice('whsec_'.length, 20));
  expect(printed).not.toContain('url-secret-3');
  expect(printed).not.toContain('query-secret-4');
  expect(printed).toContain('hooks.example.com');
});
