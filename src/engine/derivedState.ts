import { isDeepStrictEqual } from 'node:util';
import type { AnyStateMachine } from 'xstate';
import { containerMachine, sandboxMachine } from '../../machines/index.js';
import { errorMessage } from '../core/errors.js';
import type { ContainerRow, EventStore, SandboxRow } from '../core/store.js';
import { replayStored, snapshotMismatch, type EntitySnapshot, type ProjectFn } from './entity.js';
import { containerProjection, sandboxProjection } from './projections.js';

/**
 * The tables the hash chain does not cover — the `sandboxes` and `containers` read model and the
 * `snapshots` recovery may read — checked against a replay of the chain, which alone is evidence.
 */
export interface DerivedProblem {
  streamId: string;
  what: 'snapshot' | 'row' | 'events';
  reason: string;
}

/** Each stream replayed: its saved snapshot and its read-model row compared with what the events give. */
export function checkDerivedState(store: EventStore): DerivedProblem[] {
  const problems: DerivedProblem[] = [];
  const kinds = [
    { prefix: 'sandbox-', machine: sandboxMachine, project: sandboxProjection, rows: store.listSandboxes() },
    { prefix: 'container-', machine: containerMachine, project: containerProjection, rows: store.listContainers() },
  ];
  for (const { prefix, machine, project, rows } of kinds) {
    const byId = new Map<string, SandboxRow | ContainerRow>(rows.map((row) => [row.id, row]));
    for (const streamId of store.listStreams(prefix)) {
      const id = streamId.slice(prefix.length);
      try {
        const reason = checkStream(store, streamId, machine as AnyStateMachine, project as ProjectFn<unknown>, byId.get(id), problems);
        if (reason) problems.push({ streamId, what: 'row', reason });
      } catch (error) {
        // A stream the machine refuses (a tampered payload, say): the chain check names the row; this says the replay failed.
        problems.push({ streamId, what: 'events', reason: `they cannot be replayed: ${errorMessage(error)}` });
      }
      byId.delete(id);
    }
    for (const id of byId.keys()) problems.push({ streamId: `${prefix}${id}`, what: 'row', reason: 'a row with no events behind it' });
  }
  return problems;
}

/** The stream replayed from its first event: its saved snapshot (if any) checked against the replay at its version, then its row against the end. */
function checkStream(store: EventStore, streamId: string, machine: AnyStateMachine, project: ProjectFn<unknown>, row: SandboxRow | ContainerRow | undefined, problems: DerivedProblem[]): string | undefined {
  const stored = store.readStream(streamId);
  const saved = store.loadSnapshot(streamId);
  const snapshotReason = saved && snapshotMismatch(streamId, machine, stored, saved);
  if (snapshotReason) problems.push({ streamId, what: 'snapshot', reason: snapshotReason });
  const replayed = replayStored(streamId, machine, stored) as unknown as EntitySnapshot<unknown>;
  const expected = project(replayed, stored.at(-1)?.streamVersion ?? 0)?.row;
  if (!row) return 'its events have no row';
  return rowMismatch(expected!, row);
}

/** The fields where a stored row differs from the one its events give (updatedAt is the time of the write, not of the log). */
export function rowMismatch(expected: SandboxRow | ContainerRow, actual: SandboxRow | ContainerRow): string | undefined {
  const asStored = (row: object) => JSON.parse(JSON.stringify({ ...row, updatedAt: undefined })) as Record<string, unknown>;
  const want = asStored(expected);
  const have = asStored(actual);
  const fields = [...new Set([...Object.keys(want), ...Object.keys(have)])].filter((key) => !isDeepStrictEqual(want[key], have[key]));
  return fields.length === 0 ? undefined : `its ${fields.join(', ')} ${fields.length === 1 ? 'differs' : 'differ'} from what its events give`;
}
