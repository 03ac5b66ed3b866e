import { isDeepStrictEqual } from 'node:util';
import { createActor, getNextSnapshot, type AnyActor, type AnyMachineSnapshot, type AnyStateMachine } from 'xstate';
import { IllegalTransitionError, acceptsEvent, replay } from '../../machines/index.js';
import { failedPrecondition } from '../core/errors.js';
import type { EventStore, NewEvent, Projection, StoredEvent } from '../core/store.js';
import { activeTraceIds } from '../telemetry/tracing.js';

/** Who caused a transition; stored on every event it causes. */
export interface CommandMeta {
  caller: string;
}

/** The part of an xstate snapshot the engine reads. */
export interface EntitySnapshot<TContext> {
  value: unknown;
  context: TContext;
  /** 'done' once the machine is in its final state. */
  status: string;
  can(event: { type: string }): boolean;
  hasTag(tag: string): boolean;
}

/** The read-model row an event leaves behind; undefined for a stream without one (the node stream). */
export type ProjectFn<TContext> = (snapshot: EntitySnapshot<TContext>, version: number) => Projection | undefined;

const SNAPSHOT_EVERY = 50;


/**
 * One sandbox or container: its xstate actor (the live state) and its stream in the store.
 * `record` is the only way state changes: the event is checked against the machine, appended
 * (committed) and only then applied, so the log is never behind memory.
 */
export class Entity<TContext, TEvent extends { type: string }> {
  private readonly actor: AnyActor;
  private version: number;

  constructor(
    readonly streamId: string,
    private readonly machine: AnyStateMachine,
    private readonly store: EventStore,
    private readonly project: ProjectFn<TContext>,
    restored?: { snapshot: unknown; version: number },
  ) {
    this.actor = createActor(machine, restored ? { snapshot: restored.snapshot as never } : undefined);
    this.actor.start();
    this.version = restored?.version ?? 0;
  }

  /**
   * Rebuilds an entity from its last snapshot plus the events after it. Snapshots lie outside the hash
   * chain: the store decides which may be read (the daemon's gives back only those sealed with its audit
   * key, audit/sealedSnapshots.ts; `kts audit verify` checks every one against a full replay).
   */
  static load<TContext, TEvent extends { type: string }>(
    streamId: string,
    machine: AnyStateMachine,
    store: EventStore,
    project: ProjectFn<TContext>,
  ): Entity<TContext, TEvent> {
    const saved = store.loadSnapshot(streamId);
    const from = saved ? machine.resolveState(saved.state as never) : undefined;
    const stored = store.readStream(streamId, { fromVersion: (saved?.version ?? 0) + 1 });
    const snapshot = replayStored(streamId, machine, stored, from);
    return new Entity<TContext, TEvent>(streamId, machine, store, project, { snapshot, version: stored.at(-1)?.streamVersion ?? saved?.version ?? 0 });
  }

  get snapshot(): EntitySnapshot<TContext> {
    return this.actor.getSnapshot() as EntitySnapshot<TContext>;
  }

  get state(): string {
    return String(this.snapshot.value);
  }

  get context(): TContext {
    return this.snapshot.context;
  }

  get streamVersion(): number {
    return this.version;
  }

  can(event: TEvent): boolean {
    return acceptsEvent(this.snapshot, event);
  }

  /** The machine is in its final state: a removed sandbox, a deleted container. */
  get ended(): boolean {
    return this.snapshot.status === 'done';
  }

  /** Whether the current state carries `tag` (the machines' `running`, `exited`, `live`, `active`). */
  hasTag(tag: string): boolean {
    return this.snapshot.hasTag(tag);
  }

  /** Appends `event` (durable when this returns) and applies it; an illegal event is FAILED_PRECONDITION. */
  record(event: TEvent, meta: CommandMeta, what = this.streamId): StoredEvent {
    if (!this.can(event)) throw failedPrecondition(`${what} is ${this.state}: ${event.type} is not allowed there`);
    const next = getNextSnapshot(this.machine, this.actor.getSnapshot(), event) as EntitySnapshot<TContext>;
    const { type, ...payload } = event as { type: string } & Record<string, unknown>;
    const stored = this.append(
      { type, payload, stateBefore: this.state, stateAfter: String(next.value), caller: meta.caller, ...activeTraceIds() },
      next,
    );
    this.actor.send(event);
    if (this.version % SNAPSHOT_EVERY === 0) {
      this.store.saveSnapshot({ streamId: this.streamId, version: this.version, state: this.actor.getPersistedSnapshot() });
    }
    return stored;
  }

  private append(newEvent: NewEvent, next: EntitySnapshot<TContext>): StoredEvent {
    const result = this.store.appendToStream(this.streamId, [newEvent], {
      expectedVersion: this.version,
      projection: this.project(next, this.version + 1),
    });
    this.version = result.nextExpectedVersion;
    return this.store.readStream(this.streamId, { fromVersion: this.version, limit: 1 })[0]!;
  }

  stop(): void {
    this.actor.stop();
  }
}

/** Why the snapshot saved at `saved.version` is not what replaying the stream's first events gives; undefined when it is. */
export function snapshotMismatch(streamId: string, machine: AnyStateMachine, stored: StoredEvent[], saved: { version: number; state: unknown }): string | undefined {
  if (saved.version > stored.length) return `it claims version ${saved.version}, but the stream has ${stored.length} events`;
  const replayed = machine.getPersistedSnapshot(replayStored(streamId, machine, stored.slice(0, saved.version)));
  // Compared as stored: through JSON, as saveSnapshot wrote it.
  return isDeepStrictEqual(JSON.parse(JSON.stringify(replayed)), saved.state) ? undefined : `it differs from the replay of the stream's first ${saved.version} events`;
}

/** The machines' own replay over stored events; a stored event the machine refuses is FAILED_PRECONDITION naming it. */
export function replayStored(streamId: string, machine: AnyStateMachine, stored: StoredEvent[], from?: AnyMachineSnapshot): AnyMachineSnapshot {
  try {
    return replay(machine, stored.map((event) => ({ type: event.type, ...event.payload })), from);
  } catch (error) {
    if (!(error instanceof IllegalTransitionError)) throw error;
    const refused = stored[error.eventIndex]!;
    throw failedPrecondition(`${streamId}: stored event #${refused.streamVersion} ${refused.type} is not legal in ${error.stateValue}; the log and the machine disagree`);
  }
}
