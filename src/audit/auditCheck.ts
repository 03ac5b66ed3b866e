import type { KeyObject } from 'node:crypto';
import type { AuditCheckpoint, ChainVerification, EventStore } from '../core/store.js';
import { keyIdOf } from './auditKey.js';
import { signatureProblem } from './checkpoints.js';
import { pruneSignatureProblem } from './records.js';

/** What checking the log against its checkpoints reads of it: the daemon's store, or a store file opened read-only. */
export type AuditedLog = Pick<EventStore, 'verifyChain' | 'headSequence' | 'readAll' | 'listCheckpoints' | 'listPrunes'>;

/** What the log is checked against, from outside the database. */
export interface TrustAnchors {
  /** The audit public key; without it signatures are not checked (and the report says why: `noKeyReason`). */
  publicKey?: KeyObject;
  noKeyReason?: string;
  /** The head file (`<key dir>/head.json`) and what it held; a missing file is noted, not an error. */
  headFile?: { path: string; checkpoint?: AuditCheckpoint };
}

/** truncated: events a checkpoint vouches for are gone; rewritten: an event no longer has the hash signed for it; bad_signature: a checkpoint the trusted key did not sign. */
export type CheckpointProblem = 'truncated' | 'rewritten' | 'bad_signature';

export interface AuditReport {
  /** The chain is intact and agrees with every checkpoint. */
  ok: boolean;
  chain: ChainVerification;
  /** The log's newest event. */
  head?: { sequence: number; hash: string; time: string };
  /** The newest checkpoint, from the table or the head file (`source`). */
  newestCheckpoint?: AuditCheckpoint & { source: string };
  checkpointCount: number;
  /** The key signatures were checked against; absent when they were not. */
  keyId?: string;
  /** The first checkpoint the log disagrees with: `sequence` is the first bad (or missing) one. */
  broken?: { sequence: number; problem: CheckpointProblem; reason: string };
  /** What the report does not cover. */
  notes: string[];
  /** Snapshots and read-model rows that disagree with a replay of the chain (checked by the caller: derivedState.ts). */
  derived?: Array<{ streamId: string; what: string; reason: string }>;
}

/** The report with the derived-state check's findings: any makes it not ok. */
export function withDerived(report: AuditReport, derived: NonNullable<AuditReport['derived']>): AuditReport {
  return { ...report, derived, ok: report.ok && derived.length === 0 };
}

type SourcedCheckpoint = AuditCheckpoint & { source: string };

/**
 * Verifies the chain, then every checkpoint (the table's and the head file's): signed by the trusted key,
 * the log reaches its sequence, and the event there still has the hash it signed.
 */
export function checkAudit(log: AuditedLog, trust: TrustAnchors): AuditReport {
  const chain = log.verifyChain();
  const head = eventAt(log, log.headSequence());
  const prunedUpTo = log.listPrunes().at(-1)?.upToSequence ?? 0;
  const checkpoints = sourcedCheckpoints(log, trust);
  const matching = checkpoints.filter((checkpoint) => hashAt(log, checkpoint.sequence) === checkpoint.hash).map((checkpoint) => checkpoint.sequence);
  const lastMatchingBefore = (sequence: number) => Math.max(prunedUpTo, ...matching.filter((matched) => matched < sequence));
  let broken: AuditReport['broken'];
  for (const prune of trust.publicKey ? log.listPrunes() : []) {
    const unsigned = pruneSignatureProblem(prune, trust.publicKey!);
    if (unsigned && (!broken || prune.upToSequence < broken.sequence)) {
      broken = { sequence: prune.upToSequence, problem: 'bad_signature', reason: `the prune record up to sequence ${prune.upToSequence} (archive ${prune.archive}): ${unsigned}` };
    }
  }
  for (const checkpoint of checkpoints) {
    const found = checkpointBreak(log, checkpoint, { head, prunedUpTo, publicKey: trust.publicKey, lastMatchingBefore });
    // Oldest first; of cuts found at the same place, the newest checkpoint says how much is missing.
    if (found && (!broken || found.sequence < broken.sequence || (found.sequence === broken.sequence && found.problem === 'truncated'))) broken = found;
  }
  const newestCheckpoint = checkpoints.at(-1);
  return {
    ok: chain.ok && !broken, chain, checkpointCount: checkpoints.length,
    ...(head && { head: { sequence: head.sequence, hash: head.hash, time: head.time } }),
    ...(newestCheckpoint && { newestCheckpoint }),
    ...(trust.publicKey && { keyId: keyIdOf(trust.publicKey) }),
    ...(broken && { broken }),
    notes: auditNotes(trust, newestCheckpoint, head?.sequence ?? 0),
  };
}

/** Table rows and the head file's checkpoint, oldest first; the head file's is left out when the table holds the very same. */
function sourcedCheckpoints(log: AuditedLog, trust: TrustAnchors): SourcedCheckpoint[] {
  const fromTable = log.listCheckpoints().map((checkpoint) => ({ ...checkpoint, source: 'table' }));
  const fromFile = trust.headFile?.checkpoint;
  const duplicate = fromFile && fromTable.some((checkpoint) => checkpoint.sequence === fromFile.sequence && checkpoint.signature === fromFile.signature);
  const all = fromFile && !duplicate ? [...fromTable, { ...fromFile, source: trust.headFile!.path }] : fromTable;
  return all.sort((a, b) => a.sequence - b.sequence || (a.source === 'table' ? 1 : -1));
}

interface BreakContext {
  head: { sequence: number } | undefined;
  prunedUpTo: number;
  publicKey: KeyObject | undefined;
  lastMatchingBefore: (sequence: number) => number;
}

function checkpointBreak(log: AuditedLog, checkpoint: SourcedCheckpoint, context: BreakContext): AuditReport['broken'] {
  const named = `the checkpoint at sequence ${checkpoint.sequence} (${checkpoint.source}, signed ${checkpoint.time})`;
  const unsigned = context.publicKey && signatureProblem(checkpoint, context.publicKey);
  if (unsigned) return { sequence: checkpoint.sequence, problem: 'bad_signature', reason: `${named}: ${unsigned}` };
  const end = context.head?.sequence ?? context.prunedUpTo;
  if (checkpoint.sequence > end) {
    return { sequence: end + 1, problem: 'truncated', reason: `the log ends at sequence ${end}, but ${named} vouches for more: events ${end + 1}..${checkpoint.sequence} are missing` };
  }
  // Moved to an archive by a prune: the prune's own signed record vouches for that part.
  if (checkpoint.sequence <= context.prunedUpTo) return undefined;
  const hash = hashAt(log, checkpoint.sequence);
  if (hash === checkpoint.hash) return undefined;
  const after = context.lastMatchingBefore(checkpoint.sequence);
  return {
    sequence: checkpoint.sequence, problem: 'rewritten',
    reason: `event ${checkpoint.sequence} has hash ${hash ?? '(no such event)'}, but ${named} signed ${checkpoint.hash}: the log was rewritten somewhere in ${after + 1}..${checkpoint.sequence}`,
  };
}

function auditNotes(trust: TrustAnchors, newest: SourcedCheckpoint | undefined, headSequence: number): string[] {
  const notes: string[] = [];
  if (!trust.publicKey) notes.push(`signatures not checked: ${trust.noKeyReason ?? 'no public key'}`);
  if (trust.headFile && !trust.headFile.checkpoint) notes.push(`no head file at ${trust.headFile.path}: only the database's own checkpoints were checked`);
  if (!newest) notes.push('no checkpoint yet: nothing outside the database vouches for the log');
  else if (headSequence > newest.sequence) notes.push(`${headSequence - newest.sequence} events after the newest checkpoint are not signed yet`);
  return notes;
}

function eventAt(log: AuditedLog, sequence: number) {
  if (sequence < 1) return undefined;
  const [event] = log.readAll({ afterSequence: sequence - 1, limit: 1 });
  return event?.sequence === sequence ? event : undefined;
}

function hashAt(log: AuditedLog, sequence: number): string | undefined {
  return eventAt(log, sequence)?.hash;
}
