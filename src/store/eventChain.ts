import { createHash } from 'node:crypto';
import type Database from 'better-sqlite3';
import type { ChainProblem, ChainVerification } from '../core/store.js';
import { stableStringify } from './canonicalJson.js';
import { lastPrune } from './prunes.js';
import type { EventRecord } from './rows.js';

/** prev_hash of the first event ever appended. */
export const GENESIS_HASH = '0'.repeat(64);

/**
 * sha256 hex of the canonical JSON array [prevHash, sequence, streamId, streamVersion, type, payload,
 * stateBefore, stateAfter, traceId, spanId, caller, time] (absent ids and caller are null). The payload
 * goes in as its stored text, which is already canonical JSON: the hash covers exactly what the table holds.
 */
export function eventHash(record: Omit<EventRecord, 'hash'>): string {
  const head = stableStringify([record.prev_hash, record.sequence, record.stream_id, record.stream_version, record.type]);
  const tail = stableStringify([record.state_before, record.state_after, record.trace_id, record.span_id, record.caller, record.time]);
  const canonical = `${head.slice(0, -1)},${record.payload},${tail.slice(1)}`;
  return createHash('sha256').update(canonical, 'utf8').digest('hex');
}

/**
 * Walks every event in sequence order, recomputing each hash and checking each prev link, the
 * sequence and each stream's version numbering; stops at the first break. Truncation of the newest
 * events is only evident against a head (`eventCount`, last hash) recorded elsewhere.
 */
export function verifyChainOf(db: Database.Database): ChainVerification {
  return verifyChainAfter(db, undefined).verification;
}

/** How far the chain was found intact: its last event's sequence and hash, and each stream's version there. */
export interface ChainCheckpoint {
  sequence: number;
  hash: string;
  eventCount: number;
  streamVersions: Map<string, number>;
}

/**
 * The same walk over only the events after `checkpoint` (all of them without one), trusting what the
 * checkpoint vouches for; with the chain intact, the checkpoint at its new head.
 */
export function verifyChainAfter(db: Database.Database, since: ChainCheckpoint | undefined, limit = -1): { verification: ChainVerification; checkpoint?: ChainCheckpoint } {
  // A pruned log starts after its last prune, whose record vouches for the hash and stream versions there.
  const pruned = since ? undefined : lastPrune(db);
  const checkpoint = since ?? (pruned && { sequence: pruned.upToSequence, hash: pruned.hash, eventCount: 0, streamVersions: new Map(Object.entries(pruned.streamVersions)) });
  // LIMIT -1 is SQLite for "no limit".
  const rows = db.prepare<[number, number], EventRecord>('SELECT * FROM events WHERE sequence > ? ORDER BY sequence LIMIT ?').iterate(checkpoint?.sequence ?? 0, limit);
  const streamVersions = new Map(checkpoint?.streamVersions);
  let previous: Pick<EventRecord, 'sequence' | 'hash'> | undefined = checkpoint;
  let eventCount = checkpoint?.eventCount ?? 0;
  for (const row of rows) {
    const found = findBreak(row, previous, streamVersions);
    // Leaving the loop early closes the statement's iterator.
    if (found !== undefined) {
      return { verification: { ok: false, eventCount, brokenAtSequence: row.sequence, streamId: row.stream_id, type: row.type, ...found } };
    }
    streamVersions.set(row.stream_id, row.stream_version);
    previous = row;
    eventCount += 1;
  }
  const head = previous && { sequence: previous.sequence, hash: previous.hash, eventCount, streamVersions };
  return { verification: { ok: true, eventCount }, ...(head && { checkpoint: head }) };
}

/**
 * The events of `streams`, each re-hashed and checked against its link to the event before it in the
 * whole log: what a reader is shown is intact even where it lies before a checkpoint.
 */
export function verifyStreamsOf(db: Database.Database, streams: string[], eventCount: number): ChainVerification {
  const ofStream = db.prepare<[string], EventRecord>('SELECT * FROM events WHERE stream_id = ? ORDER BY stream_version');
  const hashAt = db.prepare<[number], { hash: string }>('SELECT hash FROM events WHERE sequence = ?');
  const pruned = lastPrune(db);
  for (const streamId of streams) {
    let version = 0;
    for (const row of ofStream.all(streamId)) {
      version += 1;
      const before = row.sequence === 1 ? undefined : row.sequence - 1 === pruned?.upToSequence ? pruned : hashAt.get(row.sequence - 1);
      const previous = row.sequence === 1 ? undefined : { sequence: row.sequence - 1, hash: before?.hash ?? '(missing)' };
      const found = findBreak(row, previous, new Map([[row.stream_id, version - 1]]));
      if (found) return { ok: false, eventCount, brokenAtSequence: row.sequence, streamId: row.stream_id, type: row.type, ...found };
    }
  }
  return { ok: true, eventCount };
}

interface ChainBreak {
  problem: ChainProblem;
  reason: string;
}

function findBreak(row: EventRecord, previous: Pick<EventRecord, 'sequence' | 'hash'> | undefined, streamVersions: Map<string, number>): ChainBreak | undefined {
  const expectedSequence = (previous?.sequence ?? 0) + 1;
  if (row.sequence !== expectedSequence) {
    return { problem: 'missing_events', reason: `sequence ${row.sequence} follows ${expectedSequence - 1}: events are missing` };
  }
  const expectedPrev = previous?.hash ?? GENESIS_HASH;
  if (row.prev_hash !== expectedPrev) {
    return { problem: 'broken_link', reason: `prev_hash ${row.prev_hash} does not match the hash of the event before (${expectedPrev})` };
  }
  const expectedVersion = (streamVersions.get(row.stream_id) ?? 0) + 1;
  if (row.stream_version !== expectedVersion) {
    return { problem: 'version_gap', reason: `stream ${row.stream_id} jumps to version ${row.stream_version}, expected ${expectedVersion}` };
  }
  const recomputed = eventHash(row);
  if (recomputed !== row.hash) {
    return { problem: 'hash_mismatch', reason: `stored hash ${row.hash} does not match the recomputed ${recomputed}: the event was altered` };
  }
  return undefined;
}
