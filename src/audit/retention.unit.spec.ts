import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import type { SandboxEvent } from '../../machines/sandboxMachine.js';
import { history } from '../engine/queries.js';
import { givenClosedAfterEach, readySandbox, runningContainer, sandboxCreated } from '../engine/engine.testkit.js';
import { eventHash } from '../store/eventChain.js';
import { verifyStoreFile } from '../store/sqliteStore.js';
import { pruneOnce, type RecordSigner } from './retention.js';

// Retention over a real SQLite file: what leaves the log, what stays, and that both still verify.
const given = givenClosedAfterEach();
const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((dir) => rmSync(dir, { recursive: true, force: true })));
const archiveDir = () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'kts-archive-'));
  dirs.push(dir);
  return dir;
};
const signer: RecordSigner = { keyId: 'k'.repeat(64), sign: (text) => `signed:${text.length}` };
const removed = (id: string): SandboxEvent[] => [sandboxCreated(id), { type: 'SandboxShutdownRequested' }, { type: 'SandboxRemoved' }];

describe('retention', () => {
  it('over its cap, archives the removed pods at the log\'s start, keeps the live one, and both halves verify', async () => {
    const spec = given({ sandboxes: { old1: removed('old1'), old2: removed('old2'), live: readySandbox('live') }, containers: { c1: runningContainer('c1', 'live') } });
    const { store } = spec;
    const dir = archiveDir();
    const prune = await pruneOnce(store, { retainDays: 0, retainEvents: 5 }, { archiveDir: dir, signer });
    expect(prune).toMatchObject({ upToSequence: 6, eventCount: 6, streamVersions: {}, archive: path.join(dir, 'events-1-6.jsonl.gz') });
    expect(store.readAll().map((event) => event.sequence)).toEqual([7, 8, 9, 10, 11, 12, 13]);
    expect(store.listSandboxes().map((row) => row.id)).toEqual(['live']);
    expect(store.findArchivedPod('pod-old1')).toMatchObject({ sandboxId: 'old1', archive: prune!.archive, upToSequence: 6 });
    expect(() => history(store, 'default/pod-old2')).toThrow(`pod old2 (default/pod-old2) was archived by retention: its events, up to sequence 6, are in ${prune!.archive}`);
    expect(store.verifyChain()).toEqual({ ok: true, eventCount: 7 });
    expect(store.verifyChain({ since: 'checkpoint', streams: ['sandbox-live', 'container-c1'] }).ok).toBe(true);
    // The log goes on from where it was: the next event is 14, linked to 13.
    const head = store.readAll().at(-1)!;
    store.appendToStream('sandbox-new', [{ type: 'SandboxCreated', payload: { ...sandboxCreated('new'), type: undefined }, stateBefore: 'absent', stateAfter: 'created' }], { expectedVersion: 0 });
    expect(store.readAll({ afterSequence: 13 })[0]).toMatchObject({ sequence: 14, prevHash: head.hash });
    // The archive: each event re-hashes to itself and links to the one before; the signed record last.
    const lines = gunzipSync(readFileSync(prune!.archive)).toString().trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines.at(-1)).toEqual({ prune });
    const events = lines.slice(0, -1);
    expect(events.map((line) => line.sequence)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const [index, line] of events.entries()) {
      const record = { sequence: line.sequence, stream_id: line.streamId, stream_version: line.streamVersion, type: line.type, payload: line.payloadJson, state_before: line.stateBefore,
        state_after: line.stateAfter, trace_id: line.traceId, span_id: line.spanId, caller: line.caller, time: line.time, prev_hash: line.prevHash };
      expect(eventHash(record as never)).toBe(line.hash);
      if (index > 0) expect(line.prevHash).toBe(events[index - 1]!.hash);
    }
  });

  it('by age, archives only pods removed before the horizon, and nothing while a younger event stands first', async () => {
    const spec = given({ sandboxes: { old1: removed('old1'), live: readySandbox('live') } });
    const dir = archiveDir();
    expect(await pruneOnce(spec.store, { retainDays: 1, retainEvents: 0 }, { archiveDir: dir, signer })).toBeUndefined();
    const later = new Date(Date.now() + 2 * 86_400_000);
    expect(await pruneOnce(spec.store, { retainDays: 1, retainEvents: 0 }, { archiveDir: dir, signer, now: later })).toMatchObject({ upToSequence: 3 });
    expect(await pruneOnce(spec.store, { retainDays: 1, retainEvents: 0 }, { archiveDir: dir, signer, now: later })).toBeUndefined();
  });

  it('never splits a pod: one removed after a live pod\'s first event stays whole, with everything after it', async () => {
    const spec = given({ sandboxes: { early: [sandboxCreated('early')], live: [sandboxCreated('live')] } });
    const { store } = spec;
    const removeEarly = (await spec.engine()).shutdownSandbox('early', { caller: 'spec' });
    await removeEarly;
    // The log: early created (1), live created (2), early's shutdown (3, 4): early goes on past live's first event.
    expect(store.readAll().map((event) => `${event.sequence} ${event.streamId} ${event.type}`)).toEqual([
      '1 sandbox-early SandboxCreated', '2 sandbox-live SandboxCreated', '3 sandbox-early SandboxShutdownRequested', '4 sandbox-early SandboxRemoved',
    ]);
    expect(await pruneOnce(store, { retainDays: 0, retainEvents: 1 }, { archiveDir: archiveDir(), signer })).toBeUndefined();
    expect(store.verifyChain()).toEqual({ ok: true, eventCount: 4 });
  });

  it('lets no event the prunes do not cover be deleted, and verifies a pruned store file offline', async () => {
    const spec = given({ sandboxes: { old1: removed('old1'), live: readySandbox('live') } });
    await pruneOnce(spec.store, { retainDays: 0, retainEvents: 1 }, { archiveDir: archiveDir(), signer });
    const file = spec.storePath;
    const db = new Database(file);
    try {
      expect(() => db.prepare('DELETE FROM events WHERE sequence = 4').run()).toThrow(/append-only: DELETE is allowed only of events a recorded prune moved/);
      expect(() => db.prepare('DELETE FROM prunes').run()).toThrow(/prunes are append-only/);
    } finally {
      db.close();
    }
    expect(verifyStoreFile(file)).toEqual({ ok: true, eventCount: 3 });
  });
});
