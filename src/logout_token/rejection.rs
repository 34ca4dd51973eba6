//! Rejection codes: the first failing rule names the rejection, in the order of spec §2.6.

use std::fmt;

use super::Step;

/// Why a logout request was not accepted. The `code()` is what the audit row and the
/// `error_description` carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The HTTP request itself was wrong (content type, form, missing `logout_token`, size).
    MalformedRequest,
    /// Not a parseable compact JWS, or a header we refuse (`crit`, encryption).
    MalformedToken,
    /// The unverified `iss` names no configured issuer.
    UnknownIssuer,
    /// `alg` is `none`, unknown, or not in the issuer's allow-list (or not the key's `alg`).
    UnsupportedAlg,
    /// `typ` is neither absent, `JWT` nor `logout+jwt`.
    BadTyp,
    /// The `kid` is not in the issuer's freshly fetched key set.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `aud` names none of our client ids, or names untrusted extra audiences.
    WrongAudience,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `iat` lies in the future (beyond the leeway).
    IssuedInFuture,
    /// `nbf` lies in the future (beyond the leeway): the token is not valid yet.
    NotYetValid,
    /// `iat` is older than the configured maximum token age.
    TooOld,
    /// A required claim is absent (`iss`, `aud`, `iat`, `exp`, `jti`, `events`).
    MissingClaim,
    /// `events` lacks the back-channel logout member or it is not an object.
    BadEvents,
    /// A `nonce` claim is present, which a logout token must never carry.
    NoncePresent,
    /// Neither `sub` nor `sid` is present (an empty string counts as absent).
    MissingSubAndSid,
    /// Another token with this `(iss, jti)` was already accepted.
    Replay,
    /// Transient: the key set is needed but cannot be fetched right now.
    KeysUnavailable,
    /// Transient: the audit record could not be stored.
    StoreUnavailable,
}

impl Reason {
    /// Every reason, in rule order, for documentation and tests.
    pub const ALL: [Reason; 19] = [
        Reason::MalformedRequest,
        Reason::MalformedToken,
        Reason::UnknownIssuer,
        Reason::UnsupportedAlg,
        Reason::BadTyp,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::WrongAudience,
        Reason::Expired,
        Reason::IssuedInFuture,
        Reason::NotYetValid,
        Reason::TooOld,
        Reason::MissingClaim,
        Reason::BadEvents,
        Reason::NoncePresent,
        Reason::MissingSubAndSid,
        Reason::Replay,
        Reason::KeysUnavailable,
        Reason::StoreUnavailable,
    ];

    /// The stable snake_case code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MalformedRequest => "malformed_request",
            Reason::MalformedToken => "malformed_token",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::UnsupportedAlg => "unsupported_alg",
            Reason::BadTyp => "bad_typ",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::WrongAudience => "wrong_audience",
            Reason::Expired => "expired",
            Reason::IssuedInFuture => "issued_in_future",
            Reason::NotYetValid => "not_yet_valid",
            Reason::TooOld => "too_old",
            Reason::MissingClaim => "missing_claim",
            Reason::BadEvents => "bad_events",
            Reason::NoncePresent => "nonce_present",
            Reason::MissingSubAndSid => "missing_sub_and_sid",
            Reason::Replay => "replay",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::StoreUnavailable => "store_unavailable",
        }
    }

    /// Parses a code back (used by filters).
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Transient reasons answer 503 (try again), the others 400 (give up).
    pub fn is_transient(self) -> bool {
        matches!(self, Reason::KeysUnavailable | Reason::StoreUnavailable)
    }

    /// Whether this rule fails before the issuer's signature has verified: whatever such a
    /// request carries was written by an anonymous client, so none of it is a claim.
    pub fn is_unverified(self) -> bool {
        matches!(
            self,
            Reason::MalformedRequest
                | Reason::MalformedToken
                | Reason::UnknownIssuer
                | Reason::UnsupportedAlg
                | Reason::BadTyp
                | Reason::UnknownKey
                | Reason::BadSignature
                | Reason::KeysUnavailable
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A rejection: its code and a human-readable detail (never a secret, never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The code.
    pub reason: Reason,
    /// What exactly failed.
    pub detail: String,
    /// The body was larger than the endpoint reads (answered 413, not 400).
    pub body_too_large: bool,
    /// The step of §2.6 whose rule refused the token; `None` for the request's own faults and
    /// for what the store decides.
    pub step: Option<Step>,
}

impl Rejection {
    /// Builds a rejection.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            body_too_large: false,
            step: None,
        }
    }

    /// This rejection, as found by a rule of `step`.
    pub fn at(self, step: Step) -> Self {
        Self {
            step: Some(step),
            ..self
        }
    }

    /// A request whose body exceeds the endpoint's limit (`malformed_request`, answered 413).
    pub fn body_too_large(detail: impl Into<String>) -> Self {
        Self {
            body_too_large: true,
            ..Self::new(Reason::MalformedRequest, detail)
        }
    }

    /// The HTTP status this rejection answers with, the one place that decides it: 503 for
    /// transient reasons, 413 for an oversized body, 400 for everything else.
    pub fn http_status(&self) -> u16 {
        if self.reason.is_transient() {
            503
        } else if self.body_too_large {
            413
        } else {
            400
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.code(), self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_only_two_are_transient() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.code()), Some(r));
        }
        let transient: Vec<_> = Reason::ALL
            .into_iter()
            .filter(|r| r.is_transient())
            .collect();
        assert_eq!(
            transient,
            vec![Reason::KeysUnavailable, Reason::StoreUnavailable]
        );
    }

    #[test]
    fn statuses_follow_the_reason_and_the_body_size() {
        assert_eq!(Rejection::new(Reason::Expired, "x").http_status(), 400);
        assert_eq!(Rejection::body_too_large("x").http_status(), 413);
        assert_eq!(
            Rejection::new(Reason::KeysUnavailable, "x").http_status(),
            503
        );
        let unverified: Vec<_> = Reason::ALL
            .into_iter()
            .filter(|r| r.is_unverified())
            .collect();
        assert_eq!(
            unverified.len(),
            8,
            "every rule up to the signature, and key fetches"
        );
        assert!(!Reason::WrongAudience.is_unverified());
    }
}
