// One record: what was stored, how it was verified, what it relates to, where it was delivered,
// and its inclusion proof, checked here in the browser (proof.js).
import { h, clear, dl, table, field, errorBox, display } from '../dom.js';
import * as api from '../api.js';
import { verifyProof, parseJsonStrict } from '../proof.js';

const CLAIMS = ['iss', 'sub', 'sid', 'jti', 'aud', 'iat', 'exp'];

function section(id, title, ...children) {
  return h('section', { 'aria-labelledby': id }, h('h2', { id }, title), ...children);
}

function epoch(v) {
  if (typeof v !== 'number') return v;
  return `${v} (${new Date(v * 1000).toISOString()})`;
}

function objectPairs(obj, fmt = (v) => v) {
  return Object.entries(obj).map(([k, v]) => [k, typeof v === 'string' || typeof v === 'number' ? fmt(v, k) : v]);
}

function relation(ev) {
  const out = [];
  if (ev.duplicate_of != null) {
    out.push(h('p', null, 'Duplicate: the identical token was already recorded as ',
      h('a', { href: `#/record/${ev.duplicate_of}` }, `record ${ev.duplicate_of}`), '.'));
  }
  if (ev.reason === 'replay') {
    const m = /record (\d+)/.exec(ev.reason_detail || '');
    out.push(h('p', null, 'Replay: another token reused a token id (jti) already accepted',
      m ? [' in ', h('a', { href: `#/record/${m[1]}` }, `record ${m[1]}`)] : '', '.'));
  }
  if (ev.jti) {
    out.push(h('p', null, h('a', { href: `#/search?jti=${encodeURIComponent(ev.jti)}` }, 'Every record with this token id (jti)')));
  }
  return out;
}

function compareWithProof(ev, rec) {
  const diffs = [];
  for (const k of ['kind', 'outcome', 'reason', 'iss', 'sub', 'sid', 'jti', 'token_sha256']) {
    if (k in ev && (ev[k] ?? null) !== (rec[k] ?? null)) diffs.push(k);
  }
  if (ev.received_at && Date.parse(ev.received_at) !== Number(rec.received_at)) diffs.push('received_at');
  return diffs;
}

function proofSection(ev, id, ledgerP) {
  const out = h('div', { class: 'proof' });
  const status = h('div', { class: 'proof-status', role: 'status', 'aria-live': 'polite' });
  const keyInput = h('input', { type: 'text', name: 'log_key', autocomplete: 'off', spellcheck: 'false', class: 'mono' });
  const button = h('button', { type: 'submit' }, 'Check the proof');
  const details = h('div', { class: 'proof-details' });
  const form = h('form', { class: 'proof-form' },
    field('Log public key (note verifier key: name+id+key)', keyInput,
      'The key the checkpoints must be signed with. Filled with the key this service says it signs with; paste your own trusted copy to check independently.'),
    h('div', { class: 'actions' }, button));
  out.append(form, status, details);

  let proofText = null;
  let proofError = null;
  const proofP = api.getText(`events/${id}/proof`).then((t) => { proofText = t; }, (e) => { proofError = e; });

  const check = async () => {
    clear(details);
    status.className = 'proof-status';
    status.textContent = 'Checking the proof in this browser…';
    await proofP;
    if (proofError) {
      if (proofError.status === 401) return;
      status.textContent = proofError.code === 'not_checkpointed'
        ? `No proof yet: ${proofError.message}. A proof exists once a signed checkpoint covers this record.`
        : `No proof available: ${proofError.message}`;
      status.classList.add('neutral');
      return;
    }
    const key = keyInput.value.trim();
    if (!key) {
      status.textContent = 'Enter the log\'s public key to check the proof.';
      status.classList.add('neutral');
      return;
    }
    const result = await verifyProof(proofText, key);
    status.textContent = result.message;
    status.classList.add(result.ok ? 'ok' : 'bad');
    let proof = null;
    try { proof = parseJsonStrict(proofText); } catch { /* shown in the result */ }
    if (result.ok) {
      const diffs = compareWithProof(ev, result.record);
      details.append(h('p', { class: diffs.length ? 'notice error' : 'hint' }, diffs.length
        ? `Warning: the page above shows other values than the proven record for: ${diffs.join(', ')}.`
        : 'The record shown above is the record this proof carries.'));
      if (result.record.key_set_digest) {
        details.append(dl([['Key set digest (from the proven record)', h('code', { class: 'wrap' }, result.record.key_set_digest)]]));
      }
    }
    if (proof && typeof proof === 'object') {
      details.append(dl([
        ['Entry hash', h('code', { class: 'wrap' }, String(proof.entry_hash))],
        ['Previous entry hash', h('code', { class: 'wrap' }, String(proof.previous_entry_hash))],
        ['Tree size', String(proof.tree_size)],
        ['Path length', Array.isArray(proof.inclusion_path) ? String(proof.inclusion_path.length) : null],
      ]), h('details', null, h('summary', null, 'Checkpoint note'), h('pre', { class: 'note' }, String(proof.checkpoint))));
    }
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); check(); });
  ledgerP.then((l) => {
    if (l && typeof l.log_key === 'string' && !keyInput.value) keyInput.value = l.log_key;
  }).finally(() => { check(); });
  return out;
}

export async function render(main, ctx) {
  const id = ctx.arg;
  document.title = `Record ${id} · logout-ledger console`;
  main.append(h('h1', null, `Record ${id}`));
  if (!/^[1-9][0-9]{0,18}$/.test(id || '')) {
    main.append(errorBox('A record is named by its sequence number, e.g. #/record/42.'));
    return;
  }
  const loading = h('p', { role: 'status' }, 'Loading…');
  main.append(loading);
  let ev;
  try {
    ev = await api.getJson(`events/${id}`);
  } catch (e) {
    if (!ctx.alive() || e.status === 401) return;
    loading.remove();
    main.append(errorBox(e, e.status === 404 ? 'Not found' : 'The record could not be read'));
    return;
  }
  if (!ctx.alive()) return;
  loading.remove();
  const ledgerP = api.ledger().catch(() => null);
  const title = ev.kind === 'logout' ? (ev.outcome || 'logout') : `${ev.kind}${ev.action ? `: ${ev.action}` : ''}`;
  main.querySelector('h1').textContent = `Record ${ev.id}: ${title}`;

  main.append(dl([
    ['Kind', ev.kind], ['Received at', ev.received_at], ['Outcome', ev.outcome],
    ['HTTP status', ev.http_status], ['Reason', ev.reason], ['Reason detail', ev.reason_detail],
    ['Action', ev.action], ['Source address', ev.source_ip], ['User agent', ev.user_agent],
  ].filter(([, v], i) => i < 3 || (v !== null && v !== undefined))));

  if (ev.kind === 'logout') {
    main.append(section('claims-h', 'Stored claims',
      ev.unverified
        ? h('p', { class: 'notice warn' }, 'This request was refused before any signature verified: it keeps no claims. What the token pretended to be is shown below, never believed.')
        : null,
      dl(CLAIMS.map((k) => [k, k === 'iat' || k === 'exp' ? epoch(ev[k]) : ev[k]])),
      ev.unverified ? h('h3', null, 'Unverified, as sent') : null,
      ev.unverified ? dl([...objectPairs(ev.unverified), ['token bytes', ev.token_bytes]]) : null));

    if (ev.token_header && typeof ev.token_header === 'object') {
      main.append(section('header-h', 'Token header (decoded from the stored token)', dl(objectPairs(ev.token_header))));
    }
    if (ev.token_claims && typeof ev.token_claims === 'object') {
      main.append(section('tclaims-h', 'Token claims (decoded from the stored token)',
        dl(objectPairs(ev.token_claims, (v, k) => (k === 'iat' || k === 'exp' || k === 'nbf' ? epoch(v) : v)))));
    }

    const meta = ev.session_metadata && typeof ev.session_metadata === 'object' ? Object.entries(ev.session_metadata) : [];
    main.append(section('meta-h', 'Session metadata',
      dl([['Status', ev.metadata_status], ['Error', ev.metadata_error]].filter(([t, v]) => t === 'Status' || v)),
      meta.length
        ? table('Session metadata pairs', ['key', 'value'], meta.map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]), { rowHeader: true })
        : h('p', null, 'No session metadata.')));

    main.append(section('verif-h', 'Verification',
      dl([
        ['Algorithm (alg)', ev.alg], ['Key id (kid)', ev.kid], ['Type (typ)', ev.typ],
        ['Key set digest', ev.key_set_digest ? h('code', { class: 'wrap' }, ev.key_set_digest) : null],
        ['Token SHA-256', ev.token_sha256 ? h('code', { class: 'wrap' }, ev.token_sha256) : null],
        ['Claims verified', ev.claims_verified === true ? 'yes' : ev.claims_verified === false ? 'no' : null],
      ]),
      ev.token ? h('details', null, h('summary', null, 'The stored token (the signed evidence)'), h('pre', { class: 'token' }, ev.token)) : null));

    const rel = relation(ev);
    if (rel.length) main.append(section('rel-h', 'Related records', ...rel));
  } else if (ev.details !== null && ev.details !== undefined) {
    const d = ev.details;
    main.append(section('details-h', 'Details',
      d && typeof d === 'object' && !Array.isArray(d) ? dl(objectPairs(d)) : display(d)));
  }

  const dels = Array.isArray(ev.deliveries) ? ev.deliveries : [];
  if (dels.length) {
    main.append(section('deliv-h', 'Deliveries',
      table('Deliveries of this record', ['target', 'state', 'attempts', 'last attempt', 'next attempt', 'delivered at', 'last error'],
        dels.map((d) => [d.target, d.state, d.attempts, d.last_attempt_at, d.next_attempt_at, d.delivered_at, d.last_error]),
        { rowHeader: true })));
  }

  main.append(section('proof-h', 'Inclusion proof, checked in this browser',
    h('p', { class: 'hint' }, 'The browser recomputes the record\'s entry hash from its 30 chained columns, follows the RFC 6962 path to the root of the latest signed checkpoint, and checks that checkpoint\'s Ed25519 signature with the key below. Nothing here trusts the server\'s word.'),
    proofSection(ev, ev.id, ledgerP)));
}
