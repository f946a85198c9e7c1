import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  ConfigError,
  findDefaultConfigPath,
  loadConfig,
  parseConfig,
  type Env,
} from '../../src/sidecar/config';

const ROOT = path.join(__dirname, '..', '..');
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** A file reader over the real default.yaml plus in-memory files. */
function reader(files: Record<string, string> = {}) {
  return (file: string): string => {
    if (file in files) return files[file]!;
    if (file.startsWith(ROOT)) return readFileSync(file, 'utf8');
    const error = new Error(`ENOENT: ${file}`) as NodeJS.ErrnoException;
    error.code = 'ENOENT';
    throw error;
  };
}

function load(env: Env, files: Record<string, string> = {}) {
  return loadConfig(env, reader(files));
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('sidecar configuration', () => {
  it('finds config/default.yaml of the package', () => {
    expect(findDefaultConfigPath()).toBe(path.join(ROOT, 'config', 'default.yaml'));
  });

  it('starts from the defaults with no configuration at all', () => {
    const c = load({});
    expect(c.server).toEqual({ host: '127.0.0.1', port: 8080, bodyLimit: '100kb', trustProxy: false });
    expect(c.instance).toEqual({ id: 'default', maxPasswordAttempts: 10, maxOtpAttempts: 10 });
    expect(c.store.type).toBe('memory');
    expect(c.onStoreError).toBe('fail-closed');
    expect(c.auth.tokens).toEqual([]);
    expect(c.otp).toEqual({
      smsTtlSeconds: 300,
      emailTtlSeconds: 600,
      issueLimit: { points: 5, durationSeconds: 900 },
    });
    expect(c.leaseMs).toBe(30000);
    expect(c.log.level).toBe('info');
  });

  it('default.yaml and the schema defaults agree, and example.yaml as shipped changes nothing', () => {
    const fromFile = load({});
    expect(parseConfig({})).toEqual(fromFile);
    expect(loadConfig({}, reader(), { defaultsPath: null })).toEqual(fromFile);
    expect(load({ LOCKGATE_CONFIG: path.join(ROOT, 'config', 'example.yaml') })).toEqual(fromFile);
  });

  it('the environment wins over the file', () => {
    const file = [
      'server: { host: 0.0.0.0, port: 9000 }',
      'instance: { id: from-file, maxPasswordAttempts: 3 }',
      'store: { type: redis, redis: { cluster: { nodes: ["10.0.0.1:7000"] }, prefix: app } }',
      'log: { level: debug }',
      'onStoreError: fail-open',
    ].join('\n');
    const c = load(
      {
        LOCKGATE_CONFIG: '/etc/lockgate.yaml',
        LOCKGATE_PORT: '9100',
        LOCKGATE_HOST: '::1',
        LOCKGATE_INSTANCE_ID: 'from-env',
        LOCKGATE_REDIS_URL: 'redis://redis:6379/2',
        LOCKGATE_LOG_LEVEL: 'warn',
        LOCKGATE_ON_STORE_ERROR: 'fail-closed',
      },
      { '/etc/lockgate.yaml': file },
    );
    expect(c.server.port).toBe(9100);
    expect(c.server.host).toBe('::1');
    expect(c.instance).toEqual({ id: 'from-env', maxPasswordAttempts: 3, maxOtpAttempts: 10 });
    expect(c.store.type).toBe('redis');
    expect(c.store.redis.url).toBe('redis://redis:6379/2');
    expect(c.store.redis.cluster).toBeUndefined(); // the env URL replaces the file's connection
    expect(c.store.redis.prefix).toBe('app');
    expect(c.log.level).toBe('warn');
    expect(c.onStoreError).toBe('fail-closed');
  });

  it('LOCKGATE_OTP_PEPPER sets otp.pepper over the file, and an error names the variable', () => {
    const file = 'otp:\n  pepper: pepper-from-the-file-0123456789abcdef\n';
    const files = { '/c.yaml': file };
    expect(load({ LOCKGATE_CONFIG: '/c.yaml' }, files).otp.pepper).toBe(
      'pepper-from-the-file-0123456789abcdef',
    );
    const c = load(
      { LOCKGATE_CONFIG: '/c.yaml', LOCKGATE_OTP_PEPPER: 'pepper-from-the-env-0123456789abcdef' },
      files,
    );
    expect(c.otp.pepper).toBe('pepper-from-the-env-0123456789abcdef');
    expect(configError(() => load({ LOCKGATE_OTP_PEPPER: 'x' })).message).toContain(
      'otp.pepper (from LOCKGATE_OTP_PEPPER)',
    );
  });

  it('reads the reverse proxy from the environment, over the file', () => {
    const routes = JSON.stringify([
      { path: '/login', user: { from: 'json', name: 'username' }, org: { fixed: 'org-a' } },
    ]);
    const c = load({
      LOCKGATE_PROXY_UPSTREAM: 'http://127.0.0.1:3000',
      LOCKGATE_PROXY_ROUTES: routes,
      LOCKGATE_PROXY_PORT: '8081',
    });
    expect(c.proxy?.upstream).toBe('http://127.0.0.1:3000');
    expect(c.proxy?.routes[0]).toMatchObject({ path: '/login', factor: 'password', method: 'POST' });
    expect(c.proxy?.listen).toEqual({ host: '127.0.0.1', port: 8081 });
    // YAML works too, and the environment's upstream wins over the file's
    const f = load(
      { LOCKGATE_CONFIG: '/p.yaml', LOCKGATE_PROXY_UPSTREAM: 'http://auth:9000' },
      {
        '/p.yaml':
          'proxy:\n  upstream: http://old:1\n  routes:\n    - { path: /in, user: { from: form, name: u } }\n',
      },
    );
    expect(f.proxy?.upstream).toBe('http://auth:9000');
    expect(f.proxy?.routes[0]?.path).toBe('/in');
    expect(configError(() => load({ LOCKGATE_PROXY_ROUTES: '[{' })).message).toBe(
      'lockgate: invalid configuration: proxy.routes (from LOCKGATE_PROXY_ROUTES): expected a JSON or YAML list of routes',
    );
    // an upstream without routes names what is missing
    expect(configError(() => load({ LOCKGATE_PROXY_UPSTREAM: 'http://a:1' })).field).toBe('proxy.routes');
  });

  it('reads cluster and sentinel connections from the file', () => {
    const c = load(
      { LOCKGATE_CONFIG: '/c.yaml' },
      {
        '/c.yaml':
          'store:\n  type: redis\n  redis:\n    cluster:\n      nodes: ["a:7000", { host: b, port: 7001 }]\n',
      },
    );
    expect(c.store.redis.cluster?.nodes).toEqual([
      { host: 'a', port: 7000 },
      { host: 'b', port: 7001 },
    ]);
    const s = load(
      { LOCKGATE_CONFIG: '/s.yaml', SP: 'sentinel-pw' },
      {
        '/s.yaml':
          'store:\n  type: redis\n  redis:\n    sentinel: { sentinels: ["s1:26379"], name: mymaster, password: "${SP}" }\n',
      },
    );
    expect(s.store.redis.sentinel).toEqual({
      sentinels: [{ host: 's1', port: 26379 }],
      name: 'mymaster',
      password: 'sentinel-pw',
    });
  });

  it('a bad value is a ConfigError of one line naming the field', () => {
    const e = configError(() => load({ LOCKGATE_PORT: 'eighty' }));
    expect(e.message).toBe(
      'lockgate: invalid configuration: server.port (from LOCKGATE_PORT): expected an integer from 0 to 65535',
    );
    expect(e.message).not.toContain('\n');
    expect(e.field).toBe('server.port');
    expect(configError(() => load({ LOCKGATE_PORT: '65536' })).field).toBe('server.port');
    expect(configError(() => load({ LOCKGATE_LOG_LEVEL: 'loud' })).message).toContain(
      'log.level (from LOCKGATE_LOG_LEVEL): expected one of',
    );
    expect(configError(() => load({ LOCKGATE_ON_STORE_ERROR: 'open' })).field).toBe('onStoreError');
    expect(configError(() => load({ LOCKGATE_REDIS_URL: 'http://x' })).field).toBe('store.redis.url');
    const fileError = configError(() =>
      load({ LOCKGATE_CONFIG: '/c.yaml' }, { '/c.yaml': 'instance:\n  maxPasswordAttempts: -1\n' }),
    );
    expect(fileError.message).toBe(
      'lockgate: invalid configuration: instance.maxPasswordAttempts: expected an integer from 0 to 4294967295',
    );
  });

  it('an unknown key in the file is an error (typos do not pass silently)', () => {
    const e = configError(() =>
      load({ LOCKGATE_CONFIG: '/c.yaml' }, { '/c.yaml': 'server:\n  prot: 8081\n' }),
    );
    expect(e.field).toBe('server.prot');
    expect(e.message).toMatch(/^lockgate: invalid configuration: server\.prot: unknown option/);
    expect(configError(() => load({ LOCKGATE_CONFIG: '/c.yaml' }, { '/c.yaml': 'stores: {}\n' })).field).toBe(
      'stores',
    );
    expect(
      configError(() =>
        load(
          { LOCKGATE_CONFIG: '/c.yaml' },
          {
            '/c.yaml': 'auth:\n  tokens:\n    - { name: a, token: abc, permission: [user.read] }\n',
          },
        ),
      ).message,
    ).toContain('auth.tokens[0].permission: unknown option');
  });

  it('a missing file, bad YAML or a non-mapping is one clear line', () => {
    expect(configError(() => load({ LOCKGATE_CONFIG: '/missing.yaml' })).message).toBe(
      'lockgate: invalid configuration: LOCKGATE_CONFIG: cannot read /missing.yaml (ENOENT)',
    );
    const syntax = configError(() =>
      load({ LOCKGATE_CONFIG: '/bad.yaml' }, { '/bad.yaml': 'server:\n  port: [1,\n' }),
    );
    expect(syntax.message).toMatch(/^lockgate: invalid configuration: \/bad\.yaml(:\d+)?: YAML error: /);
    expect(syntax.message).not.toContain('\n');
    expect(
      configError(() => load({ LOCKGATE_CONFIG: '/l.yaml' }, { '/l.yaml': '- a\n- b\n' })).message,
    ).toContain('expected a YAML mapping');
    // An empty file is an empty configuration.
    expect(load({ LOCKGATE_CONFIG: '/e.yaml' }, { '/e.yaml': '# nothing\n' })).toEqual(load({}));
  });

  it('store.type and the Redis connection must agree', () => {
    expect(configError(() => parseConfig({ store: { type: 'redis' } })).field).toBe('store.type');
    expect(configError(() => parseConfig({ store: { redis: { url: 'redis://x:1' } } })).message).toContain(
      'store.type: is memory but store.redis.url is set',
    );
    expect(
      configError(() =>
        parseConfig({ store: { type: 'redis', redis: { url: 'redis://x:1', cluster: { nodes: ['a:1'] } } } }),
      ).field,
    ).toBe('store.redis.cluster');
  });

  describe('tokens', () => {
    const file = (tokens: string) => ({ '/t.yaml': `auth:\n  tokens:\n${tokens}` });

    it('interpolates ${ENV_VAR} in token values and keeps only digests', () => {
      const c = load(
        { LOCKGATE_CONFIG: '/t.yaml', HELPDESK_TOKEN: 'helpdesk-secret-1' },
        file(
          '    - name: org-a-helpdesk\n      token: "hd-${HELPDESK_TOKEN}"\n      org: org-a\n      orgs: [org-a]\n      permissions: [policy.read, user.read, user.write]\n',
        ),
      );
      expect(c.auth.tokens).toEqual([
        {
          name: 'org-a-helpdesk',
          sha256: sha256('hd-helpdesk-secret-1'),
          org: 'org-a',
          orgs: ['org-a'],
          permissions: ['policy.read', 'user.read', 'user.write'],
        },
      ]);
      expect(JSON.stringify(c)).not.toContain('helpdesk-secret-1');
    });

    it('an unset ${ENV_VAR} is an error naming the field and the variable', () => {
      const e = configError(() =>
        load(
          { LOCKGATE_CONFIG: '/t.yaml' },
          file('    - { name: a, token: "${NOT_SET}", permissions: [user.read] }\n'),
        ),
      );
      expect(e.message).toBe(
        'lockgate: invalid configuration: auth.tokens[0].token: environment variable NOT_SET (referenced as ${NOT_SET}) is not set',
      );
    });

    it('accepts sha256:<hex> token values and sha256 keys; defaults org to the instance and orgs to [org]', () => {
      const digest = sha256('checker-token');
      const c = load(
        { LOCKGATE_CONFIG: '/t.yaml', LOCKGATE_INSTANCE_ID: 'inst' },
        file(
          `    - { name: a, token: "sha256:${digest.toUpperCase()}", permissions: [lockout.check] }\n` +
            `    - { name: b, sha256: ${sha256('other')}, org: o, orgs: ["*"], permissions: [user.read] }\n`,
        ),
      );
      expect(c.auth.tokens).toEqual([
        { name: 'a', sha256: digest, org: 'inst', orgs: ['inst'], permissions: ['lockout.check'] },
        { name: 'b', sha256: sha256('other'), org: 'o', orgs: '*', permissions: ['user.read'] },
      ]);
    });

    it('refuses bad tokens with the field named', () => {
      const bad = (tokens: string) =>
        configError(() => load({ LOCKGATE_CONFIG: '/t.yaml' }, file(tokens))).message;
      expect(bad('    - { name: a, token: "sha256:abc", permissions: [user.read] }\n')).toContain(
        'auth.tokens[0].token: a "sha256:" token',
      );
      expect(bad('    - { name: a, permissions: [user.read] }\n')).toContain(
        'auth.tokens[0].token: set exactly one of token and sha256',
      );
      expect(bad('    - { name: a, token: x, permissions: [user.rea] }\n')).toContain(
        'auth.tokens[0].permissions[0]: expected one of',
      );
      expect(bad('    - { name: a, token: x, org: o, orgs: [p], permissions: [user.read] }\n')).toContain(
        'auth.tokens[0].orgs: must include the home org "o"',
      );
      expect(
        bad(
          '    - { name: a, token: x, permissions: [user.read] }\n    - { name: a, token: y, permissions: [user.read] }\n',
        ),
      ).toContain('auth.tokens[1].name: duplicate token name "a"');
      expect(
        bad(
          '    - { name: a, token: x, permissions: [user.read] }\n    - { name: b, token: x, permissions: [user.read] }\n',
        ),
      ).toContain('auth.tokens[1]: is the same token as auth.tokens[0]');
    });

    it('LOCKGATE_ADMIN_TOKEN adds an admin token with every permission on every org', () => {
      const c = load(
        { LOCKGATE_ADMIN_TOKEN: 'admin-secret', LOCKGATE_INSTANCE_ID: 'i1', LOCKGATE_CONFIG: '/t.yaml' },
        file(
          '    - { name: admin, token: file-admin, permissions: [user.read] }\n    - { name: b, token: y, permissions: [user.read] }\n',
        ),
      );
      expect(c.auth.tokens.map((t) => t.name)).toEqual(['b', 'admin']);
      const admin = c.auth.tokens[1]!;
      expect(admin).toMatchObject({ sha256: sha256('admin-secret'), org: 'i1', orgs: '*' });
      expect(admin.permissions).toHaveLength(8);
      // An empty variable counts as unset.
      expect(load({ LOCKGATE_ADMIN_TOKEN: '' }).auth.tokens).toEqual([]);
    });
  });

  it('validates the other sections', () => {
    expect(configError(() => parseConfig({ otp: { pepper: 'short' } })).message).toContain(
      'otp.pepper: expected at least 16 characters',
    );
    expect(parseConfig({ otp: { pepper: '${P}' } }, { P: 'p'.repeat(20) }).otp.pepper).toBe('p'.repeat(20));
    expect(
      configError(() => parseConfig({ password: { argon2: { memoryCost: 8, parallelism: 4 } } })).field,
    ).toBe('password.argon2.memoryCost');
    expect(configError(() => parseConfig({ server: { bodyLimit: 'lots' } })).field).toBe('server.bodyLimit');
    expect(
      parseConfig({ server: { bodyLimit: 2048, trustProxy: ['loopback', '10.0.0.0/8'] } }).server,
    ).toMatchObject({
      bodyLimit: 2048,
      trustProxy: ['loopback', '10.0.0.0/8'],
    });
    expect(configError(() => parseConfig({ leaseMs: 0 })).field).toBe('leaseMs');
    expect(configError(() => parseConfig({ instance: { id: '' } })).field).toBe('instance.id');
  });
});

describe('config/example.yaml', () => {
  const text = readFileSync(path.join(ROOT, 'config', 'example.yaml'), 'utf8');
  /** The commented block from the line `marker` to the line `end` (excluded), uncommented. */
  const block = (marker: string, end?: string): string => {
    const lines = text.split('\n');
    const from = lines.findIndex((l) => l.startsWith(marker));
    const to = end === undefined ? lines.length : lines.findIndex((l, i) => i > from && l.startsWith(end));
    expect(from).toBeGreaterThanOrEqual(0);
    return lines
      .slice(from, to)
      .map((l) => l.replace(/^(\s*)# ?/, '$1'))
      .join('\n');
  };

  it('its commented token examples parse', () => {
    const tokens = block('  # tokens:', '  # Permissions:');
    const c = load(
      { LOCKGATE_CONFIG: '/x.yaml', ORG_A_HELPDESK_TOKEN: 'helpdesk' },
      { '/x.yaml': `auth:\n${tokens}\n` },
    );
    expect(c.auth.tokens.map((t) => t.name)).toEqual(['org-a-helpdesk', 'login-service']);
  });

  it('its commented proxy section parses', () => {
    const c = load({ LOCKGATE_CONFIG: '/x.yaml' }, { '/x.yaml': block('# proxy:') });
    expect(c.proxy?.upstream).toBe('http://auth:8080');
    expect(c.proxy?.routes).toHaveLength(1);
  });

  it('its commented Redis connections parse', () => {
    for (const mode of ['url', 'cluster', 'sentinel']) {
      const lines = block('    # url:', '    tls:')
        .split('\n')
        .filter((l) => !l.trim().startsWith('#') && l.trim() !== '');
      // Keep one connection mode and the credentials.
      const kept: string[] = [];
      let current = '';
      for (const l of lines) {
        if (/^ {4}\S/.test(l)) current = l.trim().split(':')[0]!;
        if (current === mode || current === 'username' || current === 'password') kept.push(l);
      }
      const yaml = `store:\n  type: redis\n  redis:\n${kept.join('\n')}\n`;
      const c = load(
        { LOCKGATE_CONFIG: '/x.yaml', REDIS_PASSWORD: 'pw', REDIS_SENTINEL_PASSWORD: 'spw' },
        { '/x.yaml': yaml },
      );
      expect(c.store.redis[mode as 'url' | 'cluster' | 'sentinel']).toBeDefined();
    }
  });
});
