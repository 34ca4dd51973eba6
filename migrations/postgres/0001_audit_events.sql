-- The audit store on PostgreSQL: the same tables, rules and chain as migrations/sqlite/0001, with
-- PostgreSQL's types (bigint, timestamptz, bytea, boolean, jsonb). The chain hashes the values the
-- writer computed (docs/audit-format.md): times enter it as milliseconds since the epoch, and JSON
-- as the exact text hashed, so JSON columns are text with a jsonb column generated beside them for
-- queries (jsonb would reorder keys and so change the hashed bytes).
--
-- Sequence numbers are assigned by the writer that holds the chain lock (a row lock on
-- chain_lock), never by a SEQUENCE: a sequence leaves gaps on rollback, the chain may not.

-- Milliseconds since the epoch to timestamptz and back, exact to the millisecond. Interval
-- arithmetic is exact below 2^53 microseconds, so the input is clamped to +-8e12 ms (years
-- 1716..2223): an unbounded filter bound (i64::MIN / i64::MAX) then stays in range.
CREATE FUNCTION ll_ts(ms bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT timestamptz 'epoch'
        + least(greatest(ms, -8000000000000), 8000000000000) * interval '1 millisecond' $$;

CREATE FUNCTION ll_ms(t timestamptz) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (extract(epoch FROM t) * 1000)::bigint $$;

CREATE TABLE audit_events (
    id               bigint      PRIMARY KEY CHECK (id > 0),
    kind             text        NOT NULL CHECK (kind IN ('logout', 'access', 'system')),
    received_at      timestamptz NOT NULL,
    outcome          text        CHECK (outcome IN ('accepted', 'duplicate', 'rejected')),
    http_status      bigint,
    reason           text,                       -- rejection code, NULL when accepted
    reason_detail    text,
    iss              text,
    sub              text,
    sid              text,
    jti              text,
    aud              text,                       -- JSON array of strings, as hashed
    iat              bigint,
    exp              bigint,
    alg              text,
    kid              text,
    typ              text,
    events           text,                       -- JSON, as hashed
    session_metadata text,                       -- JSON as received (bounded), or a size marker
    metadata_status  text        CHECK (metadata_status IN ('absent', 'ok', 'invalid')),
    metadata_error   text,
    source_ip        text,
    user_agent       text,
    token_sha256     bytea,
    token            text,                       -- the signed evidence, accepted tokens only
    key_set_digest   bytea,                      -- SHA-256 of the archived key set that verified it
    duplicate_of     bigint,                     -- for duplicates, the original record's id
    claims_verified  boolean,
    action           text,                       -- access and system records: what happened
    details          text,                       -- access and system records: JSON, as hashed
    entry_hash       bytea       NOT NULL CHECK (octet_length(entry_hash) = 32),
    -- Valid session metadata as jsonb, for queries by key (not part of the chain).
    metadata         jsonb       GENERATED ALWAYS AS (
        CASE WHEN metadata_status = 'ok' THEN session_metadata::jsonb END) STORED
);

CREATE INDEX audit_events_received_at ON audit_events (received_at, id);

-- Replay detection: every accepted (iss, jti), kept as long as its audit record. The primary
-- key is the last line of defence: two replicas can never both accept one (iss, jti).
CREATE TABLE accepted_tokens (
    iss          text   NOT NULL,
    jti          text   NOT NULL,
    token_sha256 bytea  NOT NULL,
    event_id     bigint NOT NULL,
    PRIMARY KEY (iss, jti)
);

CREATE TABLE metadata_pairs (
    key      text   NOT NULL,
    value    text   NOT NULL,
    event_id bigint NOT NULL,
    PRIMARY KEY (key, value, event_id)
);

CREATE TABLE key_sets (
    digest     bytea       PRIMARY KEY CHECK (octet_length(digest) = 32),
    issuer     text        NOT NULL,
    jwks       text        NOT NULL,             -- the document as fetched
    kids       text        NOT NULL,             -- JSON array of the usable keys' ids
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    archived   bigint      GENERATED ALWAYS AS IDENTITY -- archive order (ties of first_seen)
);

CREATE TABLE checkpoints (
    tree_size  bigint      PRIMARY KEY,
    root_hash  bytea       NOT NULL CHECK (octet_length(root_hash) = 32),
    note       text        NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE chain_anchor (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    first_id        bigint  NOT NULL,
    prev_entry_hash bytea   NOT NULL CHECK (octet_length(prev_entry_hash) = 32)
);

CREATE TABLE purged_hashes (
    id         bigint PRIMARY KEY,
    entry_hash bytea  NOT NULL CHECK (octet_length(entry_hash) = 32)
);

CREATE TABLE purge_window (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    up_to_id  bigint  NOT NULL
);

-- The single sequencer: every writer (each replica's batch, the CLI's access records, a
-- retention run) locks this row first, so the chain has one head and ids stay gapless.
CREATE TABLE chain_lock (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton)
);
INSERT INTO chain_lock DEFAULT VALUES;

-- Append-only: records are never changed, and removed only by retention inside its window.
CREATE FUNCTION ll_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
END $$;

CREATE FUNCTION ll_guard_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.id > COALESCE((SELECT up_to_id FROM purge_window WHERE singleton), 0) THEN
        RAISE EXCEPTION 'audit records are removed only by retention'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION ll_refuse('audit records are append-only');
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION ll_guard_delete();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION ll_refuse('audit records are removed only by retention');
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION ll_refuse('checkpoints are append-only');
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION ll_refuse('checkpoints are kept forever');
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ll_refuse('checkpoints are kept forever');
