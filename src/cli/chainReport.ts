import type { AuditReport, CheckpointProblem } from '../audit/auditCheck.js';
import type { SliceReport } from '../audit/exportSlice.js';
import { internal } from '../core/errors.js';
import type { ChainProblem, ChainVerification } from '../core/store.js';

const PROBLEMS: Record<ChainProblem, string> = {
  missing_events: 'events missing',
  broken_link: 'broken link to the previous hash',
  version_gap: 'stream version gap',
  hash_mismatch: 'hash mismatch',
};

function isChainProblem(value: unknown): value is ChainProblem {
  return typeof value === 'string' && Object.hasOwn(PROBLEMS, value);
}

/** The admin Verify RPC's response, checked back into the store's own type. */
export function chainFromVerifyResponse(response: Record<string, unknown>): ChainVerification {
  const eventCount = Number(response.eventCount);
  if (response.ok === true) return { ok: true, eventCount };
  const { problem } = response;
  if (!isChainProblem(problem)) throw internal(`the daemon's Verify answered a broken chain with an unknown problem "${String(problem)}"`);
  return {
    ok: false,
    eventCount,
    brokenAtSequence: Number(response.brokenAtSequence),
    streamId: String(response.brokenStreamId ?? ''),
    type: String(response.brokenType ?? ''),
    problem,
    reason: String(response.reason ?? ''),
  };
}

/**
 * One line for `kts audit verify`: "ok: N events, hash chain intact", or the first bad row — its
 * sequence, stream, event type and what is wrong with it.
 */
export function describeChain(verification: ChainVerification): string {
  if (verification.ok) return `ok: ${verification.eventCount} events, hash chain intact`;
  const { brokenAtSequence, streamId, type, problem, reason, eventCount } = verification;
  return `BROKEN at sequence ${brokenAtSequence} (stream ${streamId}, event ${type}): ${PROBLEMS[problem]}: ${reason}` +
    ` (the ${eventCount} events before it verify)`;
}

const CHECKPOINT_PROBLEMS: Record<CheckpointProblem, string> = {
  truncated: 'log truncated',
  rewritten: 'log rewritten',
  bad_signature: 'checkpoint not signed by the trusted key',
};

/** The admin Verify RPC's response as the audit report: the daemon's whole report, or (an older daemon) its chain alone. */
export function auditFromVerifyResponse(response: Record<string, unknown>): AuditReport {
  if (typeof response.auditJson === 'string' && response.auditJson !== '') return JSON.parse(response.auditJson) as AuditReport;
  const chain = chainFromVerifyResponse(response);
  return { ok: chain.ok, chain, checkpointCount: 0, notes: ['the daemon checked no checkpoints (a kts from before them)'] };
}

/**
 * `kts audit verify`: the chain's line, the first checkpoint the log disagrees with, then what vouches
 * for the log — the checkpoints and the key — its head, and what was not covered.
 */
export function describeAudit(report: AuditReport): string {
  const lines = [describeChain(report.chain)];
  if (report.broken) lines.push(`BROKEN at sequence ${report.broken.sequence}: ${CHECKPOINT_PROBLEMS[report.broken.problem]}: ${report.broken.reason}`);
  const newest = report.newestCheckpoint;
  const key = report.keyId ? `signatures checked against key ${report.keyId.slice(0, 16)}…` : 'signatures not checked';
  lines.push(newest
    ? `checkpoints: ${report.checkpointCount}, ${key}; newest at sequence ${newest.sequence}, hash ${newest.hash}, signed ${newest.time} (${newest.source})`
    : `checkpoints: none, ${key}`);
  lines.push(report.head ? `head: sequence ${report.head.sequence}, hash ${report.head.hash}, time ${report.head.time}` : 'head: the log is empty');
  for (const problem of report.derived ?? []) lines.push(`MISMATCH in ${problem.streamId}, its ${problem.what}: ${problem.reason}`);
  for (const note of report.notes) lines.push(`note: ${note}`);
  return lines.join('\n') + '\n';
}

/** `kts audit verify --file`: one line saying what was checked (or the first bad event), then the notes. */
export function describeSlice(report: SliceReport): string {
  const checked = `${report.eventCount} events re-hashed, ${report.linkCount} links checked`;
  const checkpoint = report.checkpoint
    ? `; covering checkpoint at sequence ${report.checkpoint.sequence} (signed ${report.checkpoint.time}) verified with key ${report.keyId.slice(0, 16)}…`
    : '';
  const lines = [report.broken ? `BROKEN at sequence ${report.broken.sequence}: ${report.broken.reason} (after ${checked})` : `ok: ${checked}${checkpoint}`];
  for (const note of report.notes) lines.push(`note: ${note}`);
  return lines.join('\n') + '\n';
}
