import type { KeyObject } from 'node:crypto';
import type { PruneRecord, StoredEvent } from '../core/store.js';
import { stableStringify } from '../store/canonicalJson.js';
import { keyIdOf, signatureValid } from './auditKey.js';

/** The records retention and export write, as both the daemon and an offline verifier read them. */

/** What a prune record's signature covers: every field but the signature, as canonical JSON. */
export function pruneSigningText(record: Omit<PruneRecord, 'signature'>): string {
  const { upToSequence, hash, eventCount, streamVersions, archive, time, keyId } = record;
  return stableStringify({ kind: 'kts.prune.v1', upToSequence, hash, eventCount, streamVersions, archive, time, keyId });
}

/** Why `prune` is not a record `publicKey` signed, or undefined when it is. */
export function pruneSignatureProblem(prune: PruneRecord, publicKey: KeyObject): string | undefined {
  const trusted = keyIdOf(publicKey);
  if (prune.keyId !== trusted) return `it is signed by key ${prune.keyId.slice(0, 16)}…, not the trusted key ${trusted.slice(0, 16)}…`;
  if (!signatureValid(publicKey, pruneSigningText(prune), prune.signature)) return 'its signature does not verify: it was altered or forged';
  return undefined;
}

/** One event as an archive or an export line holds it: every hashed field, the payload as its canonical JSON text. */
export function eventLine(event: StoredEvent): string {
  return JSON.stringify({
    sequence: event.sequence, streamId: event.streamId, streamVersion: event.streamVersion, type: event.type, payloadJson: stableStringify(event.payload),
    stateBefore: event.stateBefore, stateAfter: event.stateAfter, traceId: event.traceId ?? null, spanId: event.spanId ?? null, caller: event.caller ?? null,
    time: event.time, prevHash: event.prevHash, hash: event.hash,
  });
}
