// The query API on the same origin. The token lives in sessionStorage only and travels in the
// Authorization header, never in a URL.

const TOKEN_KEY = 'logout-ledger-console-token';

export class ApiError extends Error {
  constructor(status, code, message, parameter) {
    super(message || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code || null;
    this.parameter = parameter || null;
  }
}

export function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* storage unavailable */ }
}

let onUnauthorized = () => {};
/** Called when a request with the stored token answers 401. */
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

/** "events" + URLSearchParams/[[k,v]] → "/api/v1/events?..." */
export function apiUrl(path, params) {
  const qs = params ? new URLSearchParams(params).toString() : '';
  return `/api/v1/${path}${qs ? `?${qs}` : ''}`;
}

async function errorFrom(resp) {
  let code = null;
  let message = null;
  let parameter = null;
  try {
    const body = await resp.json();
    if (body && typeof body === 'object') {
      code = typeof body.error === 'string' ? body.error : null;
      message = typeof body.message === 'string' ? body.message : null;
      parameter = typeof body.parameter === 'string' ? body.parameter : null;
    }
  } catch { /* not JSON */ }
  if (parameter && message && !message.includes(parameter)) message = `${parameter}: ${message}`;
  if (!message) message = resp.status === 401 ? 'That token was refused' : `the server answered ${resp.status} ${resp.statusText}`;
  return new ApiError(resp.status, code, message, parameter);
}

/**
 * A request to /api/v1/<path>. Resolves to the Response when it is 2xx; otherwise rejects with
 * an ApiError carrying the server's message. `token` overrides the stored one (sign-in).
 */
export async function request(path, { params, method = 'GET', body, token, accept = 'application/json' } = {}) {
  const t = token ?? getToken();
  const headers = { Accept: accept };
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(apiUrl(path, params), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
      referrerPolicy: 'no-referrer',
    });
  } catch (e) {
    throw new ApiError(0, 'network', `the API could not be reached (${e.message})`);
  }
  if (!resp.ok) {
    const err = await errorFrom(resp);
    if (resp.status === 401 && token === undefined) onUnauthorized(err);
    throw err;
  }
  return resp;
}

export async function getJson(path, params, opts) {
  const resp = await request(path, { ...opts, params });
  return resp.json();
}

export async function getText(path, params, opts) {
  const resp = await request(path, { ...opts, params });
  return resp.text();
}

export async function postJson(path, body) {
  const resp = await request(path, { method: 'POST', body });
  return resp.json();
}

/** Fetches with the token and saves the answer as a file; resolves to the row count if told. */
export async function download(path, params, filename) {
  const resp = await request(path, { params, accept: '*/*' });
  const rows = resp.headers.get('X-Export-Rows');
  const blob = await resp.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  a.hidden = true;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return { rows: rows === null ? null : Number(rows), bytes: blob.size };
}

// The ledger's description (head, checkpoint, log key, delivery targets), cached per sign-in.
let ledgerCache = null;
export async function ledger({ refresh = false } = {}) {
  if (!ledgerCache || refresh) ledgerCache = await getJson('ledger');
  return ledgerCache;
}
export function forgetLedger() { ledgerCache = null; }
export function setLedger(value) { ledgerCache = value; }
