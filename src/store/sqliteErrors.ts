import Database from 'better-sqlite3';
import { KtsError, conflict, errorMessage, failedPrecondition, internal, invalidArgument, unavailable } from '../core/errors.js';

/** SQLite's extended result code of `error` ("SQLITE_IOERR_WRITE"), or '' if it is not an SQLite error. */
export function sqliteCode(error: unknown): string {
  return error instanceof Database.SqliteError ? error.code : '';
}

/** The file is not a database, or a page of it does not parse: retrying cannot help, a backup can. */
export function isCorruption(error: unknown): boolean {
  const code = sqliteCode(error);
  return code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB';
}

/** The refusal an operator reads when the store file is damaged: which file, and the two ways out. */
export function corruptStore(storePath: string, detail: string): KtsError {
  return failedPrecondition(
    `event store ${storePath} is corrupt (${detail}): stop here; restore the file from a backup, or move it aside ` +
      'to start with an empty store (the sandboxes it recorded will not be recovered)',
  );
}

const NOT_RECORDED = 'the request was not recorded';

/**
 * Turns an error thrown by a write to the store at `storePath` into a KtsError; KtsErrors thrown inside
 * pass through. SQLite has rolled the transaction back by then, so every message can say nothing was recorded.
 */
export function translateSqliteError(error: unknown, storePath: string): KtsError {
  if (error instanceof KtsError) return error;
  const code = sqliteCode(error);
  const cause = `${code}: ${errorMessage(error)}`;
  const store = `event store ${storePath}`;
  if (code.startsWith('SQLITE_FULL')) return unavailable(`${store}: disk full (${code}); ${NOT_RECORDED} — free space and retry`);
  if (code.startsWith('SQLITE_IOERR')) return unavailable(`${store}: I/O error (${cause}); ${NOT_RECORDED} — check the disk (dmesg) and retry`);
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return unavailable(`${store} is locked by another writer (${code}); ${NOT_RECORDED} — retry`);
  }
  if (code.startsWith('SQLITE_READONLY')) return unavailable(`${store} cannot be written (${cause}); ${NOT_RECORDED}`);
  if (isCorruption(error)) return corruptStore(storePath, `${cause}; ${NOT_RECORDED}`);
  if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY') return failedPrecondition(`container row refers to a sandbox with no row: ${errorMessage(error)}`);
  if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') return conflict(`concurrent append: ${errorMessage(error)}`);
  if (code.startsWith('SQLITE_CONSTRAINT')) return invalidArgument(`record rejected by the schema: ${errorMessage(error)}`);
  return internal(`${store} failed: ${errorMessage(error)}`, error);
}

/**
 * PRAGMA quick_check: every page and b-tree parses (it skips index-content checks, which integrity_check
 * adds). Throws `corruptStore` naming the first problem it reports.
 */
export function refuseIfCorrupt(db: Database.Database, storePath: string): void {
  // (1): stop at the first problem; a healthy file is read to the end either way.
  const problems = db.pragma('quick_check(1)') as Array<{ quick_check: string }>;
  const first = problems[0]?.quick_check ?? 'quick_check returned nothing';
  if (first !== 'ok') throw corruptStore(storePath, `quick_check: ${oneLine(first)}`);
}

/** "*** in database main ***\nTree 3 page 3: …" → "Tree 3 page 3: …": the refusal stays one line. */
function oneLine(report: string): string {
  const lines = report.split('\n').map((line) => line.trim()).filter((line) => line !== '' && !/^\*\*\* in database \w+ \*\*\*$/.test(line));
  return lines.length > 0 ? lines.join('; ') : report.replace(/\s+/g, ' ');
}
