import { chmodSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { KtsError, conflict, errorMessage, failedPrecondition, invalidArgument } from '../core/errors.js';
import type {
  AppendOptions,
  AppendResult,
  ArchivedPod,
  AuditCheckpoint,
  ChainVerification,
  ContainerRow,
  EventStore,
  NewEvent,
  Projection,
  PruneRecord,
  SandboxRow,
  Snapshot,
  StoredEvent,
} from '../core/store.js';
import { stableStringify } from './canonicalJson.js';
import { GENESIS_HASH, eventHash, verifyChainAfter, verifyStreamsOf, type ChainCheckpoint } from './eventChain.js';
import { defaultMigrationsDir, migrate } from './migrate.js';
import { applyPrune, findArchivedPod, lastPrune, listPrunes } from './prunes.js';
import { insertCheckpoint, listCheckpoints } from './checkpoints.js';
import { corruptStore, isCorruption, refuseIfCorrupt, sqliteCode, translateSqliteError } from './sqliteErrors.js';
import {
  type ContainerRecord,
  type EventRecord,
  type SandboxRecord,
  containerFromRecord,
  containerToRecord,
  eventFromRecord,
  sandboxFromRecord,
  sandboxToRecord,
} from './rows.js';

const BUSY_TIMEOUT_MS = 5_000;

export interface StoreOpenOptions {
  /**
   * FULL (the default, and what the daemon uses): a call that returns has committed and survives a
   * power cut. OFF is for bulk loads that can be redone (benchmark fixtures), never for the daemon.
   */
  synchronous?: 'FULL' | 'OFF';
  /** Caps the file at this many pages (PRAGMA max_page_count): an append past it fails as on a full disk. */
  maxPageCount?: number;
}

/** SQLite's page cache per connection, in KiB (PRAGMA cache_size takes it negated). */
const PAGE_CACHE_KIB = 2000;

/**
 * Opens (creating it and its parent directory if needed) the SQLite event store at `path`, refuses it
 * if it is corrupt, and migrates it. WAL + synchronous=FULL: a call that returns has committed, and
 * survives a power cut.
 */
export function openSqliteStore(path: string, options: StoreOpenOptions = {}): EventStore {
  if (path !== ':memory:') mkdirSync(dirname(resolve(path)), { recursive: true, mode: 0o700 });
  const db = new Database(path);
  try {
    if (path !== ':memory:') restrictStoreFiles(path);
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    // Before anything writes: a damaged file is refused as found, never migrated or appended to.
    refuseIfCorrupt(db, path);
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${options.synchronous ?? 'FULL'}`);
    db.pragma('foreign_keys = ON');
    // better-sqlite3 builds SQLite with a 16 MB page cache; ours stays at SQLite's own 2 MiB so the daemon's memory does not grow with the log (bench/soak.mjs).
    db.pragma(`cache_size = -${PAGE_CACHE_KIB}`);
    if (options.maxPageCount !== undefined) db.pragma(`max_page_count = ${options.maxPageCount}`);
    migrate(db, defaultMigrationsDir());
    if (path !== ':memory:') restrictStoreFiles(path);
    return new SqliteEventStore(db, path);
  } catch (error) {
    db.close();
    throw openFailure(error, path);
  }
}

/** The log holds argv, annotations and labels: 0600, also for a file an older version left 0644. */
function restrictStoreFiles(path: string): void {
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    try {
      chmodSync(file, 0o600);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
}

function openFailure(error: unknown, path: string): KtsError {
  // SQLite reports a garbage file as NOTADB on the first read, which quick_check's own query is.
  if (isCorruption(error)) return corruptStore(path, `${sqliteCode(error)}: ${errorMessage(error)}`);
  if (error instanceof KtsError) return error;
  return new KtsError('failed_precondition', `cannot open event store ${path}: ${errorMessage(error)}`, { cause: error });
}

/**
 * Verifies the hash chain of the store file at `path` without a daemon: opened read-only, never
 * migrated or written (so it works on a store the daemon refuses, and beside a running daemon).
 * Like any reader of a WAL database, SQLite creates the empty `-wal`/`-shm` beside it if they are missing.
 */
export function verifyStoreFile(path: string): ChainVerification {
  return readStoreFile(path, (store) => store.verifyChain());
}

/**
 * Opens the store file at `path` read-only (as verifyStoreFile does) and passes it to `read` as an
 * EventStore whose writes all fail: what `kts audit verify --db` checks the checkpoints with.
 */
export function readStoreFile<T>(path: string, read: (store: EventStore) => T): T {
  let db: Database.Database;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
  } catch (error) {
    throw failedPrecondition(`cannot open event store ${path} read-only: ${errorMessage(error)}`);
  }
  try {
    const events = db.prepare<[], { found: number }>("SELECT count(*) AS found FROM sqlite_schema WHERE type = 'table' AND name = 'events'").get();
    if (!events?.found) throw failedPrecondition(`${path} is an SQLite database but not a kts event store (it has no events table)`);
    return read(new SqliteEventStore(db, path));
  } catch (error) {
    throw openFailure(error, path);
  } finally {
    db.close();
  }
}

/** An event ready to insert: its payload already in the canonical JSON text that is stored and hashed. */
interface PendingEvent {
  event: NewEvent;
  payloadJson: string;
}

interface SnapshotRecord {
  stream_id: string;
  version: number;
  state: string;
}

type AppendedListener = (events: StoredEvent[]) => void;
type Statements = ReturnType<typeof prepareStatements>;

class SqliteEventStore implements EventStore {
  private readonly statements: Statements;
  private readonly appendInTransaction: Database.Transaction<SqliteEventStore['writeEvents']>;
  private readonly snapshotInTransaction: Database.Transaction<SqliteEventStore['writeSnapshot']>;
  private readonly pruneInTransaction: Database.Transaction<(prune: PruneRecord, pods: ArchivedPod[]) => void>;
  /** Called after commit, outside the transaction: at most once per append, lost on a crash. */
  private readonly appendedListeners = new Set<AppendedListener>();

  constructor(
    private readonly db: Database.Database,
    private readonly path: string,
  ) {
    this.statements = prepareStatements(db);
    this.appendInTransaction = db.transaction(this.writeEvents.bind(this));
    this.snapshotInTransaction = db.transaction(this.writeSnapshot.bind(this));
    this.pruneInTransaction = db.transaction((prune: PruneRecord, pods: ArchivedPod[]) => applyPrune(db, prune, pods));
  }

  appendToStream(streamId: string, events: NewEvent[], options: AppendOptions): AppendResult {
    validateAppend(streamId, events, options);
    const pending = events.map((event) => ({ event, payloadJson: stableStringify(event.payload) }));
    const stored = this.write(() => this.appendInTransaction.immediate(streamId, pending, options));
    this.notifyAppended(stored);
    const last = stored[stored.length - 1]!;
    return { nextExpectedVersion: last.streamVersion, lastSequence: last.sequence };
  }

  readStream(streamId: string, options: { fromVersion?: number; limit?: number } = {}): StoredEvent[] {
    // LIMIT -1 is SQLite for "no limit".
    return this.statements.readStream.all(streamId, options.fromVersion ?? 1, options.limit ?? -1).map(eventFromRecord);
  }

  readAll(options: { afterSequence?: number; limit?: number } = {}): StoredEvent[] {
    // LIMIT -1 is SQLite for "no limit".
    return this.statements.readAll.all(options.afterSequence ?? 0, options.limit ?? -1).map(eventFromRecord);
  }

  headSequence(): number {
    return this.statements.headSequence.get()?.head ?? lastPrune(this.db)?.upToSequence ?? 0;
  }

  listStreams(prefix: string): string[] {
    return this.statements.listStreams.all(prefix).map((row) => row.stream_id);
  }

  saveSnapshot(snapshot: Snapshot): void {
    const stateJson = stableStringify(snapshot.state);
    this.write(() => this.snapshotInTransaction.immediate(snapshot, stateJson));
  }

  loadSnapshot(streamId: string): Snapshot | undefined {
    const record = this.statements.loadSnapshot.get(streamId);
    return record && { streamId: record.stream_id, version: record.version, state: JSON.parse(record.state) as unknown };
  }

  /**
   * `since: 'checkpoint'` re-hashes only the events appended since the last intact verification by this
   * process (all of them the first time); without it, the whole log.
   */
  verifyChain(options: { since?: 'checkpoint'; streams?: string[]; limit?: number } = {}): ChainVerification {
    const { verification, checkpoint } = verifyChainAfter(this.db, options.since === 'checkpoint' ? this.chainCheckpoint : undefined, options.limit);
    if (checkpoint) this.chainCheckpoint = checkpoint;
    if (!verification.ok || !options.streams) return verification;
    return verifyStreamsOf(this.db, options.streams, verification.eventCount);
  }

  private chainCheckpoint: ChainCheckpoint | undefined;

  getSandbox(id: string): SandboxRow | undefined {
    const record = this.statements.getSandbox.get(id);
    return record && sandboxFromRecord(record);
  }

  listSandboxes(): SandboxRow[] {
    return this.statements.listSandboxes.all().map(sandboxFromRecord);
  }

  getContainer(id: string): ContainerRow | undefined {
    const record = this.statements.getContainer.get(id);
    return record && containerFromRecord(record);
  }

  listContainers(sandboxId?: string): ContainerRow[] {
    const records = sandboxId === undefined ? this.statements.listContainers.all() : this.statements.listContainersOf.all(sandboxId);
    return records.map(containerFromRecord);
  }

  prune(prune: PruneRecord, pods: ArchivedPod[]): void {
    this.write(() => this.pruneInTransaction.immediate(prune, pods));
    // The chain now starts at the prune: what this process verified before it no longer exists.
    this.chainCheckpoint = undefined;
  }

  listPrunes(): PruneRecord[] {
    return listPrunes(this.db);
  }

  findArchivedPod(ref: string): ArchivedPod | undefined {
    return findArchivedPod(this.db, ref);
  }

  appendCheckpoint(checkpoint: AuditCheckpoint): void {
    this.write(() => insertCheckpoint(this.db, checkpoint));
  }

  listCheckpoints(): AuditCheckpoint[] {
    return listCheckpoints(this.db);
  }

  onAppended(listener: AppendedListener): () => void {
    this.appendedListeners.add(listener);
    return () => this.appendedListeners.delete(listener);
  }

  close(): void {
    this.appendedListeners.clear();
    if (this.db.open) this.db.close();
  }

  /** Runs a write transaction; SQLite has rolled it back by the time a failure is rethrown as a KtsError. */
  private write<T>(transaction: () => T): T {
    try {
      return transaction();
    } catch (error) {
      throw translateSqliteError(error, this.path);
    }
  }

  /** Runs inside the IMMEDIATE transaction: version check, chained inserts and projection commit together. */
  private writeEvents(streamId: string, pending: PendingEvent[], options: AppendOptions): StoredEvent[] {
    const { version } = this.statements.streamVersion.get(streamId)!;
    if (version !== options.expectedVersion) {
      throw conflict(`stream ${streamId} is at version ${version}, but the writer expected ${options.expectedVersion}`);
    }
    // A log pruned to nothing goes on from its last prune, never from genesis again.
    const pruned = lastPrune(this.db);
    const head = this.statements.head.get() ?? (pruned && { sequence: pruned.upToSequence, hash: pruned.hash });
    let previous = { sequence: head?.sequence ?? 0, hash: head?.hash ?? GENESIS_HASH };
    const time = new Date().toISOString();
    const records = pending.map(({ event, payloadJson }, index) => {
      const record = chainedRecord(event, payloadJson, {
        streamId,
        streamVersion: version + index + 1,
        sequence: previous.sequence + 1,
        prevHash: previous.hash,
        time,
      });
      this.statements.insertEvent.run(record);
      previous = record;
      return record;
    });
    if (options.projection) this.project(options.projection);
    return records.map(eventFromRecord);
  }

  private project(projection: Projection): void {
    if (projection.table === 'sandboxes') this.statements.upsertSandbox.run(sandboxToRecord(projection.row));
    else this.statements.upsertContainer.run(containerToRecord(projection.row));
  }

  private writeSnapshot(snapshot: Snapshot, stateJson: string): void {
    const { version } = this.statements.streamVersion.get(snapshot.streamId)!;
    if (!Number.isSafeInteger(snapshot.version) || snapshot.version < 1 || snapshot.version > version) {
      throw failedPrecondition(`snapshot of ${snapshot.streamId} at version ${snapshot.version} does not match the stream (version ${version})`);
    }
    this.statements.saveSnapshot.run(snapshot.streamId, snapshot.version, stateJson, new Date().toISOString());
  }

  private notifyAppended(events: StoredEvent[]): void {
    for (const listener of this.appendedListeners) {
      try {
        listener(events);
      } catch (error) {
        // The append has committed; a failing subscriber is its own problem, reported but not rethrown.
        process.emitWarning(`onAppended listener threw: ${errorMessage(error)}`, { code: 'KTS_STORE_LISTENER' });
      }
    }
  }
}

function chainedRecord(
  event: NewEvent,
  payloadJson: string,
  position: { streamId: string; streamVersion: number; sequence: number; prevHash: string; time: string },
): EventRecord {
  const unhashed: Omit<EventRecord, 'hash'> = {
    sequence: position.sequence,
    stream_id: position.streamId,
    stream_version: position.streamVersion,
    type: event.type,
    payload: payloadJson,
    state_before: event.stateBefore,
    state_after: event.stateAfter,
    trace_id: event.traceId ?? null,
    span_id: event.spanId ?? null,
    caller: event.caller ?? null,
    time: position.time,
    prev_hash: position.prevHash,
  };
  return { ...unhashed, hash: eventHash(unhashed) };
}

function prepareStatements(db: Database.Database) {
  const containerOrder = 'ORDER BY created_at, id';
  return {
    streamVersion: db.prepare<[string], { version: number }>(
      'SELECT COALESCE(MAX(stream_version), 0) AS version FROM events WHERE stream_id = ?',
    ),
    head: db.prepare<[], { sequence: number; hash: string }>('SELECT sequence, hash FROM events ORDER BY sequence DESC LIMIT 1'),
    insertEvent: db.prepare<[EventRecord]>(
      `INSERT INTO events (sequence, stream_id, stream_version, type, payload, state_before, state_after,
         trace_id, span_id, caller, time, prev_hash, hash)
       VALUES (@sequence, @stream_id, @stream_version, @type, @payload, @state_before, @state_after,
         @trace_id, @span_id, @caller, @time, @prev_hash, @hash)`,
    ),
    readStream: db.prepare<[string, number, number], EventRecord>(
      'SELECT * FROM events WHERE stream_id = ? AND stream_version >= ? ORDER BY stream_version LIMIT ?',
    ),
    readAll: db.prepare<[number, number], EventRecord>('SELECT * FROM events WHERE sequence > ? ORDER BY sequence LIMIT ?'),
    headSequence: db.prepare<[], { head: number | null }>('SELECT MAX(sequence) AS head FROM events'),
    // A stream's version-1 event is its first appearance; instr() = 1 is a prefix test with no LIKE escaping.
    listStreams: db.prepare<[string], { stream_id: string }>(
      'SELECT stream_id FROM events WHERE stream_version = 1 AND instr(stream_id, ?) = 1 ORDER BY sequence',
    ),
    saveSnapshot: db.prepare<[string, number, string, string]>(
      `INSERT INTO snapshots (stream_id, version, state, saved_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, state = excluded.state, saved_at = excluded.saved_at`,
    ),
    loadSnapshot: db.prepare<[string], SnapshotRecord>('SELECT stream_id, version, state FROM snapshots WHERE stream_id = ?'),
    upsertSandbox: db.prepare<[SandboxRecord]>(upsertSql('sandboxes', SANDBOX_COLUMNS)),
    getSandbox: db.prepare<[string], SandboxRecord>('SELECT * FROM sandboxes WHERE id = ?'),
    listSandboxes: db.prepare<[], SandboxRecord>('SELECT * FROM sandboxes ORDER BY created_at, id'),
    upsertContainer: db.prepare<[ContainerRecord]>(upsertSql('containers', CONTAINER_COLUMNS)),
    getContainer: db.prepare<[string], ContainerRecord>('SELECT * FROM containers WHERE id = ?'),
    listContainers: db.prepare<[], ContainerRecord>(`SELECT * FROM containers ${containerOrder}`),
    listContainersOf: db.prepare<[string], ContainerRecord>(`SELECT * FROM containers WHERE sandbox_id = ? ${containerOrder}`),
  };
}

const SANDBOX_COLUMNS: (keyof SandboxRecord)[] = [
  'id', 'name', 'namespace', 'kind', 'state', 'pid', 'task_address', 'created_at', 'updated_at', 'version', 'metadata',
];
const CONTAINER_COLUMNS: (keyof ContainerRecord)[] = [
  'id', 'sandbox_id', 'name', 'state', 'pid', 'exit_status', 'exited_at', 'created_at', 'updated_at', 'version', 'metadata',
];

function upsertSql(table: string, columns: string[]): string {
  const updates = columns.filter((column) => column !== 'id').map((column) => `${column} = excluded.${column}`);
  return `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${columns.map((column) => `@${column}`).join(', ')})
    ON CONFLICT (id) DO UPDATE SET ${updates.join(', ')}`;
}

// Lone surrogates would be replaced by U+FFFD on the way into SQLite, and the stored text would no longer match its hash.
const LONE_SURROGATE = /\p{Surrogate}/u;

function validateAppend(streamId: string, events: NewEvent[], options: AppendOptions): void {
  if (typeof streamId !== 'string' || streamId.length === 0 || LONE_SURROGATE.test(streamId)) {
    throw invalidArgument('stream id must be a non-empty, well-formed string');
  }
  if (!Array.isArray(events) || events.length === 0) throw invalidArgument(`append to ${streamId} needs at least one event`);
  if (!Number.isSafeInteger(options.expectedVersion) || options.expectedVersion < 0) {
    throw invalidArgument(`expected version of ${streamId} must be a non-negative integer, got ${String(options.expectedVersion)}`);
  }
  events.forEach((event, index) => validateEvent(event, `event ${index} appended to ${streamId}`));
}

function validateEvent(event: NewEvent, where: string): void {
  for (const field of ['type', 'stateBefore', 'stateAfter'] as const) {
    if (typeof event[field] !== 'string' || event[field].length === 0) throw invalidArgument(`${where}: ${field} must be a non-empty string`);
  }
  for (const field of ['type', 'stateBefore', 'stateAfter', 'traceId', 'spanId', 'caller'] as const) {
    const value: unknown = event[field];
    if (value !== undefined && (typeof value !== 'string' || LONE_SURROGATE.test(value))) {
      throw invalidArgument(`${where}: ${field} must be a well-formed string`);
    }
  }
  if (event.payload === null || typeof event.payload !== 'object' || Array.isArray(event.payload)) {
    throw invalidArgument(`${where}: payload must be a JSON object`);
  }
}
