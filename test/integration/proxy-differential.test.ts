/**
 * G6 differential suite (issue 9): generated login requests go through lockgate, over real HTTP,
 * to an Express 5 reference upstream (express.json + express.urlencoded, and a first-wins JSON
 * reader) that records which user it evaluated. For every request, either lockgate refused it
 * (4xx, the upstream not reached) or the user lockgate counted is the user the upstream
 * evaluated (both folded: NFKC, trim, case-fold). Fixed seed; the count tried is printed.
 */
import http from 'node:http';
import fc from 'fast-check';
import { LockoutEngine } from '../../src/core/engine';
import type { ProxyLoginEvent } from '../../src/sidecar/proxy/proxy';
import { MemoryStore } from '../../src/store';
import { startProxy, type ProxyServer } from './proxy-harness';
import { foldName, startReference, type ReferenceUpstream } from './proxy-reference';

const SEED = 20261125;
const RUNS = 3000;
const USERS = ['alice', 'bob', 'straße', 'ǆemo'];
const ORG = 'diff';

let upstream: ReferenceUpstream;
let engine: LockoutEngine;
let gate: ProxyServer;
const events: ProxyLoginEvent[] = [];
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

beforeAll(async () => {
  upstream = await startReference(USERS);
  engine = new LockoutEngine({
    store: new MemoryStore({ purgeIntervalMs: 0 }),
    instanceId: 'differential',
    defaults: { maxPasswordAttempts: 1_000_000 },
  });
  gate = await startProxy({
    engine,
    config: {
      upstream: upstream.url,
      routes: [
        { path: '/login', user: { from: 'json', name: 'username' }, org: { fixed: ORG } },
        { path: '/form/login', user: { from: 'form', name: 'username' }, org: { fixed: ORG } },
        { path: '/v2/sessions', user: { from: 'json', name: 'checks.user.loginName' }, org: { fixed: ORG } },
        { path: '/fw/login', user: { from: 'json', name: 'username' }, org: { fixed: ORG } },
        { path: '/q/login', user: { from: 'query', name: 'username' }, org: { fixed: ORG } },
        { path: '/orgs/:org/users/:user/login', user: { from: 'param', name: 'user' }, org: { fixed: ORG } },
      ],
    },
    onLogin: (e) => events.push(e),
  });
});

afterAll(async () => {
  agent.destroy();
  await gate.close();
  await upstream.close();
  engine.close();
});

// ---- generators -------------------------------------------------------------------------------

/** Login names: the users, their spellings (case, space, width, ß/ss), decoys, odd values. */
const nameArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(...USERS),
  fc.constantFrom(
    'ALICE',
    ' alice',
    'Alice\t',
    'ａｌｉｃｅ',
    'STRASSE',
    'strasse',
    'ǅemo',
    'bob\u0000',
    'decoy',
    'x\ud800',
  ),
  fc.string({ maxLength: 6, unit: 'binary' }),
  fc.constantFrom(42, null, true, ['alice'], { $ne: 1 }),
);

type Entry = readonly [string, unknown];

/** Body fields, possibly duplicated, dotted, nested. */
const entriesArb: fc.Arbitrary<Entry[]> = fc
  .tuple(
    fc.array(
      fc.oneof(
        { arbitrary: fc.tuple(fc.constant('username'), nameArb), weight: 4 },
        fc.tuple(fc.constantFrom('Username', 'username ', '[username]', 'user%6Eame'), nameArb),
        {
          arbitrary: fc.tuple(fc.constant('checks'), fc.record({ user: fc.record({ loginName: nameArb }) })),
          weight: 3,
        },
        fc.tuple(fc.constantFrom('checks.user.loginName', 'checks.user'), nameArb),
        fc.tuple(fc.constant('checks'), fc.constant({ user: { loginName: 'alice', 'loginName ': 'bob' } })),
      ),
      { minLength: 0, maxLength: 3 },
    ),
    fc.constantFrom(true, true, true, false),
  )
  .map(([fields, withPassword]) => (withPassword ? [...fields, ['password', 'pw'] as const] : fields));

function renderJson(entries: readonly Entry[], escape: boolean): string {
  const text = `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`;
  // \u escapes decode to the same text in every JSON reader
  return escape ? text.replace(/a/g, '\\u0061') : text;
}

/** Percent-encodes every byte of the UTF-8 form but unreserved characters (lone surrogates become U+FFFD). */
function pct(s: string): string {
  let out = '';
  for (const byte of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9\-_.~]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function renderForm(entries: readonly Entry[], plus: boolean, malformed: boolean): string {
  const enc = (s: string) => {
    const e = pct(s);
    return plus ? e.replace(/%20/g, '+') : e;
  };
  const pairs = entries.map(([k, v]) => {
    const value = typeof v === 'string' ? v : JSON.stringify(v);
    return `${k.includes('%') ? k : enc(k)}=${enc(value)}`;
  });
  if (malformed) pairs.push('x=%zz');
  return pairs.join('&');
}

const contentTypeArb = fc.constantFrom(
  'application/json',
  'application/json',
  'application/x-www-form-urlencoded',
  'application/json',
  'application/json; charset=utf-8',
  'Application/JSON; Charset="UTF-8"',
  'application/json; charset=utf-16le',
  'application/x-www-form-urlencoded',
  'application/x-www-form-urlencoded; charset=utf-8',
  'application/x-www-form-urlencoded; charset=iso-8859-1',
  'text/plain',
  'application/vnd.api+json',
  'application/json;',
  undefined,
);

const PATHS = ['/login', '/form/login', '/v2/sessions', '/fw/login'];

const pathArb = fc
  .tuple(
    fc.oneof(
      { arbitrary: fc.constantFrom(...PATHS), weight: 4 },
      nameArb.map((u) => `/orgs/o/users/${typeof u === 'string' ? pct(u) : 'x'}/login`),
      fc.constantFrom('/orgs/o/users/a%2Fb/login', '/orgs/o/users/a%2541/login', '/orgs/o/users/%zz/login'),
      fc
        .array(
          fc.oneof(
            nameArb.map((u) => `username=${typeof u === 'string' ? pct(u) : 'x'}`),
            fc.constantFrom('username=%zz', '%5Busername%5D=alice', 'user%6Eame=bob', 'username', 'a=1'),
          ),
          { maxLength: 3 },
        )
        .map((pairs) => `/q/login?${pairs.join('&')}`),
    ),
    fc.array(
      fc.constantFrom('upper', 'slash', 'dot', 'dotdot', 'double', 'encode', 'semi', 'query', 'fragment'),
      {
        maxLength: 3,
      },
    ),
  )
  .map(([path, variants]) => {
    let p = path;
    for (const v of variants) {
      if (v === 'upper') p = p.toUpperCase();
      if (v === 'slash') p = `${p}/`;
      if (v === 'dot') p = `/.${p}`;
      if (v === 'dotdot') p = `/x/..${p}`;
      if (v === 'double') p = `/${p}`;
      if (v === 'encode') p = p.replace(/i/, '%69');
      if (v === 'semi') p = `${p};jsessionid=1`;
      if (v === 'query') p = `${p}?username=decoy&next=%2F`;
      if (v === 'fragment') p = `${p}#frag`;
    }
    return p;
  });

const requestArb = fc.record({
  path: pathArb,
  contentType: contentTypeArb,
  entries: entriesArb,
  as: fc.constantFrom('json', 'form'),
  escape: fc.boolean(),
  plus: fc.boolean(),
  // rarer: each refuses the whole request, which would hide the rest
  malformed: fc.constantFrom(false, false, false, false, true),
  bom: fc.constantFrom(false, false, false, false, true),
  utf16: fc.constantFrom(false, false, false, false, true),
});

type Generated = typeof requestArb extends fc.Arbitrary<infer T> ? T : never;

function send(path: string, headers: http.OutgoingHttpHeaders, body: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const url = new URL(gate.url);
    const req = http.request(
      { host: url.hostname, port: url.port, path, method: 'POST', headers, agent },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test(`G6: every generated login is refused or counted as the user the upstream evaluates (seed ${SEED}, ${RUNS} runs)`, async () => {
  let tried = 0;
  let refused = 0;
  let counted = 0;
  await fc.assert(
    fc.asyncProperty(requestArb, async (g: Generated) => {
      tried++;
      let text =
        g.as === 'json' ? renderJson(g.entries, g.escape) : renderForm(g.entries, g.plus, g.malformed);
      if (g.bom) text = `\ufeff${text}`;
      const body = g.utf16 ? Buffer.from(text, 'utf16le') : Buffer.from(text, 'utf8');
      const headers: http.OutgoingHttpHeaders = { 'content-length': body.length };
      if (g.contentType !== undefined) headers['content-type'] = g.contentType;
      events.length = 0;
      const seen = upstream.evaluations.length;
      const status = await send(g.path, headers, body);
      const evaluated = upstream.evaluations.slice(seen);
      const event = events[0];
      if (event && event.outcome === 'bad_request') {
        refused++;
        // refused: 4xx, and the upstream never saw it
        expect(status).toBeGreaterThanOrEqual(400);
        expect(status).toBeLessThan(500);
        expect(evaluated).toEqual([]);
        return;
      }
      for (const e of evaluated) {
        if (typeof e.user !== 'string') continue; // the upstream authenticates nobody
        counted++;
        // the upstream evaluated a credential: lockgate counted that very user
        expect(event?.userId).toBe(foldName(e.user));
      }
    }),
    { seed: SEED, numRuns: RUNS, endOnFailure: true },
  );

  console.log(
    `G6 differential: ${tried} requests tried, ${refused} refused by lockgate, ${counted} evaluated by the upstream and counted as the same user`,
  );
  expect(tried).toBe(RUNS);
  expect(counted).toBeGreaterThan(50);
  expect(refused).toBeGreaterThan(50);
}, 60_000);
