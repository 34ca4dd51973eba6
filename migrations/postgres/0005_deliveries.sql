-- Delivery of accepted logouts to the applications that must end the session (issue 13).
-- Intents are derived from the append-only log: each target keeps the last audit record id it
-- has examined (delivery_positions.position); records after it are matched against the target's
-- filters and become rows of `deliveries` in the same transaction that moves the position, so a
-- crash at any moment re-examines, never skips.
CREATE TABLE delivery_positions (
    target   text PRIMARY KEY,
    position bigint NOT NULL
);

CREATE TABLE deliveries (
    target          text        NOT NULL,
    event_id        bigint      NOT NULL,
    delivery_id     text        NOT NULL,
    event_type      text        NOT NULL,
    received_at     timestamptz NOT NULL,
    state           text        NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        bigint      NOT NULL DEFAULT 0,
    pending_since   timestamptz NOT NULL,
    next_attempt_at timestamptz,
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    last_error      text,
    lease_owner     text,
    lease_until     timestamptz,
    PRIMARY KEY (target, event_id)
);

CREATE INDEX deliveries_due ON deliveries (target, next_attempt_at, event_id)
    WHERE state = 'pending';
CREATE INDEX deliveries_event ON deliveries (event_id);
