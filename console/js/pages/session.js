// Session check: is this session logged out? (GET /api/v1/sessions/{sid})
import { h, field, errorBox, toLocalInput, fromLocalInput } from '../dom.js';
import * as api from '../api.js';

export async function render(main, ctx) {
  document.title = 'Session check · logout-ledger console';
  const p = ctx.params;
  const sid = h('input', { type: 'text', name: 'sid', required: true, value: p.get('sid') || '', autocomplete: 'off' });
  const iss = h('input', { type: 'text', name: 'iss', value: p.get('iss') || '', autocomplete: 'off' });
  const sub = h('input', { type: 'text', name: 'sub', value: p.get('sub') || '', autocomplete: 'off' });
  const since = h('input', { type: 'datetime-local', name: 'since', value: toLocalInput(p.get('since')) });
  const result = h('div', { class: 'result', role: 'status', 'aria-live': 'polite' });
  const form = h('form', { class: 'filters' },
    h('div', { class: 'grid' },
      field('Session id (sid)', sid),
      field('Issuer (iss, optional)', iss, 'May be left out when the service has one issuer.'),
      field('Subject (sub, optional)', sub, 'With a login time: a logout of all the subject\'s sessions after it also counts.'),
      field('Login time (since, your local time)', since, 'Goes with the subject.')),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Check')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    ctx.go(ctx.hashFor('session', [
      ['sid', sid.value.trim()], ['iss', iss.value.trim()], ['sub', sub.value.trim()],
      ['since', fromLocalInput(since.value)],
    ]));
  });
  main.append(h('h1', null, 'Session check'),
    h('p', null, 'Answers as applications are answered: is this session logged out, and by which record?'),
    form, h('h2', { class: 'visually-hidden' }, 'Answer'), result);

  const s = p.get('sid');
  if (!s) return;
  const params = [];
  for (const k of ['iss', 'sub', 'since']) if (p.get(k)) params.push([k, p.get(k)]);
  result.textContent = 'Checking…';
  try {
    const ans = await api.getJson(`sessions/${encodeURIComponent(s)}`, params);
    if (!ctx.alive()) return;
    result.textContent = '';
    if (ans.logged_out) {
      const link = ans.event_id != null ? h('a', { href: `#/record/${ans.event_id}` }, `record ${ans.event_id}`) : 'an unknown record';
      result.append(h('p', { class: 'answer yes' }, `Logged out at ${ans.logged_out_at || 'an unknown time'}, by `, link, '.'));
    } else {
      result.append(h('p', { class: 'answer no' }, 'Not logged out.'));
    }
    result.append(h('p', { class: 'hint' }, `Session ${ans.sid ?? s}`, ans.iss ? ` of issuer ${ans.iss}` : '', '.'));
  } catch (e) {
    if (!ctx.alive() || e.status === 401) return;
    result.textContent = '';
    result.append(errorBox(e, 'The check failed'));
  }
}
