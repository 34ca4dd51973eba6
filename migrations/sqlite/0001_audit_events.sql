-- The audit store: one row per request to the logout endpoint, accepted or rejected.
-- id is the sequence number, assigned by the single writer: gapless, starting at 1.
CREATE TABLE audit_events (
    id               INTEGER PRIMARY KEY,
    kind             TEXT    NOT NULL DEFAULT 'logout',
    received_at      INTEGER NOT NULL,           -- milliseconds since the Unix epoch, UTC
    outcome          TEXT    NOT NULL CHECK (outcome IN ('accepted', 'duplicate', 'rejected')),
    http_status      INTEGER NOT NULL,
    reason           TEXT,                       -- rejection code, NULL when accepted
    reason_detail    TEXT,
    iss              TEXT,
    sub              TEXT,
    sid              TEXT,
    jti              TEXT,
    aud              TEXT,                       -- JSON array of strings
    iat              INTEGER,
    exp              INTEGER,
    alg              TEXT,
    kid              TEXT,
    typ              TEXT,
    events           TEXT,                       -- JSON
    session_metadata TEXT,                       -- JSON as received (bounded), or a size marker
    metadata_status  TEXT    NOT NULL CHECK (metadata_status IN ('absent', 'ok', 'invalid')),
    metadata_error   TEXT,
    source_ip        TEXT,
    user_agent       TEXT,
    token_sha256     BLOB,
    token            TEXT,                       -- the signed evidence, accepted tokens only
    key_set_digest   BLOB,                       -- SHA-256 of the key set that verified it
    duplicate_of     INTEGER REFERENCES audit_events (id),
    claims_verified  INTEGER NOT NULL CHECK (claims_verified IN (0, 1))
);

-- Time-ordered, so appends touch only the right edge of this index.
CREATE INDEX audit_events_received_at ON audit_events (received_at);

-- Replay detection: every accepted (iss, jti), kept as long as its audit record.
CREATE TABLE accepted_tokens (
    iss          TEXT    NOT NULL,
    jti          TEXT    NOT NULL,
    token_sha256 BLOB    NOT NULL,
    event_id     INTEGER NOT NULL REFERENCES audit_events (id),
    PRIMARY KEY (iss, jti)
) WITHOUT ROWID;

-- Valid session metadata, one row per pair, so queries by key and value use this index.
CREATE TABLE metadata_pairs (
    key      TEXT    NOT NULL,
    value    TEXT    NOT NULL,
    event_id INTEGER NOT NULL REFERENCES audit_events (id),
    PRIMARY KEY (key, value, event_id)
) WITHOUT ROWID;
