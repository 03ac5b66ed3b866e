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
