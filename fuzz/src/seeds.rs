//! The seed corpus: a handful of real inputs per target, built from the fixed keys so they
//! reach deep (valid tokens, signed notes, real proofs). `cargo test` checks that the files
//! under `corpus/` match; `FUZZ_WRITE_SEEDS=1 cargo test` writes them.

use serde_json::{Value, json};

use crate::checkpoint::signer;
use crate::fixtures::{self, NOW, Signer};
use crate::proof::real_proof;

/// One seed: target name, file name (without the `seed-` prefix) and bytes.
pub type Seed = (&'static str, &'static str, Vec<u8>);

/// Every fuzz target, as named in Cargo.toml.
pub const TARGETS: [&str; 5] = ["form", "validator", "jwks", "checkpoint", "proof"];

fn signed_input(signer: Signer, header: &Value, claims: &Value) -> Vec<u8> {
    let index = Signer::ALL.iter().position(|s| *s == signer).unwrap_or(0);
    let mut out = vec![index as u8];
    out.extend_from_slice(header.to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(claims.to_string().as_bytes());
    out
}

fn raw_input(token: &str) -> Vec<u8> {
    let mut out = vec![6u8];
    out.extend_from_slice(token.as_bytes());
    out
}

fn token(signer: Signer) -> String {
    let (h, c) = fixtures::valid_parts(signer);
    fixtures::keys().token(signer, h.to_string().as_bytes(), c.to_string().as_bytes())
}

fn form_seeds() -> Vec<Seed> {
    let body = format!("logout_token={}", token(Signer::Ed25519));
    let ct = "application/x-www-form-urlencoded";
    vec![
        ("form", "valid", format!("{ct}\n{body}").into_bytes()),
        (
            "form",
            "charset-escapes",
            format!("{ct}; charset=UTF-8\nstate=a&logout_token=x%2By+z%F0%9F%94%91&b=")
                .into_bytes(),
        ),
        (
            "form",
            "twice",
            format!("{ct}\nlogout_token=a&logout_token=b").into_bytes(),
        ),
        (
            "form",
            "json",
            b"application/json\n{\"logout_token\":\"x\"}".to_vec(),
        ),
        (
            "form",
            "no-token",
            b"Application/X-WWW-Form-Urlencoded\ntoken=x&&=".to_vec(),
        ),
    ]
}

fn validator_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let named = [
        ("signed-ed25519", Signer::Ed25519),
        ("signed-es256", Signer::P256),
        ("signed-rs256", Signer::RsaPkcs1),
        ("signed-ps256", Signer::RsaPss),
        ("signed-hs256", Signer::Hs256),
        ("signed-outsider", Signer::Outsider),
    ];
    for (name, s) in named {
        let (h, c) = fixtures::valid_parts(s);
        seeds.push(("validator", name, signed_input(s, &h, &c)));
    }
    let (h, mut c) = fixtures::valid_parts(Signer::Ed25519);
    c["aud"] = json!(["app", "app2"]);
    c["iat"] = json!(NOW as f64 - 0.5);
    c.as_object_mut().map(|m| m.remove("sid"));
    seeds.push((
        "validator",
        "signed-aud-list",
        signed_input(Signer::Ed25519, &h, &c),
    ));
    let (h, mut c) = fixtures::valid_parts(Signer::Ed25519);
    c["nonce"] = json!("n");
    c["exp"] = json!(1e300);
    c["events"] = json!({"http://schemas.openid.net/event/backchannel-logout": []});
    seeds.push((
        "validator",
        "signed-bad-claims",
        signed_input(Signer::Ed25519, &h, &c),
    ));
    let (mut h, mut c) = fixtures::valid_parts(Signer::P256);
    h["kid"] = json!("rsa");
    c["iss"] = json!(fixtures::OTHER_ISSUER);
    seeds.push((
        "validator",
        "signed-wrong-kid",
        signed_input(Signer::P256, &h, &c),
    ));
    // Found by this target: without iss the rejection counted as after the signature.
    let (h, mut c) = fixtures::valid_parts(Signer::RsaPkcs1);
    c.as_object_mut().map(|m| m.remove("iss"));
    seeds.push((
        "validator",
        "signed-no-iss",
        signed_input(Signer::RsaPkcs1, &h, &c),
    ));
    // Found with this target (review, then its binary): times far outside i64 overflowed.
    for (name, claim) in [
        ("signed-exp-overflow", "exp"),
        ("signed-iat-overflow", "iat"),
    ] {
        let (h, mut c) = fixtures::valid_parts(Signer::Ed25519);
        c[claim] = json!(-1e19);
        seeds.push(("validator", name, signed_input(Signer::Ed25519, &h, &c)));
    }
    seeds.push((
        "validator",
        "raw-ed25519",
        raw_input(&token(Signer::Ed25519)),
    ));
    seeds.push(("validator", "raw-hs256", raw_input(&token(Signer::Hs256))));
    seeds.push((
        "validator",
        "raw-rs256",
        raw_input(&token(Signer::RsaPkcs1)),
    ));
    let none = format!(
        "{}.{}.",
        fixtures::b64(br#"{"alg":"none"}"#),
        fixtures::b64(br#"{"iss":"https://op.example/"}"#)
    );
    seeds.push(("validator", "raw-none", raw_input(&none)));
    seeds.push((
        "validator",
        "raw-jwe",
        raw_input("eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d"),
    ));
    seeds
}

fn jwks_seeds() -> Vec<Seed> {
    let doc = fixtures::keys().jwks();
    let ed = doc["keys"][0].clone();
    vec![
        (
            "jwks",
            "fixed-set",
            serde_json::to_vec_pretty(&doc).unwrap_or_default(),
        ),
        (
            "jwks",
            "one-key",
            json!({"keys": [ed]}).to_string().into_bytes(),
        ),
        (
            "jwks",
            "bad-keys",
            json!({"keys": [
                {"kty": "RSA", "kid": "short", "n": "AQAB", "e": "AQAB", "alg": "RS256"},
                {"kty": "EC", "crv": "P-384", "kid": "nox", "y": "AA"},
                {"kty": "OKP", "crv": "Ed25519", "kid": "k", "alg": "ES999", "x": "AA"},
                {"kty": "RSA", "kid": 7, "use": "sig"}
            ]})
            .to_string()
            .into_bytes(),
        ),
        ("jwks", "not-a-set", br#"{"keys":{"kty":"RSA"}}"#.to_vec()),
    ]
}

fn upper_key_id(vkey: &str) -> String {
    let mut fields: Vec<String> = vkey.splitn(3, '+').map(str::to_owned).collect();
    fields[1].make_ascii_uppercase();
    fields.join("+")
}

fn with_mode(mode: u8, text: &str) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(text.as_bytes());
    out
}

fn checkpoint_seeds() -> Vec<Seed> {
    let body = real_proof(3, 7).checkpoint;
    let text = body.split_once("\n\n").map_or("", |(t, _)| t).to_owned() + "\n";
    let other = logout_ledger::tlog::NoteSigner::from_key_pair(
        "other.example/witness",
        aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&[0x55; 32]).expect("seed"),
    )
    .expect("signer");
    let witnessed = format!(
        "{body}{}",
        other
            .sign(&text)
            .expect("sign")
            .split_once("\n\n")
            .map_or("", |(_, s)| s)
    );
    vec![
        ("checkpoint", "body", with_mode(0, &text)),
        (
            "checkpoint",
            "verifier-key",
            with_mode(0, &signer().verifier_key()),
        ),
        ("checkpoint", "signed-note", with_mode(0, &body)),
        // Found by this target: an uppercase key ID parses (Go's note package agrees).
        (
            "checkpoint",
            "verifier-key-upper",
            with_mode(0, &upper_key_id(&signer().verifier_key())),
        ),
        ("checkpoint", "cosigned-note", with_mode(0, &witnessed)),
        (
            "checkpoint",
            "sign-extensions",
            with_mode(1, &format!("{text}ext one\n\u{2014} two\n")),
        ),
    ]
}

fn proof_seeds() -> Vec<Seed> {
    let json = |id, size| serde_json::to_vec_pretty(&real_proof(id, size)).unwrap_or_default();
    vec![
        ("proof", "id3-size7", json(3, 7)),
        ("proof", "id1-size1", json(1, 1)),
        // Found with this target (review, then its binary): `id - 1` overflowed.
        ("proof", "id-min", {
            let mut p = real_proof(1, 1);
            p.id = i64::MIN;
            serde_json::to_vec_pretty(&p).unwrap_or_default()
        }),
        // Found by this target: the entry hash in uppercase hex verifies (one hash, harmless).
        ("proof", "upper-hex", {
            let mut p = real_proof(5, 9);
            p.entry_hash.make_ascii_uppercase();
            serde_json::to_vec_pretty(&p).unwrap_or_default()
        }),
        ("proof", "id16-size16", json(16, 16)),
        ("proof", "tamper-path", vec![0, 9, 4, 0, 3, 5, 1]),
        ("proof", "tamper-id", vec![0, 15, 15, 3, 255, 4, 0]),
    ]
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut seeds = form_seeds();
    seeds.extend(validator_seeds());
    seeds.extend(jwks_seeds());
    seeds.extend(checkpoint_seeds());
    seeds.extend(proof_seeds());
    seeds
}
