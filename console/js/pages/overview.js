// Overview: counts by outcome, logouts per day (uPlot, stacked), rejections by reason, and the
// chain head with the latest signed checkpoint.
import { h, clear, dl, table, field, select, errorBox, ageInWords } from '../dom.js';
import * as api from '../api.js';

const DAY = 86400;
const PALETTE = ['#1f5fa8', '#b35900', '#2e7d32', '#8e24aa', '#c62828', '#00796b', '#6d4c41', '#455a64'];
const OUTCOMES = ['accepted', 'duplicate', 'rejected'];
const NO_VALUE = '(none)';

const iso = (d) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

function section(id, title, ...children) {
  return h('section', { 'aria-labelledby': id, class: 'card' }, h('h2', { id }, title), ...children);
}

function keyValue(group, name) {
  const v = group && group.key ? group.key[name] : undefined;
  return v === null || v === undefined || v === '' ? NO_VALUE : String(v);
}

async function countsByOutcome(ctx) {
  const now = Date.now();
  const spans = [['Last 24 hours', 1], ['Last 7 days', 7], ['Last 30 days', 30]];
  const answers = await Promise.all(spans.map(([, days]) => api.getJson('reports/summary',
    [['group_by', 'outcome'], ['since', iso(new Date(now - days * DAY * 1000))]])));
  if (!ctx.alive()) return null;
  const rows = OUTCOMES.map((o) => [o, ...answers.map((a) => {
    const g = (a.groups || []).find((x) => keyValue(x, 'outcome') === o);
    return String(g ? g.count : 0);
  })]);
  rows.push(['total', ...answers.map((a) => String(a.total ?? 0))]);
  return table('Logout requests by outcome', ['outcome', ...spans.map(([l]) => l)], rows, { rowHeader: true });
}

function days30() {
  const now = new Date();
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()) / 1000;
  const xs = [];
  for (let i = 29; i >= 0; i -= 1) xs.push(today - i * DAY);
  return xs;
}

const dayKey = (t) => new Date(t * 1000).toISOString().slice(0, 10);

function stackedChart(container, xs, series) {
  const U = globalThis.uPlot;
  if (typeof U !== 'function') {
    container.append(h('p', { class: 'notice warn' }, 'The charting library did not load; the data is in the table below.'));
    return null;
  }
  // Cumulative sums, tallest first, so each bar is drawn over the one that contains it.
  const cum = [];
  let run = xs.map(() => 0);
  for (const s of series) {
    run = run.map((v, i) => v + s.values[i]);
    cum.push(run);
  }
  const order = series.map((_, i) => i).reverse();
  const bars = U.paths && U.paths.bars ? U.paths.bars({ size: [0.7, 60] }) : undefined;
  const opts = {
    width: Math.max(280, container.clientWidth || 600),
    height: 300,
    scales: {
      x: { time: true, range: (u, min, max) => [min - DAY / 2, max + DAY / 2] },
      y: { range: (u, min, max) => [0, Math.max(1, Math.ceil(max * 1.1))] },
    },
    axes: [
      { stroke: '#333', grid: { stroke: '#e3e3e3' }, ticks: { stroke: '#bbb' } },
      { stroke: '#333', grid: { stroke: '#e3e3e3' }, ticks: { stroke: '#bbb' }, values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? String(v) : '')) },
    ],
    legend: { live: true },
    cursor: { points: { show: false } },
    series: [
      { label: 'Day (UTC)', value: (u, v) => (v == null ? '—' : dayKey(v)) },
      ...order.map((i) => ({
        label: series[i].label,
        stroke: PALETTE[i % PALETTE.length],
        fill: PALETTE[i % PALETTE.length],
        width: 1,
        paths: bars,
        points: { show: false },
        value: (u, v, si, idx) => (idx == null ? '—' : String(series[i].values[idx])),
      })),
    ],
  };
  const plot = new U(opts, [xs, ...order.map((i) => cum[i])], container);
  if (typeof ResizeObserver === 'function') {
    let last = 0;
    const ro = new ResizeObserver(() => {
      const w = Math.max(280, container.clientWidth);
      if (Math.abs(w - last) > 4) { last = w; plot.setSize({ width: w, height: 300 }); }
    });
    ro.observe(container);
  }
  return plot;
}

async function perDay(ctx, stack) {
  const xs = days30();
  const dim = stack === 'issuer' ? 'issuer' : stack;
  const ans = await api.getJson('reports/summary', [['group_by', 'day'], ['group_by', dim], ['since', iso(new Date(xs[0] * 1000))]]);
  if (!ctx.alive()) return null;
  const index = new Map(xs.map((x, i) => [dayKey(x), i]));
  const byValue = new Map();
  for (const g of ans.groups || []) {
    const day = keyValue(g, 'day');
    if (!index.has(day)) continue;
    const v = keyValue(g, dim);
    if (!byValue.has(v)) byValue.set(v, xs.map(() => 0));
    byValue.get(v)[index.get(day)] += Number(g.count) || 0;
  }
  let series = [...byValue.entries()].map(([label, values]) => ({ label, values, total: values.reduce((a, b) => a + b, 0) }))
    .sort((a, b) => b.total - a.total || a.label.localeCompare(b.label));
  if (series.length > PALETTE.length) {
    const rest = series.slice(PALETTE.length - 1);
    series = series.slice(0, PALETTE.length - 1);
    series.push({ label: `other (${rest.length} values)`, values: xs.map((_, i) => rest.reduce((a, s) => a + s.values[i], 0)) });
  }
  const what = stack === 'issuer' ? 'issuer' : `metadata key ${stack.slice(5)}`;
  const wrap = h('div');
  if (ans.truncated) wrap.append(h('p', { class: 'notice warn' }, 'The server truncated this report: some groups are missing.'));
  if (!series.length) {
    wrap.append(h('p', null, 'No logout requests in the last 30 days.'));
    return wrap;
  }
  const chart = h('div', { class: 'chart', role: 'img', 'aria-label': `Stacked bar chart of logout requests per day over the last 30 days by ${what}; the same data is in the table below.` });
  wrap.append(chart);
  const dataTable = table(`Logout requests per day by ${what}`, ['day (UTC)', ...series.map((s) => s.label), 'total'],
    xs.map((x, i) => [dayKey(x), ...series.map((s) => String(s.values[i])), String(series.reduce((a, s) => a + s.values[i], 0))])
      .filter((r) => r[r.length - 1] !== '0'),
    { rowHeader: true });
  wrap.append(h('details', null, h('summary', null, 'The chart\'s data as a table (days with requests)'), dataTable));
  // uPlot measures its container: draw once it is in the document.
  wrap.draw = () => stackedChart(chart, xs, series);
  return wrap;
}

async function rejections(ctx) {
  const since = iso(new Date(Date.now() - 30 * DAY * 1000));
  const ans = await api.getJson('reports/summary', [['group_by', 'reason'], ['outcome', 'rejected'], ['since', since]]);
  if (!ctx.alive()) return null;
  const groups = (ans.groups || []).map((g) => ({ reason: keyValue(g, 'reason'), count: Number(g.count) || 0 }))
    .sort((a, b) => b.count - a.count);
  if (!groups.length) return h('p', null, 'No rejected requests in the last 30 days.');
  const max = Math.max(...groups.map((g) => g.count));
  return table('Rejected requests by reason, last 30 days', ['reason', 'count', 'share of the largest'], groups.map((g) => [
    h('a', { href: `#/search?outcome=rejected&reason=${encodeURIComponent(g.reason)}` }, g.reason),
    String(g.count),
    h('meter', { min: '0', max: String(max), value: String(g.count), 'aria-label': `${g.reason}: ${g.count}` }, String(g.count)),
  ]), { rowHeader: true, class: 'data bars' });
}

function ledgerFacts(l) {
  const head = l.head;
  const cp = l.checkpoint;
  const parts = [];
  parts.push(h('h3', null, 'Chain head'));
  parts.push(head ? dl([
    ['Last record', h('a', { href: `#/record/${head.id}` }, `record ${head.id}`)],
    ['Received at', head.received_at],
    ['Entry hash', head.entry_hash ? h('code', { class: 'wrap' }, head.entry_hash) : null],
  ]) : h('p', null, 'The store holds no record yet.'));
  parts.push(h('h3', null, 'Latest signed checkpoint'));
  if (cp) {
    const behind = head && typeof head.id === 'number' && typeof cp.tree_size === 'number' ? head.id - cp.tree_size : null;
    parts.push(dl([
      ['Tree size', `${cp.tree_size} records`],
      ['Signed', `${ageInWords(cp.age_seconds ?? 0)} (${cp.created_at})`],
      ['Records since', behind === null ? null : String(Math.max(0, behind))],
      ['Root hash', h('code', { class: 'wrap' }, String(cp.root_hash))],
      ['Log key', l.log_key ? h('code', { class: 'wrap' }, l.log_key) : 'not configured on this service'],
    ]), h('details', null, h('summary', null, 'The signed note'), h('pre', { class: 'note' }, String(cp.note))));
  } else {
    parts.push(h('p', null, 'No signed checkpoint yet (the service needs a signing key: --signing-key-file).'));
  }
  return parts;
}

export async function render(main, ctx) {
  document.title = 'Overview · logout-ledger console';
  const stackParam = ctx.params.get('stack') || 'issuer';
  const stack = stackParam.startsWith('meta:') && stackParam.length > 5 ? stackParam : 'issuer';
  const stackBy = select('stack_by', [['issuer', 'issuer'], ['meta', 'a session-metadata key']], stack === 'issuer' ? 'issuer' : 'meta');
  const metaKey = h('input', { type: 'text', name: 'meta_key', value: stack === 'issuer' ? '' : stack.slice(5), placeholder: 'org_id', autocomplete: 'off' });
  const form = h('form', { class: 'inline-form' },
    field('Stack by', stackBy), field('Metadata key', metaKey, 'Used when stacking by a session-metadata key, e.g. org_id.'),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Show')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const k = metaKey.value.trim();
    const useMeta = stackBy.value === 'meta' || (k && stackBy.value !== 'issuer');
    ctx.go(ctx.hashFor('overview', useMeta && k ? [['stack', `meta:${k}`]] : []));
  });

  const slots = {
    counts: h('div', null, h('p', null, 'Loading…')),
    perDay: h('div', null, h('p', null, 'Loading…')),
    reasons: h('div', null, h('p', null, 'Loading…')),
    ledger: h('div', null, h('p', null, 'Loading…')),
  };
  main.append(h('h1', null, 'Overview'),
    h('div', { class: 'cards' },
      section('counts-h', 'Requests by outcome', slots.counts),
      section('ledger-h', 'The ledger', slots.ledger)),
    section('perday-h', 'Logout requests per day, last 30 days', form, slots.perDay),
    section('reasons-h', 'Rejections by reason, last 30 days', slots.reasons));

  const fill = (slot, p) => p.then((node) => {
    if (!ctx.alive() || !node) return;
    clear(slot);
    slot.append(...(Array.isArray(node) ? node : [node]));
    if (typeof node.draw === 'function') node.draw();
  }, (e) => {
    if (!ctx.alive() || e.status === 401) return;
    clear(slot);
    slot.append(errorBox(e, 'Could not load'));
  });
  await Promise.all([
    fill(slots.counts, countsByOutcome(ctx)),
    fill(slots.perDay, perDay(ctx, stack)),
    fill(slots.reasons, rejections(ctx)),
    fill(slots.ledger, api.ledger({ refresh: true }).then((l) => (ctx.alive() ? ledgerFacts(l) : null))),
  ]);
}
