import { afterEach, describe, expect, it } from 'vitest';
import { sandboxMachine, type SandboxContext, type SandboxEvent } from '../../machines/sandboxMachine.js';
import { isKtsError } from '../core/errors.js';
import type { EventStore } from '../core/store.js';
import { openSqliteStore } from '../store/sqliteStore.js';
import { makeTempDir } from '../store/sqliteStore.fixtures.js';
import { readySandbox, sandboxCreated } from './engine.testkit.js';
import { checkDerivedState } from './derivedState.js';
import { Entity } from './entity.js';
import { sandboxProjection } from './projections.js';

// Given a stream, when an event is recorded (or the stream loaded), then the log, the read model and the actor agree.
const temp = makeTempDir();
let store: EventStore | undefined;
const openStore = () => (store = openSqliteStore(temp.dbPath));
afterEach(() => {
  store?.close();
  temp.remove();
});

const STREAM = 'sandbox-p1';
const newEntity = (events: SandboxEvent[]) => {
  const entity = new Entity<SandboxContext, SandboxEvent>(STREAM, sandboxMachine, store!, sandboxProjection);
  for (const event of events) entity.record(event, { caller: 'spec' });
  return entity;
};
const load = () => Entity.load<SandboxContext, SandboxEvent>(STREAM, sandboxMachine, store!, sandboxProjection);

describe('Entity', () => {
  it('given a created sandbox, when SandboxStartRequested is recorded, then it is in the log, the read model and the actor', () => {
    openStore();
    const entity = newEntity([sandboxCreated('p1')]);
    const stored = entity.record({ type: 'SandboxStartRequested' }, { caller: 'spec' });
    expect(stored).toMatchObject({ streamId: STREAM, streamVersion: 2, type: 'SandboxStartRequested', stateBefore: 'created', stateAfter: 'starting', caller: 'spec' });
    expect(store!.getSandbox('p1')).toMatchObject({ state: 'starting', version: 2 });
    expect([entity.state, entity.streamVersion]).toEqual(['starting', 2]);
  });

  it('given a created sandbox, when an event its state refuses is recorded, then FAILED_PRECONDITION and nothing changes', () => {
    openStore();
    const entity = newEntity([sandboxCreated('p1')]);
    let refusal: unknown;
    try {
      entity.record({ type: 'SandboxStopped', exitStatus: 0, exitedAt: '2026-01-01T00:00:00.000Z' }, { caller: 'spec' }, 'sandbox p1');
    } catch (error) {
      refusal = error;
    }
    expect(isKtsError(refusal, 'failed_precondition')).toBe(true);
    expect((refusal as Error).message).toBe('sandbox p1 is created: SandboxStopped is not allowed there');
    expect([entity.state, entity.streamVersion, store!.readStream(STREAM).length]).toEqual(['created', 1, 1]);
  });

  it('given a ready sandbox, then it has the running tag and can be stopped but not started', () => {
    openStore();
    const entity = newEntity(readySandbox('p1'));
    expect(entity.hasTag('running')).toBe(true);
    expect(entity.can({ type: 'SandboxStopRequested', timeoutMs: 1 })).toBe(true);
    expect(entity.can({ type: 'SandboxStartRequested' })).toBe(false);
  });

  it('given a stream longer than a snapshot interval, when loaded, then the snapshot plus the events after it give the same state', () => {
    openStore();
    const updates: SandboxEvent[] = Array.from({ length: 54 }, (_, n) => ({ type: 'SandboxUpdated', labels: { n: String(n) } }));
    const entity = newEntity([...readySandbox('p1'), ...updates]);
    expect(store!.loadSnapshot(STREAM)?.version).toBe(50);
    const loaded = load();
    expect([loaded.state, loaded.streamVersion, loaded.context]).toEqual([entity.state, 57, entity.context]);
    loaded.record({ type: 'SandboxStopRequested', timeoutMs: 1 }, { caller: 'spec' });
    expect(loaded.streamVersion).toBe(58);
  });

  it('given an edited read-model row or snapshot, then the check of derived state names each against a replay of the chain', () => {
    openStore();
    newEntity([...readySandbox('p1'), ...Array.from({ length: 50 }, (_, n): SandboxEvent => ({ type: 'SandboxUpdated', labels: { n: String(n) } }))]);
    expect(checkDerivedState(store!)).toEqual([]);
    const row = store!.getSandbox('p1')!;
    store!.appendToStream('sandbox-p2', [{ type: 'SandboxCreated', payload: { ...sandboxCreated('p2'), type: undefined }, stateBefore: 'absent', stateAfter: 'created', caller: 'spec' }],
      { expectedVersion: 0, projection: { table: 'sandboxes', row: { ...row, id: 'p2', name: 'pod-p2', uid: undefined, state: 'ready', pid: 1 } as never } });
    store!.saveSnapshot({ streamId: STREAM, version: 50, state: { forged: true } });
    expect(checkDerivedState(store!)).toEqual([
      { streamId: STREAM, what: 'snapshot', reason: 'it differs from the replay of the stream\'s first 50 events' },
      { streamId: 'sandbox-p2', what: 'row', reason: expect.stringMatching(/^its .*state.* differ from what its events give$/) },
    ]);
  });

  it('given a log the machine disagrees with, when loaded, then FAILED_PRECONDITION naming the stored event', () => {
    openStore();
    newEntity([sandboxCreated('p1')]);
    const projection = store!.getSandbox('p1')!;
    store!.appendToStream(STREAM, [{ type: 'SandboxRemoved', payload: {}, stateBefore: 'created', stateAfter: 'removed', caller: 'forged' }],
      { expectedVersion: 1, projection: { table: 'sandboxes', row: projection } });
    expect(load).toThrow(`${STREAM}: stored event #2 SandboxRemoved is not legal in created; the log and the machine disagree`);
  });
});
