// The console's shell: sign-in, navigation, hash routing.
import { h, clear, field, errorBox } from './dom.js';
import * as api from './api.js';
import * as overview from './pages/overview.js';
import * as search from './pages/search.js';
import * as record from './pages/record.js';
import * as session from './pages/session.js';
import * as deliveries from './pages/deliveries.js';

const PAGES = { overview, search, record, session, deliveries };
const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
let renderSeq = 0;
let signInNotice = null;

/** The route in location.hash: "#/search?sub=x" → {name: 'search', arg: null, params}. */
export function parseHash(hash = location.hash) {
  const raw = hash.startsWith('#/') ? hash.slice(2) : '';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
  const [name, ...rest] = path.split('/').map((s) => { try { return decodeURIComponent(s); } catch { return s; } });
  return { name: name || 'overview', arg: rest.length ? rest.join('/') : null, params };
}

/** "#/search" + params (URLSearchParams or [[k, v]]), empty values left out. */
export function hashFor(name, params) {
  const qs = new URLSearchParams();
  for (const [k, v] of (params instanceof URLSearchParams ? params.entries() : params || [])) {
    if (v !== '' && v !== null && v !== undefined) qs.append(k, v);
  }
  const s = qs.toString();
  return `#/${name}${s ? `?${s}` : ''}`;
}

function setNav(signedIn, active) {
  nav.hidden = !signedIn;
  who.hidden = !signedIn;
  for (const a of nav.querySelectorAll('a[data-route]')) {
    if (a.dataset.route === active) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function showDeliveriesLink() {
  const li = document.getElementById('nav-deliveries');
  try {
    const l = await api.ledger();
    li.hidden = !(Array.isArray(l.delivery_targets) && l.delivery_targets.length > 0);
  } catch {
    li.hidden = true;
  }
}

function focusHeading() {
  const h1 = main.querySelector('h1');
  if (h1) {
    h1.setAttribute('tabindex', '-1');
    h1.focus({ preventScroll: false });
  }
}

function signInPage(notice) {
  setNav(false, null);
  document.title = 'Sign in · logout-ledger console';
  clear(main);
  const input = h('input', {
    type: 'password', name: 'token', autocomplete: 'off', required: true, spellcheck: 'false',
  });
  const status = h('div', { class: 'status-slot', role: 'status' });
  const alertSlot = h('div', { class: 'alert-slot' });
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'signin', novalidate: true },
    field('API token', input, 'A query API token (llq_…). It is kept in this browser tab only and sent in the Authorization header, never in a link.'),
    h('div', { class: 'actions' }, button),
    status, alertSlot);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear(alertSlot);
    const token = input.value.trim();
    if (!token) {
      alertSlot.appendChild(errorBox('Enter a token.'));
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    button.disabled = true;
    status.textContent = 'Checking the token…';
    try {
      let ledger = null;
      try {
        ledger = await api.getJson('ledger', null, { token });
      } catch (e) {
        if (e.status !== 404) throw e;
        // A server without /ledger: check the token on a page of one record.
        await api.getJson('events', { limit: '1' }, { token });
        ledger = { head: null, checkpoint: null, log_key: null, delivery_targets: [] };
      }
      api.setToken(token);
      api.setLedger(ledger);
      status.textContent = '';
      if (!location.hash.startsWith('#/') || location.hash === '#/signin') location.hash = '#/overview';
      else route();
    } catch (e) {
      status.textContent = '';
      input.setAttribute('aria-invalid', 'true');
      alertSlot.appendChild(errorBox(e.status === 401 ? 'That token was refused' : e.message));
      input.focus();
      input.select();
    } finally {
      button.disabled = false;
    }
  });
  main.append(
    h('h1', null, 'Sign in'),
    notice ? h('div', { class: 'notice error', role: 'alert' }, notice) : null,
    h('p', null, 'The console reads the audit store through the query API with your token.'),
    form,
  );
  input.focus();
}

function signOut() {
  api.clearToken();
  api.forgetLedger();
  signInPage('You are signed out.');
}

async function route() {
  renderSeq += 1;
  const seq = renderSeq;
  if (!api.getToken()) {
    signInPage(signInNotice);
    signInNotice = null;
    return;
  }
  const r = parseHash();
  const page = PAGES[r.name] ? r.name : null;
  setNav(true, page);
  showDeliveriesLink();
  clear(main);
  const ctx = {
    ...r,
    alive: () => seq === renderSeq && document.body.contains(main),
    hashFor,
    go: (hash) => {
      if (location.hash === hash) route();
      else location.hash = hash;
    },
  };
  if (!page) {
    document.title = 'Not found · logout-ledger console';
    main.append(h('h1', null, 'Page not found'), h('p', null, h('a', { href: '#/overview' }, 'Go to the overview')));
    focusHeading();
    return;
  }
  try {
    await PAGES[page].render(main, ctx, { focusHeading });
  } catch (e) {
    if (!ctx.alive() || (e && e.status === 401)) return;
    main.append(errorBox(e, 'This page could not be shown'));
  }
}

api.setUnauthorizedHandler(() => {
  api.clearToken();
  api.forgetLedger();
  signInNotice = 'That token was refused. Sign in again.';
  route();
});

document.getElementById('signout').addEventListener('click', signOut);
document.getElementById('skip').addEventListener('click', () => {
  const target = main.querySelector('h1') || main;
  if (!target.hasAttribute('tabindex')) target.setAttribute('tabindex', '-1');
  target.focus();
});
window.addEventListener('hashchange', () => { route().then(focusHeading); });
route();
