import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KtsError, conflict, isKtsError } from '../core/errors.js';
import type { EventStore } from '../core/store.js';
import { translateSqliteError } from './sqliteErrors.js';
import { makeTempDir, newEvent, sandboxRow } from './sqliteStore.fixtures.js';
import { openSqliteStore, verifyStoreFile } from './sqliteStore.js';

let temp: ReturnType<typeof makeTempDir>;

beforeEach(() => {
  temp = makeTempDir();
});

afterEach(() => {
  temp.remove();
});

function thrown(action: () => unknown): KtsError {
  try {
    action();
  } catch (error) {
    if (error instanceof KtsError) return error;
    throw new Error(`expected a KtsError, got ${String(error)}`);
  }
  throw new Error('expected the action to throw');
}

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

/** The committed file as the next opener sees it: closing the last connection checkpoints the WAL into it. */
function createStoreWith(path: string, events: number): void {
  const store = openSqliteStore(path);
  for (let version = 0; version < events; version++) {
    store.appendToStream('sandbox-a', [newEvent('SandboxUpdated', 'ready', 'ready', { round: version })], { expectedVersion: version });
  }
  store.close();
}

const PAGE_SIZE = 4096;

describe('a full disk during an append', () => {
  let store: EventStore;

  /** A store that can grow by only a few pages more, as if its disk were nearly full. */
  function openNearlyFullStore(): EventStore {
    createStoreWith(temp.dbPath, 1);
    const pages = statSync(temp.dbPath).size / PAGE_SIZE;
    return openSqliteStore(temp.dbPath, { maxPageCount: pages + 2 });
  }

  const bigEvent = (round: number) => newEvent('SandboxUpdated', 'ready', 'ready', { round, note: 'x'.repeat(3000) });

  beforeEach(() => {
    store = openNearlyFullStore();
  });

  afterEach(() => {
    store.close();
  });

  it('given a store with no room left, when a batch of events with a read-model row does not fit, then it fails unavailable naming the file and SQLITE_FULL', () => {
    const error = thrown(() =>
      store.appendToStream('sandbox-a', [1, 2, 3, 4, 5].map(bigEvent), { expectedVersion: 1, projection: { table: 'sandboxes', row: sandboxRow('a') } }),
    );

    expect(error.kind).toBe('unavailable');
    expect(error.message).toBe(
      `event store ${temp.dbPath}: disk full (SQLITE_FULL); the request was not recorded — free space and retry`,
    );
  });

  it('given an append that failed for lack of space, when the store is read, then the log, its chain and the read models are as before', () => {
    const before = { events: store.readAll(), head: store.headSequence(), sandboxes: store.listSandboxes(), chain: store.verifyChain() };

    thrown(() => store.appendToStream('sandbox-a', [1, 2, 3, 4, 5].map(bigEvent), { expectedVersion: 1, projection: { table: 'sandboxes', row: sandboxRow('a') } }));

    expect({ events: store.readAll(), head: store.headSequence(), sandboxes: store.listSandboxes(), chain: store.verifyChain() }).toEqual(before);
    expect(before.chain).toEqual({ ok: true, eventCount: 1 });
  });

  it('given an append that failed for lack of space, when space is back, then the same append succeeds and the chain verifies', () => {
    thrown(() => store.appendToStream('sandbox-a', [1, 2, 3].map(bigEvent), { expectedVersion: 1 }));
    store.close();
    store = openSqliteStore(temp.dbPath);

    const result = store.appendToStream('sandbox-a', [1, 2, 3].map(bigEvent), { expectedVersion: 1, projection: { table: 'sandboxes', row: sandboxRow('a') } });

    expect(result).toEqual({ nextExpectedVersion: 4, lastSequence: 4 });
    expect(store.verifyChain()).toEqual({ ok: true, eventCount: 4 });
    expect(store.getSandbox('a')?.name).toBe('pod-a');
  });
});

describe('translateSqliteError', () => {
  const path = '/var/lib/kts/kts.db';
  const sqlite = (code: string, message: string) => new Database.SqliteError(message, code);

  it('given an I/O error from a write, when translated, then it is unavailable, names the file, the code and says nothing was recorded', () => {
    const error = translateSqliteError(sqlite('SQLITE_IOERR_WRITE', 'disk I/O error'), path);

    expect(error.kind).toBe('unavailable');
    expect(error.message).toBe(
      'event store /var/lib/kts/kts.db: I/O error (SQLITE_IOERR_WRITE: disk I/O error); the request was not recorded — check the disk (dmesg) and retry',
    );
  });

  it('given a full disk reported by fsync, when translated, then it is the disk-full message', () => {
    expect(translateSqliteError(sqlite('SQLITE_FULL', 'database or disk is full'), path).message).toMatch(/^event store \/var\/lib\/kts\/kts.db: disk full \(SQLITE_FULL\)/);
  });

  it.each([['SQLITE_BUSY'], ['SQLITE_BUSY_SNAPSHOT'], ['SQLITE_LOCKED']])('given %s, when translated, then it is unavailable: another writer holds the lock', (code) => {
    const error = translateSqliteError(sqlite(code, 'database is locked'), path);

    expect(error.kind).toBe('unavailable');
    expect(error.message).toBe(`event store /var/lib/kts/kts.db is locked by another writer (${code}); the request was not recorded — retry`);
  });

  it('given a read-only file system, when translated, then it is unavailable and names the cause', () => {
    const error = translateSqliteError(sqlite('SQLITE_READONLY', 'attempt to write a readonly database'), path);

    expect(error).toMatchObject({ kind: 'unavailable', message: expect.stringContaining('SQLITE_READONLY: attempt to write a readonly database') });
  });

  it('given corruption found by a write, when translated, then it is failed_precondition and says how to restore', () => {
    const error = translateSqliteError(sqlite('SQLITE_CORRUPT', 'database disk image is malformed'), path);

    expect(error.kind).toBe('failed_precondition');
    expect(error.message).toMatch(/^event store \/var\/lib\/kts\/kts.db is corrupt \(SQLITE_CORRUPT: database disk image is malformed; the request was not recorded\): stop here; restore the file from a backup/);
  });

  it('given a KtsError thrown inside the transaction, when translated, then it passes through unchanged', () => {
    const original = conflict('stream sandbox-a is at version 2, but the writer expected 1');

    expect(translateSqliteError(original, path)).toBe(original);
  });

  it('given an error that is not SQLite’s, when translated, then it is internal and keeps its cause', () => {
    const cause = new TypeError('boom');
    const error = translateSqliteError(cause, path);

    expect(error).toMatchObject({ kind: 'internal', message: 'event store /var/lib/kts/kts.db failed: boom', cause });
  });
});

describe('opening a corrupt store', () => {
  beforeEach(() => {
    mkdirSync(dirname(temp.dbPath), { recursive: true });
  });

  const restoreAdvice = 'stop here; restore the file from a backup, or move it aside to start with an empty store (the sandboxes it recorded will not be recovered)';

  it('given a file that is not a database, when opened, then it is refused as corrupt, naming the file and how to restore, and the file is untouched', () => {
    writeFileSync(temp.dbPath, 'this is not an SQLite database, just text that happens to be long enough to have a header'.repeat(100));
    const before = sha256(temp.dbPath);

    const error = thrown(() => openSqliteStore(temp.dbPath));

    expect(error.kind).toBe('failed_precondition');
    expect(error.message).toBe(`event store ${temp.dbPath} is corrupt (SQLITE_NOTADB: file is not a database): ${restoreAdvice}`);
    expect(sha256(temp.dbPath)).toBe(before);
  });

  it('given a valid store with a page of its event table overwritten, when opened, then it is refused as corrupt with quick_check’s finding, and the file is untouched', () => {
    createStoreWith(temp.dbPath, 200);
    const raw = new Database(temp.dbPath, { readonly: true });
    const { rootpage } = raw.prepare<[], { rootpage: number }>("SELECT rootpage FROM sqlite_schema WHERE name = 'events'").get()!;
    raw.close();
    overwritePage(temp.dbPath, rootpage);
    const before = sha256(temp.dbPath);

    const error = thrown(() => openSqliteStore(temp.dbPath));

    expect(error.kind).toBe('failed_precondition');
    expect(error.message).toBe(
      `event store ${temp.dbPath} is corrupt (quick_check: Tree ${rootpage} page ${rootpage}: btreeInitPage() returns error code 11): ${restoreAdvice}`,
    );
    expect(sha256(temp.dbPath)).toBe(before);
  });

  it('given an empty file (what a crash right after creating the store leaves), when opened, then it is an empty store, not corruption', () => {
    writeFileSync(temp.dbPath, '');

    const store = openSqliteStore(temp.dbPath);

    expect(store.headSequence()).toBe(0);
    store.close();
  });
});

function overwritePage(file: string, pageNumber: number): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, Buffer.alloc(PAGE_SIZE, 0xa5), 0, PAGE_SIZE, (pageNumber - 1) * PAGE_SIZE);
  } finally {
    closeSync(fd);
  }
}

describe('verifyStoreFile', () => {
  /** Edits a copy of the store the way an attacker with file access would: drop the guard, write, leave. */
  function tamperedCopy(sql: string): string {
    const copy = join(temp.dir, 'copy.db');
    copyFileSync(temp.dbPath, copy);
    const raw = new Database(copy);
    raw.exec('DROP TRIGGER events_append_only_no_update');
    raw.exec(sql);
    raw.close();
    return copy;
  }

  it('given an intact store file, when verified, then it is ok and counts every event', () => {
    createStoreWith(temp.dbPath, 3);

    expect(verifyStoreFile(temp.dbPath)).toEqual({ ok: true, eventCount: 3 });
  });

  it('given a copy with one payload edited, when verified, then the edited row is named: sequence, stream, type and a hash mismatch', () => {
    createStoreWith(temp.dbPath, 3);
    const copy = tamperedCopy(`UPDATE events SET payload = '{"round":7}' WHERE sequence = 2`);

    expect(verifyStoreFile(copy)).toMatchObject({
      ok: false, eventCount: 1, brokenAtSequence: 2, streamId: 'sandbox-a', type: 'SandboxUpdated', problem: 'hash_mismatch',
    });
  });

  it('given a store file, when verified, then the file is not written and no migration runs on it', () => {
    createStoreWith(temp.dbPath, 3);
    const before = { hash: sha256(temp.dbPath), mtimeMs: statSync(temp.dbPath).mtimeMs };

    verifyStoreFile(temp.dbPath);

    expect({ hash: sha256(temp.dbPath), mtimeMs: statSync(temp.dbPath).mtimeMs }).toEqual(before);
  });

  it('given a store a live writer holds open with commits still in its WAL, when verified, then those commits are seen', () => {
    const live = openSqliteStore(temp.dbPath);
    try {
      live.appendToStream('sandbox-a', [newEvent('SandboxCreated', 'none', 'created')], { expectedVersion: 0 });
      live.appendToStream('sandbox-a', [newEvent('SandboxStarted', 'created', 'ready')], { expectedVersion: 1 });

      expect(verifyStoreFile(temp.dbPath)).toEqual({ ok: true, eventCount: 2 });
    } finally {
      live.close();
    }
  });

  it('given an SQLite file that is not a kts store, when verified, then it says so', () => {
    const otherPath = join(temp.dir, 'notes.db');
    const other = new Database(otherPath);
    other.exec('CREATE TABLE notes (text TEXT)');
    other.close();

    const error = thrown(() => verifyStoreFile(otherPath));

    expect(error).toMatchObject({ kind: 'failed_precondition', message: expect.stringContaining('not a kts event store') });
  });

  it('given a path with no file, when verified, then it fails without creating one', () => {
    const error = thrown(() => verifyStoreFile(temp.dbPath));

    expect(isKtsError(error, 'failed_precondition')).toBe(true);
    expect(error.message).toContain(`cannot open event store ${temp.dbPath} read-only`);
    expect(existsSync(temp.dbPath)).toBe(false);
  });
});
