-- The append-only, hash-chained event log: one row per transition, one stream per sandbox/container.
CREATE TABLE events (
  sequence       INTEGER PRIMARY KEY CHECK (sequence > 0),
  stream_id      TEXT    NOT NULL CHECK (length(stream_id) > 0),
  stream_version INTEGER NOT NULL CHECK (stream_version > 0),
  type           TEXT    NOT NULL CHECK (length(type) > 0),
  payload        TEXT    NOT NULL CHECK (json_valid(payload)),
  state_before   TEXT    NOT NULL,
  state_after    TEXT    NOT NULL,
  trace_id       TEXT,
  span_id        TEXT,
  caller         TEXT,
  time           TEXT    NOT NULL,
  prev_hash      TEXT    NOT NULL CHECK (length(prev_hash) = 64),
  hash           TEXT    NOT NULL CHECK (length(hash) = 64),
  UNIQUE (stream_id, stream_version)
) STRICT;
-- UNIQUE (stream_id, stream_version) is also the index behind stream reads and expected-version checks.

-- First event of each stream, in global order: what listStreams walks.
CREATE INDEX events_stream_starts ON events (sequence) WHERE stream_version = 1;

-- History is never rewritten: the chain makes edits evident, these triggers make them refused.
CREATE TRIGGER events_append_only_no_update BEFORE UPDATE ON events
BEGIN
  SELECT RAISE(ABORT, 'events are append-only: UPDATE is not allowed');
END;

CREATE TRIGGER events_append_only_no_delete BEFORE DELETE ON events
BEGIN
  SELECT RAISE(ABORT, 'events are append-only: DELETE is not allowed');
END;

-- Latest folded state per stream; speeds up replay, never replaces the log.
CREATE TABLE snapshots (
  stream_id TEXT    PRIMARY KEY,
  version   INTEGER NOT NULL CHECK (version > 0),
  state     TEXT    NOT NULL CHECK (json_valid(state)),
  saved_at  TEXT    NOT NULL
) STRICT;
