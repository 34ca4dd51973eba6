-- The audit store. Every record (a logout request, a read of the audit data, or an event in the
-- service's own life) joins one append-only, hash-chained sequence:
--   entry_hash(n) = SHA-256("logout-ledger:audit-entry:v1\n" || canonical(record n) || entry_hash(n-1))
-- with entry_hash(0) = 32 zero bytes, or the anchor of the last retention run. docs/audit-format.md
-- defines canonical(). id is the sequence number, assigned by the single writer: gapless from 1.
CREATE TABLE audit_events (
    id               INTEGER PRIMARY KEY,
    kind             TEXT    NOT NULL CHECK (kind IN ('logout', 'access', 'system')),
    received_at      INTEGER NOT NULL,           -- milliseconds since the Unix epoch, UTC
    outcome          TEXT    CHECK (outcome IN ('accepted', 'duplicate', 'rejected')),
    http_status      INTEGER,
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
    metadata_status  TEXT    CHECK (metadata_status IN ('absent', 'ok', 'invalid')),
    metadata_error   TEXT,
    source_ip        TEXT,
    user_agent       TEXT,
    token_sha256     BLOB,
    token            TEXT,                       -- the signed evidence, accepted tokens only
    key_set_digest   BLOB,                       -- SHA-256 of the archived key set that verified it
    duplicate_of     INTEGER,                    -- for duplicates, the original record's id
    claims_verified  INTEGER CHECK (claims_verified IN (0, 1)),
    action           TEXT,                       -- access and system records: what happened
    details          TEXT,                       -- access and system records: JSON
    entry_hash       BLOB    NOT NULL CHECK (length(entry_hash) = 32)
);

-- Time-ordered, so appends touch only the right edge of this index.
CREATE INDEX audit_events_received_at ON audit_events (received_at);

-- Replay detection: every accepted (iss, jti), kept as long as its audit record.
CREATE TABLE accepted_tokens (
    iss          TEXT    NOT NULL,
    jti          TEXT    NOT NULL,
    token_sha256 BLOB    NOT NULL,
    event_id     INTEGER NOT NULL,
    PRIMARY KEY (iss, jti)
) WITHOUT ROWID;

-- Valid session metadata, one row per pair, so queries by key and value use this index.
CREATE TABLE metadata_pairs (
    key      TEXT    NOT NULL,
    value    TEXT    NOT NULL,
    event_id INTEGER NOT NULL,
    PRIMARY KEY (key, value, event_id)
) WITHOUT ROWID;

-- Every key set fetched from an issuer, once per digest.
CREATE TABLE key_sets (
    digest     BLOB    PRIMARY KEY CHECK (length(digest) = 32),
    issuer     TEXT    NOT NULL,
    jwks       TEXT    NOT NULL,                 -- the document as fetched
    kids       TEXT    NOT NULL,                 -- JSON array of the usable keys' ids
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);

-- Signed checkpoints (C2SP tlog-checkpoint notes) over the entry hashes.
CREATE TABLE checkpoints (
    tree_size  INTEGER PRIMARY KEY,
    root_hash  BLOB    NOT NULL CHECK (length(root_hash) = 32),
    note       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- Where the chain starts after retention removed a prefix: the last removed entry's hash.
CREATE TABLE chain_anchor (
    singleton       INTEGER PRIMARY KEY CHECK (singleton = 1),
    first_id        INTEGER NOT NULL,            -- the first record still stored
    prev_entry_hash BLOB    NOT NULL CHECK (length(prev_entry_hash) = 32)
);

-- The entry hashes of records removed by retention: the Merkle tree over every record ever
-- written stays computable, so old checkpoints and proofs still verify.
CREATE TABLE purged_hashes (
    id         INTEGER PRIMARY KEY,
    entry_hash BLOB    NOT NULL CHECK (length(entry_hash) = 32)
);

-- Set only inside a retention run's transaction: the highest id it may delete.
CREATE TABLE purge_window (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    up_to_id  INTEGER NOT NULL
);

-- Append-only: records are never changed, and removed only by retention inside its window.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
WHEN OLD.id > COALESCE((SELECT up_to_id FROM purge_window WHERE singleton = 1), 0)
BEGIN
    SELECT RAISE(ABORT, 'audit records are removed only by retention');
END;

CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'checkpoints are append-only');
END;

CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'checkpoints are kept forever');
END;
