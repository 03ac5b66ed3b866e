import { createActor, getNextSnapshot, type AnyActor, type AnyStateMachine } from 'xstate';
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
  can(event: { type: string }): boolean;
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

  /** Rebuilds an entity from its last snapshot plus the events after it. */
  static load<TContext, TEvent extends { type: string }>(
    streamId: string,
    machine: AnyStateMachine,
    store: EventStore,
    project: ProjectFn<TContext>,
  ): Entity<TContext, TEvent> {
    const saved = store.loadSnapshot(streamId);
    const restored = saved ? { snapshot: machine.resolveState(saved.state as never), version: saved.version } : undefined;
    const entity = new Entity<TContext, TEvent>(streamId, machine, store, project, restored);
    for (const stored of store.readStream(streamId, { fromVersion: entity.version + 1 })) entity.applyStored(stored);
    return entity;
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
    return this.snapshot.can(event);
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
    return this.store.readStream(this.streamId, { fromVersion: this.version })[0]!;
  }

  private applyStored(stored: StoredEvent): void {
    const event = { type: stored.type, ...stored.payload } as TEvent;
    if (!this.can(event)) {
      throw failedPrecondition(`${this.streamId}: stored event #${stored.streamVersion} ${stored.type} is not legal in ${this.state}; the log and the machine disagree`);
    }
    this.actor.send(event);
    this.version = stored.streamVersion;
  }

  stop(): void {
    this.actor.stop();
  }
}
