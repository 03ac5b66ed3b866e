import { describe, expect, it } from 'vitest';
import type { SandboxEvent } from '../../machines/sandboxMachine.js';
import { isKtsError } from '../core/errors.js';
import { givenClosedAfterEach, readySandbox, runningContainer, sandboxCreated } from './engine.testkit.js';
import { eventMatcher, history, inspect, liveContainers, liveSandboxes, resolveRef } from './queries.js';

// What kts asks of the log, over the engine specs' real SQLite file.
const given = givenClosedAfterEach();
const removed = (sandboxId: string): SandboxEvent[] => [sandboxCreated(sandboxId), { type: 'SandboxShutdownRequested' }, { type: 'SandboxRemoved' }];
const deleted = (containerId: string, sandboxId: string) =>
  [...runningContainer(containerId, sandboxId), { type: 'ContainerExited', exitStatus: 0, exitedAt: '2026-01-01T00:00:04.000Z' }, { type: 'ContainerDeleteRequested' }, { type: 'ContainerDeleted' }] as const;

describe('queries', () => {
  it('lists what is not gone, by the machines\' final states', () => {
    const { store } = given({ sandboxes: { abc1: readySandbox('abc1'), abc2: removed('abc2') }, containers: { c1: runningContainer('c1', 'abc1'), c2: [...deleted('c2', 'abc1')] } });
    expect(liveSandboxes(store).map((row) => row.id)).toEqual(['abc1']);
    expect(liveContainers(store).map((row) => row.id)).toEqual(['c1']);
  });

  it('resolves a pod by name, by a container\'s id and by a unique prefix; names the candidates of an ambiguous prefix', () => {
    const { store } = given({ sandboxes: { abc1: readySandbox('abc1'), abc2: readySandbox('abc2') }, containers: { c1xyz: runningContainer('c1xyz', 'abc2') } });
    expect(resolveRef(store, 'pod-abc1').sandbox.id).toBe('abc1');
    expect(resolveRef(store, 'c1xyz')).toMatchObject({ sandbox: { id: 'abc2' }, containerId: 'c1xyz' });
    expect(resolveRef(store, 'c1x')).toMatchObject({ sandbox: { id: 'abc2' }, containerId: 'c1xyz' });
    expect(() => resolveRef(store, 'abc')).toThrow(/id prefix "abc" is ambiguous: pod abc1, pod abc2/);
    let error: unknown;
    try { resolveRef(store, 'ab'); } catch (caught) { error = caught; }
    // Shorter than 3 characters is never taken as a prefix.
    expect(isKtsError(error, 'not_found')).toBe(true);
  });

  it('inspects a removed pod by replaying its stream, and gives its history in log order', () => {
    const { store } = given({ sandboxes: { p1: removed('p1') } });
    const found = inspect(store, 'p1');
    expect(found.state).toBe('removed');
    expect(found.context).toMatchObject({ sandboxId: 'p1', name: 'pod-p1' });
    const { events, chain } = history(store, 'pod-p1');
    expect(events.map((event) => event.type)).toEqual(['SandboxCreated', 'SandboxShutdownRequested', 'SandboxRemoved']);
    expect(chain.ok).toBe(true);
  });

  it('filters events by pod (its containers\' too), type (exact or prefix*), kind and time; refuses a filter that cannot match', () => {
    const { store } = given({ sandboxes: { p1: readySandbox('p1'), p2: readySandbox('p2') }, containers: { c1: runningContainer('c1', 'p1') } });
    const all = store.readAll();
    const shown = (filter: Parameters<typeof eventMatcher>[1]) => all.filter(eventMatcher(store, filter, ['fake', 'runc'])).map((event) => `${event.streamId} ${event.type}`);
    expect(shown({ pod: 'pod-p1', types: ['Container*', 'SandboxStarted'] })).toEqual([
      'sandbox-p1 SandboxStarted', 'container-c1 ContainerCreateRequested', 'container-c1 ContainerCreated', 'container-c1 ContainerStartRequested', 'container-c1 ContainerStarted',
    ]);
    expect(shown({ types: ['SandboxCreated'] })).toEqual(['sandbox-p1 SandboxCreated', 'sandbox-p2 SandboxCreated']);
    expect(shown({ kind: 'runc' })).toEqual([]);
    expect(shown({ kind: 'fake', types: ['SandboxStarted'] })).toEqual(['sandbox-p1 SandboxStarted', 'sandbox-p2 SandboxStarted']);
    expect(shown({ since: '2999-01-01T00:00:00Z' })).toEqual([]);
    expect(shown({ since: '2000-01-01T00:00:00.123456789Z' })).toHaveLength(all.length);
    expect(() => shown({ types: ['ContainerStart'] })).toThrow(/no event type matches "ContainerStart"/);
    expect(() => shown({ kind: 'kvm' })).toThrow(/unknown sandbox kind "kvm"; this daemon has fake, runc/);
    expect(() => shown({ since: 'yesterday' })).toThrow(/not an RFC3339 time/);
    expect(() => shown({ pod: 'nope' })).toThrow(/no pod or container "nope"/);
  });
});
