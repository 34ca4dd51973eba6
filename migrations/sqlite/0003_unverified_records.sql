-- Records of requests refused before their signature verified (malformed_request,
-- malformed_token, unknown_issuer, unsupported_alg, bad_typ, unknown_key, bad_signature,
-- keys_unavailable) keep no claims from now on, and never index metadata. Records written
-- before this migration cannot be rewritten (append-only, hash-chained), but their metadata
-- index entries are no part of the chain: remove them, so a forger's metadata answers no
-- metadata query. `verify` does not read metadata_pairs.
DELETE FROM metadata_pairs
WHERE event_id IN (
    SELECT id FROM audit_events
    WHERE kind = 'logout'
      AND reason IN ('malformed_request', 'malformed_token', 'unknown_issuer', 'unsupported_alg',
                     'bad_typ', 'unknown_key', 'bad_signature', 'keys_unavailable')
);
