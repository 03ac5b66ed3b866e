/**
 * Test-only helpers shared by the machine specs: path generation with xstate's own graph utilities (xstate/graph) and the
 * given/when/then bookkeeping around it. Not imported by product code.
 */
import { getShortestPaths, serializeSnapshot, toDirectedGraph, type DirectedGraphNode } from 'xstate/graph';
import type { AnyMachineSnapshot, AnyStateMachine, EventObject } from 'xstate';
import { describe, expect, it } from 'vitest';
import { IllegalTransitionError, acceptsEvent, replay } from './index.js';

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
        event ? JSON.stringify(event) : null,
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

/**
 * The two spec blocks every entity machine gets from its transition table: the machine declares exactly
 * the table's transitions, generated paths walk each of them (and replay agrees), every state is
 * reachable, and every (state, event) pair the table leaves out is rejected with IllegalTransitionError.
 */
export function specifyTransitionTable<TEvent extends EventObject>(spec: {
  /** `sandboxMachine`: names the describe blocks. */
  name: string;
  /** `sandbox`: how a test title names one. */
  entity: string;
  machine: AnyStateMachine;
  states: readonly string[];
  eventTypes: readonly string[];
  /** One sample of each event type. */
  sampleEvents: readonly TEvent[];
  transitions: TransitionRow[];
  initialState: string;
}): void {
  const { machine, transitions } = spec;
  const walks = walkEveryTransition(machine, spec.sampleEvents);
  const walkPerTransition = shortestWalkPerTransition(walks);
  const historyPerState = shortestHistoryPerState(spec.initialState, walks);

  describe(`${spec.name}: the transition table`, () => {
    it('has one sample event per event type and lists every state', () => {
      expect(spec.sampleEvents.map((event) => event.type).sort()).toEqual([...spec.eventTypes].sort());
      expect(Object.keys(machine.root.states).sort()).toEqual([...spec.states].sort());
    });

    it('declares exactly the transitions of the table', () => {
      expect(sortedKeys(declaredTransitions(machine))).toEqual(sortedKeys(transitions));
    });

    it('walks every transition of the table, and nothing else, along generated paths', () => {
      expect(sortedKeys(walkPerTransition.map((walk) => ({ from: walk.from, event: walk.when.type, to: walk.to })))).toEqual(sortedKeys(transitions));
    });

    it.each(walkPerTransition.map((walk) => [describeWalk(walk), walk] as const))('%s', (_name, walk) => {
      const before = replay(machine, walk.given);
      expect(before.value).toBe(walk.from);
      expect(acceptsEvent(before, walk.when)).toBe(true);
      expect(replay(machine, [...walk.given, walk.when]).value).toBe(walk.to);
      expect(transitions.map(rowKey)).toContain(walkKey(walk));
    });
  });

  describe(`${spec.name}: illegal transitions are rejected`, () => {
    const legal = new Set(transitions.map((row) => `${row.from} ${row.event}`));
    const illegal = spec.states.flatMap((state) =>
      spec.sampleEvents.filter((event) => !legal.has(`${state} ${event.type}`)).map((event) => [state, event.type, event] as const),
    );

    it('reaches every state along generated paths', () => {
      expect([...historyPerState.keys()].sort()).toEqual([...spec.states].sort());
    });

    it.each(illegal)(`given a ${spec.entity} %s, when %s, then it is rejected`, (state, _type, event) => {
      const given = historyPerState.get(state)!;
      const snapshot = replay(machine, given);
      expect(snapshot.value).toBe(state);
      expect(acceptsEvent(snapshot, event)).toBe(false);
      expect(() => replay(machine, [...given, event])).toThrow(IllegalTransitionError);
    });
  });
}
