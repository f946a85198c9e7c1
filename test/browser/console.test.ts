/**
 * The admin console in a real browser (Chromium from Debian, driven by playwright-core) against
 * a real sidecar: sign in, the locked users table and its unlocks (one and bulk), user lookup,
 * settings with isDefault, the permissions a token lacks, the activity chart, and the page's
 * security headers, keyboard use and labels. Every test also checks that the page logged no error
 * (a CSP violation is one) and called no other origin. Screenshots of the main pages go to
 * test-artifacts/.
 */
import { existsSync } from 'node:fs';
import {
  ADMIN,
  HELPDESK,
  VIEWER,
  api,
  failOnce,
  lockUser,
  screenshot,
  signIn,
  startHarness,
  userState,
  type ConsolePage,
  type Harness,
} from './console-harness';

/**
 * What the functions run in the page (page.evaluate) use of the browser: this project's
 * TypeScript has no DOM library, so the few members are typed here.
 */
interface PageGlobals {
  readonly sessionStorage: { getItem(key: string): string | null };
  readonly document: {
    readonly cookie: string;
    readonly activeElement: { closest(selector: string): unknown } | null;
  };
}
/** The few members of a form control the label check reads. */
interface Control {
  readonly tagName: string;
  readonly type?: string;
  readonly id: string;
  readonly textContent: string | null;
  readonly labels?: ArrayLike<unknown> | null;
  getAttribute(name: string): string | null;
}
interface Canvas2d {
  readonly width: number;
  readonly height: number;
  getContext(
    type: '2d',
  ): { getImageData(x: number, y: number, w: number, h: number): { data: ArrayLike<number> } } | null;
}

let h: Harness;
let seq = 0;
const unique = (label: string): string => `${label}-${(seq += 1)}`;

beforeAll(async () => {
  h = await startHarness();
}, 60_000);
afterAll(async () => {
  await h?.close();
});

/** Switches the org of an every-org token (the typed org id of the picker). */
async function switchOrg(p: ConsolePage, org: string): Promise<void> {
  await p.page.getByLabel('Organization').fill(org);
  await p.page.getByRole('button', { name: 'Switch' }).click();
  // The console keeps the org it switched to (after GET /v1/me answered for it).
  await p.page.waitForFunction(
    (o) => (globalThis as unknown as PageGlobals).sessionStorage.getItem('lockgate.console.org') === o,
    org,
  );
}

/**
 * Every input, select and button of the page has an accessible name (a label, aria-label or
 * text): the form controls a screen reader user meets are all named.
 */
async function expectLabelled(p: ConsolePage): Promise<void> {
  const unnamed = await p.page.evaluate(() => {
    const doc = (globalThis as unknown as { document: { querySelectorAll(s: string): ArrayLike<unknown> } })
      .document;
    const controls = Array.from(doc.querySelectorAll('input, select, button')) as Control[];
    return controls
      .filter((c) => {
        if (c.type === 'hidden') return false;
        const labelled = (c.labels?.length ?? 0) > 0 || !!c.getAttribute('aria-label');
        return !labelled && !(c.tagName === 'BUTTON' && (c.textContent ?? '').trim().length > 0);
      })
      .map((c) => `${c.tagName}#${c.id}`);
  });
  expect(unnamed).toEqual([]);
}

async function openPage(p: ConsolePage, title: string): Promise<void> {
  await p.page
    .getByRole('navigation', { name: 'Pages', exact: true })
    .getByRole('link', { name: title })
    .click();
  await p.page.getByRole('heading', { level: 1, name: title }).waitFor();
}

/**
 * What every test ends with: nothing logged as an error (a CSP violation is one), nothing fetched
 * from elsewhere. `refused` lists the API answers the test provoked on purpose ("404 /events"):
 * the browser logs those as failed resources.
 */
function expectClean(p: ConsolePage, refused: readonly string[] = []): void {
  const expected = (m: string): boolean =>
    refused.some((r) => {
      const [status, part] = r.split(' ');
      return (
        m.startsWith(`Failed to load resource: the server responded with a status of ${status}`) &&
        m.includes(part!)
      );
    });
  expect(p.problems.filter((m) => !expected(m))).toEqual([]);
  expect(p.foreignRequests).toEqual([]);
}

test('the console is served with a strict CSP, no inline scripts or styles, no framing', async () => {
  const res = await fetch(`${h.sidecar.url}/console/`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
  const csp = res.headers.get('content-security-policy') ?? '';
  expect(csp).toContain("default-src 'none'");
  expect(csp).toMatch(/script-src 'self' 'sha256-[A-Za-z0-9+/]+=*'(;|$)/);
  expect(csp).toContain("style-src 'self'");
  expect(csp).toContain("connect-src 'self'");
  expect(csp).toContain("frame-ancestors 'none'");
  expect(csp).not.toContain('unsafe-inline');
  expect(csp).not.toContain('unsafe-eval');
  expect(csp).not.toMatch(/https?:/);
  expect(res.headers.get('x-frame-options')).toBe('DENY');
  expect(res.headers.get('x-content-type-options')).toBe('nosniff');
  const page = await res.text();
  expect(page).not.toMatch(/style=|<style/);
  // /console redirects to /console/ (relative module URLs resolve under it).
  const bare = await fetch(`${h.sidecar.url}/console`, { redirect: 'manual' });
  expect(bare.status).toBe(301);
  expect(bare.headers.get('location')).toBe('/console/');
  // The library modules come from this origin.
  for (const file of ['vendor/preact.mjs', 'vendor/preact-hooks.mjs', 'vendor/htm.mjs', 'vendor/uplot.mjs']) {
    const asset = await fetch(`${h.sidecar.url}/console/${file}`);
    expect({ file, status: asset.status, type: asset.headers.get('content-type') }).toEqual({
      file,
      status: 200,
      type: 'text/javascript; charset=utf-8',
    });
  }
});

test('sign in: a refused token stays on the form; the admin token signs in and sees every page', async () => {
  const p = await h.page();
  await p.page.goto(`${h.sidecar.url}/console/`);
  await screenshot(p, 'console-sign-in');
  await expectLabelled(p);
  await p.page.getByLabel('Token').fill('not-a-token');
  await p.page.getByRole('button', { name: 'Sign in' }).click();
  await expect(p.page.getByRole('alert').filter({ hasText: 'not accepted' }).textContent()).resolves.toBe(
    'This token is not accepted.',
  );
  await p.page.getByLabel('Token').fill(ADMIN);
  await p.page.getByLabel('Token').press('Enter');
  const nav = p.page.getByRole('navigation', { name: 'Pages', exact: true });
  await nav.waitFor();
  expect(await nav.getByRole('link').allTextContents()).toEqual([
    'Locked users',
    'User lookup',
    'Settings',
    'Activity',
  ]);
  // The token is kept for this tab: a reload stays signed in.
  await p.page.reload();
  await nav.waitFor();
  expect(await p.page.evaluate(() => (globalThis as unknown as PageGlobals).document.cookie)).toBe('');
  expectClean(p, ['401 /v1/me']);
});

test('locked users: a user locked through the API is listed; Unlock (confirmed) removes the row and the API agrees', async () => {
  const org = unique('org-unlock');
  const userId = unique('alice');
  const other = unique('bob');
  await failOnce(h.sidecar, org, userId);
  await lockUser(h.sidecar, org, userId);
  await lockUser(h.sidecar, org, other);
  const p = await h.page();
  await signIn(p, h.sidecar, ADMIN);
  await switchOrg(p, org);
  const row = p.page.locator(`tr[data-user="${userId}"]`);
  await row.waitFor();
  await expect(row.locator('td').nth(1).textContent()).resolves.toContain('pw 1');
  // The filter narrows the page; a user not on it is offered to the user lookup.
  await p.page.getByLabel('Filter this page by user id').fill(other);
  expect(await p.page.locator('tbody tr').count()).toBe(1);
  await p.page.getByLabel('Filter this page by user id').fill('nobody-here');
  await p.page.getByRole('link', { name: 'look up nobody-here' }).waitFor();
  await p.page.getByLabel('Filter this page by user id').fill('');
  await row.waitFor();
  await screenshot(p, 'console-locked-users');
  await expectLabelled(p);
  await row.getByRole('button', { name: `Unlock ${userId}` }).click();
  const dialog = p.page.getByRole('dialog', { name: `Unlock ${userId}?` });
  await dialog.waitFor();
  await dialog.getByRole('button', { name: 'Unlock' }).click();
  await row.waitFor({ state: 'detached' });
  await p.page
    .getByRole('status')
    .filter({ hasText: `Unlocked ${userId}.` })
    .waitFor();
  expect(await userState(h.sidecar, org, userId)).toBe('USER_STATE_ACTIVE');
  // The other locked user is still listed, and still locked.
  expect(await p.page.locator(`tr[data-user="${other}"]`).count()).toBe(1);
  expect(await userState(h.sidecar, org, other)).toBe('USER_STATE_LOCKED');
  const listed = await api(h.sidecar, 'GET', '/v1/lockouts', { org });
  expect(listed.body.users.map((u: { userId: string }) => u.userId)).toEqual([other]);
  expectClean(p);
});

test('locked users: cancelling the confirmation unlocks nobody; bulk unlock unlocks exactly the selection', async () => {
  const org = unique('org-bulk');
  const users = [unique('u1'), unique('u2'), unique('u3')];
  for (const u of users) await lockUser(h.sidecar, org, u);
  const p = await h.page();
  await signIn(p, h.sidecar, HELPDESK);
  // HELPDESK may act on org-a and org-b only: the picker offers exactly those.
  expect(await p.page.getByLabel('Organization').locator('option').allTextContents()).toEqual([
    'org-a',
    'org-b',
  ]);
  await p.page.close();

  const q = await h.page();
  await signIn(q, h.sidecar, ADMIN);
  await switchOrg(q, org);
  await q.page.locator(`tr[data-user="${users[2]}"]`).waitFor();
  await q.page.getByLabel(`Select ${users[0]}`).check();
  await q.page.getByLabel(`Select ${users[1]}`).check();
  await q.page.getByRole('button', { name: 'Unlock selected (2)' }).click();
  const dialog = q.page.getByRole('dialog', { name: 'Unlock 2 users?' });
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await dialog.waitFor({ state: 'detached' });
  expect(await userState(h.sidecar, org, users[0]!)).toBe('USER_STATE_LOCKED');
  await q.page.getByRole('button', { name: 'Unlock selected (2)' }).click();
  await q.page
    .getByRole('dialog', { name: 'Unlock 2 users?' })
    .getByRole('button', { name: 'Unlock' })
    .click();
  await q.page.locator(`tr[data-user="${users[0]}"]`).waitFor({ state: 'detached' });
  await q.page.locator(`tr[data-user="${users[1]}"]`).waitFor({ state: 'detached' });
  expect(await Promise.all(users.map((u) => userState(h.sidecar, org, u)))).toEqual([
    'USER_STATE_ACTIVE',
    'USER_STATE_ACTIVE',
    'USER_STATE_LOCKED',
  ]);
  expect(await q.page.locator('tbody tr').count()).toBe(1);
  expectClean(q);
});

test('locked users: a user unlocked meanwhile by someone else leaves the table on Unlock, without an error', async () => {
  const org = unique('org-meanwhile');
  const userId = unique('grace');
  await lockUser(h.sidecar, org, userId);
  const p = await h.page();
  await signIn(p, h.sidecar, ADMIN);
  await switchOrg(p, org);
  const row = p.page.locator(`tr[data-user="${userId}"]`);
  await row.waitFor();
  // Another admin unlocks the user while the page shows them.
  expect((await api(h.sidecar, 'POST', `/v2/users/${userId}/unlock`, { org })).status).toBe(200);
  await row.getByRole('button', { name: `Unlock ${userId}` }).click();
  await p.page.getByRole('dialog').getByRole('button', { name: 'Unlock' }).click();
  await row.waitFor({ state: 'detached' });
  expect(await p.page.getByRole('alert').filter({ hasText: 'Not unlocked' }).count()).toBe(0);
  expectClean(p, ['400 /unlock']);
});

test('user lookup: counters against the effective limits; Lock, then Unlock, then Password changed', async () => {
  const org = unique('org-lookup');
  const userId = unique('carol');
  await failOnce(h.sidecar, org, userId);
  await failOnce(h.sidecar, org, userId);
  const p = await h.page();
  await signIn(p, h.sidecar, ADMIN);
  await switchOrg(p, org);
  await openPage(p, 'User lookup');
  await p.page.getByLabel('User id').fill(userId);
  await p.page.getByLabel('User id').press('Enter');
  const password = p.page.getByRole('row', { name: /^Password/ });
  await password.waitFor();
  expect(await password.locator('td').allTextContents()).toEqual(['2', '5']);
  await expect(p.page.locator('.badge').first().textContent()).resolves.toBe('Active');
  await p.page.getByRole('button', { name: 'Lock' }).click();
  await p.page
    .getByRole('dialog', { name: `Lock ${userId}?` })
    .getByRole('button', { name: 'Lock' })
    .click();
  await p.page
    .getByRole('status')
    .filter({ hasText: `Locked ${userId}.` })
    .waitFor();
  expect(await userState(h.sidecar, org, userId)).toBe('USER_STATE_LOCKED');
  await screenshot(p, 'console-user-lookup');
  await expectLabelled(p);
  await p.page.getByRole('button', { name: 'Unlock' }).click();
  await p.page
    .getByRole('dialog', { name: `Unlock ${userId}?` })
    .getByRole('button', { name: 'Unlock' })
    .click();
  await p.page
    .getByRole('status')
    .filter({ hasText: `Unlocked ${userId}.` })
    .waitFor();
  expect(await userState(h.sidecar, org, userId)).toBe('USER_STATE_ACTIVE');
  await failOnce(h.sidecar, org, userId);
  await p.page.getByRole('button', { name: 'Password changed' }).click();
  await p.page.getByRole('status').filter({ hasText: 'Password counter' }).waitFor();
  const status = await api(h.sidecar, 'GET', `/v1/users/${userId}/lockout`, { org });
  expect(status.body.failedAttempts.password).toBe('0');
  // The events API (issue 14) answers the user's history, newest first, with who did it.
  const events = p.page.locator('ol.events li');
  await p.page.getByRole('heading', { name: 'Recent events' }).waitFor();
  await events.filter({ hasText: 'user.password_changed' }).waitFor();
  const lines = await events.allTextContents();
  expect(lines.map((l) => /user\.[a-z_]+/.exec(l)?.[0])).toEqual([
    'user.password_changed',
    'user.unlocked',
    'user.locked',
  ]);
  expect(lines.every((l) => l.includes(' by token admin'))).toBe(true);
  expectClean(p);
});

test('settings: inherited from instance, a bad value is refused in the form, save makes isDefault false, reset makes it true', async () => {
  const org = unique('org-settings');
  const p = await h.page();
  await signIn(p, h.sidecar, ADMIN);
  await switchOrg(p, org);
  await openPage(p, 'Settings');
  const source = p.page.getByTestId('org-source');
  await source.getByText('Inherited from instance').waitFor();
  const passwordField = p.page.locator('#org-maxPasswordAttempts');
  expect(await passwordField.inputValue()).toBe('5');
  await passwordField.fill('-3');
  await p.page.locator('#org-maxPasswordAttempts-error').getByText('Enter a whole number').waitFor();
  expect(await passwordField.getAttribute('aria-invalid')).toBe('true');
  await p.page.getByRole('button', { name: 'Save organization settings' }).click();
  expect((await api(h.sidecar, 'GET', '/management/v1/policies/lockout', { org })).body.isDefault).toBe(true);
  await passwordField.fill('3');
  await p.page.getByRole('button', { name: 'Save organization settings' }).click();
  await source.getByText('Custom').waitFor();
  const custom = await api(h.sidecar, 'GET', '/management/v1/policies/lockout', { org });
  expect(custom.body).toMatchObject({
    isDefault: false,
    policy: { maxPasswordAttempts: '3', maxOtpAttempts: '5' },
  });
  await screenshot(p, 'console-settings');
  await expectLabelled(p);
  // Saving the same values again: the API's 400 code 9, shown as a sentence.
  await p.page.getByRole('button', { name: 'Save organization settings' }).click();
  await p.page.getByRole('alert').filter({ hasText: 'Nothing to save' }).waitFor();
  await p.page.getByRole('button', { name: 'Reset to default' }).click();
  await p.page.getByRole('dialog').getByRole('button', { name: 'Reset' }).click();
  await source.getByText('Inherited from instance').waitFor();
  expect((await api(h.sidecar, 'GET', '/management/v1/policies/lockout', { org })).body.isDefault).toBe(true);
  // The admin token may also see and edit the instance defaults.
  await p.page.getByRole('heading', { name: 'Instance defaults' }).waitFor();
  expect(await p.page.getByRole('button', { name: 'Save instance defaults' }).count()).toBe(1);
  expectClean(p, ['400 /management/v1/policies/lockout']);
});

test('a token without user.write sees no Unlock, Lock or settings Save; a forged unlock with it is refused 403', async () => {
  const userId = unique('dave');
  await lockUser(h.sidecar, 'org-b', userId);
  const p = await h.page();
  await signIn(p, h.sidecar, VIEWER);
  await p.page.getByLabel('Organization').selectOption('org-b');
  const row = p.page.locator(`tr[data-user="${userId}"]`);
  await row.waitFor();
  expect(await p.page.getByRole('button', { name: /Unlock/ }).count()).toBe(0);
  expect(await p.page.getByRole('checkbox').count()).toBe(0);
  await openPage(p, 'User lookup');
  await p.page.getByLabel('User id').fill(userId);
  await p.page.getByRole('button', { name: 'Look up' }).click();
  await p.page.getByRole('row', { name: /^Password/ }).waitFor();
  expect(await p.page.getByRole('button', { name: /^(Lock|Unlock|Password changed)$/ }).count()).toBe(0);
  await openPage(p, 'Settings');
  await p.page.getByTestId('org-source').waitFor();
  expect(await p.page.getByRole('button', { name: 'Save' }).count()).toBe(0);
  expect(await p.page.getByRole('heading', { name: 'Instance defaults' }).count()).toBe(0);
  // The request the page would make, forged from the page with the same token.
  const forged = await p.page.evaluate(
    async ({ token, user }) => {
      const res = await fetch(`/v2/users/${encodeURIComponent(user)}/unlock`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'x-zitadel-orgid': 'org-b' },
      });
      return { status: res.status, body: await res.json() };
    },
    { token: VIEWER, user: userId },
  );
  expect(forged).toMatchObject({ status: 403, body: { code: 7 } });
  expect(await userState(h.sidecar, 'org-b', userId)).toBe('USER_STATE_LOCKED');
  expectClean(p, ['404 /events', '403 /unlock']);
});

test('activity: the chart draws the failures and locks counted this minute', async () => {
  const org = unique('org-activity');
  for (let i = 0; i < 4; i += 1) await failOnce(h.sidecar, org, unique('spray'));
  await lockUser(h.sidecar, org, unique('eve'));
  const p = await h.page();
  await signIn(p, h.sidecar, ADMIN);
  await switchOrg(p, org);
  await openPage(p, 'Activity');
  const totals = p.page.locator('.totals');
  await totals.locator('[data-series="failures"]').getByText('Failed checks: 4').waitFor();
  expect(await totals.locator('li').allTextContents()).toEqual([
    'Failed checks: 4',
    'Locks: 1',
    'Unlocks: 0',
  ]);
  const canvas = p.page.locator('.chart canvas');
  await canvas.waitFor();
  // Pixels of the failures series' colour (#b3261e) on the canvas: the line is drawn.
  const red = await canvas.evaluate((node) => {
    const el = node as unknown as Canvas2d;
    const ctx = el.getContext('2d');
    if (!ctx) return -1;
    const { data } = ctx.getImageData(0, 0, el.width, el.height);
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (
        Math.abs(data[i]! - 0xb3) < 24 &&
        Math.abs(data[i + 1]! - 0x26) < 24 &&
        Math.abs(data[i + 2]! - 0x1e) < 24
      )
        n += 1;
    }
    return n;
  });
  expect(red).toBeGreaterThan(0);
  await screenshot(p, 'console-activity');
  await expectLabelled(p);
  expectClean(p);
});

test('keyboard: Tab reaches Unlock with a visible focus, Enter opens the confirmation, focus stays in it, Escape cancels', async () => {
  const org = unique('org-keys');
  const userId = unique('frank');
  await lockUser(h.sidecar, org, userId);
  const p = await h.page();
  await signIn(p, h.sidecar, ADMIN);
  await switchOrg(p, org);
  const unlock = p.page.getByRole('button', { name: `Unlock ${userId}` });
  // Reached with Tab from the row's checkbox, and its focus is visible (an outline).
  await p.page.getByLabel(`Select ${userId}`).focus();
  await p.page.keyboard.press('Tab');
  await p.page.keyboard.press('Tab');
  expect(
    await unlock.evaluate((el) => el === (globalThis as unknown as PageGlobals).document.activeElement),
  ).toBe(true);
  expect(
    await unlock.evaluate(
      (el) =>
        (
          globalThis as unknown as {
            getComputedStyle(e: unknown): { outlineStyle: string; outlineWidth: string };
          }
        ).getComputedStyle(el).outlineStyle,
    ),
  ).toBe('solid');
  await p.page.keyboard.press('Enter');
  const dialog = p.page.getByRole('dialog', { name: `Unlock ${userId}?` });
  await dialog.waitFor();
  expect(
    await p.page.evaluate(
      () => (globalThis as unknown as PageGlobals).document.activeElement?.closest('dialog') !== null,
    ),
  ).toBe(true);
  await p.page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'detached' });
  expect(await userState(h.sidecar, org, userId)).toBe('USER_STATE_LOCKED');
  expectClean(p);
});

test('a token revoked after sign-in (auth reloaded without it): the next request returns to the sign-in form, saying why', async () => {
  const p = await h.page();
  await signIn(p, h.sidecar, HELPDESK);
  await p.page.getByRole('heading', { name: 'Locked users' }).waitFor();
  h.sidecar.reloadAuth({
    ...h.config,
    auth: { ...h.config.auth, tokens: h.config.auth.tokens.filter((t) => t.name !== 'helpdesk') },
  });
  try {
    await p.page.getByRole('button', { name: 'Refresh' }).click();
    await p.page.getByRole('alert').filter({ hasText: 'no longer accepted' }).waitFor();
    await p.page.getByLabel('Token').waitFor();
    expect(
      await p.page.evaluate(() =>
        (globalThis as unknown as PageGlobals).sessionStorage.getItem('lockgate.console.token'),
      ),
    ).toBeNull();
  } finally {
    h.sidecar.reloadAuth(h.config);
  }
  expectClean(p, ['401 /v1/lockouts']);
});

test('screenshots of the main pages were saved under test-artifacts/', () => {
  for (const name of [
    'console-sign-in',
    'console-locked-users',
    'console-user-lookup',
    'console-settings',
    'console-activity',
  ]) {
    expect({ name, saved: existsSync(`${__dirname}/../../test-artifacts/${name}.png`) }).toEqual({
      name,
      saved: true,
    });
  }
});
