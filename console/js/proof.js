// Inclusion proofs of logout-ledger, checked with WebCrypto alone (docs/audit-format.md):
// the record's canonical encoding and entry hash, the RFC 9162 §2.1.3.2 inclusion path, and the
// C2SP signed-note checkpoint with its Ed25519 signature. No DOM here: the same module runs in
// the browser and under `node --test`.

/** The 30 chained columns, in the canonical order, with their types. */
export const COLUMNS = [
  ['id', 'int'], ['kind', 'text'], ['received_at', 'int'], ['outcome', 'text'],
  ['http_status', 'int'], ['reason', 'text'], ['reason_detail', 'text'], ['iss', 'text'],
  ['sub', 'text'], ['sid', 'text'], ['jti', 'text'], ['aud', 'text'], ['iat', 'int'],
  ['exp', 'int'], ['alg', 'text'], ['kid', 'text'], ['typ', 'text'], ['events', 'text'],
  ['session_metadata', 'text'], ['metadata_status', 'text'], ['metadata_error', 'text'],
  ['source_ip', 'text'], ['user_agent', 'text'], ['token_sha256', 'bytes'], ['token', 'text'],
  ['key_set_digest', 'bytes'], ['duplicate_of', 'int'], ['claims_verified', 'int'],
  ['action', 'text'], ['details', 'text'],
];

const ENTRY_PREFIX = 'logout-ledger:audit-entry:v1\n';
const SIG_PREFIX = '\u2014 ';
const MAX_SIGNATURES = 100;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/** A proof that does not hold; `message` says why, in words. */
export class ProofError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProofError';
  }
}

const fail = (message) => { throw new ProofError(message); };
const utf8 = new TextEncoder();

// ---------------------------------------------------------------------------------------------
// A strict JSON reader: integers stay exact (BigInt beyond 2^53) and a repeated member name is
// refused, so the browser reads the proof the way the Rust verifier does.

/**
 * Parses JSON text. Integers (no fraction, no exponent) become Numbers when safe, BigInts
 * otherwise; objects are plain objects without a prototype; a member given twice is an error.
 */
export function parseJsonStrict(text) {
  let i = 0;
  const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i += 1; };
  const bad = (what) => fail(`the proof is not valid JSON: ${what} at offset ${i}`);
  const value = (depth) => {
    if (depth > 64) bad('nesting too deep');
    ws();
    const c = text[i];
    if (c === '{') {
      i += 1;
      const obj = Object.create(null);
      ws();
      if (text[i] === '}') { i += 1; return obj; }
      for (;;) {
        ws();
        if (text[i] !== '"') bad('expected a member name');
        const key = string();
        if (Object.prototype.hasOwnProperty.call(obj, key)) fail(`the proof names "${key}" twice`);
        ws();
        if (text[i] !== ':') bad('expected ":"');
        i += 1;
        obj[key] = value(depth + 1);
        ws();
        if (text[i] === ',') { i += 1; continue; }
        if (text[i] === '}') { i += 1; return obj; }
        bad('expected "," or "}"');
      }
    }
    if (c === '[') {
      i += 1;
      const arr = [];
      ws();
      if (text[i] === ']') { i += 1; return arr; }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[i] === ',') { i += 1; continue; }
        if (text[i] === ']') { i += 1; return arr; }
        bad('expected "," or "]"');
      }
    }
    if (c === '"') return string();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]]) {
      if (text.startsWith(word, i)) { i += word.length; return v; }
    }
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(text.slice(i, i + 400));
    if (!m || m[0] === '' || m[0] === '-') bad('unexpected character');
    i += m[0].length;
    if (m[2] === undefined && m[3] === undefined) {
      const n = BigInt(m[0]);
      return (n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER)) ? Number(n) : n;
    }
    return Number(m[0]);
  };
  const string = () => {
    i += 1;
    let out = '';
    for (;;) {
      if (i >= text.length) bad('unterminated string');
      const c = text[i];
      if (c === '"') { i += 1; return out; }
      if (c < ' ') bad('control character in a string');
      if (c === '\\') {
        const e = text[i + 1];
        const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
        if (e in simple) { out += simple[e]; i += 2; continue; }
        if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
          out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
          i += 6;
          continue;
        }
        bad('bad escape');
      }
      out += c;
      i += 1;
    }
  };
  const v = value(0);
  ws();
  if (i !== text.length) bad('trailing characters');
  return v;
}

// ---------------------------------------------------------------------------------------------
// Bytes helpers.

/** Lowercase hex (even length) to bytes; `what` names the field in the error. */
export function hexToBytes(hex, what) {
  if (typeof hex !== 'string' || !/^(?:[0-9a-f]{2})*$/.test(hex)) fail(`${what} is not lowercase hex`);
  const out = new Uint8Array(hex.length / 2);
  for (let k = 0; k < out.length; k += 1) out[k] = parseInt(hex.slice(2 * k, 2 * k + 2), 16);
  return out;
}

export function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Standard base64 (with padding) to bytes; refuses anything else. */
export function base64ToBytes(b64, what) {
  if (typeof b64 !== 'string' || b64.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) {
    fail(`${what} is not standard base64`);
  }
  let bin;
  try { bin = atob(b64); } catch { fail(`${what} is not standard base64`); }
  return Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let k = 0; k < a.length; k += 1) diff |= a[k] ^ b[k];
  return diff === 0;
}

async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', concat(...parts)));
}

function u32be(n) {
  return Uint8Array.of((n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

// ---------------------------------------------------------------------------------------------
// (a) canonical encoding and (b) entry hash.

function asInt(value, name) {
  let n;
  if (typeof value === 'bigint') n = value;
  else if (typeof value === 'number' && Number.isInteger(value)) n = BigInt(value);
  else fail(`record: column "${name}" is not an integer`);
  if (n < I64_MIN || n > I64_MAX) fail(`record: column "${name}" is out of the 64-bit range`);
  return n;
}

/**
 * The canonical encoding of a proof's `record` object: every column exactly once, typed as
 * documented; anything else is refused.
 */
export function canonicalEncode(record) {
  if (record === null || typeof record !== 'object' || Array.isArray(record)) {
    fail('the proof carries no record (a proof made before proofs carried the record: make it again)');
  }
  const known = new Set(COLUMNS.map(([n]) => n));
  for (const key of Object.keys(record)) {
    if (!known.has(key)) fail(`record: unknown column "${key}"`);
  }
  const parts = [];
  for (const [name, type] of COLUMNS) {
    if (!Object.prototype.hasOwnProperty.call(record, name)) fail(`record: column "${name}" missing (null for NULL)`);
    const v = record[name];
    if (v === null) { parts.push(Uint8Array.of(0x00)); continue; }
    if (type === 'int') {
      const n = BigInt.asUintN(64, asInt(v, name));
      const b = new Uint8Array(9);
      b[0] = 0x01;
      new DataView(b.buffer).setBigUint64(1, n, false);
      parts.push(b);
    } else if (type === 'text') {
      if (typeof v !== 'string') fail(`record: column "${name}" is not text`);
      const t = utf8.encode(v);
      parts.push(Uint8Array.of(0x02), u32be(t.length), t);
    } else {
      const bytes = hexToBytes(v, `record: column "${name}"`);
      parts.push(Uint8Array.of(0x03), u32be(bytes.length), bytes);
    }
  }
  return concat(...parts);
}

/** entry_hash = SHA-256(prefix || canonical(record) || previous entry hash). */
export async function entryHash(record, previousEntryHash) {
  return sha256(utf8.encode(ENTRY_PREFIX), canonicalEncode(record), previousEntryHash);
}

// ---------------------------------------------------------------------------------------------
// (c) RFC 9162 §2.1.3.2 inclusion.

export async function leafHash(entry) {
  return sha256(Uint8Array.of(0x00), entry);
}

/** The root an inclusion path leads to, or a ProofError when the path cannot be right. */
export async function rootFromInclusionPath(index, treeSize, leaf, path) {
  let fn = BigInt(index);
  let sn = BigInt(treeSize) - 1n;
  if (fn < 0n || fn > sn) fail(`leaf index ${index} is outside a tree of size ${treeSize}`);
  let r = leaf;
  for (const p of path) {
    if (sn === 0n) fail('the inclusion path is longer than the tree allows');
    if ((fn & 1n) === 1n || fn === sn) {
      r = await sha256(Uint8Array.of(0x01), p, r);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      }
    } else {
      r = await sha256(Uint8Array.of(0x01), r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) fail('the inclusion path is shorter than the tree needs');
  return r;
}

// ---------------------------------------------------------------------------------------------
// (d) the signed note and the verifier key.

function checkKeyName(name, what) {
  if (!name || /[\s+]/u.test(name)) fail(`${what}: invalid key name`);
}

async function keyId(name, pub) {
  const h = await sha256(utf8.encode(`${name}\n`), Uint8Array.of(0x01), pub);
  return h.slice(0, 4);
}

/**
 * Parses a note verifier key `name+8hex+base64(0x01||pub32)` and checks that its key id matches
 * its name and key. Returns `{name, keyId (Uint8Array 4), publicKey (Uint8Array 32)}`.
 */
export async function parseVerifierKey(text) {
  if (typeof text !== 'string') fail('no public key was given');
  const vkey = text.trim();
  const first = vkey.indexOf('+');
  const second = first < 0 ? -1 : vkey.indexOf('+', first + 1);
  if (first < 0 || second < 0) fail('the public key is not a note verifier key (name+id+key)');
  const name = vkey.slice(0, first);
  const idHex = vkey.slice(first + 1, second);
  checkKeyName(name, 'the public key');
  if (!/^[0-9a-fA-F]{8}$/.test(idHex)) fail('the public key: key ID is not 8 hex digits');
  const raw = base64ToBytes(vkey.slice(second + 1), 'the public key');
  if (raw.length !== 33 || raw[0] !== 0x01) fail('the public key is not an Ed25519 key');
  const publicKey = raw.slice(1);
  const id = await keyId(name, publicKey);
  if (bytesToHex(id) !== idHex.toLowerCase()) fail('the public key: key ID does not match name and key');
  return { name, keyId: id, publicKey };
}

/** Splits a signed note into its text (ending in "\n") and its signature lines. */
export function splitNote(note) {
  if (typeof note !== 'string') fail('the proof carries no checkpoint');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0009\u000b-\u001f]/.test(note)) fail('the checkpoint note holds a control character');
  const sep = note.lastIndexOf('\n\n');
  if (sep < 0) fail('the checkpoint note has no blank line before its signatures');
  const text = note.slice(0, sep + 1);
  let block = note.slice(sep + 2);
  if (!block.endsWith('\n')) fail('the checkpoint note\'s signature block must end with a newline');
  block = block.slice(0, -1);
  const signatures = [];
  for (const line of block.split('\n')) {
    if (signatures.length === MAX_SIGNATURES) fail('the checkpoint note has too many signatures');
    if (!line.startsWith(SIG_PREFIX)) fail('a signature line must start with an em dash and a space');
    const rest = line.slice(SIG_PREFIX.length);
    const space = rest.indexOf(' ');
    if (space < 0) fail('a signature line needs a name and a signature');
    const name = rest.slice(0, space);
    checkKeyName(name, 'a signature line');
    const blob = base64ToBytes(rest.slice(space + 1), 'a signature');
    if (blob.length < 5) fail('a signature is too short');
    signatures.push({ name, keyId: blob.slice(0, 4), signature: blob.slice(4) });
  }
  return { text, signatures };
}

/** Parses a checkpoint body: origin, decimal size, base64 root, optional extension lines. */
export function parseCheckpoint(text) {
  if (!text.endsWith('\n')) fail('the checkpoint misses its final newline');
  const lines = text.slice(0, -1).split('\n');
  if (lines.length < 3) fail('the checkpoint has fewer than three lines');
  const [origin, size, root, ...extensions] = lines;
  if (!origin) fail('the checkpoint has an empty origin');
  if (!/^(0|[1-9][0-9]*)$/.test(size)) fail('the checkpoint\'s tree size is not a canonical decimal');
  const rootBytes = base64ToBytes(root, 'the checkpoint\'s root');
  if (rootBytes.length !== 32) fail('the checkpoint\'s root is not a 32-byte hash');
  if (extensions.some((l) => l === '')) fail('the checkpoint has an empty extension line');
  return { origin, size: BigInt(size), root: rootBytes, extensions };
}

/**
 * Verifies the note's Ed25519 signature(s) by `key` (every signature by this key must verify,
 * at least one must be present) and that the checkpoint's origin is the key's name.
 */
export async function verifyCheckpointNote(note, key) {
  const { text, signatures } = splitNote(note);
  const label = `${key.name}+${bytesToHex(key.keyId)}`;
  let cryptoKey;
  try {
    cryptoKey = await crypto.subtle.importKey('raw', key.publicKey, { name: 'Ed25519' }, false, ['verify']);
  } catch (e) {
    fail(`this browser cannot check Ed25519 signatures (${e && e.message ? e.message : e})`);
  }
  let verified = false;
  for (const s of signatures) {
    if (s.name === key.name && equalBytes(s.keyId, key.keyId)) {
      const ok = await crypto.subtle.verify({ name: 'Ed25519' }, cryptoKey, s.signature, utf8.encode(text));
      if (!ok) fail(`the checkpoint's signature by ${label} does not verify`);
      verified = true;
    }
  }
  if (!verified) fail(`the checkpoint carries no signature by ${label}`);
  const checkpoint = parseCheckpoint(text);
  if (checkpoint.origin !== key.name) {
    fail(`the checkpoint is of log "${checkpoint.origin}", not of "${key.name}" (the key's name)`);
  }
  return checkpoint;
}

// ---------------------------------------------------------------------------------------------
// The whole check.

/**
 * Checks a proof document (the JSON text `prove` prints, or an object parsed by
 * parseJsonStrict) against a note verifier key. Resolves to
 * `{ok: true, id, treeSize, keyName, record, message}` or `{ok: false, reason, message}`;
 * never rejects for a proof that does not hold.
 */
export async function verifyProof(proofInput, verifierKey) {
  try {
    const proof = typeof proofInput === 'string' ? parseJsonStrict(proofInput) : proofInput;
    if (proof === null || typeof proof !== 'object' || Array.isArray(proof)) fail('the proof is not a JSON object');
    const id = asInt(proof.id, 'id');
    if (id < 1n) fail('the proof\'s id is not a record sequence number');
    const treeSize = asInt(proof.tree_size, 'tree_size');
    const key = await parseVerifierKey(verifierKey);
    const checkpoint = await verifyCheckpointNote(proof.checkpoint, key);
    if (checkpoint.size !== treeSize) {
      fail(`the checkpoint is of size ${checkpoint.size}, the proof says ${treeSize}`);
    }
    const record = proof.record;
    canonicalEncode(record);
    if (asInt(record.id, 'id') !== id) fail(`the record's id ${record.id} is not the proof's id ${id}`);
    const previous = hexToBytes(proof.previous_entry_hash, 'previous_entry_hash');
    if (previous.length !== 32) fail('previous_entry_hash is not 32 bytes');
    const claimed = hexToBytes(proof.entry_hash, 'entry_hash');
    if (claimed.length !== 32) fail('entry_hash is not 32 bytes');
    const recomputed = await entryHash(record, previous);
    if (!equalBytes(recomputed, claimed)) fail('the record does not hash to its entry hash: it was altered');
    if (!Array.isArray(proof.inclusion_path)) fail('the proof has no inclusion_path');
    const path = proof.inclusion_path.map((h, k) => {
      const b = hexToBytes(h, `inclusion_path[${k}]`);
      if (b.length !== 32) fail(`inclusion_path[${k}] is not 32 bytes`);
      return b;
    });
    const root = await rootFromInclusionPath(id - 1n, treeSize, await leafHash(claimed), path);
    if (!equalBytes(root, checkpoint.root)) {
      fail('the inclusion path does not lead to the signed root: the record is not in this checkpoint as shown');
    }
    return {
      ok: true,
      id: Number(id),
      treeSize: Number(treeSize),
      keyName: key.name,
      record,
      message: `Proof holds: record ${id} is in checkpoint of size ${treeSize} signed by ${key.name}`,
    };
  } catch (e) {
    const reason = e instanceof ProofError ? e.message : `unexpected error: ${e && e.message ? e.message : e}`;
    return { ok: false, reason, message: `Proof FAILS: ${reason}` };
  }
}
