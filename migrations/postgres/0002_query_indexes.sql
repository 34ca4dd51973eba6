-- Indexes of the query API (issue 3), as on SQLite (migrations/sqlite/0002). PostgreSQL's
-- B-trees do not end with the row's id by themselves, so each names it: a lookup by key returns
-- its records in id order and a keyset page stops after `limit` rows.

CREATE INDEX audit_events_sub ON audit_events (sub, id) WHERE sub IS NOT NULL;

CREATE INDEX audit_events_sid ON audit_events (sid, id) WHERE sid IS NOT NULL;

CREATE INDEX audit_events_kind ON audit_events (kind, id);

CREATE INDEX audit_events_subject_logouts ON audit_events (sub, received_at, id)
    WHERE sid IS NULL AND claims_verified;
