// Drives stackctl's admin page (/admin/ui/) in headless Chromium, the way a
// user would: log in, add rules, see a route work, try to inject HTML, change
// the default backend and the password. Run by tests/integration/admin_ui.rs
// against a real `stackctl up`; by hand:
//
//   STACKCTL_URL=http://127.0.0.1:7860 ADMIN_PASSWORD=... BACKEND_URL=http://127.0.0.1:9001 \
//   EXPECT_PATH=/hello.txt EXPECT_TEXT='hello' NEW_PASSWORD=... OUT_DIR=/tmp/shots node admin_ui.mjs
//
// Against tests/ui/mock_admin.py (no proxying): add MOCK=1.
//
// PERSIST=on: the stack has a `persist:` section; the Backups section is
// driven (back up, preview, restore behind the typed id, the status card
// following). DATA_FILE: a persisted file the script changes between the
// backup and the restore, and checks afterwards. ONLY_BACKUPS=1 skips the
// route steps. PERSIST=off: the page must say persistence is off.
//
// Uses Debian's chromium (CHROMIUM overrides /usr/bin/chromium); never downloads a browser.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`admin_ui.mjs: set ${name} (see the top of this file)`);
    process.exit(2);
  }
  return v;
}

const BASE = need('STACKCTL_URL').replace(/\/$/, '');
const PASSWORD = need('ADMIN_PASSWORD');
const NEW_PASSWORD = need('NEW_PASSWORD');
const BACKEND = need('BACKEND_URL');
const OUT_DIR = need('OUT_DIR');
const MOCK = process.env.MOCK === '1';
const EXPECT_PATH = MOCK ? '' : need('EXPECT_PATH');
const EXPECT_TEXT = MOCK ? '' : need('EXPECT_TEXT');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const XSS_ID = '<img src=x onerror=alert(1)>';
const TIMEOUT = 15000;
const PERSIST = process.env.PERSIST || (MOCK ? 'on' : 'off');
const DATA_FILE = process.env.DATA_FILE || '';
const ONLY_BACKUPS = process.env.ONLY_BACKUPS === '1';
/** A backup or restore answers when pushed / restarted: allow for it. */
const SLOW = 90000;

mkdirSync(OUT_DIR, { recursive: true });

const problems = []; // things that must not happen anywhere during the run
const posted = []; // bodies the page POSTed to /admin/routes.json
let page;

function step(text) {
  console.log(`• ${text}`);
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

async function text(selector) {
  return (await page.locator(selector).textContent({ timeout: TIMEOUT })) ?? '';
}

async function waitText(selector, needle) {
  const loc = page.locator(selector);
  await loc.filter({ hasText: needle }).first().waitFor({ state: 'visible', timeout: TIMEOUT })
    .catch(async () => {
      const got = await loc.first().textContent().catch(() => '(missing)');
      throw new Error(`${selector} never showed ${JSON.stringify(needle)}; it shows ${JSON.stringify(got)}`);
    });
}

/** The ids in the rules table, in order, as the user reads them. */
async function ruleIds() {
  return page.locator('#rules-body td.rule-id').allTextContents();
}

function rowOf(id) {
  return page.locator('#rules-body tr').filter({ has: page.locator('td.rule-id code', { hasText: id }) });
}

/** Empty strings, `{}` and `[]` anywhere in a posted body: what the original saved (defect 17). */
function empties(value, path = '$') {
  if (value === '' || value === null) return [path];
  if (Array.isArray(value)) {
    return value.length === 0 ? [path] : value.flatMap((v, i) => empties(v, `${path}[${i}]`));
  }
  if (typeof value === 'object') {
    const keys = Object.keys(value);
    return keys.length === 0 ? [path] : keys.flatMap((k) => empties(value[k], `${path}.${k}`));
  }
  return [];
}

async function fillRule({ id, prefix, backend, strip }) {
  await page.click('#add-rule');
  await page.locator('#editor').waitFor({ state: 'visible', timeout: TIMEOUT });
  if (prefix !== undefined) await page.fill('#f-path_prefix', prefix);
  if (id !== undefined) await page.fill('#f-id', id);
  if (backend !== undefined) await page.fill('#f-backend', backend);
  if (strip) await page.check('#f-strip_prefix');
}

async function saveRuleExpectClosed() {
  await page.click('#rule-save');
  await page.locator('#editor').waitFor({ state: 'hidden', timeout: TIMEOUT }).catch(async () => {
    const errs = [await text('#rule-problems'), await text('#rule-server-error')].filter(Boolean).join(' | ');
    throw new Error(`the rule editor stayed open: ${errs}`);
  });
}

async function login(password) {
  await page.fill('#login-password', password);
  await page.click('#login-submit');
}

async function fetchThroughGateway(context, path) {
  const res = await context.request.get(BASE + path, { maxRedirects: 0, timeout: TIMEOUT });
  return { status: res.status(), body: await res.text() };
}

/** Add a rule through the API behind the page's back, as another admin would. */
async function changeElsewhere(context, id) {
  const api = `${BASE}/admin/routes.json`;
  const password = { 'X-Admin-Password': PASSWORD };
  const current = await context.request.get(api, { headers: password });
  check(current.status() === 200, `GET routes.json from the test → ${current.status()}`);
  const table = await current.json();
  table.rules.push({ id, action: 'proxy', backend: BACKEND, match: { path_prefix: `/${id}/` } });
  const changed = await context.request.post(api, {
    headers: { ...password, 'If-Match': current.headers()['etag'] || '*', 'Content-Type': 'application/json' },
    data: JSON.stringify({ default_backend: table.default_backend || undefined, rules: table.rules }),
  });
  check(changed.status() === 200, `the test's own change → ${changed.status()} ${await changed.text()}`);
}

/** The text of the status card's row `label` (e.g. "Gateway · Routes"), or null. */
async function statusValue(label) {
  const rows = page.locator('#status-summary .kv-row');
  const n = await rows.count();
  for (let i = 0; i < n; i++) {
    if ((await rows.nth(i).locator('dt').textContent()) === label) return rows.nth(i).locator('dd').textContent();
  }
  return null;
}

/** Poll `f` until it returns something truthy (then that), or fail with `what`. */
async function until(what, f, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await page.waitForTimeout(100);
  }
}

async function backups() {
  step('Backups: the state is shown, the status card does not say persistence is off');
  await waitText('#persist-state', 'Remote');
  await page.locator('#snapshots-part').waitFor({ state: 'visible', timeout: TIMEOUT });
  const restored = await until('the status card', () => statusValue('Restored'));
  check(!restored.includes('persistence is off'), `Restored: ${restored}`);
  const rowsBefore = await page.locator('#snapshots-body tr').count();
  const backupBefore = await text('#backup-list');

  step('back up now: progress while it runs, then the new snapshot is listed');
  if (DATA_FILE) writeFileSync(DATA_FILE, 'kept by the snapshot\n');
  await page.click('#backup-now');
  if (MOCK) await waitText('#backups-progress', 'Backup running');
  await page.locator('#backups-message').filter({ hasText: /Snapshot|Nothing changed/ })
    .waitFor({ state: 'visible', timeout: SLOW });
  const said = await text('#backups-message');
  console.log(`  page said: ${said}`);
  check(/^Snapshot [0-9a-f]{12} taken/.test(said), `a snapshot was taken: ${said}`);
  await until('the new snapshot in the list', async () => (await page.locator('#snapshots-body tr').count()) === rowsBefore + 1);
  await until('the status card to follow the backup', async () => (await text('#backup-list')) !== backupBefore);
  check(await page.locator('#backups-progress').isHidden(), 'the progress line is gone');
  step('the live state after a push: last push, write lease, next snapshot (also on the status card)');
  for (const key of ['Last push', 'Write lease', 'Next snapshot']) await waitText('#persist-state', key);
  await waitText('#backup-list', 'Next snapshot');

  step('preview restoring it (a dry run): the changed file is listed, as text');
  if (DATA_FILE) writeFileSync(DATA_FILE, 'changed after the snapshot\n');
  const newest = page.locator('#snapshots-body tr').first();
  const id = (await newest.locator('code').textContent()).trim();
  await newest.locator('button.preview').click();
  await page.locator('#restore-confirm-part').waitFor({ state: 'visible', timeout: SLOW });
  const preview = await text('#restore-preview');
  console.log(`  preview: ${preview.replace(/\s+/g, ' ').slice(0, 300)}`);
  if (DATA_FILE) {
    const name = DATA_FILE.split('/').pop();
    check(preview.includes(name) && preview.includes('changed'), `the preview lists ${name} as changed`);
  } else {
    check(preview.includes('<i>x</i>.txt'), 'the file name is shown literally');
    check((await page.locator('#restore-preview i').count()) === 0, 'no HTML from a file name');
  }
  if (DATA_FILE) check(readFileSync(DATA_FILE, 'utf8').startsWith('changed'), 'a preview changes nothing');
  await page.screenshot({ path: join(OUT_DIR, 'admin-ui-restore.png') });

  step('restore only after typing the snapshot id');
  check(await page.locator('#restore-submit').isDisabled(), 'Restore is disabled before the id is typed');
  await page.fill('#restore-confirm', 'deadbeef');
  check(await page.locator('#restore-submit').isDisabled(), 'a wrong id keeps it disabled');
  await page.fill('#restore-confirm', id);
  check(await page.locator('#restore-submit').isEnabled(), 'the right id enables it');
  const backupBeforeRestore = await text('#backup-list');
  await page.click('#restore-submit');
  if (MOCK) await waitText('#restore-progress', 'Restore running');
  await page.locator('#restore-done, #restore-error').filter({ hasText: /./ }).first()
    .waitFor({ state: 'visible', timeout: SLOW });
  const error = await page.locator('#restore-error').isVisible() ? await text('#restore-error') : '';
  check(!error, `the restore failed: ${error}`);
  const done = await text('#restore-done');
  console.log(`  page said: ${done}`);
  check(done.startsWith(`Restored snapshot ${id}`) && done.includes('To undo, restore snapshot'), `restored: ${done}`);
  if (DATA_FILE) {
    await until('the file back as it was in the snapshot', async () => {
      try {
        return readFileSync(DATA_FILE, 'utf8') === 'kept by the snapshot\n';
      } catch {
        return false;
      }
    }, SLOW);
  }
  await page.click('#restore-cancel');
  step('the undo snapshot is listed and the status card followed');
  await until('the undo snapshot in the list', async () => (await page.locator('#snapshots-body tr').count()) >= rowsBefore + 2, SLOW);
  await until('the status card to follow the restore', async () => (await text('#backup-list')) !== backupBeforeRestore);
  await page.screenshot({ path: join(OUT_DIR, 'admin-ui-backups.png'), fullPage: true });
}

async function main() {
  const userDataDir = mkdtempSync(join(tmpdir(), 'stackctl-ui-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
    colorScheme: 'light',
  });
  try {
    page = context.pages()[0] || (await context.newPage());
    page.on('dialog', async (d) => {
      problems.push(`a ${d.type()} dialog opened: ${d.message()}`);
      await d.dismiss();
    });
    page.on('pageerror', (e) => problems.push(`script error: ${e.message}`));
    page.on('console', (m) => {
      if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(`CSP: ${m.text()}`);
    });
    page.on('request', (r) => {
      if (r.method() === 'POST' && new URL(r.url()).pathname === '/admin/routes.json') {
        try {
          posted.push(JSON.parse(r.postData() || 'null'));
        } catch {
          problems.push(`posted a body that is not JSON: ${r.postData()}`);
        }
      }
    });

    step('open /admin/ui/ (with its CSP)');
    const res = await page.goto(`${BASE}/admin/ui/`, { waitUntil: 'load', timeout: TIMEOUT });
    check(res && res.status() === 200, `/admin/ui/ answered ${res && res.status()}`);
    const csp = res.headers()['content-security-policy'] || '';
    check(/script-src 'self'/.test(csp) && /frame-ancestors 'none'/.test(csp), `CSP header present: ${JSON.stringify(csp)}`);
    await page.locator('#login-password').waitFor({ state: 'visible', timeout: TIMEOUT });

    step('a wrong password is refused');
    await login('not-the-password');
    await waitText('#login-error', 'Wrong password');
    check(await page.locator('#app-view').isHidden(), 'the app stays hidden');

    step('log in');
    await login(PASSWORD);
    await page.locator('#app-view').waitFor({ state: 'visible', timeout: TIMEOUT });

    if (PERSIST === 'on') await backups();
    if (ONLY_BACKUPS) {
      check(problems.length === 0, `nothing bad happened:\n  ${problems.join('\n  ')}`);
      console.log('admin UI test passed');
      return;
    }
    if (PERSIST === 'off') {
      step('persistence is off: the page says so, and never "Restored: yes"');
      await waitText('#persist-state', 'Off');
      check(await page.locator('#backup-now').isHidden(), 'no Back up now without persistence');
      const restored = await until('the status card', () => statusValue('Restored'));
      check(restored.includes('persistence is off'), `Restored: ${restored}`);
    }
    const routesBefore = await until('the route count', () => statusValue('Gateway · Routes'));

    step('the editor checks a rule before sending it');
    await page.click('#add-rule');
    await page.click('#rule-save');
    await waitText('#rule-problems', 'at least one match condition');
    await waitText('#rule-problems', 'needs a backend');
    check(posted.length === 0, 'nothing was sent for an invalid rule');
    await page.fill('#f-path_prefix', '/admin/x/');
    await page.fill('#f-backend', 'ftp://nope');
    await page.click('#rule-save');
    await waitText('#rule-problems', '/admin/ is reserved');
    await waitText('#rule-problems', 'http:// URL');
    await page.click('#editor-cancel');

    step("the server's 400 message is shown next to the form");
    await fillRule({ id: 'outside', prefix: '/outside/', backend: 'http://10.9.8.7:80' });
    await page.click('#rule-save');
    await page.locator('#rule-server-error').waitFor({ state: 'visible', timeout: TIMEOUT });
    const serverError = await text('#rule-server-error');
    check(serverError.length > 0 && serverError !== 'HTTP 400', `a server message: ${JSON.stringify(serverError)}`);
    console.log(`  server said: ${serverError}`);
    await page.click('#editor-cancel');

    step('add a route to the backend (id derived from the prefix)');
    await fillRule({ prefix: '/site/', backend: BACKEND, strip: true });
    check((await page.inputValue('#f-id')) === 'site', 'the id follows the prefix');
    await saveRuleExpectClosed();
    await waitText('#routes-message', 'Saved site');
    check((await ruleIds()).includes('site'), 'the table lists site');

    step('the status card follows at once (route count)');
    const want = String((await ruleIds()).length);
    await until(`the route count ${want} (it was ${routesBefore})`, async () => (await statusValue('Gateway · Routes')) === want);

    if (!MOCK) {
      step('the new route works through the gateway');
      const got = await fetchThroughGateway(context, `/site${EXPECT_PATH}`);
      check(got.status === 200 && got.body.includes(EXPECT_TEXT),
        `GET /site${EXPECT_PATH} → ${got.status} ${JSON.stringify(got.body.slice(0, 200))}`);
      // And in the browser itself (a real navigation, not just the API client).
      const other = await context.newPage();
      const nav = await other.goto(`${BASE}/site${EXPECT_PATH}`, { timeout: TIMEOUT });
      check(nav && nav.status() === 200, `browser navigation to /site${EXPECT_PATH} → ${nav && nav.status()}`);
      check((await other.textContent('body')).includes(EXPECT_TEXT), 'the browser shows the backend file');
      await other.close();
    }

    step('an id full of HTML is shown as text');
    await fillRule({ id: XSS_ID, prefix: '/xss/', backend: BACKEND });
    await saveRuleExpectClosed();
    const ids = await ruleIds();
    check(ids.includes(XSS_ID), `the id appears literally: ${JSON.stringify(ids)}`);
    check((await page.locator('#rules-body img').count()) === 0, 'no <img> element was created');
    await rowOf(XSS_ID).scrollIntoViewIfNeeded();
    await page.screenshot({ path: join(OUT_DIR, 'admin-ui-xss.png') });
    await rowOf(XSS_ID).locator('button.edit').click();
    check((await page.inputValue('#f-id')) === XSS_ID, 'the editor shows the id literally');
    await page.click('#editor-cancel');

    step('reorder: move the HTML-id rule up');
    const before = await ruleIds();
    await rowOf(XSS_ID).locator('button', { hasText: '↑' }).click();
    await waitText('#routes-message', 'Moved');
    const after = await ruleIds();
    check(after.indexOf(XSS_ID) === before.indexOf(XSS_ID) - 1, `moved up: ${JSON.stringify(before)} → ${JSON.stringify(after)}`);

    step('a change made elsewhere is not overwritten (If-Match → 412)');
    await changeElsewhere(context, 'elsewhere');
    const del = rowOf(XSS_ID).locator('button.delete');
    await del.click();
    await del.click();
    await waitText('#routes-message', 'changed elsewhere');
    check((await ruleIds()).includes(XSS_ID), 'nothing was deleted on a stale table');
    await waitText('#rules-body', 'elsewhere'); // reloaded by itself
    await page.click('#reload');
    await waitText('#routes-message', 'Reloaded');

    step('…also not from the editor, which keeps what was typed');
    await rowOf('site').locator('button.edit').click();
    await page.fill('#f-priority', '7');
    await changeElsewhere(context, 'elsewhere-2');
    await page.click('#rule-save');
    await waitText('#rule-server-error', 'changed elsewhere');
    check((await page.inputValue('#f-priority')) === '7', 'the form keeps the edit');
    await saveRuleExpectClosed();
    const ids412 = await ruleIds();
    check(ids412.includes('elsewhere-2') && ids412.includes('site'), `both changes are kept: ${JSON.stringify(ids412)}`);
    check((await rowOf('site').locator('td').nth(2).textContent()) === '7', 'the edit was saved');

    step('delete (two clicks)');
    const del2 = rowOf(XSS_ID).locator('button.delete');
    await del2.click();
    await del2.click();
    await waitText('#routes-message', 'Deleted');
    check(!(await ruleIds()).includes(XSS_ID), 'the rule is gone');

    step('change the default backend');
    await page.fill('#default-backend', BACKEND);
    await page.click('#default-save');
    await waitText('#routes-message', 'Default backend saved');
    if (!MOCK) {
      const got = await fetchThroughGateway(context, EXPECT_PATH);
      check(got.status === 200 && got.body.includes(EXPECT_TEXT), `GET ${EXPECT_PATH} via the default → ${got.status}`);
    }

    step('the page never sent empty fields');
    check(posted.length >= 4, `the page saved ${posted.length} times`);
    for (const body of posted) {
      const empty = empties(body);
      check(empty.length === 0, `no empty values in ${JSON.stringify(body)}: ${empty.join(', ')}`);
    }

    step('the status panel lists the services');
    await page.click('#status-refresh');
    await page.locator('#services-body tr td code').first().waitFor({ state: 'visible', timeout: TIMEOUT });
    console.log(`  services: ${(await page.locator('#services-body td code').allTextContents()).join(', ')}`);

    step('screenshots');
    await page.screenshot({ path: join(OUT_DIR, 'admin-ui.png'), fullPage: true });
    await rowOf('site').locator('button.edit').click();
    await page.screenshot({ path: join(OUT_DIR, 'admin-ui-editor.png') });
    await page.click('#editor-cancel');
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.screenshot({ path: join(OUT_DIR, 'admin-ui-dark.png'), fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: join(OUT_DIR, 'admin-ui-mobile.png'), fullPage: true });
    await page.emulateMedia({ colorScheme: 'light' });
    await page.setViewportSize({ width: 1280, height: 900 });

    step('change the password');
    await page.fill('#new-password', 'short');
    await page.fill('#new-password-2', 'short');
    await page.click('#password-submit');
    await waitText('#password-error', 'at least 10');
    await page.fill('#new-password', NEW_PASSWORD);
    await page.fill('#new-password-2', NEW_PASSWORD + 'x');
    await page.click('#password-submit');
    await waitText('#password-error', 'differ');
    await page.fill('#new-password-2', NEW_PASSWORD);
    await page.click('#password-submit');
    await waitText('#password-ok', 'Password changed');

    step('log out; the old password no longer works, the new one does');
    await page.click('#logout');
    await page.locator('#login-view').waitFor({ state: 'visible', timeout: TIMEOUT });
    check((await page.locator('#rules-body tr').count()) === 0, 'logging out clears the table');
    await login(PASSWORD);
    await waitText('#login-error', 'Wrong password');
    await login(NEW_PASSWORD);
    await page.locator('#app-view').waitFor({ state: 'visible', timeout: TIMEOUT });

    step('a reload keeps the session (sessionStorage), and the page is still clean');
    await page.reload({ waitUntil: 'load' });
    await page.locator('#app-view').waitFor({ state: 'visible', timeout: TIMEOUT });
    check((await ruleIds()).includes('site'), 'the table is back after a reload');

    check(problems.length === 0, `nothing bad happened:\n  ${problems.join('\n  ')}`);
    console.log('admin UI test passed');
  } catch (e) {
    if (page) await page.screenshot({ path: join(OUT_DIR, 'failure.png'), fullPage: true }).catch(() => {});
    console.error(`admin UI test FAILED: ${e && e.message ? e.message : e}`);
    if (problems.length) console.error(`also:\n  ${problems.join('\n  ')}`);
    console.error(`screenshots in ${OUT_DIR}`);
    process.exitCode = 1;
  } finally {
    await context.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  }
}

await main();
