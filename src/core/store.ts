/**
 * The event store: one append-only, hash-chained log of every transition, one stream per
 * sandbox (`sandbox-<id>`) and per container (`container-<id>`), ordered by a global sequence.
 * better-sqlite3 is synchronous, so is this interface: a call that returns has committed.
 */

export interface NewEvent {
  /** Past-tense fact, e.g. `SandboxStarted`. */
  type: string;
  payload: Record<string, unknown>;
  stateBefore: string;
  stateAfter: string;
  traceId?: string;
  spanId?: string;
  /** Who caused it: e.g. `grpc:containerd.services.sandbox.v1.Controller/Stop peer=… ns=k8s.io` or `recovery`. */
  caller?: string;
}

export interface StoredEvent extends NewEvent {
  sequence: number;
  streamId: string;
  /** 1-based position of the event in its stream. */
  streamVersion: number;
  /** ISO-8601 UTC. */
  time: string;
  prevHash: string;
  hash: string;
}

export interface SandboxRow {
  id: string;
  name: string;
  namespace: string;
  kind: string;
  state: string;
  pid: number | null;
  taskAddress: string | null;
  createdAt: string;
  updatedAt: string;
  version: number;
  /** Free-form JSON the engine keeps for listings (uid, hostname, labels…). */
  metadata: Record<string, unknown>;
}

export interface ContainerRow {
  id: string;
  sandboxId: string;
  name: string;
  state: string;
  pid: number | null;
  exitStatus: number | null;
  exitedAt: string | null;
  createdAt: string;
  updatedAt: string;
  version: number;
  metadata: Record<string, unknown>;
}

/** A read-model row written in the same transaction as the events it reflects. */
export type Projection = { table: 'sandboxes'; row: SandboxRow } | { table: 'containers'; row: ContainerRow };

export interface AppendOptions {
  /** Number of events the writer saw in the stream (0 for a new stream); a mismatch throws a `conflict` KtsError. */
  expectedVersion: number;
  projection?: Projection;
}

export interface AppendResult {
  nextExpectedVersion: number;
  lastSequence: number;
}

/** What is wrong with the first bad row of the log. */
export type ChainProblem = 'missing_events' | 'broken_link' | 'version_gap' | 'hash_mismatch';

/** `eventCount` counts the events that verified, i.e. those before the first bad row. */
export type ChainVerification =
  | { ok: true; eventCount: number }
  | {
      ok: false;
      eventCount: number;
      brokenAtSequence: number;
      /** Stream id and event type as the bad row holds them (which, if it was altered, may be the altered values). */
      streamId: string;
      type: string;
      problem: ChainProblem;
      reason: string;
    };

export interface Snapshot {
  streamId: string;
  version: number;
  state: unknown;
}

/** One retention prune: the events up to `upToSequence` went to `archive`; the log now starts after it. */
export interface PruneRecord {
  upToSequence: number;
  /** Hash of the event at upToSequence: the first event kept names it as its prev hash. */
  hash: string;
  /** Events this prune moved out. */
  eventCount: number;
  /** Versions, at upToSequence, of the streams that go on past it (the node's). */
  streamVersions: Record<string, number>;
  archive: string;
  time: string;
  /** sha256 (hex) of the public key the record is signed with, and the Ed25519 signature (base64) of its canonical JSON. */
  keyId: string;
  signature: string;
}

/** A pod whose events a prune moved to an archive. */
export interface ArchivedPod {
  sandboxId: string;
  name: string;
  namespace: string;
  archive: string;
  upToSequence: number;
}

/**
 * A signed head of the log (src/audit/checkpoints.ts): the event at `sequence` had `hash` when the daemon
 * signed it at `time`. Kept in the database and, the newest, outside it, so a cut or rewritten log shows.
 */
export interface AuditCheckpoint {
  sequence: number;
  hash: string;
  time: string;
  /** sha256 (hex) of the audit public key, and the Ed25519 signature (base64) of the checkpoint's canonical JSON. */
  keyId: string;
  signature: string;
}

export interface EventStore {
  appendToStream(streamId: string, events: NewEvent[], options: AppendOptions): AppendResult;
  /** The stream's events from `fromVersion` (1) on, at most `limit` of them. */
  readStream(streamId: string, options?: { fromVersion?: number; limit?: number }): StoredEvent[];
  readAll(options?: { afterSequence?: number; limit?: number }): StoredEvent[];
  /** The sequence of the last event, 0 for an empty log. */
  headSequence(): number;
  /** Stream ids starting with `prefix`, in order of first appearance. */
  listStreams(prefix: string): string[];
  saveSnapshot(snapshot: Snapshot): void;
  loadSnapshot(streamId: string): Snapshot | undefined;
  /**
   * Re-hashes the log and checks every link. `since: 'checkpoint'`: only the events appended since this
   * process last found the chain intact (a quick check for every read; `kts verify` does the whole log),
   * plus every event of `streams` wherever it lies, with its link to the event before it. `limit`: walk
   * at most that many events past the checkpoint (to advance it in slices without blocking for long).
   */
  verifyChain(options?: { since?: 'checkpoint'; streams?: string[]; limit?: number }): ChainVerification;
  getSandbox(id: string): SandboxRow | undefined;
  listSandboxes(): SandboxRow[];
  getContainer(id: string): ContainerRow | undefined;
  listContainers(sandboxId?: string): ContainerRow[];
  /**
   * Called after each committed append, in process. Guarantee: at most once per append, and lost
   * if the process dies right after the commit — subscribers that must not miss events re-read
   * with `readAll({ afterSequence })`.
   */
  onAppended(listener: (events: StoredEvent[]) => void): () => void;
  /**
   * Retention: in one transaction, records `prune` and the pods it archives, and removes the events up to
   * its sequence (already written to its archive) with those pods' rows and the streams' snapshots.
   */
  prune(prune: PruneRecord, pods: ArchivedPod[]): void;
  /** Every prune, oldest first. */
  listPrunes(): PruneRecord[];
  /** A pod whose history went to an archive, by id or name (or namespace/name). */
  findArchivedPod(ref: string): ArchivedPod | undefined;
  /** Records a signed checkpoint (append-only; one per sequence, a second for the same sequence is a conflict). */
  appendCheckpoint(checkpoint: AuditCheckpoint): void;
  /** Every checkpoint, oldest first. */
  listCheckpoints(): AuditCheckpoint[];
  close(): void;
}
