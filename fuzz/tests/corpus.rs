//! The committed seed corpus is current, and every corpus file (seeds, and any crash input
//! copied in as a regression) passes its target's checks without libFuzzer.

use std::fs;
use std::path::PathBuf;

use logout_ledger_fuzz::{checkpoint, form, jwks, proof, seeds, validator};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

#[test]
fn seed_corpus_is_committed_and_current() {
    let write = std::env::var_os("FUZZ_WRITE_SEEDS").is_some();
    for (target, name, bytes) in seeds::all() {
        let path = corpus_dir(target).join(format!("seed-{name}"));
        if write {
            fs::create_dir_all(corpus_dir(target)).expect("corpus dir");
            fs::write(&path, &bytes).expect("write seed");
        }
        let on_disk = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            on_disk,
            bytes,
            "{} is stale: FUZZ_WRITE_SEEDS=1",
            path.display()
        );
    }
}

/// A target's checks over one input.
type Check = fn(&[u8]);

#[test]
fn every_corpus_file_holds() {
    let checks: [(&str, Check); 5] = [
        ("form", form::check),
        ("validator", validator::check),
        ("jwks", jwks::check),
        ("checkpoint", checkpoint::check),
        ("proof", proof::check),
    ];
    assert_eq!(checks.map(|c| c.0), seeds::TARGETS);
    for (target, check) in checks {
        let mut n = 0;
        for entry in fs::read_dir(corpus_dir(target)).expect("corpus dir") {
            let path = entry.expect("entry").path();
            check(&fs::read(&path).expect("read"));
            n += 1;
        }
        assert!(n >= 4, "{target}: only {n} corpus files");
    }
}

#[test]
fn seeds_reach_what_they_are_for() {
    // The valid signed seeds are accepted, the outsider's is not: the oracle sees both.
    use logout_ledger_fuzz::fixtures::{self, Signer};
    for s in Signer::ALL {
        let (h, c) = fixtures::valid_parts(s);
        let mut input = vec![Signer::ALL.iter().position(|x| *x == s).expect("index") as u8];
        input.extend_from_slice(format!("{h}\n{c}").as_bytes());
        assert_eq!(validator::accepts(&input), s != Signer::Outsider, "{s:?}");
    }
}
