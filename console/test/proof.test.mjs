// node --test console/test/   (Node 20+: WebCrypto Ed25519 under globalThis.crypto.subtle)
//
// The fixtures are real proofs printed by `logout-ledger prove` (see fixtures/README.md): a demo
// store, then one checkpoint signed by `serve` with the key whose verifier is log.key.pub.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

import {
  verifyProof, parseJsonStrict, canonicalEncode, COLUMNS, parseVerifierKey, bytesToHex,
} from '../js/proof.js';

const here = dirname(fileURLToPath(import.meta.url));
const fixture = (name) => readFileSync(join(here, 'fixtures', name), 'utf8');
const KEY = fixture('log.key.pub').trim();
const PROOF3 = fixture('proof-3.json');

const clone = (text) => JSON.parse(text);
const enc = new TextEncoder();

function b64(bytes) {
  return Buffer.from(bytes).toString('base64');
}

/** A fresh Ed25519 key made here: its verifier key text and a note signer. */
async function makeKey(name) {
  const pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
  const pub = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
  const h = new Uint8Array(await crypto.subtle.digest('SHA-256', Buffer.concat([
    enc.encode(`${name}\n`), Uint8Array.of(1), pub,
  ])));
  const id = h.slice(0, 4);
  const vkey = `${name}+${bytesToHex(id)}+${b64(Buffer.concat([Uint8Array.of(1), pub]))}`;
  const sign = async (body) => {
    const sig = new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' }, pair.privateKey, enc.encode(body)));
    return `${body}\n\u2014 ${name} ${b64(Buffer.concat([id, sig]))}\n`;
  };
  return { vkey, sign };
}

/** The checkpoint body of a proof's note (the three lines). */
function bodyOf(note) {
  return note.slice(0, note.lastIndexOf('\n\n') + 1);
}

test('genuine proofs made by the CLI hold', async () => {
  for (const n of [1, 3, 7, 12]) {
    const r = await verifyProof(fixture(`proof-${n}.json`), KEY);
    assert.equal(r.ok, true, r.message);
    assert.equal(r.id, n);
    assert.equal(r.treeSize, 12);
    assert.equal(r.message, `Proof holds: record ${n} is in checkpoint of size 12 signed by demo.logout-ledger.example`);
  }
});

test('a parsed proof object is accepted as well as its text', async () => {
  const r = await verifyProof(parseJsonStrict(PROOF3), KEY);
  assert.equal(r.ok, true, r.message);
});

test('a changed record field fails as altered', async () => {
  for (const [field, value] of [['sub', 'auth0|mallory'], ['received_at', 1796689154453], ['claims_verified', 0],
    ['session_metadata', '{"org_id":"org_globex"}'], ['token_sha256', '00'.repeat(32)], ['reason', 'x']]) {
    const p = clone(PROOF3);
    p.record[field] = value;
    const r = await verifyProof(JSON.stringify(p), KEY);
    assert.equal(r.ok, false, field);
    assert.match(r.message, /^Proof FAILS: .*altered/, field);
  }
});

test('a changed previous entry hash fails as altered', async () => {
  const p = clone(PROOF3);
  p.previous_entry_hash = `${p.previous_entry_hash.slice(0, -1)}0`;
  const r = await verifyProof(JSON.stringify(p), KEY);
  assert.match(r.message, /altered/);
});

test('a changed entry hash (with the record left alone) fails', async () => {
  const p = clone(PROOF3);
  p.entry_hash = `${p.entry_hash.slice(0, -2)}00`;
  const r = await verifyProof(JSON.stringify(p), KEY);
  assert.equal(r.ok, false);
  assert.match(r.message, /altered/);
});

test('a changed path element fails', async () => {
  const base = clone(PROOF3);
  for (let k = 0; k < base.inclusion_path.length; k += 1) {
    const p = clone(PROOF3);
    const h = p.inclusion_path[k];
    p.inclusion_path[k] = (h[0] === 'f' ? 'e' : 'f') + h.slice(1);
    const r = await verifyProof(JSON.stringify(p), KEY);
    assert.equal(r.ok, false);
    assert.match(r.message, /inclusion path does not lead to the signed root/);
  }
  const shorter = clone(PROOF3);
  shorter.inclusion_path.pop();
  assert.match((await verifyProof(JSON.stringify(shorter), KEY)).message, /shorter than the tree needs/);
  const longer = clone(PROOF3);
  longer.inclusion_path.push('00'.repeat(32));
  assert.match((await verifyProof(JSON.stringify(longer), KEY)).message, /longer than the tree allows/);
  const swapped = clone(PROOF3);
  swapped.inclusion_path.reverse();
  assert.equal((await verifyProof(JSON.stringify(swapped), KEY)).ok, false);
});

test('another record\'s proof with this id fails (wrong leaf index)', async () => {
  const p = clone(fixture('proof-12.json'));
  const q = clone(PROOF3);
  q.inclusion_path = p.inclusion_path;
  const r = await verifyProof(JSON.stringify(q), KEY);
  assert.equal(r.ok, false);
});

test('a wrong key fails', async () => {
  const other = await makeKey('demo.logout-ledger.example');
  let r = await verifyProof(PROOF3, other.vkey);
  assert.equal(r.ok, false);
  assert.match(r.message, /no signature by demo\.logout-ledger\.example\+/);
  const stranger = await makeKey('someone.example');
  r = await verifyProof(PROOF3, stranger.vkey);
  assert.match(r.message, /no signature by someone\.example/);
  // Same name and key id, but another signature: the key's own line does not verify.
  const p = clone(PROOF3);
  const sigLine = p.checkpoint.slice(p.checkpoint.lastIndexOf('\n\n') + 2);
  const blob = Buffer.from(sigLine.trim().split(' ').pop(), 'base64');
  blob[10] ^= 0xff;
  p.checkpoint = `${bodyOf(p.checkpoint)}\n\u2014 demo.logout-ledger.example ${blob.toString('base64')}\n`;
  r = await verifyProof(JSON.stringify(p), KEY);
  assert.match(r.message, /signature by demo\.logout-ledger\.example\+[0-9a-f]{8} does not verify/);
});

test('a key whose id does not match its name and key is refused', async () => {
  const bad = KEY.replace(/\+[0-9a-f]{8}\+/, '+00000000+');
  const r = await verifyProof(PROOF3, bad);
  assert.match(r.message, /key ID does not match/);
  assert.match((await verifyProof(PROOF3, 'not a key')).message, /not a note verifier key/);
  assert.match((await verifyProof(PROOF3, '')).message, /not a note verifier key/);
});

test('a note signed by the right key name for the same root verifies (signature path)', async () => {
  const k = await makeKey('demo.logout-ledger.example');
  const p = clone(PROOF3);
  p.checkpoint = await k.sign(bodyOf(p.checkpoint));
  const r = await verifyProof(JSON.stringify(p), k.vkey);
  assert.equal(r.ok, true, r.message);
});

test('a note with another origin fails, even when the key signed it', async () => {
  const k = await makeKey('demo.logout-ledger.example');
  const p = clone(PROOF3);
  const [, size, root] = bodyOf(p.checkpoint).split('\n');
  p.checkpoint = await k.sign(`other-log.example\n${size}\n${root}\n`);
  const r = await verifyProof(JSON.stringify(p), k.vkey);
  assert.equal(r.ok, false);
  assert.match(r.message, /checkpoint is of log "other-log\.example", not of "demo\.logout-ledger\.example"/);
});

test('a note of another size than the proof fails', async () => {
  const k = await makeKey('demo.logout-ledger.example');
  const p = clone(PROOF3);
  const [origin, , root] = bodyOf(p.checkpoint).split('\n');
  p.checkpoint = await k.sign(`${origin}\n13\n${root}\n`);
  const r = await verifyProof(JSON.stringify(p), k.vkey);
  assert.match(r.message, /checkpoint is of size 13, the proof says 12/);
});

test('a note signed over another root fails on the path', async () => {
  const k = await makeKey('demo.logout-ledger.example');
  const p = clone(PROOF3);
  const [origin, size] = bodyOf(p.checkpoint).split('\n');
  p.checkpoint = await k.sign(`${origin}\n${size}\n${b64(new Uint8Array(32))}\n`);
  const r = await verifyProof(JSON.stringify(p), k.vkey);
  assert.match(r.message, /does not lead to the signed root/);
});

test('a record with an unknown, missing, repeated or mistyped column is refused', async () => {
  let p = clone(PROOF3);
  p.record.extra = null;
  assert.match((await verifyProof(JSON.stringify(p), KEY)).message, /unknown column "extra"/);
  p = clone(PROOF3);
  delete p.record.sid;
  assert.match((await verifyProof(JSON.stringify(p), KEY)).message, /column "sid" missing/);
  const twice = PROOF3.replace('"sub": "auth0|alice",', '"sub": "auth0|alice", "sub": "auth0|bob",');
  assert.notEqual(twice, PROOF3);
  assert.match((await verifyProof(twice, KEY)).message, /names "sub" twice/);
  p = clone(PROOF3);
  p.record.iat = String(p.record.iat);
  assert.match((await verifyProof(JSON.stringify(p), KEY)).message, /"iat" is not an integer/);
  p = clone(PROOF3);
  p.record.sub = 42;
  assert.match((await verifyProof(JSON.stringify(p), KEY)).message, /"sub" is not text/);
  p = clone(PROOF3);
  p.record.token_sha256 = p.record.token_sha256.toUpperCase();
  assert.match((await verifyProof(JSON.stringify(p), KEY)).message, /"token_sha256" is not lowercase hex/);
  p = clone(PROOF3);
  delete p.record;
  assert.match((await verifyProof(JSON.stringify(p), KEY)).message, /carries no record/);
  p = clone(PROOF3);
  p.record.id = 4;
  assert.match((await verifyProof(JSON.stringify(p), KEY)).message, /record's id 4 is not the proof's id 3/);
});

test('the canonical encoding follows the documented tags', () => {
  const rec = Object.fromEntries(COLUMNS.map(([k]) => [k, null]));
  rec.id = -1;
  rec.kind = 'é';
  rec.token_sha256 = 'ab01';
  const bytes = canonicalEncode(rec);
  assert.equal(bytesToHex(bytes.slice(0, 9)), '01ffffffffffffffff');
  assert.equal(bytesToHex(bytes.slice(9, 16)), '0200000002c3a9');
  // received_at .. user_agent: 21 NULLs, then token_sha256 as bytes.
  assert.equal(bytesToHex(bytes.slice(16, 37)), '00'.repeat(21));
  assert.equal(bytesToHex(bytes.slice(37, 44)), '0300000002ab01');
  assert.equal(bytes.length, 44 + 6);
});

test('the strict JSON reader keeps large integers exact and refuses repeats', () => {
  const v = parseJsonStrict('{"a": 9223372036854775807, "b": -9007199254740993, "c": 1.5, "d": "\\u00e9\\n"}');
  assert.equal(v.a, 9223372036854775807n);
  assert.equal(v.b, -9007199254740993n);
  assert.equal(v.c, 1.5);
  assert.equal(v.d, 'é\n');
  assert.throws(() => parseJsonStrict('{"a":1,"a":2}'), /twice/);
  assert.throws(() => parseJsonStrict('{"a":1} x'), /trailing/);
  assert.throws(() => parseJsonStrict('{"__proto__": 1, "__proto__": 2}'), /twice/);
});

test('the fixture key parses', async () => {
  const k = await parseVerifierKey(KEY);
  assert.equal(k.name, 'demo.logout-ledger.example');
  assert.equal(k.publicKey.length, 32);
});
