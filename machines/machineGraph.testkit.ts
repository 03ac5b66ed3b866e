/**
 * Test-only helpers shared by the machine specs: path generation with @xstate/graph and the
 * given/when/then bookkeeping around it. Not imported by product code.
 */
import { getShortestPaths, serializeEvent, serializeSnapshot, toDirectedGraph, type DirectedGraphNode } from '@xstate/graph';
import type { AnyMachineSnapshot, AnyStateMachine, EventObject } from 'xstate';

/** One row of a machine's transition table: in state `from`, event type `event` leads to `to`. */
export interface TransitionRow {
  from: string;
  event: string;
  to: string;
}

/** A generated path that ends with one transition: the events `given` lead to `from`, then `when` leads to `to`. */
export interface WalkedTransition<TEvent extends EventObject> {
  given: TEvent[];
  from: string;
  when: TEvent;
  to: string;
}

export function rowKey(row: TransitionRow): string {
  return `${row.from} --${row.event}--> ${row.to}`;
}

export function walkKey<TEvent extends EventObject>(walk: WalkedTransition<TEvent>): string {
  return rowKey({ from: walk.from, event: walk.when.type, to: walk.to });
}

export function describeWalk<TEvent extends EventObject>(walk: WalkedTransition<TEvent>): string {
  return `given [${walk.given.map((event) => event.type).join(', ')}] when ${walk.when.type} then ${walk.to}`;
}

function stateName(snapshot: AnyMachineSnapshot): string {
  return typeof snapshot.value === 'string' ? snapshot.value : JSON.stringify(snapshot.value);
}

/**
 * Every transition the machine takes from every snapshot reachable with `sampleEvents`, each as the
 * shortest path to it. Only events the snapshot accepts (`can`) are offered, so guard-rejected
 * events never appear as no-op steps.
 */
export function walkEveryTransition<TEvent extends EventObject>(
  machine: AnyStateMachine,
  sampleEvents: readonly TEvent[],
): WalkedTransition<TEvent>[] {
  const paths = getShortestPaths(machine, {
    events: (snapshot: AnyMachineSnapshot) => sampleEvents.filter((event) => snapshot.can(event)),
    // Keying a node by the transition that reached it makes every transition the end of some shortest path.
    serializeState: (snapshot: AnyMachineSnapshot, event: EventObject | undefined, previous?: AnyMachineSnapshot) =>
      JSON.stringify([
        previous ? serializeSnapshot(previous) : null,
        event ? serializeEvent(event) : null,
        serializeSnapshot(snapshot),
      ]),
  });
  return paths
    .filter((path) => path.steps.length > 1) // the first step is xstate.init
    .map((path) => {
      const events = path.steps.slice(1).map((step) => step.event as TEvent);
      return {
        given: events.slice(0, -1),
        when: events[events.length - 1]!,
        from: stateName(path.steps[path.steps.length - 2]!.state),
        to: stateName(path.state),
      };
    });
}

/** The shortest walk for each distinct (from, event type, to), in table order of first appearance. */
export function shortestWalkPerTransition<TEvent extends EventObject>(walks: WalkedTransition<TEvent>[]): WalkedTransition<TEvent>[] {
  const byKey = new Map<string, WalkedTransition<TEvent>>();
  for (const walk of walks) {
    const known = byKey.get(walkKey(walk));
    if (!known || walk.given.length < known.given.length) byKey.set(walkKey(walk), walk);
  }
  return [...byKey.values()];
}

/** The shortest known list of past events that leads to each state (the initial state needs none). */
export function shortestHistoryPerState<TEvent extends EventObject>(
  initialState: string,
  walks: WalkedTransition<TEvent>[],
): Map<string, TEvent[]> {
  const histories = new Map<string, TEvent[]>([[initialState, []]]);
  for (const walk of walks) {
    const history = [...walk.given, walk.when];
    const known = histories.get(walk.to);
    if (!known || history.length < known.length) histories.set(walk.to, history);
  }
  return histories;
}

/** The transitions the machine declares (statically, all guarded branches included), read with toDirectedGraph. */
export function declaredTransitions(machine: AnyStateMachine): TransitionRow[] {
  const rows: TransitionRow[] = [];
  const visit = (node: DirectedGraphNode): void => {
    for (const edge of node.edges) {
      rows.push({ from: edge.source.key, event: edge.label.text, to: edge.target.key });
    }
    node.children.forEach(visit);
  };
  visit(toDirectedGraph(machine));
  return rows;
}

export function sortedKeys(rows: TransitionRow[]): string[] {
  return [...new Set(rows.map(rowKey))].sort();
}
