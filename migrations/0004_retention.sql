-- Retention: the oldest events, all of pods removed before the horizon (and the node's own), move to a
-- compressed archive; one signed record a prune says where the log now starts. The first event kept links
-- to `hash`, so verification of what stays starts from a trusted point, and the archive verifies on its own.
CREATE TABLE prunes (
  up_to_sequence  INTEGER PRIMARY KEY CHECK (up_to_sequence > 0),
  hash            TEXT    NOT NULL CHECK (length(hash) = 64),     -- of the event at up_to_sequence
  event_count     INTEGER NOT NULL CHECK (event_count > 0),       -- events this prune moved out
  stream_versions TEXT    NOT NULL CHECK (json_valid(stream_versions)), -- at up_to_sequence, of streams that go on past it
  archive         TEXT    NOT NULL,                               -- the file the events went to
  time            TEXT    NOT NULL,
  key_id          TEXT    NOT NULL,                               -- sha256 of the audit public key that signed
  signature       TEXT    NOT NULL                                -- Ed25519 over the record's canonical JSON
) STRICT;

CREATE TRIGGER prunes_append_only_no_update BEFORE UPDATE ON prunes
BEGIN
  SELECT RAISE(ABORT, 'prunes are append-only: UPDATE is not allowed');
END;

CREATE TRIGGER prunes_append_only_no_delete BEFORE DELETE ON prunes
BEGIN
  SELECT RAISE(ABORT, 'prunes are append-only: DELETE is not allowed');
END;

-- Pods whose history went to an archive: `kts history` says where.
CREATE TABLE archived_pods (
  sandbox_id     TEXT    PRIMARY KEY,
  name           TEXT    NOT NULL,
  namespace      TEXT    NOT NULL,
  archive        TEXT    NOT NULL,
  up_to_sequence INTEGER NOT NULL REFERENCES prunes (up_to_sequence)
) STRICT;

CREATE INDEX archived_pods_by_name ON archived_pods (name, namespace);

-- Events stay append-only; only those a recorded prune covers may be deleted (in the prune's own transaction).
DROP TRIGGER events_append_only_no_delete;
CREATE TRIGGER events_append_only_no_delete BEFORE DELETE ON events
WHEN OLD.sequence > COALESCE((SELECT MAX(up_to_sequence) FROM prunes), 0)
BEGIN
  SELECT RAISE(ABORT, 'events are append-only: DELETE is allowed only of events a recorded prune moved to an archive');
END;
