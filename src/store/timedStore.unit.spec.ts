import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EventStore } from '../core/store.js';
import { newEvent, sandboxRow } from './sqliteStore.fixtures.js';
import { openSqliteStore } from './sqliteStore.js';
import { withCommitTiming, type CommitResult } from './timedStore.js';

describe('an event store with timed commits', () => {
  let observed: Array<{ seconds: number; result: CommitResult }>;
  let store: EventStore;

  beforeEach(() => {
    observed = [];
    store = withCommitTiming(openSqliteStore(':memory:'), (seconds, result) => observed.push({ seconds, result }));
  });
  afterEach(() => store.close());

  it('given an empty stream, when an event is appended, then one ok commit with a positive duration is observed and the event is stored', () => {
    store.appendToStream('sandbox-a', [newEvent('SandboxCreated', 'absent', 'created')], { expectedVersion: 0, projection: { table: 'sandboxes', row: sandboxRow('a') } });

    expect(observed).toHaveLength(1);
    expect(observed[0]!.result).toBe('ok');
    expect(observed[0]!.seconds).toBeGreaterThan(0);
    expect(observed[0]!.seconds).toBeLessThan(5);
    expect(store.readStream('sandbox-a').map((event) => event.type)).toEqual(['SandboxCreated']);
    expect(store.getSandbox('a')?.state).toBe('created');
  });

  it('given a stream at version 1, when a stale writer appends, then the conflict is rethrown and observed as a conflict', () => {
    store.appendToStream('sandbox-a', [newEvent('SandboxCreated', 'absent', 'created')], { expectedVersion: 0 });

    expect(() => store.appendToStream('sandbox-a', [newEvent('SandboxStartRequested', 'created', 'starting')], { expectedVersion: 0 })).toThrow(/expected 0/);

    expect(observed.map((commit) => commit.result)).toEqual(['ok', 'conflict']);
    expect(store.readStream('sandbox-a')).toHaveLength(1);
  });

  it('given a listener on the timed store, when an event is appended, then the listener hears it as it would on the store itself', () => {
    const heard: string[] = [];
    store.onAppended((events) => heard.push(...events.map((event) => event.type)));

    store.appendToStream('sandbox-a', [newEvent('SandboxCreated', 'absent', 'created')], { expectedVersion: 0 });

    expect(heard).toEqual(['SandboxCreated']);
    expect(store.headSequence()).toBe(1);
  });
});
