//! What `query`, `export` and `report` share: the query API's filters as flags, and the
//! `access` record each read leaves in the store (who: the operating-system user).

use anyhow::Context;
use clap::Args;
use logout_ledger::clock::{Clock, SystemClock, parse_rfc3339_millis};
use logout_ledger::logout_token::MetadataStatus;
use logout_ledger::store::{
    self, EventFilter, KindFilter, Note, NoteKind, Outcome, parse_meta, parse_meta_key,
    parse_metadata_status, parse_outcome, parse_reason,
};
use serde_json::{Value, json};

/// The filters, as in the query API.
#[derive(Debug, Args)]
pub(super) struct FilterArgs {
    /// Which records: logout, access (reads of the audit data), system, or all.
    #[arg(long, default_value = "logout")]
    kind: KindFilter,
    /// Only this issuer.
    #[arg(long)]
    iss: Option<String>,
    /// Only this subject.
    #[arg(long)]
    sub: Option<String>,
    /// Only this session id.
    #[arg(long)]
    sid: Option<String>,
    /// Only this token id.
    #[arg(long)]
    jti: Option<String>,
    /// Only this outcome: accepted, duplicate or rejected.
    #[arg(long, value_parser = parse_outcome)]
    outcome: Option<Outcome>,
    /// Only this rejection code.
    #[arg(long, value_parser = parse_reason)]
    reason: Option<String>,
    /// Only records whose session metadata has KEY=VALUE (repeat: all must match).
    #[arg(long = "meta", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// Only records whose session metadata has this key (repeat: all must be there).
    #[arg(long = "has-meta", value_parser = parse_meta_key)]
    has_meta: Vec<String>,
    /// Only this metadata status: absent, ok or invalid.
    #[arg(long, value_parser = parse_metadata_status)]
    metadata_status: Option<MetadataStatus>,
    /// Only records whose claims passed verification (accepted and duplicate logouts).
    #[arg(long)]
    verified: bool,
    /// Received at or after this RFC 3339 time.
    #[arg(long, value_parser = parse_rfc3339_millis)]
    since: Option<i64>,
    /// Received before this RFC 3339 time.
    #[arg(long, value_parser = parse_rfc3339_millis)]
    until: Option<i64>,
}

impl FilterArgs {
    /// The filter (limit and order at their defaults).
    pub(super) fn filter(self) -> anyhow::Result<EventFilter> {
        if let (Some(s), Some(u)) = (self.since, self.until) {
            anyhow::ensure!(u > s, "--until must be later than --since");
        }
        Ok(EventFilter {
            kind: self.kind,
            iss: self.iss,
            sub: self.sub,
            sid: self.sid,
            jti: self.jti,
            outcome: self.outcome,
            reason: self.reason,
            meta: self.meta,
            has_meta: self.has_meta,
            metadata_status: self.metadata_status,
            verified: self.verified,
            since: self.since,
            until: self.until,
            ..EventFilter::default()
        })
    }
}

/// The operating-system account running this command, from the process's real user id (not
/// `USER` or `LOGNAME`, which anyone can set): its name in `/etc/passwd`, else `uid:N`, else
/// `unknown`.
pub(super) fn who() -> String {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        });
    let Some(uid) = uid else {
        return "unknown".into();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| account_of(&p, &uid))
        .unwrap_or_else(|| format!("uid:{uid}"))
}

/// The account name of `uid` in a passwd file's text.
fn account_of(passwd: &str, uid: &str) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// Chains the `access` record of a read into the store; the read's output waits for it, so
/// no audit data leaves without its record.
pub(super) async fn record_access(
    database: &str,
    action: &str,
    command: &str,
    details: Value,
) -> anyhow::Result<()> {
    let mut d = json!({ "who": who(), "via": "cli", "what": command });
    if let (Value::Object(d), Value::Object(extra)) = (&mut d, details) {
        d.extend(extra);
    }
    store::append_note(
        database,
        &Note {
            kind: NoteKind::Access,
            action: action.into(),
            details: d,
            at: SystemClock.now_millis(),
        },
    )
    .await
    .context("cannot record this read in the audit store (an access record is required)")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::account_of;

    #[test]
    fn an_account_is_found_by_its_uid_field() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n";
        assert_eq!(account_of(passwd, "1000").as_deref(), Some("bob"));
        assert_eq!(account_of(passwd, "0").as_deref(), Some("root"));
        assert_eq!(account_of(passwd, "1001"), None);
    }
}
