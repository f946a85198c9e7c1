/**
 * createApiRouter hands a request to the settings and users routers only when its path can match
 * one of their routes. The paths are read off the routers' own routes (routePrefixes), so a route
 * added to either router is reachable without keeping a second list in step.
 */
import { Router, type ErrorRequestHandler } from 'express';
import { createLockout } from '../../src';
import { routePrefixes } from '../../src/express/routers';
import { ROUTES } from '../../src/sidecar/openapi';

const concrete = (path: string) => path.replace(/\{[^}]+\}/g, 'x-1');

describe('routePrefixes', () => {
  it("matches every path a router's routes can match, case-insensitively, and nothing else", () => {
    const router = Router();
    router.get('/a/:id/b', (_req, res) => res.end());
    router.post('/c/d', (_req, res) => res.end());
    const onError: ErrorRequestHandler = (_err, _req, res, _next) => res.end();
    router.use(onError);
    const paths = routePrefixes(router);
    expect(paths).toBeInstanceOf(RegExp);
    for (const p of ['/a/1/b', '/A/x', '/c/d', '/c/d/', '/C/D']) expect(paths!.test(p)).toBe(true);
    for (const p of ['/b', '/x/a/', '/c', '/cd']) expect(paths!.test(p)).toBe(false);
  });

  it('is undefined (no filtering) when a layer other than a route or an error handler could answer any path', () => {
    const router = Router();
    router.get('/a', (_req, res) => res.end());
    router.use((_req, _res, next) => next());
    expect(routePrefixes(router)).toBeUndefined();
  });

  it('the settings and users routers: each documented route of theirs passes their filter, no other route does', () => {
    const lockout = createLockout({
      tokens: [{ name: 't', token: 'route-prefixes-token-01', org: 'o', permissions: ['policy.read'] }],
      onError: () => undefined,
    });
    const filters = {
      settings: routePrefixes(lockout.routers.settings()),
      users: routePrefixes(lockout.routers.users()),
    };
    for (const tag of ['settings', 'users'] as const) {
      const filter = filters[tag];
      expect(filter).toBeInstanceOf(RegExp);
      const own = ROUTES.filter((r) => r.tag === tag);
      expect(own.length).toBeGreaterThan(3);
      for (const r of own) expect([r.path, filter!.test(concrete(r.path))]).toEqual([r.path, true]);
      for (const r of ROUTES.filter((x) => x.tag === 'checks' || x.tag === 'attempts' || x.tag === 'otp')) {
        expect([r.path, filter!.test(concrete(r.path))]).toEqual([r.path, false]);
      }
    }
    void lockout.close();
  });
});
