//! One flush window's suppressed requests: a tally per source (at most
//! [`MAX_SOURCE_RECORDS`]) and one for all sources together, each written as one
//! `rejections_suppressed` system record when the window closes.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{Map, Value, json};

use crate::clock::format_millis;
use crate::http::client_addr::source_label;
use crate::logout_token::Reason;
use crate::store::{Note, NoteKind};

/// Sources with a record of their own per window; the rest are folded into the all-sources one.
pub(super) const MAX_SOURCE_RECORDS: usize = 1_024;
/// Sources whose counts the all-sources record tracks (to name the busiest); the rest are
/// counted without a name.
pub(super) const MAX_TRACKED_IN_ALL: usize = 4_096;
/// How many of the busiest sources the all-sources record names.
pub(super) const BUSIEST_LISTED: usize = 20;
/// The system record's `action`.
pub const ACTION: &str = "rejections_suppressed";

/// One suppressed request, as counted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Suppressed {
    /// The source key (IPv4 address or IPv6 /64).
    pub source: IpAddr,
    /// Why it was rejected.
    pub reason: Reason,
    /// Body bytes received.
    pub bytes: u64,
    /// Arrival, milliseconds since the epoch.
    pub at: i64,
}

/// Counts of suppressed requests: by reason, bytes, first and last arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tally {
    count: u64,
    by_reason: [u64; Reason::ALL.len()],
    bytes: u64,
    first: i64,
    last: i64,
}

impl Tally {
    fn new(at: i64) -> Self {
        Self {
            count: 0,
            by_reason: [0; Reason::ALL.len()],
            bytes: 0,
            first: at,
            last: at,
        }
    }

    fn add(&mut self, s: &Suppressed) {
        self.count += 1;
        if let Some(i) = Reason::ALL.iter().position(|r| *r == s.reason) {
            self.by_reason[i] += 1;
        }
        self.bytes = self.bytes.saturating_add(s.bytes);
        self.first = self.first.min(s.at);
        self.last = self.last.max(s.at);
    }

    fn merge(&mut self, other: &Tally) {
        self.count += other.count;
        for (mine, theirs) in self.by_reason.iter_mut().zip(other.by_reason) {
            *mine += theirs;
        }
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }

    fn details(&self) -> Map<String, Value> {
        let by_reason: Map<String, Value> = Reason::ALL
            .iter()
            .zip(self.by_reason)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.code().to_owned(), json!(n)))
            .collect();
        let mut m = Map::new();
        m.insert("count".into(), json!(self.count));
        m.insert("by_reason".into(), Value::Object(by_reason));
        m.insert("bytes".into(), json!(self.bytes));
        m.insert("first_at".into(), json!(format_millis(self.first)));
        m.insert("last_at".into(), json!(format_millis(self.last)));
        m
    }
}

/// The all-sources tally: requests over the total cap, and those of sources past
/// [`MAX_SOURCE_RECORDS`], with per-source counts to name the busiest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AllSources {
    tally: Tally,
    over_total: u64,
    folded: u64,
    per_source: HashMap<IpAddr, u64>,
    untracked: u64,
}

impl AllSources {
    fn new(at: i64) -> Self {
        Self {
            tally: Tally::new(at),
            over_total: 0,
            folded: 0,
            per_source: HashMap::new(),
            untracked: 0,
        }
    }

    fn add_counted(&mut self, source: IpAddr, n: u64) {
        if let Some(c) = self.per_source.get_mut(&source) {
            *c += n;
        } else if self.per_source.len() < MAX_TRACKED_IN_ALL {
            self.per_source.insert(source, n);
        } else {
            self.untracked += n;
        }
    }

    fn merge(&mut self, other: AllSources) {
        self.tally.merge(&other.tally);
        self.over_total += other.over_total;
        self.folded += other.folded;
        self.untracked += other.untracked;
        for (source, n) in other.per_source {
            self.add_counted(source, n);
        }
    }

    fn details(&self) -> Value {
        let mut busiest: Vec<(&IpAddr, &u64)> = self.per_source.iter().collect();
        busiest.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let busiest: Vec<Value> = busiest
            .into_iter()
            .take(BUSIEST_LISTED)
            .map(|(s, n)| json!({"source": source_label(*s), "count": n}))
            .collect();
        let mut m = self.tally.details();
        m.insert("scope".into(), json!("all_sources"));
        m.insert("over_total_limit".into(), json!(self.over_total));
        m.insert("folded_sources_count".into(), json!(self.folded));
        m.insert("sources".into(), json!(self.per_source.len()));
        m.insert("untracked_sources_count".into(), json!(self.untracked));
        m.insert("busiest".into(), Value::Array(busiest));
        Value::Object(m)
    }
}

/// What a closed window becomes: one record each, and what to give back if it is not stored.
#[derive(Debug)]
pub(super) enum Part {
    /// One source's record.
    Source(IpAddr, Tally),
    /// The all-sources record.
    All(AllSources),
}

impl Part {
    /// The system record of this part.
    pub(super) fn note(&self, at: i64) -> Note {
        let details = match self {
            Part::Source(source, tally) => {
                let mut m = tally.details();
                m.insert("scope".into(), json!("source"));
                m.insert("source".into(), json!(source_label(*source)));
                Value::Object(m)
            }
            Part::All(all) => all.details(),
        };
        Note {
            kind: NoteKind::System,
            action: ACTION.into(),
            details,
            at,
        }
    }

    /// How many requests this part counts.
    pub(super) fn count(&self) -> u64 {
        match self {
            Part::Source(_, t) => t.count,
            Part::All(a) => a.tally.count,
        }
    }
}

/// The open window.
#[derive(Debug, Default)]
pub(super) struct Window {
    sources: HashMap<IpAddr, Tally>,
    all: Option<AllSources>,
}

impl Window {
    /// Counts a request its source's own limit refused: in that source's record while there
    /// is room for it, else in the all-sources record.
    pub(super) fn over_source_limit(&mut self, s: &Suppressed) {
        if let Some(t) = self.sources.get_mut(&s.source) {
            t.add(s);
        } else if self.sources.len() < MAX_SOURCE_RECORDS {
            let mut t = Tally::new(s.at);
            t.add(s);
            self.sources.insert(s.source, t);
        } else {
            let all = self.all.get_or_insert_with(|| AllSources::new(s.at));
            all.folded += 1;
            all.tally.add(s);
            all.add_counted(s.source, 1);
        }
    }

    /// Counts a request the total limit refused (or one no bucket could be kept for).
    pub(super) fn over_total_limit(&mut self, s: &Suppressed) {
        let all = self.all.get_or_insert_with(|| AllSources::new(s.at));
        all.over_total += 1;
        all.tally.add(s);
        all.add_counted(s.source, 1);
    }

    /// Closes the window: its parts, sources first.
    pub(super) fn into_parts(self) -> Vec<Part> {
        let mut sources: Vec<(IpAddr, Tally)> = self.sources.into_iter().collect();
        sources.sort_by_key(|(s, _)| *s);
        let mut parts: Vec<Part> = sources
            .into_iter()
            .map(|(s, t)| Part::Source(s, t))
            .collect();
        parts.extend(self.all.map(Part::All));
        parts
    }

    /// Takes back a part that could not be stored, so the next window writes it.
    pub(super) fn restore(&mut self, part: Part) {
        match part {
            Part::Source(source, tally) => {
                if let Some(t) = self.sources.get_mut(&source) {
                    t.merge(&tally);
                } else if self.sources.len() < MAX_SOURCE_RECORDS {
                    self.sources.insert(source, tally);
                } else {
                    let all = self.all.get_or_insert_with(|| AllSources::new(tally.first));
                    all.folded += tally.count;
                    all.add_counted(source, tally.count);
                    all.tally.merge(&tally);
                }
            }
            Part::All(other) => match &mut self.all {
                Some(all) => all.merge(other),
                None => self.all = Some(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(source: &str, reason: Reason, bytes: u64, at: i64) -> Suppressed {
        Suppressed {
            source: source.parse().expect("ip"),
            reason,
            bytes,
            at,
        }
    }

    #[test]
    fn a_source_record_counts_reasons_bytes_and_times() {
        let mut w = Window::default();
        w.over_source_limit(&s("192.0.2.1", Reason::MalformedToken, 10, 2_000));
        w.over_source_limit(&s("192.0.2.1", Reason::MalformedRequest, 5, 1_000));
        w.over_source_limit(&s("192.0.2.1", Reason::MalformedToken, 1, 3_000));
        let parts = w.into_parts();
        assert_eq!(parts.len(), 1);
        let note = parts[0].note(9_000);
        assert_eq!(note.action, ACTION);
        assert_eq!(note.at, 9_000);
        let d = note.details;
        assert_eq!(d["scope"], "source");
        assert_eq!(d["source"], "192.0.2.1");
        assert_eq!(d["count"], 3);
        assert_eq!(
            d["by_reason"],
            json!({"malformed_request": 1, "malformed_token": 2})
        );
        assert_eq!(d["bytes"], 16);
        assert_eq!(d["first_at"], format_millis(1_000));
        assert_eq!(d["last_at"], format_millis(3_000));
    }

    #[test]
    fn sources_past_the_cap_fold_into_the_all_sources_record() {
        let mut w = Window::default();
        for i in 0..MAX_SOURCE_RECORDS + 5 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + u32::try_from(i).expect("small"));
            w.over_source_limit(&s(&ip.to_string(), Reason::BadSignature, 1, 1));
        }
        let parts = w.into_parts();
        assert_eq!(parts.len(), MAX_SOURCE_RECORDS + 1);
        let all = parts.last().expect("all").note(2).details;
        assert_eq!(all["scope"], "all_sources");
        assert_eq!(all["count"], 5);
        assert_eq!(all["folded_sources_count"], 5);
        assert_eq!(all["over_total_limit"], 0);
        let total: u64 = parts.iter().map(Part::count).sum();
        assert_eq!(total, u64::try_from(MAX_SOURCE_RECORDS + 5).expect("small"));
    }

    #[test]
    fn the_all_sources_record_names_the_twenty_busiest() {
        let mut w = Window::default();
        for i in 0..30u8 {
            for _ in 0..=i {
                w.over_total_limit(&s(&format!("10.0.0.{i}"), Reason::UnknownIssuer, 2, 5));
            }
        }
        let d = w.into_parts().remove(0).note(6).details;
        assert_eq!(d["count"], (1..=30).sum::<u64>());
        assert_eq!(d["over_total_limit"], (1..=30).sum::<u64>());
        assert_eq!(d["sources"], 30);
        let busiest = d["busiest"].as_array().expect("list");
        assert_eq!(busiest.len(), BUSIEST_LISTED);
        assert_eq!(busiest[0], json!({"source": "10.0.0.29", "count": 30}));
        assert_eq!(busiest[19], json!({"source": "10.0.0.10", "count": 11}));
    }

    #[test]
    fn restored_parts_are_written_with_the_next_window() {
        let mut w = Window::default();
        w.over_source_limit(&s("192.0.2.1", Reason::MalformedToken, 10, 2_000));
        w.over_total_limit(&s("192.0.2.2", Reason::MalformedToken, 10, 2_000));
        let parts = std::mem::take(&mut w).into_parts();
        assert!(w.sources.is_empty() && w.all.is_none());
        w.over_source_limit(&s("192.0.2.1", Reason::BadTyp, 1, 4_000));
        for p in parts {
            w.restore(p);
        }
        let parts = w.into_parts();
        assert_eq!(parts.iter().map(Part::count).sum::<u64>(), 3);
        let d = parts[0].note(0).details;
        assert_eq!(d["count"], 2);
        assert_eq!(d["first_at"], format_millis(2_000));
        assert_eq!(d["last_at"], format_millis(4_000));
    }
}
