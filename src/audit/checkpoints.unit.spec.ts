import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openAuditKey, readPublicKey } from './auditKey.js';
import { checkAudit } from './auditCheck.js';
import { readHeadFile, signCheckpoint, signatureProblem, writeHeadFile } from './checkpoints.js';
import { exportTrailer, verifySlice } from './exportSlice.js';
import { eventLine } from './records.js';
import { openSqliteStore } from '../store/sqliteStore.js';

const made: string[] = [];
const dir = () => {
  const created = mkdtempSync(path.join(tmpdir(), 'kts-audit-'));
  made.push(created);
  return created;
};
afterEach(() => made.splice(0).forEach((created) => rmSync(created, { recursive: true, force: true })));
const HASH = 'a'.repeat(64);

describe('audit key and checkpoints', () => {
  it('given no key file, when opened, then it is made 0600 in a 0700 dir with its .pub, and opening again gives the same key', () => {
    const keyFile = path.join(dir(), 'audit', 'ed25519.key');
    const key = openAuditKey(keyFile);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(keyFile)).mode & 0o777).toBe(0o700);
    expect(readFileSync(`${keyFile}.pub`, 'utf8')).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    expect(openAuditKey(keyFile).keyId).toBe(key.keyId);
  });

  it('given a signed checkpoint, then it verifies with the key, and any altered field or another key is refused', () => {
    const keyFile = path.join(dir(), 'k');
    const key = openAuditKey(keyFile);
    const checkpoint = signCheckpoint({ sequence: 7, hash: HASH }, key);
    const publicKey = readPublicKey(`${keyFile}.pub`);
    expect(signatureProblem(checkpoint, publicKey)).toBeUndefined();
    expect(signatureProblem({ ...checkpoint, sequence: 8 }, publicKey)).toMatch(/does not verify/);
    expect(signatureProblem({ ...checkpoint, hash: 'b'.repeat(64) }, publicKey)).toMatch(/does not verify/);
    const other = openAuditKey(path.join(dir(), 'other'));
    expect(signatureProblem(signCheckpoint({ sequence: 7, hash: HASH }, other), publicKey)).toMatch(/not the trusted key/);
  });

  it('given a head file written, then it reads back; a missing one is undefined unless required', () => {
    const file = path.join(dir(), 'head.json');
    expect(readHeadFile(file, false)).toBeUndefined();
    expect(() => readHeadFile(file, true)).toThrow(/cannot be read/);
    const checkpoint = signCheckpoint({ sequence: 1, hash: HASH }, openAuditKey(path.join(dir(), 'k')));
    writeHeadFile(file, checkpoint);
    expect(readHeadFile(file, true)).toEqual(checkpoint);
  });
});

describe('checkAudit and export slices', () => {
  const given = (count: number) => {
    const store = openSqliteStore(':memory:');
    for (let version = 1; version <= count; version++) {
      store.appendToStream('node', [{ type: 'NodeStarted', payload: { n: version }, stateBefore: 'a', stateAfter: 'b' }], { expectedVersion: version - 1 });
    }
    return store;
  };

  it('given a checkpoint beyond the log, then it is a truncation at the first missing sequence', () => {
    const key = openAuditKey(path.join(dir(), 'k'));
    const store = given(3);
    const report = checkAudit(store, { publicKey: key.publicKey, headFile: { path: 'head.json', checkpoint: signCheckpoint({ sequence: 5, hash: HASH }, key) } });
    expect(report).toMatchObject({ ok: false, broken: { sequence: 4, problem: 'truncated' }, head: { sequence: 3 } });
  });

  it('given a checkpoint of the head, then the log verifies; a different hash there is a rewrite', () => {
    const key = openAuditKey(path.join(dir(), 'k'));
    const store = given(3);
    const head = store.readAll({ afterSequence: 2 })[0]!;
    store.appendCheckpoint(signCheckpoint(head, key));
    expect(checkAudit(store, { publicKey: key.publicKey })).toMatchObject({ ok: true, checkpointCount: 1, notes: [] });
    const forged = checkAudit(store, { publicKey: key.publicKey, headFile: { path: 'h', checkpoint: signCheckpoint({ sequence: 2, hash: HASH }, key) } });
    expect(forged).toMatchObject({ ok: false, broken: { sequence: 2, problem: 'rewritten' } });
  });

  it('given an export of the log and its covering checkpoint, then it verifies; an edited line is refused', () => {
    const key = openAuditKey(path.join(dir(), 'k'));
    const store = given(3);
    const events = store.readAll();
    store.appendCheckpoint(signCheckpoint(events.at(-1)!, key));
    const lines = [...events.map(eventLine), JSON.stringify(exportTrailer(3, store.listCheckpoints()))];
    expect(verifySlice(lines.join('\n'), key.publicKey)).toMatchObject({ ok: true, eventCount: 3, linkCount: 2 });
    lines[1] = lines[1]!.replace('"n\\":2', '"n\\":9');
    expect(verifySlice(lines.join('\n'), key.publicKey)).toMatchObject({ ok: false, broken: { sequence: 2, reason: expect.stringMatching(/^hash mismatch/) } });
    expect(exportTrailer(4, store.listCheckpoints())).toEqual({ checkpoint: null, note: expect.stringMatching(/^no checkpoint covers sequence 4 yet/) });
  });
});
