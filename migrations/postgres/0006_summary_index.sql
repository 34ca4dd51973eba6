-- The time index also carries what the console's overview groups by (kind, outcome, reason,
-- iss), so a summary over a time window can be an index-only scan (docs/query-performance.md).
DROP INDEX audit_events_received_at;
CREATE INDEX audit_events_received_at ON audit_events (received_at, id) INCLUDE (kind, outcome, reason, iss);
