import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isKtsError } from '../core/errors.js';
import { defaultMigrationsDir, migrate, readMigrations } from './migrate.js';
import { makeTempDir, newEvent, sandboxRow } from './sqliteStore.fixtures.js';
import { openSqliteStore } from './sqliteStore.js';

let temp: ReturnType<typeof makeTempDir>;

beforeEach(() => {
  temp = makeTempDir();
});

afterEach(() => {
  temp.remove();
});

function recordedMigrations(dbPath: string): Array<{ version: number; name: string }> {
  const raw = new Database(dbPath, { readonly: true });
  try {
    return raw.prepare<[], { version: number; name: string }>('SELECT version, name FROM schema_migrations ORDER BY version').all();
  } finally {
    raw.close();
  }
}

describe('migrations', () => {
  it('given the migrations dir, when located from this module, then it holds every numbered SQL file in order', () => {
    const files = readdirSync(defaultMigrationsDir()).filter((file) => file.endsWith('.sql')).sort();

    expect(readMigrations(defaultMigrationsDir()).map((m) => m.version)).toEqual(files.map((file) => Number(file.slice(0, 4))));
    expect(files[0]).toBe('0001_events.sql');
  });

  it('given a fresh path, when the store opens, then the parent dir is created and every migration is recorded', () => {
    openSqliteStore(temp.dbPath).close();

    expect(recordedMigrations(temp.dbPath)).toEqual(readMigrations(defaultMigrationsDir()).map(({ version, name }) => ({ version, name })));
  });

  it('given a migrated database, when migrate runs again, then nothing new is applied', () => {
    openSqliteStore(temp.dbPath).close();
    const raw = new Database(temp.dbPath);
    try {
      expect(migrate(raw, defaultMigrationsDir())).toEqual([]);
    } finally {
      raw.close();
    }
  });

  it('given a database only at version 1, when the store opens, then the newer migrations are applied', () => {
    const dbPath = join(temp.dir, 'v1.db');
    const raw = new Database(dbPath);
    const [first] = readMigrations(defaultMigrationsDir());
    raw.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT');
    raw.exec(`${readFileSync(first!.file, 'utf8')}; INSERT INTO schema_migrations VALUES (1, 'events', '2025-01-01T00:00:00.000Z')`);
    raw.close();

    openSqliteStore(dbPath).close();

    expect(recordedMigrations(dbPath).map((m) => m.version)).toEqual(readMigrations(defaultMigrationsDir()).map((m) => m.version));
  });

  it('given a database recorded at version 999, when the store opens, then it is refused with a clear message and left as it was', () => {
    openSqliteStore(temp.dbPath).close();
    const raw = new Database(temp.dbPath);
    raw.prepare("INSERT INTO schema_migrations VALUES (999, 'from_the_future', '2030-01-01T00:00:00.000Z')").run();
    raw.close();
    const known = readMigrations(defaultMigrationsDir()).at(-1)!.version;

    let error: unknown;
    try {
      openSqliteStore(temp.dbPath).close();
    } catch (caught) {
      error = caught;
    }

    expect(isKtsError(error, 'failed_precondition')).toBe(true);
    expect((error as Error).message).toContain(
      `database schema version 999 is newer than this kts (knows up to ${known}); upgrade kts or use another --db`,
    );
    expect(recordedMigrations(temp.dbPath).at(-1)).toEqual({ version: 999, name: 'from_the_future' });
  });

  it('given events, a projection and a snapshot, when the store is closed and reopened, then all of it is still there', () => {
    const before = openSqliteStore(temp.dbPath);
    before.appendToStream('sandbox-a', [newEvent('SandboxCreated', 'none', 'created', { kind: 'wasm' })], {
      expectedVersion: 0,
      projection: { table: 'sandboxes', row: sandboxRow('a') },
    });
    before.saveSnapshot({ streamId: 'sandbox-a', version: 1, state: { value: 'created' } });
    const written = before.readAll();
    before.close();

    const after = openSqliteStore(temp.dbPath);
    try {
      expect(after.readAll()).toEqual(written);
      expect(after.getSandbox('a')).toEqual(sandboxRow('a'));
      expect(after.loadSnapshot('sandbox-a')).toEqual({ streamId: 'sandbox-a', version: 1, state: { value: 'created' } });
      expect(after.verifyChain()).toEqual({ ok: true, eventCount: 1 });
      expect(after.appendToStream('sandbox-a', [newEvent('SandboxStarted', 'created', 'ready')], { expectedVersion: 1 })).toEqual({
        nextExpectedVersion: 2,
        lastSequence: 2,
      });
    } finally {
      after.close();
    }
  });
});
