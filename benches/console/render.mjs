// The console's render time on a large store (issue 14: "on 1 million records, the overview
// and a search page render within 1 s of navigation"): headless Chromium, signed in once, then
// N times: navigate to the overview and wait until its tables, chart and ledger are shown;
// navigate to a search (a metadata filter, in the URL) and wait for its first page.
//
//   node benches/console/render.mjs   (env: CONSOLE_URL, API_TOKEN, [RUNS=5], [CHROMIUM],
//                                      [SEARCH='meta.org_id=org_acme'], [NOW=RFC 3339])
// NOW sets the page's clock (Date.now), so "the last 30 days" can be placed at the end of a
// benchmark store's data (benches/query fills 90 days ending 2026-11-20): the worst case.
// playwright-core comes from tests/console/node_modules (npm ci there).
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../../tests/console/package.json'));
const { chromium } = require('playwright-core');

const URL_ = process.env.CONSOLE_URL;
const TOKEN = process.env.API_TOKEN;
const RUNS = Number(process.env.RUNS || 5);
const SEARCH = process.env.SEARCH || 'meta.org_id=org_acme';
if (!URL_ || !TOKEN) {
  console.error('CONSOLE_URL and API_TOKEN are required');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
if (process.env.NOW) await page.clock.setFixedTime(new Date(process.env.NOW));
const h1 = (text) => page.getByRole('heading', { level: 1 }).filter({ hasText: text });
await page.goto(URL_);
await page.getByLabel('API token').fill(TOKEN);
await page.getByRole('button', { name: 'Sign in' }).click();
await h1('Overview').waitFor({ timeout: 60000 });

const overview = [];
const search = [];
for (let i = 0; i < RUNS; i += 1) {
  await page.goto(`${URL_}#/session`);
  await h1('Session check').waitFor();
  let t = performance.now();
  await page.goto(`${URL_}#/overview`);
  await h1('Overview').waitFor();
  await page.getByRole('region', { name: 'The ledger' }).getByText('Last record').waitFor({ timeout: 60000 });
  await page.getByRole('table', { name: 'Logout requests by outcome' }).waitFor({ timeout: 60000 });
  await page.getByRole('table', { name: /Rejected requests by reason/ }).waitFor({ timeout: 60000 });
  await page.locator('.chart canvas').first().waitFor({ timeout: 60000 });
  overview.push(performance.now() - t);
  t = performance.now();
  await page.goto(`${URL_}#/search?${SEARCH}`);
  await page.getByRole('status').filter({ hasText: /^Page 1: / }).waitFor({ timeout: 60000 });
  search.push(performance.now() - t);
}
await browser.close();
const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return `median ${s[Math.floor(s.length / 2)].toFixed(0)} ms, min ${s[0].toFixed(0)}, max ${s[s.length - 1].toFixed(0)} (${s.length} runs)`;
};
console.log(`overview: ${stats(overview)}`);
console.log(`search (${SEARCH}): ${stats(search)}`);
