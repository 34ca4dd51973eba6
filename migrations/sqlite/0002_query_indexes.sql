-- Indexes of the query API (issue 3). Each entry of an index on a random key (sub, sid) costs
-- about one page write per new row, so there are only these; docs/query-performance.md has the
-- measured cost. Every index ends with the rowid (id), so a lookup by key returns its records
-- already in id order and a keyset page stops after `limit` rows.

-- A subject's records: GET /subjects/{sub}/logouts, /events?sub=.
CREATE INDEX audit_events_sub ON audit_events (sub) WHERE sub IS NOT NULL;

-- A session's records: GET /sessions/{sid} and /events?sid=.
CREATE INDEX audit_events_sid ON audit_events (sid) WHERE sid IS NOT NULL;

-- One kind of record in id order (logout, access, system): appends at the right edge of each
-- kind's range, so it costs almost nothing to keep; /events?kind=access does not scan logouts.
CREATE INDEX audit_events_kind ON audit_events (kind);

-- Verified logouts of all of a subject's sessions (no sid), by time: the second half of the
-- session check ("a logout of this subject after the local session began"). Partial, so it
-- holds only those rare records.
CREATE INDEX audit_events_subject_logouts ON audit_events (sub, received_at)
    WHERE sid IS NULL AND claims_verified = 1;
