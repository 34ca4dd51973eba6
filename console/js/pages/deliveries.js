// Deliveries per target: pending and dead items, retry one or all dead.
import { h, clear, field, select, table, errorBox } from '../dom.js';
import * as api from '../api.js';

const STATES = ['pending', 'dead', 'delivered'];

async function targetSection(target, states, ctx, announce) {
  const sid = `t-${target.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  const sec = h('section', { 'aria-labelledby': sid, class: 'target' }, h('h2', { id: sid }, `Target ${target}`));
  const body = h('div');
  sec.append(body);

  const retry = async (payload, what) => {
    try {
      const r = await api.postJson('deliveries/retry', payload);
      const n = Number(r.requeued ?? 0);
      announce(`${what}: ${n} ${n === 1 ? 'delivery' : 'deliveries'} of target ${target} due again.`);
      await load();
    } catch (e) {
      if (e.status !== 401) announce(`Retry failed: ${e.message}`);
    }
  };

  async function load() {
    clear(body);
    body.append(h('p', null, 'Loading…'));
    const results = await Promise.all(states.map((state) => api.getJson('deliveries', [['target', target], ['state', state], ['limit', '100']])
      .then((r) => ({ state, r }), (e) => ({ state, e }))));
    if (!ctx.alive()) return;
    clear(body);
    for (const { state, r, e } of results) {
      const hid = `${sid}-${state}`;
      const part = h('section', { 'aria-labelledby': hid }, h('h3', { id: hid }, `${state[0].toUpperCase()}${state.slice(1)}`));
      body.append(part);
      if (e) {
        if (e.status === 401) return;
        part.append(errorBox(e));
        continue;
      }
      const rows = Array.isArray(r.deliveries) ? r.deliveries : [];
      if (state === 'dead' && rows.length) {
        part.append(h('div', { class: 'actions' }, h('button', {
          type: 'button',
          onclick: () => retry({ target, dead: true }, 'Retry all dead'),
        }, `Retry all dead (${target})`)));
      }
      if (!rows.length) {
        part.append(h('p', null, `No ${state} deliveries.`));
        continue;
      }
      const headers = ['record', 'received at', 'event type', 'attempts', 'last attempt', state === 'delivered' ? 'delivered at' : 'next attempt', 'last error'];
      if (state === 'dead') headers.push('action');
      part.append(table(`${state} deliveries of ${target}`, headers, rows.map((d) => {
        const row = [
          h('a', { href: `#/record/${d.event_id}` }, String(d.event_id)), d.received_at, d.event_type, d.attempts,
          d.last_attempt_at, state === 'delivered' ? d.delivered_at : d.next_attempt_at, d.last_error,
        ];
        if (state === 'dead') {
          row.push(h('button', {
            type: 'button',
            class: 'secondary small',
            'aria-label': `Retry record ${d.event_id} to ${target}`,
            onclick: () => retry({ target, event_id: d.event_id }, `Retry of record ${d.event_id}`),
          }, 'Retry'));
        }
        return row;
      }), { rowHeader: true, captionClass: 'visually-hidden' }));
      if (r.next_cursor) part.append(h('p', { class: 'hint' }, 'Only the newest 100 are shown; the command logout-ledger deliveries list shows them all.'));
    }
  }
  await load();
  return sec;
}

export async function render(main, ctx) {
  document.title = 'Deliveries · logout-ledger console';
  main.append(h('h1', null, 'Deliveries'));
  let ledger;
  try {
    ledger = await api.ledger({ refresh: true });
  } catch (e) {
    if (ctx.alive() && e.status !== 401) main.append(errorBox(e, 'The ledger could not be read'));
    return;
  }
  if (!ctx.alive()) return;
  const targets = Array.isArray(ledger.delivery_targets) ? ledger.delivery_targets.filter((t) => typeof t === 'string') : [];
  if (!targets.length) {
    main.append(h('p', null, 'No delivery target is configured.'));
    return;
  }
  const p = ctx.params;
  const tSel = select('target', [['', 'all targets'], ...targets], p.get('target') || '');
  const sSel = select('state', [['', 'pending and dead'], ...STATES], p.get('state') || '');
  const form = h('form', { class: 'filters' },
    h('div', { class: 'grid' }, field('Target', tSel), field('State', sSel)),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Show')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    ctx.go(ctx.hashFor('deliveries', [['target', tSel.value], ['state', sSel.value]]));
  });
  const live = h('p', { class: 'status-slot', role: 'status' });
  main.append(form, live);
  const shown = p.get('target') ? targets.filter((t) => t === p.get('target')) : targets;
  const states = STATES.includes(p.get('state')) ? [p.get('state')] : ['pending', 'dead'];
  if (!shown.length) {
    main.append(errorBox(`No delivery target is named ${p.get('target')}.`));
    return;
  }
  const announce = (msg) => { live.textContent = msg; };
  for (const t of shown) {
    const sec = await targetSection(t, states, ctx, announce);
    if (!ctx.alive()) return;
    main.append(sec);
  }
}
