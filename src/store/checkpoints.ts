import type Database from 'better-sqlite3';
import type { AuditCheckpoint } from '../core/store.js';

/** What migration 0003 keeps of the audit checkpoints (signed heads of the log). */

interface CheckpointRow {
  sequence: number;
  hash: string;
  time: string;
  key_id: string;
  signature: string;
}

const fromRow = (row: CheckpointRow): AuditCheckpoint => ({ sequence: row.sequence, hash: row.hash, time: row.time, keyId: row.key_id, signature: row.signature });

/** Whether `db` has the checkpoints table (a store file from before migration 0003, read without migrating, has not). */
function hasCheckpoints(db: Database.Database): boolean {
  return db.prepare<[], { found: number }>("SELECT count(*) AS found FROM sqlite_schema WHERE type = 'table' AND name = 'checkpoints'").get()!.found > 0;
}

export function listCheckpoints(db: Database.Database): AuditCheckpoint[] {
  return hasCheckpoints(db) ? db.prepare<[], CheckpointRow>('SELECT * FROM checkpoints ORDER BY sequence').all().map(fromRow) : [];
}

export function insertCheckpoint(db: Database.Database, checkpoint: AuditCheckpoint): void {
  db.prepare('INSERT INTO checkpoints (sequence, hash, time, key_id, signature) VALUES (?, ?, ?, ?, ?)')
    .run(checkpoint.sequence, checkpoint.hash, checkpoint.time, checkpoint.keyId, checkpoint.signature);
}
