import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type Database from 'better-sqlite3';
import { errorMessage, failedPrecondition, internal } from '../core/errors.js';

export interface Migration {
  version: number;
  name: string;
  file: string;
}

const MIGRATION_FILE = /^(\d{4})_([A-Za-z0-9_]+)\.sql$/;

/** `<package root>/migrations`, found by walking up from this module: works from src/ and dist/src/. */
export function defaultMigrationsDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw internal(`no package.json above ${fileURLToPath(import.meta.url)}: cannot find migrations/`);
    dir = parent;
  }
  return join(dir, 'migrations');
}

/** Numbered `NNNN_name.sql` files of `migrationsDir`, in version order. */
export function readMigrations(migrationsDir: string): Migration[] {
  const migrations = readdirSync(migrationsDir)
    .map((file) => ({ file, match: MIGRATION_FILE.exec(file) }))
    .filter(({ match }) => match !== null)
    .map(({ file, match }) => ({ version: Number(match![1]), name: match![2]!, file: join(migrationsDir, file) }))
    .sort((a, b) => a.version - b.version);
  if (migrations.length === 0) throw internal(`no migrations (NNNN_name.sql) in ${migrationsDir}`);
  migrations.forEach((migration, index) => {
    if (index > 0 && migrations[index - 1]!.version === migration.version) {
      throw internal(`two migrations share version ${migration.version} in ${migrationsDir}`);
    }
  });
  return migrations;
}

/**
 * Brings `db` up to the newest migration in `migrationsDir`, each file in its own IMMEDIATE
 * transaction together with its `schema_migrations` row; returns the migrations it applied.
 * A database already newer than the newest file is refused (failed_precondition), not touched.
 */
export function migrate(db: Database.Database, migrationsDir: string): Migration[] {
  const migrations = readMigrations(migrationsDir);
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT`);
  refuseNewerSchema(db, migrations);
  const isApplied = db.prepare<[number], { version: number }>('SELECT version FROM schema_migrations WHERE version = ?');
  const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');
  const applyOne = db.transaction((migration: Migration): boolean => {
    // Re-checked inside the write lock: another process may have migrated since we looked.
    if (isApplied.get(migration.version)) return false;
    db.exec(readFileSync(migration.file, 'utf8'));
    record.run(migration.version, migration.name, new Date().toISOString());
    return true;
  });
  return migrations.filter((migration) => {
    try {
      return applyOne.immediate(migration);
    } catch (error) {
      throw internal(`migration ${migration.file} failed: ${errorMessage(error)}`, error);
    }
  });
}

function refuseNewerSchema(db: Database.Database, migrations: Migration[]): void {
  const { recorded } = db.prepare<[], { recorded: number | null }>('SELECT MAX(version) AS recorded FROM schema_migrations').get()!;
  const known = migrations[migrations.length - 1]!.version;
  if (recorded !== null && recorded > known) {
    throw failedPrecondition(
      `database schema version ${recorded} is newer than this kts (knows up to ${known}); upgrade kts or use another --db (${db.name})`,
    );
  }
}
