import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EventStore } from '../core/store.js';
import { stableStringify } from './canonicalJson.js';
import { eventHash } from './eventChain.js';
import { makeTempDir, newEvent } from './sqliteStore.fixtures.js';
import { openSqliteStore } from './sqliteStore.js';

let temp: ReturnType<typeof makeTempDir>;
let store: EventStore;

beforeEach(() => {
  temp = makeTempDir();
  store = openSqliteStore(temp.dbPath);
  store.appendToStream('sandbox-a', [newEvent('SandboxCreated', 'none', 'created', { kind: 'vmm' })], { expectedVersion: 0 });
  store.appendToStream('container-c', [newEvent('ContainerCreated', 'none', 'created', { image: 'busybox' })], { expectedVersion: 0 });
  store.appendToStream('sandbox-a', [newEvent('SandboxStopped', 'created', 'stopped', { reason: 'requested' })], { expectedVersion: 1 });
});

afterEach(() => {
  store.close();
  temp.remove();
});

/** Edits events behind the store's back, the way an attacker with file access would: drop the guard, write, leave. */
function tamper(sql: string): void {
  store.close();
  tamperLive(sql);
  store = openSqliteStore(temp.dbPath);
}

describe('verifyChain', () => {
  it('given an untouched log, when verified, then it is ok and counts every event', () => {
    expect(store.verifyChain()).toEqual({ ok: true, eventCount: 3 });
  });

  it('given an empty log, when verified, then it is ok with no events', () => {
    const emptyTemp = makeTempDir();
    const empty = openSqliteStore(emptyTemp.dbPath);
    try {
      expect(empty.verifyChain()).toEqual({ ok: true, eventCount: 0 });
    } finally {
      empty.close();
      emptyTemp.remove();
    }
  });

  it('given a payload edited in place, when verified, then that sequence is reported as altered', () => {
    tamper(`UPDATE events SET payload = '{"image":"evil"}' WHERE sequence = 2`);

    const verification = store.verifyChain();

    expect(verification).toMatchObject({ ok: false, eventCount: 1, brokenAtSequence: 2, streamId: 'container-c', type: 'ContainerCreated', problem: 'hash_mismatch' });
    expect(verification.ok === false && verification.reason).toMatch(/does not match the recomputed .*altered/);
  });

  it('given a payload rewritten with the same meaning but other key order, when verified, then the edit is still caught', () => {
    tamper(`UPDATE events SET payload = '{ "reason": "requested" }' WHERE sequence = 3`);

    expect(store.verifyChain()).toMatchObject({ ok: false, brokenAtSequence: 3 });
  });

  it('given an edited event whose own hash was recomputed, when verified, then the next event’s broken link is reported', () => {
    const forged = store.readAll()[0]!;
    const payload = stableStringify({ kind: 'runc' });
    const hash = eventHash({
      sequence: 1,
      stream_id: forged.streamId,
      stream_version: 1,
      type: forged.type,
      payload,
      state_before: forged.stateBefore,
      state_after: forged.stateAfter,
      trace_id: forged.traceId ?? null,
      span_id: forged.spanId ?? null,
      caller: forged.caller ?? null,
      time: forged.time,
      prev_hash: forged.prevHash,
    });
    tamper(`UPDATE events SET payload = '${payload}', hash = '${hash}' WHERE sequence = 1`);

    const verification = store.verifyChain();

    expect(verification).toMatchObject({ ok: false, eventCount: 1, brokenAtSequence: 2, streamId: 'container-c', problem: 'broken_link' });
    expect(verification.ok === false && verification.reason).toMatch(/prev_hash/);
  });

  it('given a stream version renumbered, when verified, then the gap in that stream is reported', () => {
    tamper('UPDATE events SET stream_version = 5 WHERE sequence = 3');

    const verification = store.verifyChain();

    expect(verification).toMatchObject({ ok: false, eventCount: 2, brokenAtSequence: 3, streamId: 'sandbox-a', problem: 'version_gap' });
    expect(verification.ok === false && verification.reason).toBe('stream sandbox-a jumps to version 5, expected 2');
  });

  it('given an event deleted from the middle, when verified, then the gap is reported at the event after it', () => {
    tamper('DELETE FROM events WHERE sequence = 2');

    const verification = store.verifyChain();

    expect(verification).toMatchObject({ ok: false, brokenAtSequence: 3, streamId: 'sandbox-a', type: 'SandboxStopped', problem: 'missing_events' });
    expect(verification.ok === false && verification.reason).toMatch(/missing/);
  });
});

/** The same edit while the store stays open, as a second writer on the file would make it. */
function tamperLive(sql: string): void {
  const raw = new Database(temp.dbPath);
  try {
    raw.exec('DROP TRIGGER IF EXISTS events_append_only_no_update; DROP TRIGGER IF EXISTS events_append_only_no_delete;');
    raw.exec(sql);
  } finally {
    raw.close();
  }
}

describe('verifyChain since the last intact check (what kts history runs)', () => {
  it('given a verified log, when more events are appended, then only they are walked and the count covers the whole log', () => {
    expect(store.verifyChain({ since: 'checkpoint' })).toEqual({ ok: true, eventCount: 3 });
    store.appendToStream('container-c', [newEvent('ContainerStarted', 'created', 'running', { pid: 7 })], { expectedVersion: 1 });
    expect(store.verifyChain({ since: 'checkpoint' })).toEqual({ ok: true, eventCount: 4 });
  });

  it('given an event appended after the check and then altered, then the next check finds it', () => {
    store.verifyChain({ since: 'checkpoint' });
    store.appendToStream('container-c', [newEvent('ContainerStarted', 'created', 'running', { pid: 7 })], { expectedVersion: 1 });
    tamperLive(`UPDATE events SET payload = '{"pid":8}' WHERE sequence = 4`);
    expect(store.verifyChain({ since: 'checkpoint' })).toMatchObject({ ok: false, brokenAtSequence: 4, problem: 'hash_mismatch' });
  });

  it('given an event altered before the checkpoint, then the streams asked for are re-hashed in full, and kts verify finds the rest', () => {
    store.verifyChain({ since: 'checkpoint' });
    tamperLive(`UPDATE events SET payload = '{"image":"evil"}' WHERE sequence = 2`);
    expect(store.verifyChain({ since: 'checkpoint', streams: ['sandbox-a'] })).toEqual({ ok: true, eventCount: 3 });
    expect(store.verifyChain({ since: 'checkpoint', streams: ['container-c'] })).toMatchObject({ ok: false, brokenAtSequence: 2, streamId: 'container-c', problem: 'hash_mismatch' });
    expect(store.verifyChain()).toMatchObject({ ok: false, brokenAtSequence: 2 });
  });

  it('given the event before one of a stream deleted, then that stream\'s check reports the broken link', () => {
    store.verifyChain({ since: 'checkpoint' });
    tamperLive('DELETE FROM events WHERE sequence = 2');
    expect(store.verifyChain({ since: 'checkpoint', streams: ['sandbox-a'] })).toMatchObject({ ok: false, brokenAtSequence: 3, problem: 'broken_link' });
  });
});
