-- Delivery of accepted logouts to the applications that must end the session (issue 13).
-- Intents are derived from the append-only log: each target keeps the last audit record id it
-- has examined (delivery_positions.position); records after it are matched against the target's
-- filters and become rows of `deliveries` in the same transaction that moves the position, so a
-- crash at any moment re-examines, never skips. Times are ms since the epoch, as in audit_events.
-- pending_since: when it last became pending (created, or requeued by `deliveries retry`); a
-- delivery still failing max_age after it is dead.
CREATE TABLE delivery_positions (
    target   TEXT PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE deliveries (
    target          TEXT    NOT NULL,
    event_id        INTEGER NOT NULL,
    delivery_id     TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    received_at     INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    pending_since   INTEGER NOT NULL,
    next_attempt_at INTEGER,
    last_attempt_at INTEGER,
    delivered_at    INTEGER,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     INTEGER,
    PRIMARY KEY (target, event_id)
) WITHOUT ROWID;

-- The due pending deliveries of one target, oldest due first (first attempts in record order).
CREATE INDEX deliveries_due ON deliveries (target, next_attempt_at, event_id)
    WHERE state = 'pending';
-- One record's deliveries (GET /api/v1/events/{id}); appends at the right edge.
CREATE INDEX deliveries_event ON deliveries (event_id);
