// End-to-end checks of the auditor's console in headless Chromium (issue 14), started by
// tests/api/console_e2e.rs against a running service. Every check that misses throws; the
// process exits non-zero with the reason.
//
// Environment: CONSOLE_URL, API_TOKEN, GENUINE_ID, GENUINE_SID, ALTERED_ID, LOG_KEY, META_KEY,
// META_VALUE, EXPECTED_CSV (the CLI's export of the same filter), SCREENSHOT_DIR, CHROMIUM.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

const URL_ = env('CONSOLE_URL');
const TOKEN = env('API_TOKEN');
const GENUINE_ID = env('GENUINE_ID');
const GENUINE_SID = process.env.GENUINE_SID || '';
const ALTERED_ID = env('ALTERED_ID');
const LOG_KEY = env('LOG_KEY');
const META_KEY = env('META_KEY');
const META_VALUE = env('META_VALUE');
const EXPECTED_CSV = env('EXPECTED_CSV');
const SHOTS = env('SCREENSHOT_DIR');
const DELIVERY_TARGET = env('DELIVERY_TARGET');
const WRONG_TOKEN = 'llq_not-the-right-token-0000';
const TIMEOUT = 10_000;
const DESKTOP = { width: 1280, height: 900 };
const ZOOMED = { width: 640, height: 900 };

const started = Date.now();
let step = 'start';
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
function check(cond, msg) {
  if (!cond) throw new Error(`${step}: ${msg}`);
}
// A miss that does not stop the run (the later checks still run); the run fails at the end.
const misses = [];
function expect(cond, msg) {
  if (!cond) {
    misses.push(`${step}: ${msg}`);
    log(`  MISS: ${msg}`);
  }
}
function begin(name) {
  step = name;
  log(name);
}

const browser = await chromium.launch({
  executablePath: env('CHROMIUM'),
  headless: true,
  args: ['--no-sandbox'],
});
const failures = [];
try {
  const context = await browser.newContext({ viewport: DESKTOP, acceptDownloads: true });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();

  // Everything the page asks for, and everything it complains about.
  const requested = [];
  const cspErrors = [];
  const pageErrors = [];
  const otherConsoleErrors = [];
  page.on('request', (r) => requested.push(r.url()));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    if (/Content[- ]Security[- ]Policy/i.test(text)) cspErrors.push(text);
    else otherConsoleErrors.push(text);
  });
  page.on('pageerror', (e) => pageErrors.push(String(e && e.stack ? e.stack : e)));

  const hashOf = () => page.evaluate(() => location.hash);
  const h1 = () => page.getByRole('heading', { level: 1 });
  const tokenNotInHref = async () => {
    const href = await page.evaluate(() => location.href);
    check(!href.includes(TOKEN) && !href.includes(encodeURIComponent(TOKEN)), `the token is in location.href: ${href}`);
  };
  const goto = async (hash) => {
    await page.evaluate((hsh) => { location.hash = hsh; }, hash);
  };
  const noHorizontalScroll = async (what) => {
    const m = await page.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      inner: window.innerWidth,
    }));
    check(m.scroll <= m.inner + 1, `${what} scrolls sideways at 640 px (200% zoom): scrollWidth ${m.scroll} > ${m.inner}`);
  };
  const axeSource = await readFile(require.resolve('axe-core/axe.min.js'), 'utf8');
  const axeCheck = async (what) => {
    const has = await page.evaluate(() => typeof window.axe === 'object');
    if (!has) await page.evaluate(axeSource);
    const result = await page.evaluate(async () => {
      const r = await window.axe.run(document, { resultTypes: ['violations'] });
      window.axeRules = r.passes.length + r.violations.length + r.incomplete.length;
      return r.violations.map((v) => ({
        id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(' ')}: ${n.failureSummary}`),
      }));
    });
    const rules = await page.evaluate(() => window.axeRules);
    check(rules > 20, `axe-core ran only ${rules} rules on ${what}`);
    log(`  axe-core: ${rules} rules on ${what}, ${result.length} violations`);
    const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    for (const v of result.filter((x) => !bad.includes(x))) log(`  axe (${v.impact}) on ${what}: ${v.id}: ${v.help}`);
    check(bad.length === 0, `axe-core finds serious or critical violations on ${what}:\n${JSON.stringify(bad, null, 2)}`);
  };
  const shot = async (name) => {
    await page.setViewportSize(DESKTOP);
    await page.evaluate(() => document.activeElement && document.activeElement.blur());
    await page.screenshot({ path: path.join(SHOTS, name), fullPage: true });
  };

  // ---------------------------------------------------------------- sign-in
  begin('a wrong token is refused');
  await page.goto(URL_);
  await h1().filter({ hasText: 'Sign in' }).waitFor();
  const tokenInput = page.getByLabel('API token');
  await tokenInput.fill(WRONG_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'That token was refused' }).waitFor();
  check(await h1().filter({ hasText: 'Sign in' }).isVisible(), 'the sign-in form is gone after a refusal');
  check(await tokenInput.getAttribute('aria-invalid') === 'true', 'the refused token field is not marked invalid');
  check(await page.locator('#nav').isHidden(), 'the navigation shows before signing in');
  check(await page.evaluate(() => sessionStorage.length === 0), 'a refused token is kept in sessionStorage');

  begin('the right token signs in to the overview');
  await tokenInput.fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await h1().filter({ hasText: 'Overview' }).waitFor();
  check(await hashOf() === '#/overview', `after sign-in the hash is ${await hashOf()}`);
  await page.getByRole('region', { name: 'The ledger' }).getByText('Tree size').waitFor();
  await page.getByRole('table', { name: 'Logout requests by outcome' }).waitFor();
  await page.getByRole('table', { name: /Rejected requests by reason/ }).waitFor();
  const chart = page.locator('.chart canvas');
  await chart.first().waitFor();
  check(await page.locator('#nav-deliveries').isVisible(), 'Deliveries is not in the navigation though a target is configured');
  await tokenNotInHref();
  await axeCheck('the overview');
  await shot('overview.png');

  // ------------------------------------------------------------- keyboard
  begin('the keyboard reaches the navigation and sign-out, with a visible focus');
  await page.reload();
  await h1().filter({ hasText: 'Overview' }).waitFor();
  await page.getByRole('region', { name: 'The ledger' }).getByText('Tree size').waitFor();
  const reached = [];
  let navFocusVisible = false;
  let signOutReached = false;
  for (let i = 0; i < 8 && !signOutReached; i += 1) {
    await page.keyboard.press('Tab');
    const f = await page.evaluate(() => {
      const el = document.activeElement;
      if (!el || el === document.body) return null;
      const cs = getComputedStyle(el);
      return {
        text: (el.textContent || '').trim(),
        inNav: Boolean(el.closest('#nav')) && el.tagName === 'A',
        signOut: el.id === 'signout',
        focusVisible: el.matches(':focus-visible'),
        outline: cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0,
      };
    });
    if (!f) continue;
    reached.push(f.text);
    if (f.inNav && f.focusVisible && f.outline) navFocusVisible = true;
    if (f.signOut) {
      check(f.focusVisible && f.outline, 'the sign-out button has no visible focus outline');
      signOutReached = true;
    }
  }
  check(reached[0] === 'Skip to main content', `the first Tab stop is ${JSON.stringify(reached[0])}, not the skip link`);
  check(navFocusVisible, `Tab never put a visible focus on a navigation link: ${JSON.stringify(reached)}`);
  check(signOutReached, `Tab never reached the sign-out button: ${JSON.stringify(reached)}`);
  // The skip link moves the focus to the page's heading.
  await page.keyboard.press('Shift+Tab');
  for (let i = 0; i < 8; i += 1) {
    const isSkip = await page.evaluate(() => document.activeElement && document.activeElement.id === 'skip');
    if (isSkip) break;
    await page.keyboard.press('Shift+Tab');
  }
  await page.keyboard.press('Enter');
  check(await page.evaluate(() => document.activeElement && document.activeElement.tagName === 'H1'),
    'the skip link does not move the focus to the heading');
  // A navigation link followed with the keyboard.
  await page.getByRole('link', { name: 'Search', exact: true }).focus();
  await page.keyboard.press('Enter');
  await h1().filter({ hasText: 'Search the audit records' }).waitFor();

  // ---------------------------------------------------------------- search
  begin('search by session metadata, a small page size');
  const filters = page.getByRole('search', { name: 'Record filters' });
  await filters.getByLabel('Key 1', { exact: true }).fill(META_KEY);
  await filters.getByLabel('Value 1', { exact: true }).fill(META_VALUE);
  await filters.getByLabel('Page size').fill('2');
  await filters.getByRole('button', { name: 'Search', exact: true }).click();
  const results = page.getByRole('region', { name: 'Matching records' });
  const pageStatus = (n) => page.getByRole('status').filter({ hasText: new RegExp(`^Page ${n}: `) });
  await pageStatus(1).waitFor();
  const hash1 = await hashOf();
  const q1 = new URLSearchParams(hash1.split('?')[1] || '');
  check(hash1.startsWith('#/search?'), `the search is not in the hash: ${hash1}`);
  check(q1.get(`meta.${META_KEY}`) === META_VALUE, `the hash lacks meta.${META_KEY}=${META_VALUE}: ${hash1}`);
  check(q1.get('limit') === '2', `the hash lacks limit=2: ${hash1}`);
  await tokenNotInHref();

  const rowsNow = async () => results.locator('tbody tr').evaluateAll((trs) => trs.map((tr) => ({
    id: tr.querySelector('th').textContent.trim(),
    cells: [...tr.querySelectorAll('td')].map((td) => td.textContent.trim()),
  })));
  const metaOk = (r) => r.cells[r.cells.length - 1].split(' ').includes(`${META_KEY}=${META_VALUE}`);
  const page1 = await rowsNow();
  check(page1.length === 2, `page 1 shows ${page1.length} rows, not 2`);
  const seen = [];
  let pageRows = page1;
  let pages = 1;
  for (let n = 1; ; n += 1) {
    pages = n;
    for (const r of pageRows) {
      check(metaOk(r), `record ${r.id} on page ${n} is not of ${META_KEY}=${META_VALUE}: ${JSON.stringify(r.cells)}`);
      seen.push(r.id);
    }
    if (n === 1) {
      await axeCheck('the search results');
      await noHorizontalScrollAtZoom('the search results');
      await shot('search.png');
    }
    const next = page.getByRole('link', { name: 'Next page' });
    if (!(await next.count())) break;
    check(n < 20, 'more than 20 pages');
    await next.click();
    await pageStatus(n + 1).waitFor();
    const q = new URLSearchParams((await hashOf()).split('?')[1] || '');
    check(q.get(`meta.${META_KEY}`) === META_VALUE && q.get('limit') === '2' && q.get('cursor'),
      `page ${n + 1}'s hash lost the filters or the cursor: ${await hashOf()}`);
    pageRows = await rowsNow();
  }
  check(new Set(seen).size === seen.length, `a record shows on two pages: ${seen.join(', ')}`);
  check(seen.length >= 4, `only ${seen.length} records match ${META_KEY}=${META_VALUE}`);
  log(`  ${seen.length} records over the pages: ${seen.join(', ')}`);

  begin('page back to the first page');
  check(pages >= 3, `only ${pages} pages of 2`);
  for (let n = pages; n > 1; n -= 1) {
    await page.getByRole('link', { name: 'Previous page' }).click();
    await pageStatus(n - 1).waitFor();
  }
  check(await page.getByRole('link', { name: 'Previous page' }).count() === 0, 'page 1 has a previous page');
  const back1 = await rowsNow();
  check(JSON.stringify(back1) === JSON.stringify(page1),
    `page 1 after paging back differs:\n${JSON.stringify(page1)}\n${JSON.stringify(back1)}`);
  // The browser's own back button too.
  await page.getByRole('link', { name: 'Next page' }).click();
  await pageStatus(2).waitFor();
  await page.goBack();
  await pageStatus(1).waitFor();
  check(JSON.stringify(await rowsNow()) === JSON.stringify(page1), 'page 1 after the browser\'s back differs');

  // ---------------------------------------------------------------- export
  begin('the CSV export of these filters equals the CLI\'s');
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: 'CSV', exact: true }).click(),
  ]);
  check(download.suggestedFilename() === 'logouts.csv', `the download is named ${download.suggestedFilename()}`);
  const got = await readFile(await download.path(), 'utf8');
  const want = await readFile(EXPECTED_CSV, 'utf8');
  await page.getByRole('status').filter({ hasText: /^Downloaded logouts\.csv: / }).waitFor();
  const lines = (t) => t.split('\r\n').filter((l) => l !== '');
  check(lines(want).length >= 5, `the CLI export has ${lines(want).length - 1} rows`);
  if (got !== want) {
    const a = lines(got);
    const b = lines(want);
    const firstDiff = a.findIndex((l, i) => l !== b[i]);
    throw new Error(`${step}: the console's CSV (${a.length} lines) differs from the CLI's (${b.length} lines); first difference at line ${firstDiff + 1}:\n console: ${a[firstDiff]}\n CLI:     ${b[firstDiff]}`);
  }
  const csvIds = lines(got).slice(1).map((l) => l.split(',')[0]);
  check(JSON.stringify([...csvIds].sort()) === JSON.stringify([...seen].sort()),
    `the export's ids ${csvIds.join(',')} are not the search's ${seen.join(',')}`);

  // ----------------------------------------------------------------- records
  begin(`the proof of the genuine record ${GENUINE_ID} holds`);
  const proofStatus = page.locator('.proof-status[role="status"]');
  const proofResult = () => proofStatus.filter({ hasText: /^Proof (holds|FAILS): / });
  await goto(`#/record/${GENUINE_ID}`);
  await h1().filter({ hasText: `Record ${GENUINE_ID}: accepted` }).waitFor();
  await proofResult().waitFor();
  const keyField = page.getByLabel(/^Log public key/);
  check(await keyField.inputValue() === LOG_KEY, `the key field holds ${await keyField.inputValue()}, not the service's key`);
  // The auditor's own copy of the key, checked again on request.
  await keyField.fill(LOG_KEY);
  await proofStatus.evaluate((el) => { el.textContent = ''; });
  await page.getByRole('button', { name: 'Check the proof' }).click();
  await proofResult().waitFor();
  const held = await proofStatus.textContent();
  check(held.startsWith(`Proof holds: record ${GENUINE_ID} `), `the genuine record's proof: ${held}`);
  await page.getByText('The record shown above is the record this proof carries.').waitFor();
  await page.getByRole('table', { name: 'Session metadata pairs' }).getByText(META_VALUE).waitFor();
  // The verification facts name the key set the token was checked against (issue 14: "the
  // verification facts (algorithm, key id, key-set digest)"), the digest the proof carries.
  const fact = (term) => page.locator('dl.facts dt').filter({ hasText: new RegExp(`^${term.replace(/[()]/g, '\\$&')}$`) })
    .locator('xpath=following-sibling::dd[1]');
  check(await fact('Algorithm (alg)').textContent() === 'RS256', 'the verification facts lack the algorithm');
  check(await fact('Key id (kid)').textContent() === 'rsa-1', 'the verification facts lack the key id');
  const provenDigest = (await fact('Key set digest (from the proven record)').textContent()).trim();
  check(/^[0-9a-f]{64}$/.test(provenDigest), `the proven record's key set digest is ${provenDigest}`);
  const shownDigest = (await fact('Key set digest').textContent()).trim();
  expect(shownDigest === provenDigest,
    `the Verification section shows the key set digest as ${JSON.stringify(shownDigest)}, not the record's ${provenDigest}`);
  await tokenNotInHref();
  await axeCheck('a record');
  await noHorizontalScrollAtZoom('a record');
  await shot('record.png');

  begin(`the proof of the altered record ${ALTERED_ID} fails`);
  await goto(`#/record/${ALTERED_ID}`);
  await h1().filter({ hasText: `Record ${ALTERED_ID}: ` }).waitFor();
  await proofResult().waitFor();
  const failed = await proofStatus.textContent();
  check(failed.startsWith('Proof FAILS: '), `the altered record's proof: ${failed}`);
  check(/altered/.test(failed), `the failure does not say the record was altered: ${failed}`);
  check(await proofStatus.evaluate((el) => el.classList.contains('bad')), 'the failure is not shown as bad');
  // A key that is not the log's: the genuine record's proof fails too.
  await goto(`#/record/${GENUINE_ID}`);
  await h1().filter({ hasText: `Record ${GENUINE_ID}: accepted` }).waitFor();
  await proofResult().waitFor();
  const [name, id] = LOG_KEY.split('+');
  await keyField.fill(`${name}+${id}+${Buffer.alloc(33, 1).toString('base64')}`);
  await proofStatus.evaluate((el) => { el.textContent = ''; });
  await page.getByRole('button', { name: 'Check the proof' }).click();
  await proofResult().waitFor();
  const wrongKey = await proofStatus.textContent();
  check(wrongKey.startsWith('Proof FAILS: '), `a wrong key still says: ${wrongKey}`);

  // ---------------------------------------------------------------- session
  begin('the session check');
  await page.getByRole('link', { name: 'Session check', exact: true }).click();
  await h1().filter({ hasText: 'Session check' }).waitFor();
  await page.getByLabel('Session id (sid)').fill(GENUINE_SID);
  await page.getByRole('button', { name: 'Check', exact: true }).click();
  await page.getByText(/^Logged out at .*, by record \d+\.$/).waitFor();
  check(await page.getByRole('link', { name: /^record \d+$/ }).count() === 1, 'no link to the logout record');
  check((await hashOf()).includes(`sid=${encodeURIComponent(GENUINE_SID)}`), `the session check is not in the hash: ${await hashOf()}`);
  await axeCheck('the session check');
  await noHorizontalScrollAtZoom('the session check');
  await shot('session.png');

  // ------------------------------------------------------- reflow (overview)
  begin('the overview reflows at 200% zoom');
  await page.getByRole('link', { name: 'Overview', exact: true }).click();
  await h1().filter({ hasText: 'Overview' }).waitFor();
  await page.getByRole('region', { name: 'The ledger' }).getByText('Tree size').waitFor();
  await chart.first().waitFor();
  await noHorizontalScrollAtZoom('the overview');
  await page.setViewportSize(DESKTOP);

  // ------------------------------------------------------------- deliveries
  begin('the deliveries page lists the dead deliveries and retries them');
  await page.getByRole('link', { name: 'Deliveries', exact: true }).click();
  await h1().filter({ hasText: 'Deliveries' }).waitFor();
  const section = page.getByRole('region', { name: `Target ${DELIVERY_TARGET}` });
  await section.waitFor();
  const dead = section.getByRole('region', { name: 'Dead' });
  await dead.getByText(/unknown session/).first().waitFor();
  await axeCheck('the deliveries page');
  await shot('deliveries.png');
  await section.getByRole('button', { name: `Retry all dead (${DELIVERY_TARGET})` }).click();
  await page.getByRole('status').filter({ hasText: new RegExp(`deliver(y|ies) of target ${DELIVERY_TARGET} due again`) }).waitFor();

  // ---------------------------------------------------------------- sign-out
  begin('sign out');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await h1().filter({ hasText: 'Sign in' }).waitFor();
  await page.getByRole('alert').filter({ hasText: 'You are signed out.' }).waitFor();
  check(await page.evaluate(() => sessionStorage.length === 0), 'the token stays in sessionStorage after signing out');
  await noHorizontalScrollAtZoom('the sign-in page');

  // ------------------------------------------------------- over the whole run
  begin('the token never travels in a URL; no policy violation, no script error');
  const leaks = requested.filter((u) => [TOKEN, WRONG_TOKEN].some((t) => u.includes(t) || u.includes(encodeURIComponent(t))));
  check(leaks.length === 0, `the token is in requested URLs:\n${leaks.join('\n')}`);
  check(requested.some((u) => u.includes('/api/v1/events/')), 'no API request was seen (the request log is broken)');
  check(requested.every((u) => u.startsWith(new URL(URL_).origin) || u.startsWith('blob:') || u.startsWith('data:')),
    `a request left the service's origin:\n${requested.filter((u) => !u.startsWith(new URL(URL_).origin)).join('\n')}`);
  check(cspErrors.length === 0, `Content-Security-Policy errors:\n${cspErrors.join('\n')}`);
  check(pageErrors.length === 0, `uncaught script errors:\n${pageErrors.join('\n')}`);
  for (const e of otherConsoleErrors) log(`  console error (not failing): ${e}`);
  log(`${requested.length} requests; ${misses.length ? `${misses.length} check(s) missed` : 'all checks passed'} in ${((Date.now() - started) / 1000).toFixed(1)} s`);

  async function noHorizontalScrollAtZoom(what) {
    await page.setViewportSize(ZOOMED);
    // Let layout (and the chart's ResizeObserver) settle.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    await noHorizontalScroll(what);
    await page.setViewportSize(DESKTOP);
  }
} catch (e) {
  failures.push(e);
} finally {
  await browser.close();
}
for (const m of misses) console.error(`MISSED: ${m}`);
if (failures.length) {
  console.error(`FAILED at "${step}": ${failures[0] && failures[0].stack ? failures[0].stack : failures[0]}`);
}
if (failures.length || misses.length) process.exit(1);
