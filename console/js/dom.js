// DOM helpers. Everything from the API goes through text nodes or attributes set one by one:
// never innerHTML, never inline styles.

/**
 * h('a', {href: '#/x', class: 'c', onclick: fn}, 'text', child, [more]) — attributes are set
 * with setAttribute (functions starting with "on" become listeners; false/null/undefined are
 * left out; true sets an empty attribute); children are nodes, strings (text nodes) or arrays.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'value' && (tag === 'input' || tag === 'select' || tag === 'textarea')) {
      el.value = value;
    } else if (name === 'checked') {
      el.checked = Boolean(value);
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

let uid = 0;
/** A fresh element id with a prefix. */
export function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled input (or select/textarea built by the caller) in a .field wrapper. */
export function field(labelText, control, hint) {
  if (!control.id) control.id = nextId('f');
  let hintEl = null;
  if (hint) {
    hintEl = h('p', { class: 'hint', id: nextId('hint') }, hint);
    control.setAttribute('aria-describedby', hintEl.id);
  }
  return h('div', { class: 'field' }, h('label', { for: control.id }, labelText), control, hintEl);
}

export function select(name, options, value) {
  const s = h('select', { name });
  for (const opt of options) {
    const [v, label] = Array.isArray(opt) ? opt : [opt, opt];
    const o = h('option', { value: v }, label);
    if (v === value) o.selected = true;
    s.appendChild(o);
  }
  return s;
}

/** A definition list from [term, value] pairs; values may be nodes or text; null shows "—". */
export function dl(pairs, cls) {
  const list = h('dl', { class: cls || 'facts' });
  for (const [term, value] of pairs) {
    list.appendChild(h('dt', null, term));
    list.appendChild(h('dd', null, display(value)));
  }
  return list;
}

/** A value for display: nodes stay, null/undefined/'' become an em dash, objects become JSON. */
export function display(value) {
  if (value instanceof Node) return value;
  if (value === null || value === undefined || value === '') return h('span', { class: 'none' }, '—');
  if (typeof value === 'object') return h('code', { class: 'wrap' }, JSON.stringify(value));
  return String(value);
}

/** A table with column headers (scope=col) in a keyboard-scrollable region. */
export function table(caption, headers, rows, opts = {}) {
  const t = h('table', { class: opts.class || 'data' },
    caption ? h('caption', { class: opts.captionClass || null }, caption) : null,
    h('thead', null, h('tr', null, headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', null, rows.map((r) => h('tr', null, r.map((cell, i) => (
      i === 0 && opts.rowHeader ? h('th', { scope: 'row' }, display(cell)) : h('td', null, display(cell))
    ))))));
  const label = typeof caption === 'string' ? caption : (opts.label || 'Table');
  return h('div', { class: 'table-wrap', role: 'region', 'aria-label': label, tabindex: '0' }, t);
}

/** An error notice (role=alert) with the API's message. */
export function errorBox(err, what) {
  const msg = err && err.message ? err.message : String(err);
  return h('div', { class: 'notice error', role: 'alert' }, what ? `${what}: ${msg}` : msg);
}

/** "42 seconds", "3 minutes", "2 hours", "5 days" ago. */
export function ageInWords(seconds) {
  const s = Math.max(0, Math.round(Number(seconds)));
  const unit = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
  if (s < 60) return `${unit(s, 'second')} ago`;
  if (s < 3600) return `${unit(Math.floor(s / 60), 'minute')} ago`;
  if (s < 172800) {
    const hrs = Math.floor(s / 3600);
    const min = Math.floor((s % 3600) / 60);
    return `${unit(hrs, 'hour')}${min && hrs < 10 ? ` ${unit(min, 'minute')}` : ''} ago`;
  }
  return `${unit(Math.floor(s / 86400), 'day')} ago`;
}

/** An RFC 3339 UTC string to the value of a datetime-local input (the viewer's local time). */
export function toLocalInput(rfc3339) {
  if (!rfc3339) return '';
  const d = new Date(rfc3339);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A datetime-local value (local time) to RFC 3339 UTC, or '' when empty or invalid. */
export function fromLocalInput(value) {
  if (!value) return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString().replace('.000Z', 'Z');
}
