-- As migrations/sqlite/0003: records of requests refused before their signature verified keep
-- no claims from now on; the metadata index entries such records got before (no part of the
-- hash chain, not read by `verify`) are removed, so a forger's metadata answers no query.
DELETE FROM metadata_pairs p
USING audit_events e
WHERE e.id = p.event_id
  AND e.kind = 'logout'
  AND e.reason IN ('malformed_request', 'malformed_token', 'unknown_issuer', 'unsupported_alg',
                   'bad_typ', 'unknown_key', 'bad_signature', 'keys_unavailable');
