-- Read models, written in the same transaction as the events they reflect.
CREATE TABLE sandboxes (
  id           TEXT    PRIMARY KEY,
  name         TEXT    NOT NULL,
  namespace    TEXT    NOT NULL,
  kind         TEXT    NOT NULL,
  state        TEXT    NOT NULL,
  pid          INTEGER,
  task_address TEXT,
  created_at   TEXT    NOT NULL,
  updated_at   TEXT    NOT NULL,
  version      INTEGER NOT NULL CHECK (version >= 0),
  metadata     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata))
) STRICT;

-- A container row needs its sandbox row: the sandbox is always projected first.
CREATE TABLE containers (
  id          TEXT    PRIMARY KEY,
  sandbox_id  TEXT    NOT NULL REFERENCES sandboxes (id),
  name        TEXT    NOT NULL,
  state       TEXT    NOT NULL,
  pid         INTEGER,
  exit_status INTEGER,
  exited_at   TEXT,
  created_at  TEXT    NOT NULL,
  updated_at  TEXT    NOT NULL,
  version     INTEGER NOT NULL CHECK (version >= 0),
  metadata    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata))
) STRICT;

CREATE INDEX containers_by_sandbox ON containers (sandbox_id, created_at);
