import { describe, expect, it } from 'vitest';
import { acceptsEvent, replay } from './index.js';
import { declaredTransitions, shortestWalkPerTransition, sortedKeys, walkEveryTransition } from './machineGraph.testkit.js';
import { NODE_STATES, nodeMachine, type NodeEvent } from './nodeMachine.js';

const orphanRemoved: NodeEvent = { type: 'OrphanRemoved', kind: 'runc', resource: 'sandbox directory /var/lib/kts/sandboxes/x', reason: 'no sandbox x in the store' };
const cleanupFailed: NodeEvent = { type: 'CleanupFailed', kind: 'bundle', resource: 'bundles of pod x', reason: 'EBUSY' };
const TRANSITIONS = [{ from: 'watching', event: 'OrphanRemoved', to: 'watching' }, { from: 'watching', event: 'CleanupFailed', to: 'watching' }];

describe('nodeMachine', () => {
  it('declares exactly its two transitions, and generated paths walk them', () => {
    expect(Object.keys(nodeMachine.root.states)).toEqual([...NODE_STATES]);
    expect(sortedKeys(declaredTransitions(nodeMachine))).toEqual(sortedKeys(TRANSITIONS));
    const walks = shortestWalkPerTransition(walkEveryTransition(nodeMachine, [orphanRemoved, cleanupFailed]));
    expect(sortedKeys(walks.map((walk) => ({ from: walk.from, event: walk.when.type, to: walk.to })))).toEqual(sortedKeys(TRANSITIONS));
  });

  it('given any number of removed orphans, when another is found, then it is accepted', () => {
    const snapshot = replay(nodeMachine, [orphanRemoved, orphanRemoved]);
    expect(snapshot.value).toBe('watching');
    expect(acceptsEvent(snapshot, orphanRemoved)).toBe(true);
  });

  it('given a cleanup that failed, when a later sweep removes the resource, then both are accepted in order', () => {
    const snapshot = replay(nodeMachine, [cleanupFailed, cleanupFailed]);
    expect(snapshot.value).toBe('watching');
    expect(acceptsEvent(snapshot, orphanRemoved)).toBe(true);
  });
});
