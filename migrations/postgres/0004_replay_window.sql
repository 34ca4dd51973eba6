-- Replay and duplicate decisions now come from the accepted records of the replay window
-- (max token age + 2 x leeway), read from audit_events into the writer's memory at start-up
-- and after another replica's appends (src/store/replay.rs). The table of every accepted
-- (iss, jti) cost one random B-tree page per logout and is no longer read or written.
DROP TABLE accepted_tokens;
