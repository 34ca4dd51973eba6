//! The API's routes as data: path, parameters, summary. The router serves exactly these and
//! `openapi.json` is generated from them, so the document cannot drift from the code; the
//! parameter parser also refuses any parameter a route does not list here.

/// Where a parameter is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum In {
    /// The query string.
    Query,
    /// A path segment.
    Path,
}

/// A parameter's type, for the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema {
    /// Any string.
    Text,
    /// An RFC 3339 time.
    Time,
    /// An integer.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// One of these values.
    OneOf(&'static [&'static str]),
}

/// One documented parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Param {
    /// Its name (`meta.{KEY}` stands for any `meta.` + key).
    pub(crate) name: &'static str,
    /// Where it is read from.
    pub(crate) location: In,
    /// Whether it must be given.
    pub(crate) required: bool,
    /// Whether it may be given several times.
    pub(crate) repeatable: bool,
    /// Its type.
    pub(crate) schema: Schema,
    /// What it does.
    pub(crate) description: &'static str,
}

const fn query(name: &'static str, schema: Schema, description: &'static str) -> Param {
    Param {
        name,
        location: In::Query,
        required: false,
        repeatable: false,
        schema,
        description,
    }
}

const fn path(name: &'static str, schema: Schema, description: &'static str) -> Param {
    Param {
        name,
        location: In::Path,
        required: true,
        repeatable: false,
        schema,
        description,
    }
}

const fn repeatable(p: Param) -> Param {
    Param {
        repeatable: true,
        ..p
    }
}

/// The name standing for every `meta.KEY` parameter.
pub(crate) const META_PARAM: &str = "meta.{KEY}";

/// Outcome codes.
pub(crate) const OUTCOMES: &[&str] = &["accepted", "duplicate", "rejected"];

const SUB: &[Param] = &[query("sub", Schema::Text, "Exact subject (`sub`).")];
const KIND: &[Param] = &[query(
    "kind",
    Schema::OneOf(&["logout", "access", "system", "all"]),
    "Record kind; default `logout` (the logout endpoint's records). `access` = reads of the audit data.",
)];
const FILTERS: &[Param] = &[
    query("iss", Schema::Text, "Exact issuer (`iss`)."),
    query("sid", Schema::Text, "Exact session id (`sid`)."),
    query("jti", Schema::Text, "Exact token id (`jti`)."),
    query("outcome", Schema::OneOf(OUTCOMES), "Outcome."),
    query(
        "reason",
        Schema::Text,
        "Rejection code, e.g. `bad_signature`.",
    ),
    repeatable(query(
        META_PARAM,
        Schema::Text,
        "`meta.KEY=VALUE`: the session metadata has KEY with VALUE. Repeatable; all must hold.",
    )),
    repeatable(query(
        "has_meta",
        Schema::Text,
        "The session metadata has this key (any value). Repeatable.",
    )),
    query(
        "metadata_status",
        Schema::OneOf(&["absent", "ok", "invalid"]),
        "Session metadata status.",
    ),
    query(
        "verified",
        Schema::Boolean,
        "`true`: only records whose claims passed verification (accepted, duplicate). Otherwise filters match stored values, verified or not.",
    ),
];
/// A page's size.
const LIMIT: Param = query("limit", Schema::Integer, "Page size, 1-1000; default 100.");
/// The time window, on the record's `received_at`.
const WINDOW: &[Param] = &[
    query("since", Schema::Time, "Received at or after (RFC 3339)."),
    query("until", Schema::Time, "Received before (RFC 3339)."),
];
const PAGE: &[Param] = &[
    query(
        "order",
        Schema::OneOf(&["desc", "asc"]),
        "By sequence number; default `desc` (newest first).",
    ),
    LIMIT,
    query(
        "cursor",
        Schema::Text,
        "`next_cursor` of the previous page. Pages do not shift while records arrive.",
    ),
];
const EXPORT: &[Param] = &[
    Param {
        required: true,
        ..query(
            "format",
            Schema::OneOf(&["ndjson", "csv", "ocsf"]),
            "`ndjson`: one record a line; `csv`: RFC 4180 with a header row; `ocsf`: OCSF Authentication (3002) Logoff events, one a line.",
        )
    },
    query(
        "order",
        Schema::OneOf(&["asc", "desc"]),
        "By sequence number; default `asc` (oldest first).",
    ),
];
const GROUP: &[Param] = &[Param {
    required: true,
    ..repeatable(query(
        "group_by",
        Schema::Text,
        "`day`, `issuer`, `outcome`, `reason` or `meta:KEY`; once or twice (two dimensions).",
    ))
}];
const SESSION: &[Param] = &[
    path(
        "sid",
        Schema::Text,
        "The session id (`sid`) the application holds.",
    ),
    query(
        "iss",
        Schema::Text,
        "The session's issuer; may be left out when one issuer is configured.",
    ),
    query(
        "sub",
        Schema::Text,
        "The session's subject; with `since`, a logout of all the subject's sessions (no `sid`) at or after `since` also counts.",
    ),
    query(
        "since",
        Schema::Time,
        "When the local session began (RFC 3339); goes with `sub`.",
    ),
];
const DELIVERIES: &[Param] = &[
    query("target", Schema::Text, "One delivery target's name."),
    query(
        "state",
        Schema::OneOf(&["pending", "delivered", "dead"]),
        "Delivery state.",
    ),
    LIMIT,
    query(
        "cursor",
        Schema::Text,
        "`next_cursor` of the previous page (newest record first).",
    ),
];
const EVENT_ID: &[Param] = &[path("id", Schema::Integer, "The record's sequence number.")];
const SUBJECT: &[Param] = &[path("sub", Schema::Text, "The subject (`sub`).")];

/// What a route does, mapped to its handler by the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `GET /api/v1/events`.
    Events,
    /// `GET /api/v1/events/{id}`.
    Event,
    /// `GET /api/v1/sessions/{sid}`.
    Session,
    /// `GET /api/v1/subjects/{sub}/logouts`.
    SubjectLogouts,
    /// `GET /api/v1/export`.
    Export,
    /// `GET /api/v1/reports/summary`.
    Summary,
    /// `GET /api/v1/deliveries`.
    Deliveries,
    /// `POST /api/v1/deliveries/retry`.
    DeliveryRetry,
    /// `GET /api/v1/ledger`.
    Ledger,
    /// `GET /api/v1/events/{id}/proof`.
    Proof,
    /// `GET /api/v1/openapi.json`.
    OpenApi,
}

/// What a route answers with, for the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `{"events": [...], "next_cursor": ...}`.
    Page,
    /// One record with its token.
    Record,
    /// Session status.
    Session,
    /// A streamed export.
    Stream,
    /// Counts per group.
    Summary,
    /// `{"deliveries": [...], "next_cursor": ...}`.
    Deliveries,
    /// `{"requeued": n}`.
    Requeued,
    /// The chain's head, the latest checkpoint, the log's key.
    Ledger,
    /// An inclusion proof.
    Proof,
    /// This document.
    Document,
}

/// The HTTP method of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// A read.
    Get,
    /// A change (a delivery retry).
    Post,
}

impl Method {
    /// The OpenAPI operation key.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
        }
    }
}

/// One route.
#[derive(Debug)]
pub(crate) struct Route {
    /// Its method.
    pub(crate) method: Method,
    /// What it does.
    pub(crate) op: Op,
    /// Its path (axum and OpenAPI agree on `{name}`).
    pub(crate) path: &'static str,
    /// One line for the document.
    pub(crate) summary: &'static str,
    /// Whether a bearer token is needed.
    pub(crate) authenticated: bool,
    /// Whether the read leaves an `access` record.
    pub(crate) audited: bool,
    /// Its parameters, in groups.
    pub(crate) params: &'static [&'static [Param]],
    /// What it answers.
    pub(crate) answer: Answer,
}

impl Route {
    /// Every parameter of the route.
    pub(crate) fn params(&self) -> impl Iterator<Item = &'static Param> {
        self.params.iter().flat_map(|g| g.iter())
    }
}

/// Every route of the API.
pub(crate) const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        op: Op::Events,
        path: "/api/v1/events",
        summary: "Audit records matching filters, a page at a time (keyset cursor).",
        authenticated: true,
        audited: true,
        params: &[SUB, KIND, FILTERS, WINDOW, PAGE],
        answer: Answer::Page,
    },
    Route {
        method: Method::Get,
        op: Op::Event,
        path: "/api/v1/events/{id}",
        summary: "One record, with the stored token's header and claims decoded.",
        authenticated: true,
        audited: true,
        params: &[EVENT_ID],
        answer: Answer::Record,
    },
    Route {
        method: Method::Get,
        op: Op::Session,
        path: "/api/v1/sessions/{sid}",
        summary: "Is this session logged out? Cheap and indexed: call it on requests. Counted in metrics, not audited.",
        authenticated: true,
        audited: false,
        params: &[SESSION],
        answer: Answer::Session,
    },
    Route {
        method: Method::Get,
        op: Op::SubjectLogouts,
        path: "/api/v1/subjects/{sub}/logouts",
        summary: "A subject's logout records, newest first.",
        authenticated: true,
        audited: true,
        params: &[SUBJECT, FILTERS, WINDOW, PAGE],
        answer: Answer::Page,
    },
    Route {
        method: Method::Get,
        op: Op::Export,
        path: "/api/v1/export",
        summary: "Every matching record, streamed in constant memory (a snapshot: records arriving meanwhile are left out).",
        authenticated: true,
        audited: true,
        params: &[SUB, KIND, FILTERS, WINDOW, EXPORT],
        answer: Answer::Stream,
    },
    Route {
        method: Method::Get,
        op: Op::Summary,
        path: "/api/v1/reports/summary",
        summary: "Counts of matching records per day, issuer, outcome, reason or metadata value.",
        authenticated: true,
        audited: true,
        params: &[SUB, KIND, FILTERS, WINDOW, GROUP],
        answer: Answer::Summary,
    },
    Route {
        method: Method::Get,
        op: Op::Deliveries,
        path: "/api/v1/deliveries",
        summary: "Deliveries of logouts to the configured targets: state, attempts, last error.",
        authenticated: true,
        audited: true,
        params: &[DELIVERIES, WINDOW],
        answer: Answer::Deliveries,
    },
    Route {
        method: Method::Post,
        op: Op::DeliveryRetry,
        path: "/api/v1/deliveries/retry",
        summary: "Makes deliveries due again: one record's (`event_id`) or every dead one of a target (`dead: true`). Body: JSON `{\"target\", \"event_id\"}` or `{\"target\", \"dead\": true}`. Chained as a `delivery_retry` system record naming the token's label.",
        authenticated: true,
        audited: true,
        params: &[],
        answer: Answer::Requeued,
    },
    Route {
        method: Method::Get,
        op: Op::Ledger,
        path: "/api/v1/ledger",
        summary: "The chain's last record, the latest signed checkpoint and its age, the log's public key (note verifier form) and the delivery targets.",
        authenticated: true,
        audited: true,
        params: &[],
        answer: Answer::Ledger,
    },
    Route {
        method: Method::Get,
        op: Op::Proof,
        path: "/api/v1/events/{id}/proof",
        summary: "The record's inclusion proof against the latest signed checkpoint covering it, as `logout-ledger prove` prints it and as the store holds it (check it yourself: docs/audit-format.md). 409 `not_checkpointed` until a checkpoint covers it.",
        authenticated: true,
        audited: true,
        params: &[EVENT_ID],
        answer: Answer::Proof,
    },
    Route {
        method: Method::Get,
        op: Op::OpenApi,
        path: "/api/v1/openapi.json",
        summary: "This document (no authentication: it holds no data).",
        authenticated: false,
        audited: false,
        params: &[],
        answer: Answer::Document,
    },
];

/// The route of an operation.
pub(crate) fn route(op: Op) -> &'static Route {
    ROUTES
        .iter()
        .find(|r| r.op == op)
        .unwrap_or(&ROUTES[ROUTES.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_one_route_and_paths_are_unique() {
        for op in [
            Op::Events,
            Op::Event,
            Op::Session,
            Op::SubjectLogouts,
            Op::Export,
            Op::Summary,
            Op::OpenApi,
        ] {
            assert_eq!(ROUTES.iter().filter(|r| r.op == op).count(), 1, "{op:?}");
            assert_eq!(route(op).op, op);
        }
        for (i, r) in ROUTES.iter().enumerate() {
            assert!(ROUTES[..i].iter().all(|o| o.path != r.path), "{}", r.path);
            let names: Vec<&str> = r.params().map(|p| p.name).collect();
            for (j, n) in names.iter().enumerate() {
                assert!(!names[..j].contains(n), "{} lists {n} twice", r.path);
            }
            for p in r.params().filter(|p| p.location == In::Path) {
                assert!(r.path.contains(&format!("{{{}}}", p.name)), "{}", r.path);
            }
        }
    }
}
