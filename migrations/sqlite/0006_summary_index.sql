-- The time index also carries what the console's overview groups by (kind, outcome, reason,
-- iss), so a summary over a time window reads only the index, never the wide rows (measured on
-- a million records: docs/query-performance.md). It stays append-ordered (received_at first),
-- so it still costs the writer about one page per batch.
DROP INDEX audit_events_received_at;
CREATE INDEX audit_events_received_at ON audit_events (received_at, kind, outcome, reason, iss);
