//! The validation steps of OpenID Connect Back-Channel Logout 1.0 §2.6, numbered as the spec
//! numbers them, so every rule in `mod.rs` names the step it implements and a rejection says
//! which step refused the token.
//!
//! The receiver applies them in the order the spec's security advice implies, not in their
//! numbers' order: the unverified `iss` (step 4) picks the issuer and step 3 checks `alg`
//! before step 2 uses any key, so a key is never tried with an algorithm it was not meant for.

use std::fmt;

/// One step of §2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// 1. Decrypt an encrypted token: only signed compact JWS are accepted, so an encrypted
    ///    (JWE) token, or anything that is not a well-formed JWS, is refused here.
    Decrypt = 1,
    /// 2. Validate the signature with a key of the token's issuer.
    Signature = 2,
    /// 3. Validate `alg`: allowed for this issuer, never `none` (with the header's `typ`, which
    ///    RFC 8725 §3.11 adds to the header rules).
    Algorithm = 3,
    /// 4. Validate `iss`, `aud`, `iat` and `exp` as for an ID token (and `nbf` when present).
    Claims = 4,
    /// 5. `sub` or `sid`, or both, are present.
    SubjectOrSession = 5,
    /// 6. `events` holds the back-channel logout member, a JSON object.
    Events = 6,
    /// 7. No `nonce`.
    Nonce = 7,
    /// 8. Optionally, the `jti` has not been seen: the store decides replays, the rules only
    ///    require a `jti` it can look up.
    Jti = 8,
}

impl Step {
    /// Every step, in the spec's order.
    pub const ALL: [Step; 8] = [
        Step::Decrypt,
        Step::Signature,
        Step::Algorithm,
        Step::Claims,
        Step::SubjectOrSession,
        Step::Events,
        Step::Nonce,
        Step::Jti,
    ];

    /// The step's number in §2.6.
    pub fn number(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "§2.6 step {}", self.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_numbered_as_the_spec_numbers_them() {
        let numbers: Vec<u8> = Step::ALL.iter().map(|s| s.number()).collect();
        assert_eq!(numbers, (1..=8).collect::<Vec<u8>>());
        assert_eq!(Step::Algorithm.to_string(), "§2.6 step 3");
    }
}
