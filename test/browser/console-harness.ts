/**
 * What the browser tests share: a real sidecar (memory store, in process, on a free port) with
 * tokens of different powers, the Debian Chromium driven by playwright-core (no browser
 * download; a new empty profile per run), API calls made over HTTP as any client would, and
 * screenshots saved under test-artifacts/ (git-ignored).
 */
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { PERMISSIONS } from '../../src/http/auth';
import { parseConfig, type SidecarConfig } from '../../src/sidecar/config';
import { createLogger } from '../../src/sidecar/logger';
import { startSidecar, type SidecarHandle } from '../../src/sidecar/server';
import { readAnswer } from '../helpers/http';

export const CHROMIUM = process.env.LOCKGATE_CHROMIUM ?? '/usr/bin/chromium';

/** The browser binary, or an error that says how to get one (no browser is downloaded). */
export function chromiumPath(): string {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `the browser tests need Chromium at ${CHROMIUM}: apt-get install chromium (Debian; .ci/run does), or set LOCKGATE_CHROMIUM`,
    );
  }
  return CHROMIUM;
}

/** How the tests launch Chromium: headless, no sandbox (CI containers run as root), nothing fetched in the background. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
export const ARTIFACTS = path.resolve(__dirname, '../../test-artifacts');

/** Every permission on every org. */
export const ADMIN = 'console-admin-token-0001';
/** A helpdesk that may read users and settings of org-a and org-b, but change nothing. */
export const VIEWER = 'console-viewer-token-0002';
/** A helpdesk of org-a and org-b that may unlock, without instance settings. */
export const HELPDESK = 'console-helpdesk-token-0003';

export interface Harness {
  readonly sidecar: SidecarHandle;
  /** The sidecar's configuration (for reloadAuth). */
  readonly config: SidecarConfig;
  readonly browser: Browser;
  /** A new page in a new context (empty storage); its console errors and off-origin requests are recorded. */
  page(): Promise<ConsolePage>;
  close(): Promise<void>;
}

export interface ConsolePage {
  readonly page: Page;
  readonly context: BrowserContext;
  /** Console errors, uncaught exceptions and CSP violations seen by the page. */
  readonly problems: string[];
  /** Requests to any other origin than the sidecar's. */
  readonly foreignRequests: string[];
}

export async function startHarness(): Promise<Harness> {
  const config = parseConfig({
    server: { host: '127.0.0.1', port: 0 },
    instance: { id: 'console-test', maxPasswordAttempts: 5, maxOtpAttempts: 5 },
    log: { level: 'silent' },
    auth: {
      tokens: [
        { name: 'admin', token: ADMIN, org: 'org-a', orgs: ['*'], permissions: [...PERMISSIONS] },
        {
          name: 'viewer',
          token: VIEWER,
          org: 'org-a',
          orgs: ['org-a', 'org-b'],
          permissions: ['user.read', 'policy.read'],
        },
        {
          name: 'helpdesk',
          token: HELPDESK,
          org: 'org-a',
          orgs: ['org-a', 'org-b'],
          permissions: ['user.read', 'user.write', 'policy.read', 'policy.write', 'policy.delete'],
        },
      ],
    },
  });
  const sidecar = await startSidecar(config, { logger: createLogger('silent') });
  let browser: Browser;
  try {
    // chromium.launch runs the browser on a new empty profile (a temporary user-data-dir that
    // playwright removes when the browser closes).
    browser = await chromium.launch({ executablePath: chromiumPath(), args: CHROMIUM_ARGS });
  } catch (error) {
    await sidecar.close();
    throw error;
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  const origin = new URL(sidecar.url).origin;
  const contexts: BrowserContext[] = [];
  return {
    sidecar,
    config,
    browser,
    async page() {
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      contexts.push(context);
      context.setDefaultTimeout(8000);
      const page = await context.newPage();
      const problems: string[] = [];
      const foreignRequests: string[] = [];
      page.on('console', (m) => {
        // A refused request is logged as "Failed to load resource": its URL says which.
        if (m.type() === 'error') problems.push(`${m.text()} ${m.location().url}`.trim());
      });
      page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
      page.on('request', (r) => {
        if (new URL(r.url()).origin !== origin) foreignRequests.push(r.url());
      });
      return { page, context, problems, foreignRequests };
    },
    async close() {
      for (const c of contexts) await c.close().catch(() => undefined);
      await browser.close();
      await sidecar.close();
    },
  };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

/** A call of the sidecar's API, as a client outside the browser makes it. */
export async function api(
  sidecar: SidecarHandle,
  method: string,
  route: string,
  options: { token?: string; org?: string; body?: unknown } = {},
): Promise<{ status: number; body: Json }> {
  const headers: Record<string, string> = { authorization: `Bearer ${options.token ?? ADMIN}` };
  if (options.org) headers['x-zitadel-orgid'] = options.org;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${sidecar.url}${route}`, {
    method,
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const answer = await readAnswer(res);
  return { status: answer.status, body: answer.body as Json };
}

/** Locks `userId` in `org` through the API (an admin lock). */
export async function lockUser(sidecar: SidecarHandle, org: string, userId: string): Promise<void> {
  const res = await api(sidecar, 'POST', `/v2/users/${encodeURIComponent(userId)}/lock`, { org });
  if (res.status !== 200) throw new Error(`lock ${userId}: ${res.status}`);
}

/** One failed password attempt of `userId` (reserved and settled as a failure through the API). */
export async function failOnce(sidecar: SidecarHandle, org: string, userId: string): Promise<Json> {
  const reserved = await api(sidecar, 'POST', '/v1/attempts', { org, body: { userId, factor: 'password' } });
  if (reserved.status !== 201) throw new Error(`reserve ${userId}: ${reserved.status}`);
  const settled = await api(sidecar, 'POST', `/v1/attempts/${reserved.body.attemptId}/failure`, { org });
  if (settled.status !== 200) throw new Error(`settle ${userId}: ${settled.status}`);
  return settled.body;
}

/** The user's state as the API answers it. */
export async function userState(sidecar: SidecarHandle, org: string, userId: string): Promise<string> {
  const res = await api(sidecar, 'GET', `/v1/users/${encodeURIComponent(userId)}/lockout`, { org });
  return res.body.state as string;
}

/** Opens the console and signs in with `token` (typed, then Enter: the keyboard path). */
export async function signIn(p: ConsolePage, sidecar: SidecarHandle, token: string): Promise<void> {
  await p.page.goto(`${sidecar.url}/console/`);
  await p.page.getByLabel('Token').fill(token);
  await p.page.getByLabel('Token').press('Enter');
  await p.page.getByRole('navigation', { name: 'Pages', exact: true }).waitFor();
}

/** Saves a screenshot of the page as test-artifacts/<name>.png. */
export async function screenshot(p: ConsolePage, name: string): Promise<string> {
  const file = path.join(ARTIFACTS, `${name}.png`);
  await p.page.screenshot({ path: file, fullPage: true });
  return file;
}
