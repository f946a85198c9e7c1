/**
 * The admin console: a few static files (an HTML page, plain ES modules and CSS, no build step)
 * that call lockgate's own HTTP API from the browser with the caller's token. The sidecar serves
 * it at /console; apps mount `lockout.routers.console()` where they like.
 *
 * Every file is read once, when the handler is made, into a fixed table: a request names one of
 * those or falls through (no file system path is built from a request). Every answer carries a
 * strict Content-Security-Policy (no 'unsafe-inline' for scripts or styles, only this origin,
 * frame-ancestors 'none'): the one inline script, the import map that names the library
 * modules, is allowed by its SHA-256 hash.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { RequestHandler } from 'express';
import { invalidOption } from '../core/option-checks';

export interface ConsoleOptions {
  /**
   * Where the console finds the API routers, as an absolute path on this origin (default `/`:
   * the sidecar's, or routers mounted at the root of the app). E.g. `/admin` when the app mounts
   * `lockout.routers.all()` (or `settings()` and `users()`) at `/admin`.
   */
  readonly apiBase?: string;
}

interface Asset {
  readonly type: string;
  readonly body: Buffer;
  /** A strong validator, the file's SHA-256: a browser revalidates (no-cache) and gets 304 while it is unchanged. */
  readonly etag: string;
}

function makeAsset(type: string, body: Buffer): Asset {
  return { type, body, etag: `"${createHash('sha256').update(body).digest('base64url')}"` };
}

/** The console's own files (src/console/static; dist/cjs/console/static once built). */
const OWN_FILES: Readonly<Record<string, string>> = {
  '/app.js': 'text/javascript; charset=utf-8',
  '/api.js': 'text/javascript; charset=utf-8',
  '/pages.js': 'text/javascript; charset=utf-8',
  '/console.css': 'text/css; charset=utf-8',
  '/favicon.svg': 'image/svg+xml',
};

/** The library modules, served from the installed npm packages (dependencies of lockgate). */
const VENDOR_FILES: ReadonlyArray<{ url: string; pkg: string; file: string; type: string }> = [
  {
    url: '/vendor/preact.mjs',
    pkg: 'preact',
    file: 'dist/preact.mjs',
    type: 'text/javascript; charset=utf-8',
  },
  {
    url: '/vendor/preact-hooks.mjs',
    pkg: 'preact',
    file: 'hooks/dist/hooks.mjs',
    type: 'text/javascript; charset=utf-8',
  },
  { url: '/vendor/htm.mjs', pkg: 'htm', file: 'dist/htm.module.js', type: 'text/javascript; charset=utf-8' },
  {
    url: '/vendor/uplot.mjs',
    pkg: 'uplot',
    file: 'dist/uPlot.esm.js',
    type: 'text/javascript; charset=utf-8',
  },
  { url: '/vendor/uplot.css', pkg: 'uplot', file: 'dist/uPlot.min.css', type: 'text/css; charset=utf-8' },
];

/** The import map: the bare specifiers the modules import, resolved to the vendored files. */
const IMPORT_MAP = JSON.stringify({
  imports: {
    preact: './vendor/preact.mjs',
    'preact/hooks': './vendor/preact-hooks.mjs',
    htm: './vendor/htm.mjs',
    uplot: './vendor/uplot.mjs',
  },
});

/** The directory of the console's own files. */
export function consoleStaticDir(): string {
  return path.join(__dirname, 'static');
}

/** The directory of an installed package, found as Node finds packages (not through `exports`). */
function packageDir(pkg: string): string {
  for (const dir of require.resolve.paths(pkg) ?? []) {
    const candidate = path.join(dir, pkg);
    if (existsSync(path.join(candidate, 'package.json'))) return candidate;
  }
  throw new Error(`lockgate console: the package ${pkg} is not installed (a dependency of lockgate)`);
}

function escapeAttribute(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function page(apiBase: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="lockgate-api" content="${escapeAttribute(apiBase)}">
<title>lockgate console</title>
<link rel="icon" href="./favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="./vendor/uplot.css">
<link rel="stylesheet" href="./console.css">
<script type="importmap">${IMPORT_MAP}</script>
<script type="module" src="./app.js"></script>
</head>
<body>
<noscript>The lockgate console needs JavaScript.</noscript>
<div id="app"></div>
</body>
</html>
`;
}

/** The Content-Security-Policy of every console answer. */
export function consoleContentSecurityPolicy(): string {
  const importMapHash = createHash('sha256').update(IMPORT_MAP, 'utf8').digest('base64');
  return [
    "default-src 'none'",
    `script-src 'self' 'sha256-${importMapHash}'`,
    "style-src 'self'",
    "connect-src 'self'",
    "img-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

/**
 * A request handler serving the console; mount it under a path (`app.use('/console', …)`).
 * GET and HEAD of its files only; anything else falls through to the next handler.
 */
export function createConsoleHandler(options: ConsoleOptions = {}): RequestHandler {
  if (typeof options !== 'object' || options === null) throw invalidOption('console', 'must be an object');
  const apiBase = options.apiBase ?? '/';
  if (typeof apiBase !== 'string' || !/^\/[^\s?#\\]*$/.test(apiBase) || apiBase.startsWith('//')) {
    throw invalidOption(
      'console.apiBase',
      'must be an absolute path on this origin such as /admin (the console calls no other origin)',
    );
  }
  const assets = new Map<string, Asset>();
  assets.set(
    '/',
    makeAsset('text/html; charset=utf-8', Buffer.from(page(apiBase.replace(/\/+$/, '')), 'utf8')),
  );
  const own = consoleStaticDir();
  for (const [url, type] of Object.entries(OWN_FILES)) {
    assets.set(url, makeAsset(type, readFileSync(path.join(own, url.slice(1)))));
  }
  for (const v of VENDOR_FILES) {
    assets.set(v.url, makeAsset(v.type, readFileSync(path.join(packageDir(v.pkg), v.file))));
  }
  const csp = consoleContentSecurityPolicy();

  return (req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      next();
      return;
    }
    const asset = assets.get(req.path);
    if (!asset) {
      next();
      return;
    }
    // `/console` without its slash: relative URLs in the page resolve under it only with one.
    const url = req.originalUrl;
    const q = url.indexOf('?');
    const pathname = q < 0 ? url : url.slice(0, q);
    if (req.path === '/' && !pathname.endsWith('/')) {
      res.redirect(301, `${pathname}/`);
      return;
    }
    res.setHeader('Content-Security-Policy', csp);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('X-Frame-Options', 'DENY');
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
    res.setHeader('Cross-Origin-Resource-Policy', 'same-origin');
    res.setHeader('Cache-Control', 'no-cache');
    res.setHeader('ETag', asset.etag);
    const known = req.headers['if-none-match'];
    if (typeof known === 'string' && known.split(/\s*,\s*/).includes(asset.etag)) {
      res.statusCode = 304;
      res.end();
      return;
    }
    res.setHeader('Content-Type', asset.type);
    res.setHeader('Content-Length', String(asset.body.length));
    if (req.method === 'HEAD') res.end();
    else res.end(asset.body);
  };
}
