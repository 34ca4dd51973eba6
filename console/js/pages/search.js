// Search: every filter of /api/v1/events, in the hash so a link can be shared; keyset paging;
// exports of the same filters.
import { h, clear, field, select, table, errorBox, toLocalInput, fromLocalInput } from '../dom.js';
import * as api from '../api.js';

const SIMPLE = ['sub', 'sid', 'jti', 'iss', 'outcome', 'reason', 'metadata_status', 'since', 'until', 'kind'];
const REASONS = ['malformed_request', 'malformed_token', 'unknown_issuer', 'unsupported_alg', 'bad_typ',
  'unknown_key', 'bad_signature', 'wrong_audience', 'expired', 'issued_in_future', 'not_yet_valid',
  'too_old', 'missing_claim', 'missing_sub_and_sid', 'bad_events', 'nonce_present', 'replay',
  'keys_unavailable', 'store_unavailable'];

/** The filters (API parameters shared by events, export and summary) in a hash's params. */
export function filtersOf(params) {
  const out = [];
  for (const [k, v] of params.entries()) {
    if (v === '') continue;
    if (SIMPLE.includes(k) || k === 'has_meta' || (k.startsWith('meta.') && k.length > 5)) out.push([k, v]);
    else if (k === 'verified' && v === 'true') out.push([k, v]);
  }
  return out;
}

function metaRow(list, key = '', value = '') {
  const n = list.children.length + 1;
  const k = h('input', { type: 'text', name: 'meta_key', value: key, autocomplete: 'off' });
  const v = h('input', { type: 'text', name: 'meta_value', value, autocomplete: 'off' });
  const row = h('li', { class: 'pair' },
    field(`Key ${n}`, k), field(`Value ${n}`, v),
    h('button', {
      type: 'button',
      class: 'secondary small',
      'aria-label': `Remove pair ${n}`,
      onclick: () => {
        if (list.children.length > 1) {
          row.remove();
          renumber(list);
          list.querySelector('input')?.focus();
        } else {
          k.value = '';
          v.value = '';
          k.focus();
        }
      },
    }, 'Remove'));
  list.appendChild(row);
  return k;
}

function renumber(list) {
  [...list.children].forEach((row, i) => {
    const labels = row.querySelectorAll('label');
    if (labels[0]) labels[0].textContent = `Key ${i + 1}`;
    if (labels[1]) labels[1].textContent = `Value ${i + 1}`;
    row.querySelector('button')?.setAttribute('aria-label', `Remove pair ${i + 1}`);
  });
}

function metaSummary(ev) {
  if (ev.session_metadata && typeof ev.session_metadata === 'object') {
    return Object.entries(ev.session_metadata).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
  }
  if (ev.unverified) return h('span', { class: 'tag warn' }, 'unverified request');
  if (ev.kind && ev.kind !== 'logout' && ev.details) return h('code', { class: 'wrap' }, JSON.stringify(ev.details));
  return ev.metadata_status || null;
}

function outcomeCell(ev) {
  if (ev.outcome) return h('span', { class: `tag ${ev.outcome}` }, ev.outcome);
  if (ev.action) return `${ev.kind}:${ev.action}`;
  return ev.kind || null;
}

function reasonCell(ev) {
  if (ev.duplicate_of != null) return h('span', null, 'of ', h('a', { href: `#/record/${ev.duplicate_of}` }, `#${ev.duplicate_of}`));
  return ev.reason || null;
}

export async function render(main, ctx) {
  document.title = 'Search · logout-ledger console';
  const p = ctx.params;
  const text = (name) => h('input', { type: 'text', name, value: p.get(name) || '', autocomplete: 'off' });
  const inputs = {
    sub: text('sub'), sid: text('sid'), jti: text('jti'), iss: text('iss'),
    outcome: select('outcome', [['', 'any'], 'accepted', 'duplicate', 'rejected'], p.get('outcome') || ''),
    reason: h('input', { type: 'text', name: 'reason', value: p.get('reason') || '', list: 'reason-codes', autocomplete: 'off' }),
    has_meta: h('input', { type: 'text', name: 'has_meta', value: p.getAll('has_meta').join(', '), autocomplete: 'off' }),
    metadata_status: select('metadata_status', [['', 'any'], 'ok', 'invalid', 'absent'], p.get('metadata_status') || ''),
    since: h('input', { type: 'datetime-local', name: 'since', value: toLocalInput(p.get('since')) }),
    until: h('input', { type: 'datetime-local', name: 'until', value: toLocalInput(p.get('until')) }),
    verified: h('input', { type: 'checkbox', name: 'verified', checked: p.get('verified') === 'true' }),
    kind: select('kind', [['logout', 'logout (default)'], 'access', 'system', 'all'], p.get('kind') || 'logout'),
    order: select('order', [['desc', 'newest first'], ['asc', 'oldest first']], p.get('order') || 'desc'),
    limit: h('input', { type: 'number', name: 'limit', min: '1', max: '1000', step: '1', value: p.get('limit') || '100', inputmode: 'numeric' }),
  };
  const datalist = h('datalist', { id: 'reason-codes' }, REASONS.map((r) => h('option', { value: r })));
  const metaList = h('ul', { class: 'pairs' });
  const metaPairs = [...p.entries()].filter(([k]) => k.startsWith('meta.') && k.length > 5);
  if (metaPairs.length === 0) metaRow(metaList);
  for (const [k, v] of metaPairs) metaRow(metaList, k.slice(5), v);

  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Record filters' },
    h('div', { class: 'grid' },
      field('Subject (sub)', inputs.sub), field('Session id (sid)', inputs.sid),
      field('Token id (jti)', inputs.jti), field('Issuer (iss)', inputs.iss),
      field('Outcome', inputs.outcome), field('Rejection reason', inputs.reason, 'A rejection code, e.g. bad_signature.'),
      field('Metadata status', inputs.metadata_status),
      field('Has metadata key(s)', inputs.has_meta, 'Comma-separated keys; each must be present.'),
      field('Since (your local time)', inputs.since, 'Sent as UTC.'),
      field('Until (your local time)', inputs.until, 'Received before this time.'),
      field('Kind', inputs.kind), field('Order', inputs.order), field('Page size', inputs.limit, '1 to 1000.')),
    datalist,
    h('fieldset', { class: 'meta' },
      h('legend', null, 'Session metadata: key = value (all must hold)'),
      metaList,
      h('button', { type: 'button', class: 'secondary', onclick: () => metaRow(metaList).focus() }, 'Add pair')),
    h('div', { class: 'check' }, inputs.verified,
      h('label', { for: (inputs.verified.id = 'f-verified') }, 'Verified claims only (accepted and duplicate records)')),
    h('div', { class: 'actions' },
      h('button', { type: 'submit' }, 'Search'),
      h('button', { type: 'button', class: 'secondary', onclick: () => ctx.go('#/search') }, 'Clear filters')));

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = [];
    for (const k of ['sub', 'sid', 'jti', 'iss', 'outcome', 'reason', 'metadata_status']) q.push([k, inputs[k].value.trim()]);
    for (const row of metaList.children) {
      const [k, v] = row.querySelectorAll('input');
      if (k.value.trim()) q.push([`meta.${k.value.trim()}`, v.value]);
    }
    for (const k of inputs.has_meta.value.split(',').map((s) => s.trim()).filter(Boolean)) q.push(['has_meta', k]);
    q.push(['since', fromLocalInput(inputs.since.value)], ['until', fromLocalInput(inputs.until.value)]);
    if (inputs.verified.checked) q.push(['verified', 'true']);
    if (inputs.kind.value !== 'logout') q.push(['kind', inputs.kind.value]);
    if (inputs.order.value !== 'desc') q.push(['order', inputs.order.value]);
    if (inputs.limit.value && inputs.limit.value !== '100') q.push(['limit', inputs.limit.value]);
    ctx.go(ctx.hashFor('search', q));
  });

  const exportStatus = h('p', { class: 'status-slot', role: 'status' });
  const filters = filtersOf(p);
  const exportButton = (format, label, filename) => h('button', {
    type: 'button',
    class: 'secondary',
    onclick: async (ev) => {
      const b = ev.currentTarget;
      b.disabled = true;
      exportStatus.textContent = `Exporting ${label}…`;
      try {
        const q = [...filters, ['format', format]];
        if (p.get('order') === 'desc') q.push(['order', 'desc']);
        const { rows, bytes } = await api.download('export', q, filename);
        exportStatus.textContent = `Downloaded ${filename}: ${rows ?? '?'} records, ${bytes} bytes.`;
      } catch (e) {
        exportStatus.textContent = `The export failed: ${e.message}`;
      } finally {
        b.disabled = false;
      }
    },
  }, label);

  const results = h('section', { 'aria-labelledby': 'results-h' }, h('h2', { id: 'results-h' }, 'Records'));
  main.append(h('h1', null, 'Search the audit records'), form,
    h('section', { 'aria-labelledby': 'export-h', class: 'export' },
      h('h2', { id: 'export-h' }, 'Export these filters'),
      h('p', { class: 'hint' }, 'Every matching record, not only this page, oldest first.'),
      h('div', { class: 'actions' },
        exportButton('ndjson', 'NDJSON', 'logouts.ndjson'),
        exportButton('csv', 'CSV', 'logouts.csv'),
        exportButton('ocsf', 'OCSF', 'logouts.ocsf.ndjson')),
      exportStatus),
    results);

  const q = [...filters];
  for (const k of ['order', 'limit', 'cursor']) if (p.get(k)) q.push([k, p.get(k)]);
  const loading = h('p', { role: 'status' }, 'Loading…');
  results.append(loading);
  let page;
  try {
    page = await api.getJson('events', q);
  } catch (e) {
    if (!ctx.alive() || e.status === 401) return;
    loading.remove();
    results.append(errorBox(e, 'The search failed'));
    return;
  }
  if (!ctx.alive()) return;
  loading.remove();
  const events = Array.isArray(page.events) ? page.events : [];
  const back = p.getAll('back');
  const pageNo = back.length + 1;
  const summary = events.length === 0
    ? (pageNo === 1 ? 'No record matches these filters.' : 'No more records.')
    : `Page ${pageNo}: ${events.length} record${events.length === 1 ? '' : 's'} (ids ${events[0].id} to ${events[events.length - 1].id}).`;
  results.append(h('p', { role: 'status' }, summary));
  if (events.length) {
    results.append(table('Matching records', ['id', 'received at', 'outcome', 'reason', 'sub', 'sid', 'iss', 'session metadata'],
      events.map((ev) => [
        h('a', { href: `#/record/${ev.id}`, 'aria-label': `Record ${ev.id}` }, String(ev.id)),
        ev.received_at, outcomeCell(ev), reasonCell(ev), ev.sub, ev.sid, ev.iss, metaSummary(ev),
      ]), { rowHeader: true, captionClass: 'visually-hidden' }));
  }

  const nav = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  const keep = [...p.entries()].filter(([k]) => k !== 'cursor' && k !== 'back');
  if (back.length) {
    const prevBack = back.slice(0, -1);
    const prevCursor = back[back.length - 1];
    const prevHash = ctx.hashFor('search', [...keep, ...prevBack.map((c) => ['back', c]), ['cursor', prevCursor === '-' ? '' : prevCursor]]);
    nav.append(h('a', { href: prevHash, class: 'button secondary', rel: 'prev' }, 'Previous page'));
  }
  if (page.next_cursor) {
    const nextHash = ctx.hashFor('search', [...keep, ...back.map((c) => ['back', c]), ['back', p.get('cursor') || '-'], ['cursor', page.next_cursor]]);
    nav.append(h('a', { href: nextHash, class: 'button', rel: 'next' }, 'Next page'));
  }
  if (nav.children.length) results.append(nav);
  clear(exportStatus);
}
