import { timingSafeEqual } from 'node:crypto';
import type { EventStore, Snapshot } from '../core/store.js';
import { stableStringify } from '../store/canonicalJson.js';
import { PassThroughEventStore } from '../store/passThroughStore.js';
import type { AuditKey } from './auditKey.js';

/**
 * Snapshots lie outside the hash chain, so whoever can write the database could edit one and have
 * recovery believe it. The daemon seals each snapshot it saves: a MAC under its audit key (auditKey.ts
 * `mac`) of the stream, version, the hash of the event at that version and the state; a snapshot is given back only when its seal
 * verifies and that event still has that hash. Anything else (edited, forged, from before sealing, or of a
 * rewritten stream) is reported to `onRefused` and not given back: the entity is then replayed from its
 * first event, so recovery stays as fast as snapshots make it and believes only what the key vouches for.
 */
export function withSealedSnapshots(store: EventStore, key: Pick<AuditKey, 'keyId' | 'mac'>, onRefused: (streamId: string, reason: string) => void): EventStore {
  return new SealedSnapshotStore(store, key, onRefused);
}

/** A store whose snapshots are handed out without their seals and unchecked: for `kts audit verify`, which checks every one against a full replay instead. */
export function withUnsealedSnapshots(store: EventStore): EventStore {
  return new UnsealingStore(store);
}

interface Seal {
  eventHash: string;
  keyId: string;
  signature: string;
}

interface Sealed {
  state: unknown;
  seal: Seal;
}

function sealText(streamId: string, version: number, eventHash: string, state: unknown): string {
  return stableStringify({ kind: 'kts.snapshot.v1', streamId, version, eventHash, state });
}

function isSealed(value: unknown): value is Sealed {
  const seal = (value as { seal?: Partial<Seal> } | null)?.seal;
  return typeof value === 'object' && value !== null && 'state' in value
    && typeof seal?.eventHash === 'string' && typeof seal.keyId === 'string' && typeof seal.signature === 'string';
}

class UnsealingStore extends PassThroughEventStore {
  override loadSnapshot(streamId: string): Snapshot | undefined {
    const saved = this.inner.loadSnapshot(streamId);
    return saved && { ...saved, state: isSealed(saved.state) ? saved.state.state : saved.state };
  }
}

class SealedSnapshotStore extends PassThroughEventStore {
  constructor(
    inner: EventStore,
    private readonly key: Pick<AuditKey, 'keyId' | 'mac'>,
    private readonly onRefused: (streamId: string, reason: string) => void,
  ) {
    super(inner);
  }

  override saveSnapshot(snapshot: Snapshot): void {
    const eventHash = this.hashAt(snapshot.streamId, snapshot.version) ?? '';
    const signature = this.key.mac(sealText(snapshot.streamId, snapshot.version, eventHash, snapshot.state));
    this.inner.saveSnapshot({ ...snapshot, state: { state: snapshot.state, seal: { eventHash, keyId: this.key.keyId, signature } } });
  }

  override loadSnapshot(streamId: string): Snapshot | undefined {
    const saved = this.inner.loadSnapshot(streamId);
    if (!saved) return undefined;
    const reason = this.sealProblem(saved);
    if (reason) {
      this.onRefused(streamId, reason);
      return undefined;
    }
    return { ...saved, state: (saved.state as Sealed).state };
  }

  private sealProblem(saved: Snapshot): string | undefined {
    if (!isSealed(saved.state)) return 'it has no seal';
    const { seal, state } = saved.state;
    if (seal.keyId !== this.key.keyId) return `it is sealed by key ${seal.keyId.slice(0, 16)}…, not this daemon's`;
    const expected = Buffer.from(this.key.mac(sealText(saved.streamId, saved.version, seal.eventHash, state)), 'base64');
    const found = Buffer.from(seal.signature, 'base64');
    if (found.length !== expected.length || !timingSafeEqual(found, expected)) return 'its seal does not verify: it was edited';
    if (this.hashAt(saved.streamId, saved.version) !== seal.eventHash) return `event ${saved.version} of the stream no longer has the hash it was sealed with`;
    return undefined;
  }

  private hashAt(streamId: string, version: number): string | undefined {
    const [event] = this.inner.readStream(streamId, { fromVersion: version, limit: 1 });
    return event?.streamVersion === version ? event.hash : undefined;
  }
}
