import type Database from 'better-sqlite3';
import { failedPrecondition } from '../core/errors.js';
import type { ArchivedPod, PruneRecord } from '../core/store.js';

/** What migration 0004 keeps of retention: the prunes and the pods they archived. */

interface PruneRow {
  up_to_sequence: number;
  hash: string;
  event_count: number;
  stream_versions: string;
  archive: string;
  time: string;
  key_id: string;
  signature: string;
}

interface ArchivedPodRow {
  sandbox_id: string;
  name: string;
  namespace: string;
  archive: string;
  up_to_sequence: number;
}

const fromRow = (row: PruneRow): PruneRecord => ({
  upToSequence: row.up_to_sequence, hash: row.hash, eventCount: row.event_count, streamVersions: JSON.parse(row.stream_versions) as Record<string, number>,
  archive: row.archive, time: row.time, keyId: row.key_id, signature: row.signature,
});

const podFromRow = (row: ArchivedPodRow): ArchivedPod => ({
  sandboxId: row.sandbox_id, name: row.name, namespace: row.namespace, archive: row.archive, upToSequence: row.up_to_sequence,
});

/** Whether `db` has the prunes table (a store file from before migration 0004, read without migrating, has not). */
function hasPrunes(db: Database.Database): boolean {
  return db.prepare<[], { found: number }>("SELECT count(*) AS found FROM sqlite_schema WHERE type = 'table' AND name = 'prunes'").get()!.found > 0;
}

/** The newest prune: where the log now starts; undefined when nothing was ever pruned. */
export function lastPrune(db: Database.Database): PruneRecord | undefined {
  if (!hasPrunes(db)) return undefined;
  const row = db.prepare<[], PruneRow>('SELECT * FROM prunes ORDER BY up_to_sequence DESC LIMIT 1').get();
  return row && fromRow(row);
}

export function listPrunes(db: Database.Database): PruneRecord[] {
  return hasPrunes(db) ? db.prepare<[], PruneRow>('SELECT * FROM prunes ORDER BY up_to_sequence').all().map(fromRow) : [];
}

/** An archived pod by id, `name` or `namespace/name` (the newest of a name). */
export function findArchivedPod(db: Database.Database, ref: string): ArchivedPod | undefined {
  const byId = db.prepare<[string], ArchivedPodRow>('SELECT * FROM archived_pods WHERE sandbox_id = ?').get(ref);
  if (byId) return podFromRow(byId);
  const [namespace, name] = ref.includes('/') ? ref.split('/', 2) : [undefined, ref];
  const byName = db.prepare<{ name: string; namespace: string | null }, ArchivedPodRow>(
    'SELECT * FROM archived_pods WHERE name = @name AND (@namespace IS NULL OR namespace = @namespace) ORDER BY up_to_sequence DESC LIMIT 1',
  ).get({ name: name!, namespace: namespace ?? null });
  return byName && podFromRow(byName);
}

/**
 * Runs inside the store's IMMEDIATE transaction: the prune must start where the last one ended, end on an
 * event whose hash it names, and cover whole pods; then the record, the archived pods, and the removal of
 * the events (the trigger lets only covered ones go), the pods' rows and the snapshots left without events.
 */
export function applyPrune(db: Database.Database, prune: PruneRecord, pods: ArchivedPod[]): void {
  const previous = lastPrune(db)?.upToSequence ?? 0;
  const last = db.prepare<[number], { hash: string }>('SELECT hash FROM events WHERE sequence = ?').get(prune.upToSequence);
  if (!last || last.hash !== prune.hash) throw failedPrecondition(`prune up to ${prune.upToSequence}: the log has no event there with hash ${prune.hash}`);
  const { count } = db.prepare<[number, number], { count: number }>('SELECT count(*) AS count FROM events WHERE sequence > ? AND sequence <= ?').get(previous, prune.upToSequence)!;
  if (count !== prune.eventCount) throw failedPrecondition(`prune up to ${prune.upToSequence} claims ${prune.eventCount} events, the log has ${count} after ${previous}`);
  // A stream that goes on past the prune keeps its numbering only through the record: it must be named there.
  const split = db.prepare<[number, number, number], { stream_id: string }>(
    'SELECT DISTINCT stream_id FROM events WHERE sequence > ? AND sequence <= ? AND stream_id IN (SELECT stream_id FROM events WHERE sequence > ?)',
  ).all(previous, prune.upToSequence, prune.upToSequence).map((row) => row.stream_id).filter((streamId) => !(streamId in prune.streamVersions));
  if (split.length > 0) throw failedPrecondition(`prune up to ${prune.upToSequence} would split stream ${split.join(', ')}, which goes on past it`);
  db.prepare(`INSERT INTO prunes (up_to_sequence, hash, event_count, stream_versions, archive, time, key_id, signature)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)`).run(prune.upToSequence, prune.hash, prune.eventCount, JSON.stringify(prune.streamVersions), prune.archive, prune.time, prune.keyId, prune.signature);
  const insertPod = db.prepare('INSERT INTO archived_pods (sandbox_id, name, namespace, archive, up_to_sequence) VALUES (?, ?, ?, ?, ?)');
  const deleteContainers = db.prepare('DELETE FROM containers WHERE sandbox_id = ?');
  const deleteSandbox = db.prepare('DELETE FROM sandboxes WHERE id = ?');
  for (const pod of pods) {
    insertPod.run(pod.sandboxId, pod.name, pod.namespace, pod.archive, pod.upToSequence);
    deleteContainers.run(pod.sandboxId);
    deleteSandbox.run(pod.sandboxId);
  }
  db.prepare('DELETE FROM events WHERE sequence <= ?').run(prune.upToSequence);
  db.prepare('DELETE FROM snapshots WHERE stream_id NOT IN (SELECT stream_id FROM events)').run();
}
