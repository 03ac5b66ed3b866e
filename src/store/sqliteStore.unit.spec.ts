import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { isKtsError } from '../core/errors.js';
import type { EventStore, StoredEvent } from '../core/store.js';
import { containerRow, makeTempDir, newEvent, sandboxRow } from './sqliteStore.fixtures.js';
import { openSqliteStore } from './sqliteStore.js';

let temp: ReturnType<typeof makeTempDir>;
let store: EventStore;

beforeEach(() => {
  temp = makeTempDir();
  store = openSqliteStore(temp.dbPath);
});

afterEach(() => {
  store.close();
  temp.remove();
});

function thrown(action: () => unknown): unknown {
  try {
    action();
  } catch (error) {
    return error;
  }
  throw new Error('expected the action to throw');
}

describe('appendToStream and readStream', () => {
  it('given an empty stream, when two events are appended, then they read back in order with versions, sequence and chained hashes', () => {
    const result = store.appendToStream(
      'sandbox-a',
      [newEvent('SandboxCreated', 'none', 'created', { kind: 'runc', z: 1, a: [1, { y: 2, x: 1 }] }), newEvent('SandboxStarting', 'created', 'starting')],
      { expectedVersion: 0 },
    );

    expect(result).toEqual({ nextExpectedVersion: 2, lastSequence: 2 });
    const events = store.readStream('sandbox-a');
    expect(events.map((e) => [e.type, e.streamVersion, e.sequence])).toEqual([
      ['SandboxCreated', 1, 1],
      ['SandboxStarting', 2, 2],
    ]);
    expect(events[0]).toMatchObject({
      streamId: 'sandbox-a',
      payload: { kind: 'runc', z: 1, a: [1, { y: 2, x: 1 }] },
      stateBefore: 'none',
      stateAfter: 'created',
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      caller: 'test',
      prevHash: '0'.repeat(64),
    });
    expect(events[0]!.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(events[0]!.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(events[1]!.prevHash).toBe(events[0]!.hash);
  });

  it('given an event without trace, span or caller, when read back, then those fields are absent', () => {
    store.appendToStream('sandbox-a', [{ type: 'SandboxCreated', payload: {}, stateBefore: 'none', stateAfter: 'created' }], {
      expectedVersion: 0,
    });

    const [event] = store.readStream('sandbox-a');
    expect(event).not.toHaveProperty('traceId');
    expect(event).not.toHaveProperty('caller');
  });

  it('given a stream of three events, when read from version 2, then only versions 2 and 3 come back', () => {
    store.appendToStream('sandbox-a', [newEvent('A', 's0', 's1'), newEvent('B', 's1', 's2'), newEvent('C', 's2', 's3')], { expectedVersion: 0 });

    expect(store.readStream('sandbox-a', { fromVersion: 2 }).map((e) => e.type)).toEqual(['B', 'C']);
    expect(store.readStream('sandbox-missing')).toEqual([]);
  });

  it('given a stream at version 1, when a writer appends expecting version 0, then it gets a conflict and nothing is written', () => {
    store.appendToStream('sandbox-a', [newEvent('SandboxCreated', 'none', 'created')], { expectedVersion: 0 });

    const error = thrown(() =>
      store.appendToStream('sandbox-a', [newEvent('SandboxCreated', 'none', 'created')], { expectedVersion: 0 }),
    );

    expect(isKtsError(error, 'conflict')).toBe(true);
    expect((error as Error).message).toContain('stream sandbox-a is at version 1, but the writer expected 0');
    expect(store.readStream('sandbox-a')).toHaveLength(1);
    expect(store.readAll()).toHaveLength(1);
  });

  it('given no events or a bad expected version, when appended, then an invalid_argument error is thrown', () => {
    expect(isKtsError(thrown(() => store.appendToStream('sandbox-a', [], { expectedVersion: 0 })), 'invalid_argument')).toBe(true);
    expect(
      isKtsError(thrown(() => store.appendToStream('sandbox-a', [newEvent('A', 'x', 'y')], { expectedVersion: -1 })), 'invalid_argument'),
    ).toBe(true);
    expect(
      isKtsError(thrown(() => store.appendToStream('', [newEvent('A', 'x', 'y')], { expectedVersion: 0 })), 'invalid_argument'),
    ).toBe(true);
  });
});

describe('projections', () => {
  it('given a sandbox projection, when appended with its events, then the read model row is written and later updated', () => {
    store.appendToStream('sandbox-a', [newEvent('SandboxCreated', 'none', 'created')], {
      expectedVersion: 0,
      projection: { table: 'sandboxes', row: sandboxRow('a') },
    });
    store.appendToStream('sandbox-a', [newEvent('SandboxStarted', 'created', 'ready')], {
      expectedVersion: 1,
      projection: { table: 'sandboxes', row: sandboxRow('a', { state: 'ready', pid: 4242, taskAddress: 'ttrpc+unix:///run/a.sock', version: 2 }) },
    });

    expect(store.getSandbox('a')).toEqual(sandboxRow('a', { state: 'ready', pid: 4242, taskAddress: 'ttrpc+unix:///run/a.sock', version: 2 }));
    expect(store.listSandboxes()).toHaveLength(1);
    expect(store.getSandbox('missing')).toBeUndefined();
  });

  it('given a stale writer with a projection, when its append conflicts, then the read model keeps the old row', () => {
    store.appendToStream('sandbox-a', [newEvent('SandboxCreated', 'none', 'created')], {
      expectedVersion: 0,
      projection: { table: 'sandboxes', row: sandboxRow('a') },
    });

    const error = thrown(() =>
      store.appendToStream('sandbox-a', [newEvent('SandboxStopped', 'created', 'stopped')], {
        expectedVersion: 0,
        projection: { table: 'sandboxes', row: sandboxRow('a', { state: 'stopped' }) },
      }),
    );

    expect(isKtsError(error, 'conflict')).toBe(true);
    expect(store.getSandbox('a')?.state).toBe('created');
  });

  it('given a projection the schema rejects, when appended, then the events are rolled back with it', () => {
    const error = thrown(() =>
      store.appendToStream('container-c1', [newEvent('ContainerCreated', 'none', 'created')], {
        expectedVersion: 0,
        projection: { table: 'containers', row: containerRow('c1', 'no-such-sandbox') },
      }),
    );

    expect(isKtsError(error, 'failed_precondition')).toBe(true);
    expect(store.readStream('container-c1')).toEqual([]);
    expect(store.getContainer('c1')).toBeUndefined();
  });

  it('given containers in two sandboxes, when listed, then all or only one sandbox’s come back', () => {
    for (const sandboxId of ['a', 'b']) {
      store.appendToStream(`sandbox-${sandboxId}`, [newEvent('SandboxCreated', 'none', 'created')], {
        expectedVersion: 0,
        projection: { table: 'sandboxes', row: sandboxRow(sandboxId) },
      });
    }
    const exited = containerRow('c2', 'b', { state: 'stopped', exitStatus: 137, exitedAt: '2025-01-01T00:01:00.000Z', metadata: { image: 'busybox' } });
    store.appendToStream('container-c1', [newEvent('ContainerCreated', 'none', 'created')], {
      expectedVersion: 0,
      projection: { table: 'containers', row: containerRow('c1', 'a') },
    });
    store.appendToStream('container-c2', [newEvent('ContainerExited', 'running', 'stopped')], {
      expectedVersion: 0,
      projection: { table: 'containers', row: exited },
    });

    expect(store.listContainers().map((c) => c.id)).toEqual(['c1', 'c2']);
    expect(store.listContainers('b')).toEqual([exited]);
    expect(store.getContainer('c2')).toEqual(exited);
  });
});

describe('global order', () => {
  it('given appends interleaved across streams, when reading all, then the global sequence orders them and pages by afterSequence', () => {
    store.appendToStream('sandbox-a', [newEvent('A1', 'x', 'y')], { expectedVersion: 0 });
    store.appendToStream('container-c', [newEvent('C1', 'x', 'y')], { expectedVersion: 0 });
    store.appendToStream('sandbox-b', [newEvent('B1', 'x', 'y')], { expectedVersion: 0 });
    store.appendToStream('sandbox-a', [newEvent('A2', 'y', 'z')], { expectedVersion: 1 });

    const all = store.readAll();
    expect(all.map((e) => [e.sequence, e.streamId, e.type])).toEqual([
      [1, 'sandbox-a', 'A1'],
      [2, 'container-c', 'C1'],
      [3, 'sandbox-b', 'B1'],
      [4, 'sandbox-a', 'A2'],
    ]);
    all.slice(1).forEach((event, index) => expect(event.prevHash).toBe(all[index]!.hash));
    expect(store.readAll({ afterSequence: 1, limit: 2 }).map((e) => e.sequence)).toEqual([2, 3]);
  });

  it('given streams of several kinds, when listing by prefix, then matching ids come back in order of first appearance', () => {
    store.appendToStream('sandbox-z', [newEvent('A', 'x', 'y')], { expectedVersion: 0 });
    store.appendToStream('container-c', [newEvent('A', 'x', 'y')], { expectedVersion: 0 });
    store.appendToStream('sandbox-a', [newEvent('A', 'x', 'y')], { expectedVersion: 0 });
    store.appendToStream('sandbox-z', [newEvent('B', 'y', 'z')], { expectedVersion: 1 });
    store.appendToStream('sandbox_%x', [newEvent('A', 'x', 'y')], { expectedVersion: 0 });

    expect(store.listStreams('sandbox-')).toEqual(['sandbox-z', 'sandbox-a']);
    expect(store.listStreams('container-')).toEqual(['container-c']);
    expect(store.listStreams('sandbox_%')).toEqual(['sandbox_%x']);
    expect(store.listStreams('')).toEqual(['sandbox-z', 'container-c', 'sandbox-a', 'sandbox_%x']);
  });
});

describe('snapshots', () => {
  it('given a stream at version 2, when a snapshot is saved and replaced, then the latest one loads', () => {
    store.appendToStream('sandbox-a', [newEvent('A', 'x', 'y'), newEvent('B', 'y', 'z')], { expectedVersion: 0 });

    store.saveSnapshot({ streamId: 'sandbox-a', version: 1, state: { value: 'y' } });
    store.saveSnapshot({ streamId: 'sandbox-a', version: 2, state: { value: 'z', context: { pid: 7 } } });

    expect(store.loadSnapshot('sandbox-a')).toEqual({ streamId: 'sandbox-a', version: 2, state: { value: 'z', context: { pid: 7 } } });
    expect(store.loadSnapshot('sandbox-none')).toBeUndefined();
  });

  it('given a stream at version 1, when a snapshot claims version 5, then it is refused', () => {
    store.appendToStream('sandbox-a', [newEvent('A', 'x', 'y')], { expectedVersion: 0 });

    expect(isKtsError(thrown(() => store.saveSnapshot({ streamId: 'sandbox-a', version: 5, state: {} })), 'failed_precondition')).toBe(true);
    expect(store.loadSnapshot('sandbox-a')).toBeUndefined();
  });
});

describe('onAppended', () => {
  it('given a listener, when events are appended, then it sees them after they are committed', () => {
    const seen: Array<{ events: StoredEvent[]; visible: number }> = [];
    store.onAppended((events) => seen.push({ events, visible: store.readAll().length }));

    store.appendToStream('sandbox-a', [newEvent('A', 'x', 'y'), newEvent('B', 'y', 'z')], { expectedVersion: 0 });

    expect(seen).toHaveLength(1);
    expect(seen[0]!.visible).toBe(2);
    expect(seen[0]!.events).toEqual(store.readAll());
  });

  it('given a listener that throws, when events are appended, then the append succeeds and other listeners still run', () => {
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    const received: number[] = [];
    store.onAppended(() => {
      throw new Error('subscriber broke');
    });
    store.onAppended((events) => received.push(events[0]!.sequence));

    const first = store.appendToStream('sandbox-a', [newEvent('A', 'x', 'y')], { expectedVersion: 0 });
    const second = store.appendToStream('sandbox-a', [newEvent('B', 'y', 'z')], { expectedVersion: 1 });

    expect([first.lastSequence, second.lastSequence]).toEqual([1, 2]);
    expect(received).toEqual([1, 2]);
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('subscriber broke'), expect.anything());
    warn.mockRestore();
  });

  it('given an unsubscribed listener or a conflicting append, when appending, then the listener is not called', () => {
    const listener = vi.fn();
    const unsubscribe = store.onAppended(listener);
    store.appendToStream('sandbox-a', [newEvent('A', 'x', 'y')], { expectedVersion: 0 });
    thrown(() => store.appendToStream('sandbox-a', [newEvent('A', 'x', 'y')], { expectedVersion: 0 }));
    unsubscribe();
    store.appendToStream('sandbox-a', [newEvent('B', 'y', 'z')], { expectedVersion: 1 });

    expect(listener).toHaveBeenCalledTimes(1);
  });
});

describe('append-only triggers', () => {
  it('given stored events, when a raw connection tries UPDATE or DELETE on events, then SQLite aborts both', () => {
    store.appendToStream('sandbox-a', [newEvent('A', 'x', 'y')], { expectedVersion: 0 });
    const raw = new Database(temp.dbPath);
    try {
      expect(() => raw.prepare("UPDATE events SET type = 'Forged'").run()).toThrow(/append-only: UPDATE/);
      expect(() => raw.prepare('DELETE FROM events').run()).toThrow(/append-only: DELETE/);
    } finally {
      raw.close();
    }
    expect(store.readStream('sandbox-a').map((e) => e.type)).toEqual(['A']);
  });
});
