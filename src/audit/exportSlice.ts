import type { KeyObject } from 'node:crypto';
import type { AuditCheckpoint, PruneRecord } from '../core/store.js';
import { eventHash } from '../store/eventChain.js';
import type { EventRecord } from '../store/rows.js';
import { keyIdOf } from './auditKey.js';
import { parseCheckpoint, signatureProblem } from './checkpoints.js';
import { pruneSignatureProblem } from './records.js';

/**
 * `kts audit export` writes JSON lines: each event as an archive holds it (retention.ts eventLine: every
 * hashed field, the payload as its canonical JSON text), then one trailer line with the covering
 * checkpoint — the first at or after the last event exported — or null and a note saying why there is none.
 * This module checks such a slice on its own, with only the public key: no daemon, no database.
 */

export interface ExportTrailer {
  checkpoint: AuditCheckpoint | null;
  note?: string;
  /** A retention archive ends in its signed prune record instead (retention.ts). */
  prune?: PruneRecord;
}

/** The trailer for a slice ending at `lastSequence` (0: nothing matched), from the checkpoints oldest first. */
export function exportTrailer(lastSequence: number, checkpoints: AuditCheckpoint[]): ExportTrailer {
  if (lastSequence === 0) return { checkpoint: null, note: 'no event matched' };
  const covering = checkpoints.find((checkpoint) => checkpoint.sequence >= lastSequence);
  if (covering) return { checkpoint: covering };
  const newest = checkpoints.at(-1);
  return { checkpoint: null, note: `no checkpoint covers sequence ${lastSequence} yet (newest: ${newest ? newest.sequence : 'none'}); export again after the next one` };
}

export interface SliceReport {
  ok: boolean;
  eventCount: number;
  /** Links checked: consecutive exported events that are adjacent in the log. */
  linkCount: number;
  checkpoint?: AuditCheckpoint;
  keyId: string;
  /** The first bad event (or the checkpoint's sequence), and why. */
  broken?: { sequence: number; reason: string };
  notes: string[];
}

/** Re-hashes every event, checks the links between adjacent ones, and the covering checkpoint's signature and hash. */
export function verifySlice(text: string, publicKey: KeyObject): SliceReport {
  const lines = text.split('\n').filter((line) => line.trim() !== '');
  const report: SliceReport = { ok: true, eventCount: 0, linkCount: 0, keyId: keyIdOf(publicKey), notes: [] };
  const fail = (sequence: number, reason: string) => ({ ...report, ok: false, broken: { sequence, reason } });
  let previous: EventRecord | undefined;
  let trailer: ExportTrailer | undefined;
  for (const [index, line] of lines.entries()) {
    const parsed = parseLine(line);
    if (trailer || parsed === undefined) return fail(previous?.sequence ?? 0, `line ${index + 1} is not an exported event or a trailer${trailer ? ' (lines after the trailer)' : ''}`);
    if ('trailer' in parsed) {
      trailer = parsed.trailer;
      continue;
    }
    const event = parsed.event;
    if (previous && event.sequence <= previous.sequence) return fail(event.sequence, `sequence ${event.sequence} follows ${previous.sequence}: the slice is out of order`);
    const recomputed = eventHash(event);
    if (recomputed !== event.hash) return fail(event.sequence, `hash mismatch: stored hash ${event.hash} does not match the recomputed ${recomputed}: the event was altered`);
    if (previous && event.sequence === previous.sequence + 1) {
      if (event.prev_hash !== previous.hash) return fail(event.sequence, `broken link: prev_hash ${event.prev_hash} is not the hash of event ${previous.sequence} (${previous.hash})`);
      report.linkCount += 1;
    }
    report.eventCount += 1;
    previous = event;
  }
  if (!trailer) return fail(previous?.sequence ?? 0, 'the slice has no trailer line: it was cut short');
  return checkTrailer(report, trailer, previous, publicKey, fail);
}

function checkTrailer(report: SliceReport, trailer: ExportTrailer, last: EventRecord | undefined, publicKey: KeyObject, fail: (sequence: number, reason: string) => SliceReport): SliceReport {
  if (trailer.prune) return checkArchive(report, trailer.prune, last, publicKey, fail);
  const { checkpoint } = trailer;
  if (!checkpoint) return { ...report, notes: [`no covering checkpoint: ${trailer.note ?? 'none given'}; the events are only consistent among themselves`] };
  const unsigned = signatureProblem(checkpoint, publicKey);
  if (unsigned) return fail(checkpoint.sequence, `the covering checkpoint at sequence ${checkpoint.sequence}: ${unsigned}`);
  const lastSequence = last?.sequence ?? 0;
  if (checkpoint.sequence < lastSequence) return fail(lastSequence, `the checkpoint at sequence ${checkpoint.sequence} does not cover the slice, which ends at ${lastSequence}`);
  const withCheckpoint = { ...report, checkpoint };
  if (checkpoint.sequence === lastSequence) {
    if (last!.hash !== checkpoint.hash) return fail(lastSequence, `event ${lastSequence} has hash ${last!.hash}, but the checkpoint signed ${checkpoint.hash}: the slice was rewritten`);
    return withCheckpoint;
  }
  return { ...withCheckpoint, notes: [`events ${lastSequence + 1}..${checkpoint.sequence} are not in the slice, so its events are tied to the signed head through the log (kts audit verify), not by the slice alone`] };
}

/**
 * A retention archive: every event from one prune to the next, unbroken, the last one the record's; the
 * record signed by the trusted key. Then the archive stands on its own, and the log's first kept event
 * links to the same hash.
 */
function checkArchive(report: SliceReport, prune: PruneRecord, last: EventRecord | undefined, publicKey: KeyObject, fail: (sequence: number, reason: string) => SliceReport): SliceReport {
  const unsigned = pruneSignatureProblem(prune, publicKey);
  if (unsigned) return fail(prune.upToSequence, `the archive's prune record up to sequence ${prune.upToSequence}: ${unsigned}`);
  if (report.eventCount !== prune.eventCount || report.linkCount !== prune.eventCount - 1) {
    return fail(last?.sequence ?? 0, `the prune record says ${prune.eventCount} unbroken events, the archive holds ${report.eventCount} with ${report.linkCount} links: events are missing`);
  }
  if (last?.sequence !== prune.upToSequence || last.hash !== prune.hash) {
    return fail(last?.sequence ?? 0, `the archive ends at event ${last?.sequence} (${last?.hash}), but its prune record signed event ${prune.upToSequence} (${prune.hash})`);
  }
  return { ...report, notes: [`a retention archive: events ${prune.upToSequence - prune.eventCount + 1}..${prune.upToSequence}, its prune record signed ${prune.time}`] };
}

type ParsedLine = { event: EventRecord } | { trailer: ExportTrailer } | undefined;

function parseLine(line: string): ParsedLine {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const fields = value as Record<string, unknown>;
  if ('checkpoint' in fields) return parseTrailer(fields);
  if ('prune' in fields) return parsePruneTrailer(fields.prune);
  return parseEvent(fields);
}

function parseTrailer(fields: Record<string, unknown>): ParsedLine {
  try {
    const checkpoint = fields.checkpoint === null ? null : parseCheckpoint(fields.checkpoint, 'the trailer\'s checkpoint');
    return { trailer: { checkpoint, ...(typeof fields.note === 'string' && { note: fields.note }) } };
  } catch {
    return undefined;
  }
}

function parsePruneTrailer(value: unknown): ParsedLine {
  const fields = (value ?? {}) as Record<string, unknown>;
  const { upToSequence, hash, eventCount, streamVersions, archive, time, keyId, signature } = fields;
  const valid = Number.isSafeInteger(upToSequence) && Number.isSafeInteger(eventCount) && typeof streamVersions === 'object' && streamVersions !== null
    && [hash, archive, time, keyId, signature].every((field) => typeof field === 'string');
  if (!valid) return undefined;
  return { trailer: { checkpoint: null, prune: fields as unknown as PruneRecord } };
}

const nullableString = (value: unknown) => value === null || typeof value === 'string';

function parseEvent(fields: Record<string, unknown>): ParsedLine {
  const { sequence, streamId, streamVersion, type, payloadJson, stateBefore, stateAfter, traceId, spanId, caller, time, prevHash, hash } = fields;
  const valid = Number.isSafeInteger(sequence) && Number.isSafeInteger(streamVersion)
    && [streamId, type, payloadJson, stateBefore, stateAfter, time, prevHash, hash].every((value) => typeof value === 'string')
    && [traceId, spanId, caller].every(nullableString);
  if (!valid) return undefined;
  return {
    event: {
      sequence: sequence as number, stream_id: streamId as string, stream_version: streamVersion as number, type: type as string, payload: payloadJson as string,
      state_before: stateBefore as string, state_after: stateAfter as string, trace_id: traceId as string | null, span_id: spanId as string | null,
      caller: caller as string | null, time: time as string, prev_hash: prevHash as string, hash: hash as string,
    },
  };
}
