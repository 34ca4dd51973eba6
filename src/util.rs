//! Small leaf helpers every layer may use: lowercase hex, database-URL redaction and random
//! ids. This module imports nothing from the crate, so any module can point down to it.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A database URL without its password.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        Ok(_) => url.to_owned(),
        // Not a URL the parser takes (a bad port, say): cut the userinfo's password by hand.
        Err(_) => match url.split_once("://") {
            Some((scheme, rest)) => {
                let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                match rest[..authority_end].rfind('@') {
                    Some(at) => {
                        let user = rest[..at].split(':').next().unwrap_or_default();
                        format!("{scheme}://{user}:redacted{}", &rest[at..])
                    }
                    None => url.to_owned(),
                }
            }
            None => url.to_owned(),
        },
    }
}

/// A random 128-bit identifier in UUID form.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    let _ = SystemRandom::new().fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0a, 0xff]), "000aff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/audit"),
            "postgres://app:redacted@db:5432/audit"
        );
        assert_eq!(
            redact_url("postgres://app:s3cret@db:99999/audit"),
            "postgres://app:redacted@db:99999/audit",
            "a URL the parser refuses is redacted by hand"
        );
        assert_eq!(
            redact_url("sqlite:///var/audit.db"),
            "sqlite:///var/audit.db"
        );
        assert_eq!(redact_url("audit.db"), "audit.db");
    }

    #[test]
    fn random_ids_are_version_4_uuids_and_differ() {
        let a = random_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert_ne!(a, random_id());
    }
}
