//! C2SP signed notes (c2sp.org/signed-note) and tlog checkpoints
//! (c2sp.org/tlog-checkpoint), signed with Ed25519, plus key and PEM helpers.
//!
//! A signed note is `text` + `"\n"` + one or more lines
//! `"— <key name> <base64(key ID || signature)>\n"`, where the text ends in a
//! newline and the key ID is `SHA-256(name || 0x0A || 0x01 || public key)[:4]`.

use std::fmt;

use aws_lc_rs::digest::{self, SHA256};
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::merkle::Hash;

/// Signature type byte for Ed25519 in key IDs and verifier keys.
const ALG_ED25519: u8 = 0x01;
/// Upper bound on signature lines per note (the spec requires at least 16).
const MAX_SIGNATURES: usize = 100;
/// Start of every signature line: em dash (U+2014) and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32-byte key follows it.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a note, checkpoint, key or PEM document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The signed note does not follow the signed-note syntax.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// The note text is not a valid tlog checkpoint.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    /// A key name is empty or contains a space, a plus sign or a control character.
    #[error("invalid key name {0:?}")]
    InvalidKeyName(String),
    /// The verifier key text is not `<name>+<8 hex>+<base64(0x01 || key)>`.
    #[error("malformed verifier key: {0}")]
    MalformedVerifierKey(&'static str),
    /// The note carries no signature line with this key's name and key ID.
    #[error("note has no signature by key {0}")]
    NoSignature(String),
    /// A signature line by this key is present but does not verify.
    #[error("invalid signature by key {0}")]
    BadSignature(String),
    /// The PKCS#8 document is not an acceptable Ed25519 private key.
    #[error("invalid Ed25519 private key: {0}")]
    InvalidPrivateKey(String),
    /// Generating a key or producing a signature failed inside aws-lc.
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
    /// The PEM text is missing its armour, has the wrong label or bad base64.
    #[error("malformed PEM: {0}")]
    MalformedPem(&'static str),
    /// A checkpoint signed by the right key names another log in its origin line.
    #[error("checkpoint origin {found:?} is not this log's name {expected:?}")]
    WrongOrigin {
        /// The log's name (the key's name).
        expected: String,
        /// The origin line of the checkpoint.
        found: String,
    },
}

/// A transparency-log tree head, the body of a signed checkpoint note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log identity, first line of the body (normally also the key name).
    pub origin: String,
    /// Number of leaves in the tree.
    pub size: u64,
    /// RFC 6962 root hash at `size`.
    pub root: Hash,
    /// Optional opaque extension lines, kept in order, without newlines.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// Builds a checkpoint without extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// Renders the note text: origin, size, base64 root, extensions, each ending in `\n`.
    pub fn body(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for line in &self.extensions {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Parses a checkpoint body (the note text, not the signed note).
    pub fn parse(body: &str) -> Result<Self, NoteError> {
        let bad = NoteError::MalformedCheckpoint;
        if has_control_chars(body) {
            return Err(bad("control character"));
        }
        let lines = body
            .strip_suffix('\n')
            .ok_or(bad("missing final newline"))?;
        let mut lines = lines.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(bad("fewer than three lines"));
        };
        if origin.is_empty() {
            return Err(bad("empty origin"));
        }
        let digits_ok = size.bytes().all(|b| b.is_ascii_digit());
        if !digits_ok || size.is_empty() || (size.len() > 1 && size.starts_with('0')) {
            return Err(bad("tree size is not a canonical decimal"));
        }
        let size = size.parse().map_err(|_| bad("tree size overflows u64"))?;
        let root = B64
            .decode(root)
            .ok()
            .and_then(|r| Hash::try_from(r).ok())
            .ok_or(bad("root is not a base64 32-byte hash"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("empty extension line"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

fn has_control_chars(text: &str) -> bool {
    text.chars().any(|c| c < ' ' && c != '\n')
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    let bad = name.is_empty()
        || name
            .chars()
            .any(|c| c == '+' || c.is_whitespace() || c < ' ');
    if bad {
        Err(NoteError::InvalidKeyName(name.to_owned()))
    } else {
        Ok(())
    }
}

/// Computes the Ed25519 key ID: `SHA-256(name || 0x0A || 0x01 || public key)[:4]`, big-endian.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut ctx = digest::Context::new(&SHA256);
    ctx.update(name.as_bytes());
    ctx.update(&[b'\n', ALG_ED25519]);
    ctx.update(public_key);
    let d = ctx.finish();
    let h = d.as_ref();
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

fn verifier_key_text(name: &str, key_id: u32, public_key: &[u8; 32]) -> String {
    let mut key = Vec::with_capacity(33);
    key.push(ALG_ED25519);
    key.extend_from_slice(public_key);
    format!("{name}+{key_id:08x}+{}", B64.encode(key))
}

/// Signs note texts with one named Ed25519 key (the log's checkpoint key).
pub struct NoteSigner {
    name: String,
    key_id: u32,
    public_key: [u8; 32],
    key_pair: Ed25519KeyPair,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// Loads a signer from a key name and an Ed25519 PKCS#8 (v1 or v2) DER document.
    pub fn new(name: &str, pkcs8_der: &[u8]) -> Result<Self, NoteError> {
        let key_pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8_der)
            .map_err(|e| NoteError::InvalidPrivateKey(e.to_string()))?;
        Self::from_key_pair(name, key_pair)
    }

    /// Wraps an existing Ed25519 key pair under a key name.
    pub fn from_key_pair(name: &str, key_pair: Ed25519KeyPair) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let public_key: [u8; 32] = key_pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| NoteError::InvalidPrivateKey("public key is not 32 bytes".into()))?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, &public_key),
            public_key,
            key_pair,
        })
    }

    /// Returns the key name written in signature lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the 32-bit key ID that prefixes each signature.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Returns the raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// Returns the verifier key text `<name>+<hex key ID>+<base64(0x01 || key)>` to publish.
    pub fn verifier_key(&self) -> String {
        verifier_key_text(&self.name, self.key_id, &self.public_key)
    }

    /// Returns the matching verifier, so a log can check its own output.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            public_key: self.public_key,
        }
    }

    /// Signs a note text (non-empty, ending in `\n`) and returns the full signed note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if text.is_empty() || !text.ends_with('\n') {
            return Err(NoteError::MalformedNote("text must end with a newline"));
        }
        if has_control_chars(text) {
            return Err(NoteError::MalformedNote("control character in text"));
        }
        let sig = self
            .key_pair
            .try_sign(text.as_bytes())
            .map_err(|_| NoteError::Crypto("Ed25519 signing failed"))?;
        let mut blob = Vec::with_capacity(4 + 64);
        blob.extend_from_slice(&self.key_id.to_be_bytes());
        blob.extend_from_slice(sig.as_ref());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

/// Checks signed notes against one trusted Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    public_key: [u8; 32],
}

impl fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.verifier_key())
    }
}

impl NoteVerifier {
    /// Parses verifier key text `<name>+<8 hex digits>+<base64(0x01 || 32-byte key)>`.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let bad = NoteError::MalformedVerifierKey;
        // Names cannot contain '+', but the base64 key can: split at most twice.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(hex), Some(key64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected three '+'-separated fields"));
        };
        check_key_name(name)?;
        if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("key ID is not 8 hex digits"));
        }
        let id = u32::from_str_radix(hex, 16).map_err(|_| bad("key ID is not 8 hex digits"))?;
        let key = B64.decode(key64).map_err(|_| bad("key is not base64"))?;
        let Some((&ALG_ED25519, public_key)) = key.split_first() else {
            return Err(bad("key is not an Ed25519 key"));
        };
        let public_key: [u8; 32] = public_key
            .try_into()
            .map_err(|_| bad("Ed25519 key is not 32 bytes"))?;
        if key_id(name, &public_key) != id {
            return Err(bad("key ID does not match name and key"));
        }
        Self::new(name, public_key)
    }

    /// Builds a verifier from a key name and a raw 32-byte Ed25519 public key.
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, &public_key),
            public_key,
        })
    }

    /// Returns the trusted key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the 32-bit key ID expected in signature lines.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Returns the raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// Returns the verifier key in its text form (the inverse of [`NoteVerifier::parse`]).
    pub fn verifier_key(&self) -> String {
        verifier_key_text(&self.name, self.key_id, &self.public_key)
    }

    /// Verifies a signed note and returns its text (ending in `\n`).
    ///
    /// Signatures by other keys are ignored; every signature by this key must
    /// verify, and at least one must be present.
    pub fn verify(&self, note: &str) -> Result<String, NoteError> {
        let (text, signatures) = split_note(note)?;
        let key = UnparsedPublicKey::new(&ED25519, &self.public_key);
        let mut verified = false;
        for line in signatures {
            if line.name == self.name && line.key_id == self.key_id {
                key.verify(text.as_bytes(), &line.signature)
                    .map_err(|_| NoteError::BadSignature(self.label()))?;
                verified = true;
            }
        }
        if verified {
            Ok(text.to_owned())
        } else {
            Err(NoteError::NoSignature(self.label()))
        }
    }

    /// Verifies a signed note and parses its text as a checkpoint.
    pub fn verify_checkpoint(&self, note: &str) -> Result<Checkpoint, NoteError> {
        let checkpoint = Checkpoint::parse(&self.verify(note)?)?;
        // The key signs for one log: a tree head of another log it signed is not this log's.
        if checkpoint.origin != self.name {
            return Err(NoteError::WrongOrigin {
                expected: self.name.clone(),
                found: checkpoint.origin,
            });
        }
        Ok(checkpoint)
    }

    fn label(&self) -> String {
        format!("{}+{:08x}", self.name, self.key_id)
    }
}

/// One parsed signature line of a note.
struct SigLine<'a> {
    name: &'a str,
    key_id: u32,
    signature: Vec<u8>,
}

/// Splits a signed note into its text and its parsed signature lines.
fn split_note(note: &str) -> Result<(&str, Vec<SigLine<'_>>), NoteError> {
    let bad = NoteError::MalformedNote;
    if has_control_chars(note) {
        return Err(bad("control character"));
    }
    // The text ends at the last blank line; signature lines never contain one.
    let sep = note
        .rfind("\n\n")
        .ok_or(bad("no blank line before signatures"))?;
    let (text, sig_block) = (&note[..=sep], &note[sep + 2..]);
    let sig_block = sig_block
        .strip_suffix('\n')
        .ok_or(bad("signature block must end with a newline"))?;
    let mut signatures = Vec::new();
    for line in sig_block.split('\n') {
        if signatures.len() == MAX_SIGNATURES {
            return Err(bad("too many signatures"));
        }
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(bad("signature line must start with an em dash and a space"))?;
        let (name, sig64) = rest
            .split_once(' ')
            .ok_or(bad("signature line needs a name and a signature"))?;
        check_key_name(name).map_err(|_| bad("invalid key name in signature line"))?;
        let blob = B64
            .decode(sig64)
            .map_err(|_| bad("signature is not base64"))?;
        let Some((id, sig)) = blob.split_first_chunk::<4>() else {
            return Err(bad("signature is too short"));
        };
        if sig.is_empty() {
            return Err(bad("signature is too short"));
        }
        signatures.push(SigLine {
            name,
            key_id: u32::from_be_bytes(*id),
            signature: sig.to_vec(),
        });
    }
    Ok((text, signatures))
}

/// Generates a fresh Ed25519 private key as a PKCS#8 v1 DER document (OpenSSL's format).
pub fn generate_pkcs8() -> Result<Vec<u8>, NoteError> {
    let key_pair =
        Ed25519KeyPair::generate().map_err(|_| NoteError::Crypto("Ed25519 key generation"))?;
    let doc = key_pair
        .to_pkcs8v1()
        .map_err(|_| NoteError::Crypto("PKCS#8 encoding"))?;
    Ok(doc.as_ref().to_vec())
}

/// Encodes DER bytes as PEM with the given label (e.g. `PRIVATE KEY`), 64 columns.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        // Base64 is ASCII, so any byte offset is a character boundary.
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Decodes the first PEM block labelled `expected_label` (text around it is ignored).
pub fn pem_decode(text: &str, expected_label: &str) -> Result<Vec<u8>, NoteError> {
    let bad = NoteError::MalformedPem;
    let begin = format!("-----BEGIN {expected_label}-----");
    let end = format!("-----END {expected_label}-----");
    let mut lines = text.lines().map(str::trim);
    lines
        .by_ref()
        .find(|l| *l == begin)
        .ok_or(bad("no BEGIN line with the expected label"))?;
    let mut b64 = String::new();
    for line in lines {
        if line == end {
            let der = B64.decode(&b64).map_err(|_| bad("invalid base64 body"))?;
            return if der.is_empty() {
                Err(bad("empty body"))
            } else {
                Ok(der)
            };
        }
        if line.starts_with("-----") || line.contains(':') {
            return Err(bad("unexpected armour or header line"));
        }
        b64.push_str(line);
    }
    Err(bad("no END line with the expected label"))
}

/// Returns the DER SubjectPublicKeyInfo of an Ed25519 public key.
pub fn public_key_spki_der(public_key: &[u8; 32]) -> Vec<u8> {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(public_key);
    der
}

/// Returns an Ed25519 public key as `PUBLIC KEY` PEM, readable by OpenSSL.
pub fn public_key_pem(public_key: &[u8; 32]) -> String {
    pem_encode("PUBLIC KEY", &public_key_spki_der(public_key))
}

#[cfg(test)]
mod tests {
    use super::super::merkle::{empty_root, leaf_hash, root};
    use super::*;

    // Known-answer vectors from golang.org/x/mod/sumdb/note (note_test.go).
    const PETER_SEED_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    fn peter_signer() -> NoteSigner {
        let blob = B64.decode(PETER_SEED_B64).expect("base64 seed");
        assert_eq!(blob[0], ALG_ED25519);
        let key_pair = Ed25519KeyPair::from_seed_unchecked(&blob[1..]).expect("seed");
        NoteSigner::from_key_pair("PeterNeumann", key_pair).expect("signer")
    }

    fn fresh_signer(name: &str) -> NoteSigner {
        NoteSigner::new(name, &generate_pkcs8().expect("keygen")).expect("signer")
    }

    fn sample_checkpoint() -> Checkpoint {
        let leaves: Vec<_> = (0u8..5).map(|i| leaf_hash(&[i])).collect();
        Checkpoint::new("example.com/audit-log", 5, root(&leaves))
    }

    #[test]
    fn go_known_answer_signature_and_key() {
        let signer = peter_signer();
        assert_eq!(signer.key_id(), 0xc74f20a3);
        assert_eq!(signer.verifier_key(), PETER_VKEY);
        let note = signer.sign(GO_TEXT).expect("sign");
        assert_eq!(note, format!("{GO_TEXT}\n{PETER_SIG}"));
    }

    #[test]
    fn go_known_answer_note_verifies() {
        let peter = NoteVerifier::parse(PETER_VKEY).expect("peter vkey");
        let enoch = NoteVerifier::parse(ENOCH_VKEY).expect("enoch vkey");
        assert_eq!(peter.to_string(), PETER_VKEY);
        let both = format!("{GO_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
        assert_eq!(peter.verify(&both).as_deref(), Ok(GO_TEXT));
        assert_eq!(enoch.verify(&both).as_deref(), Ok(GO_TEXT));
        let only_peter = format!("{GO_TEXT}\n{PETER_SIG}");
        assert!(matches!(
            enoch.verify(&only_peter),
            Err(NoteError::NoSignature(_))
        ));
        // Go's "invalid signature" probe: four characters spliced into the signature.
        let spliced = format!("{GO_TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        assert!(matches!(
            peter.verify(&spliced),
            Err(NoteError::BadSignature(_))
        ));
    }

    #[test]
    fn go_malformed_notes_are_rejected() {
        let bad_notes = [
            GO_TEXT.to_owned(),
            format!("{GO_TEXT}\n"),
            format!("{GO_TEXT}\n{}", PETER_SIG.trim_end_matches('\n')),
            format!("\x01{GO_TEXT}\n{PETER_SIG}"),
            format!(
                "{GO_TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
            ),
            format!("{GO_TEXT}\n{PETER_SIG}Unexpected line.\n"),
            format!("{GO_TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES + 1)),
        ];
        let peter = NoteVerifier::parse(PETER_VKEY).expect("vkey");
        for note in &bad_notes {
            assert!(
                matches!(peter.verify(note), Err(NoteError::MalformedNote(_))),
                "accepted malformed note {note:?}"
            );
        }
        // Up to the limit, repeated valid signatures are fine.
        let many = format!("{GO_TEXT}\n{}", PETER_SIG.repeat(16));
        assert!(peter.verify(&many).is_ok());
    }

    #[test]
    fn mangled_verifier_keys_are_rejected() {
        let b = PETER_VKEY.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if (i, j) != (0, b.len()) {
                    let sub = std::str::from_utf8(&b[i..j]).expect("ascii");
                    assert!(NoteVerifier::parse(sub).is_err(), "accepted {sub:?}");
                }
            }
        }
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] += 1;
            let m = String::from_utf8(m).expect("ascii");
            assert!(NoteVerifier::parse(&m).is_err(), "accepted {m:?}");
        }
        // Wrong key length and unknown algorithm, each with a matching key ID.
        let long = "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==";
        let other_alg = "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        assert!(NoteVerifier::parse(long).is_err());
        assert!(NoteVerifier::parse(other_alg).is_err());
    }

    #[test]
    fn verifier_key_with_plus_in_base64_round_trips() {
        // Deterministic seeds until the base64 key part contains a '+'.
        let signer = (0u8..=255)
            .map(|i| {
                let key_pair = Ed25519KeyPair::from_seed_unchecked(&[i; 32]).expect("seed");
                NoteSigner::from_key_pair("log", key_pair).expect("signer")
            })
            .find(|s| s.verifier_key().matches('+').count() > 2)
            .expect("some seed yields a '+' in base64");
        let parsed = NoteVerifier::parse(&signer.verifier_key()).expect("parse");
        assert_eq!(parsed, signer.verifier());
    }

    #[test]
    fn checkpoint_sign_verify_round_trip() {
        let signer = fresh_signer("example.com/audit-log");
        let verifier = NoteVerifier::parse(&signer.verifier_key()).expect("vkey");
        assert_eq!(verifier, signer.verifier());
        let cp = sample_checkpoint();
        let note = signer.sign(&cp.body()).expect("sign");
        assert_eq!(verifier.verify(&note), Ok(cp.body()));
        assert_eq!(verifier.verify_checkpoint(&note), Ok(cp));
    }

    #[test]
    fn a_checkpoint_of_another_log_is_refused_though_the_key_signed_it() {
        let signer = fresh_signer("example.com/audit-log");
        let other_log = Checkpoint::new("example.com/other-log", 5, [7; 32]);
        let note = signer.sign(&other_log.body()).expect("sign");
        assert_eq!(signer.verifier().verify(&note), Ok(other_log.body()));
        assert_eq!(
            signer.verifier().verify_checkpoint(&note),
            Err(NoteError::WrongOrigin {
                expected: "example.com/audit-log".into(),
                found: "example.com/other-log".into(),
            })
        );
    }

    #[test]
    fn tampering_and_wrong_keys_fail() {
        let signer = fresh_signer("example.com/audit-log");
        let verifier = signer.verifier();
        let note = signer.sign(&sample_checkpoint().body()).expect("sign");

        // Tampered body: tree size 5 becomes 6.
        let tampered = note.replacen("\n5\n", "\n6\n", 1);
        assert!(matches!(
            verifier.verify(&tampered),
            Err(NoteError::BadSignature(_))
        ));

        // Tampered signature: change one base64 character past the key ID.
        let mut chars: Vec<char> = note.chars().collect();
        let pos = chars.len() - 10;
        chars[pos] = if chars[pos] == 'A' { 'B' } else { 'A' };
        let forged: String = chars.into_iter().collect();
        assert!(matches!(
            verifier.verify(&forged),
            Err(NoteError::BadSignature(_))
        ));

        // Another key under the same name: different key ID, so no signature by it.
        let other = fresh_signer("example.com/audit-log").verifier();
        assert!(matches!(
            other.verify(&note),
            Err(NoteError::NoSignature(_))
        ));

        // Same key under another name: name and key ID differ, so no signature by it.
        let renamed = NoteVerifier::new("example.com/other", *signer.public_key()).expect("new");
        assert!(matches!(
            renamed.verify(&note),
            Err(NoteError::NoSignature(_))
        ));

        // A forged line claiming the right name and key ID but made by another key.
        let impostor = fresh_signer("example.com/audit-log");
        let forged = impostor.sign(&sample_checkpoint().body()).expect("sign");
        let blob = B64
            .decode(forged.rsplit(' ').next().expect("sig").trim_end())
            .expect("b64");
        let mut relabelled = signer.key_id().to_be_bytes().to_vec();
        relabelled.extend_from_slice(&blob[4..]);
        let line = format!(
            "\u{2014} example.com/audit-log {}\n",
            B64.encode(relabelled)
        );
        let forged_note = format!("{}\n{line}", sample_checkpoint().body());
        assert!(matches!(
            verifier.verify(&forged_note),
            Err(NoteError::BadSignature(_))
        ));
    }

    #[test]
    fn signer_rejects_bad_text_and_names() {
        let signer = fresh_signer("log");
        assert!(signer.sign("").is_err());
        assert!(signer.sign("no newline").is_err());
        assert!(signer.sign("tab\there\n").is_err());
        let pkcs8 = generate_pkcs8().expect("keygen");
        for name in ["", "a b", "a+b", "a\u{3000}b", "a\nb"] {
            assert!(matches!(
                NoteSigner::new(name, &pkcs8),
                Err(NoteError::InvalidKeyName(_))
            ));
        }
        assert!(matches!(
            NoteSigner::new("log", b"not a key"),
            Err(NoteError::InvalidPrivateKey(_))
        ));
        // PKCS#8 v2 (with embedded public key) is accepted too.
        let v2 = Ed25519KeyPair::generate()
            .expect("keygen")
            .to_pkcs8()
            .expect("v2");
        assert!(NoteSigner::new("log", v2.as_ref()).is_ok());
    }

    #[test]
    fn c2sp_spec_examples_parse() {
        let body =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let cp = Checkpoint::parse(body).expect("spec checkpoint");
        assert_eq!(
            (cp.origin.as_str(), cp.size),
            ("example.com/behind-the-sofa", 20852163)
        );
        assert_eq!(cp.body(), body);
        // The signed-note example is well-formed; its key is simply unknown to us.
        let note = "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\n\
                    ed è subito sera.\n\n\u{2014} quasimodo.example/salvatore \
                    NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n";
        let v = fresh_signer("quasimodo.example/salvatore").verifier();
        assert!(matches!(v.verify(note), Err(NoteError::NoSignature(_))));
    }

    #[test]
    fn checkpoint_parse_rules() {
        let mut cp = sample_checkpoint();
        cp.extensions = vec!["ext one".into(), "— two".into()];
        assert_eq!(Checkpoint::parse(&cp.body()), Ok(cp.clone()));
        let empty = Checkpoint::new("o", 0, empty_root());
        assert_eq!(Checkpoint::parse(&empty.body()), Ok(empty));
        let r = B64.encode([0u8; 32]);
        let bad = [
            format!("o\n5\n{r}"),
            "o\n5\n".to_owned(),
            format!("\n5\n{r}\n"),
            format!("o\n05\n{r}\n"),
            format!("o\n+5\n{r}\n"),
            format!("o\n-5\n{r}\n"),
            format!("o\n\n{r}\n"),
            format!("o\n18446744073709551616\n{r}\n"),
            "o\n5\nAAAA\n".to_owned(),
            format!("o\n5\n{r}\n\n"),
            format!("o\n5\n{r}\next\n\nmore\n"),
            format!("o\r\n5\n{r}\n"),
        ];
        for body in &bad {
            assert!(
                matches!(
                    Checkpoint::parse(body),
                    Err(NoteError::MalformedCheckpoint(_))
                ),
                "accepted {body:?}"
            );
        }
        let max = format!("o\n18446744073709551615\n{r}\n");
        assert_eq!(Checkpoint::parse(&max).map(|c| c.size), Ok(u64::MAX));
    }

    #[test]
    fn pem_round_trip() {
        let der = generate_pkcs8().expect("keygen");
        let pem = pem_encode("PRIVATE KEY", &der);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(pem_decode(&pem, "PRIVATE KEY"), Ok(der.clone()));
        let long = vec![0xabu8; 200];
        let crlf = format!(
            "comment\r\n{}",
            pem_encode("X", &long).replace('\n', "\r\n")
        );
        assert_eq!(pem_decode(&crlf, "X"), Ok(long));
        assert!(pem_decode(&pem, "PUBLIC KEY").is_err());
        assert!(
            pem_decode(
                pem.trim_end_matches("-----END PRIVATE KEY-----\n"),
                "PRIVATE KEY"
            )
            .is_err()
        );
        assert!(pem_decode(&pem.replacen("M", "*", 1), "PRIVATE KEY").is_err());
        let signer = NoteSigner::new("k", &pem_decode(&pem, "PRIVATE KEY").expect("der"));
        assert!(signer.is_ok());
        let spki = pem_decode(&public_key_pem(&[7; 32]), "PUBLIC KEY").expect("spki");
        assert_eq!(
            (&spki[..12], &spki[12..]),
            (&ED25519_SPKI_PREFIX[..], &[7u8; 32][..])
        );
    }

    fn openssl(dir: &std::path::Path, args: &[&str]) -> Option<std::process::Output> {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
    }

    #[test]
    fn openssl_verifies_checkpoint_signatures() {
        let dir = std::env::temp_dir().join(format!("tlog-note-openssl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        if openssl(&dir, &["version"]).is_none_or(|o| !o.status.success()) {
            println!("note: openssl not found; skipping the OpenSSL interoperability test");
            return;
        }
        let pkcs8 = generate_pkcs8().expect("keygen");
        let signer = NoteSigner::new("example.com/audit-log", &pkcs8).expect("signer");
        let body = sample_checkpoint().body();
        let note = signer.sign(&body).expect("sign");
        let sig_b64 = note.rsplit(' ').next().expect("sig").trim_end();
        let blob = B64.decode(sig_b64).expect("b64");
        let write = |name: &str, data: &[u8]| std::fs::write(dir.join(name), data).expect("write");
        write("pub.pem", public_key_pem(signer.public_key()).as_bytes());
        write("priv.pem", pem_encode("PRIVATE KEY", &pkcs8).as_bytes());
        write("body.txt", body.as_bytes());
        write("sig.bin", &blob[4..]);
        let mut flipped = blob[4..].to_vec();
        flipped[10] ^= 0x01;
        write("bad.bin", &flipped);

        let verify = |sig: &str| {
            let args = [
                "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-in", "body.txt",
                "-sigfile", sig,
            ];
            openssl(&dir, &args).expect("run openssl").status.success()
        };
        assert!(verify("sig.bin"), "openssl rejected a valid signature");
        assert!(!verify("bad.bin"), "openssl accepted a flipped signature");
        // OpenSSL derives the same public key from our private key PEM.
        let out = openssl(&dir, &["pkey", "-in", "priv.pem", "-pubout"]).expect("run openssl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            public_key_pem(signer.public_key())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
