-- Signed checkpoints of the log's head (src/audit/checkpoints.ts): every [audit] checkpoint_every events and
-- at shutdown. The newest is also kept outside the database (head.json, a log line, a metric), so cutting the
-- tail of the log, or rewriting and re-hashing it, shows against a head the database no longer controls.
CREATE TABLE checkpoints (
  sequence  INTEGER PRIMARY KEY CHECK (sequence > 0),   -- the event it vouches for
  hash      TEXT    NOT NULL CHECK (length(hash) = 64), -- that event's hash
  time      TEXT    NOT NULL,                           -- when it was signed
  key_id    TEXT    NOT NULL,                           -- sha256 of the audit public key that signed
  signature TEXT    NOT NULL                            -- Ed25519 (base64) over the checkpoint's canonical JSON
) STRICT;

CREATE TRIGGER checkpoints_append_only_no_update BEFORE UPDATE ON checkpoints
BEGIN
  SELECT RAISE(ABORT, 'checkpoints are append-only: UPDATE is not allowed');
END;

CREATE TRIGGER checkpoints_append_only_no_delete BEFORE DELETE ON checkpoints
BEGIN
  SELECT RAISE(ABORT, 'checkpoints are append-only: DELETE is not allowed');
END;
