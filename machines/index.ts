import { createActor, type AnyMachineSnapshot, type AnyStateMachine, type EventFromLogic, type EventObject, type SnapshotFrom } from 'xstate';

export * from './sandboxMachine.js';
export * from './containerMachine.js';
export * from './nodeMachine.js';

/** A stored event the machine does not accept in the state the earlier events led to: the log and the machine disagree. */
export class IllegalTransitionError extends Error {
  constructor(
    readonly eventType: string,
    readonly stateValue: string,
    /** 0-based position of the rejected event in the replayed list. */
    readonly eventIndex: number,
  ) {
    super(`event ${eventType} (#${eventIndex}) is not accepted in state ${stateValue}`);
    this.name = 'IllegalTransitionError';
  }
}

/** Whether the machine in `snapshot` would take `event`; the engine asks this before appending the event. */
export function acceptsEvent<TEvent extends EventObject>(snapshot: { can(event: TEvent): boolean }, event: TEvent): boolean {
  return snapshot.can(event);
}

/**
 * Whether `state` (a stored row's state, where no actor runs) carries `tag` in `machine`: the rows
 * ask the machine, as the entities do with `hasTag`. Tags: a sandbox is `running` (ready,
 * unhealthy) or `exited` (stopped and after); a container is `live` (its init process exists) and
 * `active` (not yet ended: it may still write output).
 */
export function stateHasTag(machine: AnyStateMachine, state: string, tag: string): boolean {
  return machine.states[state]?.tags.includes(tag) ?? false;
}

/** Whether `state` is `machine`'s final state (a removed sandbox, a deleted container). */
export function isFinalState(machine: AnyStateMachine, state: string): boolean {
  return machine.states[state]?.type === 'final';
}

/**
 * Folds `events` into an actor of `machine` (fresh, or restored from the snapshot `from`) and
 * returns its last snapshot; throws on the first event it rejects.
 */
export function replay<TMachine extends AnyStateMachine>(
  machine: TMachine,
  events: readonly EventFromLogic<TMachine>[],
  from?: SnapshotFrom<TMachine>,
): SnapshotFrom<TMachine> {
  // Typed as any machine inside: xstate's generic snapshot types do not resolve for an unknown TMachine.
  const actor = createActor(machine as AnyStateMachine, from ? { snapshot: from } : undefined);
  // An action that throws puts the snapshot in 'error'; observing it keeps xstate from rethrowing it later.
  actor.subscribe({ error: () => {} });
  actor.start();
  try {
    events.forEach((event, eventIndex) => {
      const snapshot: AnyMachineSnapshot = actor.getSnapshot();
      if (!snapshot.can(event)) {
        throw new IllegalTransitionError(event.type, describeState(snapshot.value), eventIndex);
      }
      actor.send(event);
      const next: AnyMachineSnapshot = actor.getSnapshot();
      if (next.status === 'error') {
        throw new Error(`event ${event.type} (#${eventIndex}) failed in state ${describeState(snapshot.value)}: ${String(next.error)}`);
      }
    });
    return actor.getSnapshot() as SnapshotFrom<TMachine>;
  } finally {
    actor.stop();
  }
}

function describeState(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}
