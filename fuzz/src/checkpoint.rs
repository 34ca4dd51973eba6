//! Target `checkpoint`: C2SP checkpoint bodies, verifier keys and signed notes.
//!
//! Input: one mode byte, then UTF-8 text (other inputs are skipped). Mode 0 (mod 2): the text
//! is parsed as a checkpoint body, as a verifier key, and as a signed note checked by a fixed
//! key. Mode 1: the text is signed by the fixed key (when it is a signable note text) and the
//! note read back.
//!
//! What must hold: no panic; parse and format round-trip exactly (`Checkpoint::body`,
//! `NoteVerifier::verifier_key`); a verified note carries the fixed key's own signature line
//! over exactly the returned text (Ed25519 signatures are deterministic, so the line is
//! known); what the fixed key signs always verifies and reads back as the same text.

use std::sync::OnceLock;

use aws_lc_rs::signature::Ed25519KeyPair;
use logout_ledger::tlog::{Checkpoint, NoteError, NoteSigner, NoteVerifier};

/// The fixed checkpoint key's name.
pub const KEY_NAME: &str = "fuzz.example/log";

/// The fixed checkpoint signer (deterministic seed).
pub fn signer() -> &'static NoteSigner {
    static SIGNER: OnceLock<NoteSigner> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[0x33; 32]).expect("seed");
        NoteSigner::from_key_pair(KEY_NAME, pair).expect("signer")
    })
}

fn check_parsers(text: &str) {
    if let Ok(cp) = Checkpoint::parse(text) {
        assert_eq!(cp.body(), text, "checkpoint does not round-trip");
        assert_eq!(Checkpoint::parse(&cp.body()).as_ref(), Ok(&cp));
    }
    if let Ok(v) = NoteVerifier::parse(text) {
        // The key ID's hex digits may come in either case (as in Go's note package); the
        // text written back is lowercase, everything else is byte for byte.
        let mut fields: Vec<String> = text.splitn(3, '+').map(str::to_owned).collect();
        fields[1].make_ascii_lowercase();
        assert_eq!(
            v.verifier_key(),
            fields.join("+"),
            "verifier key does not round-trip"
        );
        assert_eq!(NoteVerifier::parse(&v.to_string()).as_ref(), Ok(&v));
    }
    let verifier = signer().verifier();
    if let Ok(body) = verifier.verify(text) {
        // The note's text is everything before the blank line; our line must be in it.
        let own = signer().sign(&body).expect("verified text is signable");
        let own_line = own
            .strip_prefix(&body)
            .expect("signed note starts with text");
        let own_line = own_line.strip_prefix('\n').expect("blank line");
        assert!(
            text.starts_with(&format!("{body}\n")),
            "text is not the note's prefix"
        );
        assert!(
            text[body.len() + 1..]
                .split_inclusive('\n')
                .any(|l| l == own_line),
            "verified without the fixed key's own signature line"
        );
        match verifier.verify_checkpoint(text) {
            Ok(cp) => assert_eq!((cp.body(), cp.origin.as_str()), (body, verifier.name())),
            Err(_) => assert!(
                Checkpoint::parse(&body).is_err()
                    || Checkpoint::parse(&body).is_ok_and(|cp| cp.origin != verifier.name())
            ),
        }
    } else {
        assert!(verifier.verify_checkpoint(text).is_err());
    }
}

fn check_signing(text: &str) {
    let Ok(note) = signer().sign(text) else {
        return;
    };
    let verifier = signer().verifier();
    assert_eq!(
        verifier.verify(&note).as_deref(),
        Ok(text),
        "own note fails"
    );
    match (verifier.verify_checkpoint(&note), Checkpoint::parse(text)) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        // The key signs for its own log only: another origin is refused.
        (Err(NoteError::WrongOrigin { .. }), Ok(b)) => assert_ne!(b.origin, verifier.name()),
        (a, b) => panic!("verify_checkpoint {a:?} but parse {b:?}"),
    }
    // Another key's verifier never accepts it.
    let other = NoteVerifier::new(KEY_NAME, [0x44; 32]).expect("verifier");
    assert!(other.verify(&note).is_err());
}

/// Runs one input through the note and checkpoint parsers and checks what must hold.
pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if mode % 2 == 0 {
        check_parsers(text);
    } else {
        check_signing(text);
    }
}
