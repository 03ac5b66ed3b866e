// Anchored heads (issue 19, items 2 and 3): a real daemon signs checkpoints into its SQLite file and head.json,
// and `kts audit verify` (the real CLI, offline on copies of the file) catches what the chain alone cannot:
// a cut tail, a replaced tail, a whole re-hashed chain (even re-signed with another key); an exported
// slice verifies with the public key alone, and a tampered one is refused.
import { copyFileSync, existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openAuditKey } from '../src/audit/auditKey.js';
import { signCheckpoint, writeHeadFile } from '../src/audit/checkpoints.js';
import { eventHash } from '../src/store/eventChain.js';
import type { EventRecord } from '../src/store/rows.js';
import { REPO, TestDaemon, canRunContainers } from './helpers/daemon.js';

const skip = canRunContainers();
const POD = path.join(REPO, 'examples/pod.yaml');
const BUSYBOX = path.join(REPO, 'examples/busybox.yaml');

/** A copy of the stopped daemon's store that an attacker with write access edits: the append-only triggers dropped first. */
function tamperedCopy(daemon: TestDaemon, name: string, edit: (db: Database.Database) => void): string {
  const copy = path.join(daemon.root, `${name}.db`);
  copyFileSync(daemon.db, copy);
  const db = new Database(copy);
  try {
    for (const trigger of ['events_append_only_no_update', 'events_append_only_no_delete', 'checkpoints_append_only_no_update', 'checkpoints_append_only_no_delete']) {
      db.exec(`DROP TRIGGER IF EXISTS ${trigger}`);
    }
    edit(db);
  } finally {
    db.close();
  }
  return copy;
}

const headOf = (db: Database.Database) => db.prepare<[], { sequence: number }>('SELECT MAX(sequence) AS sequence FROM events').get()!.sequence;
const rows = (db: Database.Database, after: number) => db.prepare<[number], EventRecord>('SELECT * FROM events WHERE sequence > ? ORDER BY sequence').all(after);

/** Rewrites every event from `from` on with a consistent chain: each one re-hashed over its new prev hash. */
function rehashFrom(db: Database.Database, from: number): void {
  let prevHash = db.prepare<[number], { hash: string }>('SELECT hash FROM events WHERE sequence = ?').get(from - 1)!.hash;
  const update = db.prepare('UPDATE events SET prev_hash = ?, hash = ? WHERE sequence = ?');
  for (const row of rows(db, from - 1)) {
    const hash = eventHash({ ...row, prev_hash: prevHash });
    update.run(prevHash, hash, row.sequence);
    prevHash = hash;
  }
}

describe.skipIf(skip)(`audit checkpoints and export${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon('[audit]\ncheckpoint_every = 5');
  const auditDir = () => path.join(daemon.root, 'audit');
  const pub = () => path.join(auditDir(), 'ed25519.key.pub');
  const head = () => path.join(auditDir(), 'head.json');
  let headSequence: number;
  let removedPod: string;
  let keptPod: string;
  const verifyCopy = (copy: string, ...extra: string[]) => daemon.kts('audit', 'verify', '--db', copy, '--key', pub(), '--head', head(), ...extra);

  beforeAll(async () => {
    await daemon.start();
    const first = JSON.parse(daemon.ktsOk('run', '--json', POD, BUSYBOX)) as { podId: string };
    daemon.ktsOk('rm', first.podId);
    removedPod = first.podId;
    keptPod = (JSON.parse(daemon.ktsOk('run', '--json', POD, BUSYBOX)) as { podId: string }).podId;
    // SIGTERM: the daemon signs its head as it stops.
    await daemon.stop();
    const db = new Database(daemon.db, { readonly: true });
    headSequence = headOf(db);
    db.close();
  }, 120_000);
  afterAll(() => daemon.cleanup());

  it('given a stopped daemon, then its key is private, head.json holds the signed head, and the log line said so', () => {
    expect(statSync(path.join(auditDir(), 'ed25519.key')).mode & 0o777).toBe(0o600);
    expect(statSync(auditDir()).mode & 0o777).toBe(0o700);
    expect(JSON.parse(readFileSync(head(), 'utf8'))).toMatchObject({ sequence: headSequence, hash: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(daemon.logs).toMatch(new RegExp(`"sequence":${headSequence},"hash":"[0-9a-f]{64}","signature":"[^"]+".*"msg":"audit checkpoint"`));
  });

  it('given the untouched file, when verified offline with the key and head.json, then it exits 0 and prints the head and the newest checkpoint', () => {
    const verify = verifyCopy(daemon.db);

    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(new RegExp(`^ok: ${headSequence} events, hash chain intact\\ncheckpoints: \\d+, signatures checked against key [0-9a-f]{16}…; newest at sequence ${headSequence}, hash [0-9a-f]{64}, signed \\S+ \\(table\\)\\nhead: sequence ${headSequence}, hash [0-9a-f]{64}, time \\S+\\n$`));
    expect(JSON.parse(verifyCopy(daemon.db, '--json').stdout)).toMatchObject({ ok: true, head: { sequence: headSequence }, newestCheckpoint: { sequence: headSequence } });
  });

  it('given the last two events deleted from a copy, when `kts audit verify --db` checks it, then it exits 3 naming the first missing sequence', () => {
    const copy = tamperedCopy(daemon, 'truncated', (db) => db.prepare('DELETE FROM events WHERE sequence > ?').run(headSequence - 2));

    const verify = verifyCopy(copy);

    expect(verify.code).toBe(3);
    expect(verify.stdout).toMatch(/^ok: \d+ events, hash chain intact\n/);
    expect(verify.stdout).toMatch(new RegExp(`BROKEN at sequence ${headSequence - 1}: log truncated: the log ends at sequence ${headSequence - 2}, but the checkpoint at sequence ${headSequence} \\(table, signed \\S+\\) vouches for more: events ${headSequence - 1}..${headSequence} are missing\n`));
  });

  it('given the last two events replaced by a consistent tail, when verified, then it exits 3 at the first checkpoint in the replaced part', () => {
    let signed = 0;
    const copy = tamperedCopy(daemon, 'replaced', (db) => {
      db.prepare('UPDATE events SET payload = ? WHERE sequence >= ?').run('{"replaced":true}', headSequence - 1);
      rehashFrom(db, headSequence - 1);
      signed = db.prepare<[number], { sequence: number }>('SELECT MIN(sequence) AS sequence FROM checkpoints WHERE sequence >= ?').get(headSequence - 1)!.sequence;
    });

    const verify = verifyCopy(copy);

    expect(verify.code).toBe(3);
    expect(verify.stdout).toMatch(/^ok: \d+ events, hash chain intact\n/);
    expect(verify.stdout).toMatch(new RegExp(`\nBROKEN at sequence ${signed}: log rewritten: event ${signed} has hash [0-9a-f]{64}, but the checkpoint at sequence ${signed} \\(table, signed \\S+\\) signed [0-9a-f]{64}: the log was rewritten somewhere in \\d+..${signed}\n`));
  });

  it('given the whole chain rewritten from event 2 and re-hashed, when verified, then it exits 3 at the first checkpoint', () => {
    let firstCheckpoint = 0;
    const copy = tamperedCopy(daemon, 'rewritten', (db) => {
      db.prepare('UPDATE events SET caller = ? WHERE sequence = 2').run('someone-else');
      rehashFrom(db, 2);
      firstCheckpoint = db.prepare<[], { sequence: number }>('SELECT MIN(sequence) AS sequence FROM checkpoints').get()!.sequence;
    });

    const verify = verifyCopy(copy);

    expect(firstCheckpoint).toBeLessThan(headSequence);
    expect(verify.code).toBe(3);
    expect(verify.stdout).toMatch(/^ok: \d+ events, hash chain intact\n/);
    expect(verify.stdout).toContain(`BROKEN at sequence ${firstCheckpoint}: log rewritten: event ${firstCheckpoint} has hash`);
    expect(verify.stdout).toContain(`the log was rewritten somewhere in 1..${firstCheckpoint}`);
  });

  it('given the rewritten chain re-signed with the attacker\'s own key (table and head.json), when verified with the real key, then it exits 3', () => {
    // The attacker's key lives under the daemon's root, removed with it.
    const attacker = openAuditKey(path.join(mkdtempSync(path.join(daemon.root, 'attacker-')), 'ed25519.key'));
    const forgedHead = path.join(daemon.root, 'forged-head.json');
    let firstCheckpoint = 0;
    const copy = tamperedCopy(daemon, 'resigned', (db) => {
      db.prepare('UPDATE events SET caller = ? WHERE sequence = 2').run('someone-else');
      rehashFrom(db, 2);
      const signed = db.prepare<[], { sequence: number }>('SELECT sequence FROM checkpoints ORDER BY sequence').all().map(({ sequence }) => {
        const { hash } = db.prepare<[number], { hash: string }>('SELECT hash FROM events WHERE sequence = ?').get(sequence)!;
        return signCheckpoint({ sequence, hash }, attacker);
      });
      db.exec('DELETE FROM checkpoints');
      const insert = db.prepare('INSERT INTO checkpoints (sequence, hash, time, key_id, signature) VALUES (?, ?, ?, ?, ?)');
      for (const c of signed) insert.run(c.sequence, c.hash, c.time, c.keyId, c.signature);
      writeHeadFile(forgedHead, signed.at(-1)!);
      firstCheckpoint = signed[0]!.sequence;
    });

    const verify = daemon.kts('audit', 'verify', '--db', copy, '--key', pub(), '--head', forgedHead);

    expect(verify.code).toBe(3);
    expect(verify.stdout).toMatch(new RegExp(`BROKEN at sequence ${firstCheckpoint}: checkpoint not signed by the trusted key: the checkpoint at sequence ${firstCheckpoint} \\(table, signed \\S+\\): it is signed by key ${attacker.keyId.slice(0, 16)}…, not the trusted key [0-9a-f]{16}…`));
    // With only the attacker's public key the forgery would pass: the trusted key must come from elsewhere.
    expect(daemon.kts('audit', 'verify', '--db', copy, '--key', `${path.dirname(forgedHead)}/none.pub`).code).toBe(1);
  });

  describe('export', () => {
    let slice: string;

    beforeAll(async () => {
      await daemon.start();
      slice = path.join(daemon.root, 'pod.jsonl');
      // Removed before the shutdown checkpoint: a checkpoint covers all of its events.
      daemon.ktsOk('audit', 'export', '--pod', removedPod, '--out', slice);
    }, 60_000);

    it('given the daemon running again, when `kts audit verify` asks it, then the chain and checkpoints verify', () => {
      const verify = daemon.kts('audit', 'verify');

      expect(verify.code).toBe(0);
      expect(verify.stdout).toMatch(/^ok: \d+ events, hash chain intact\ncheckpoints: \d+, signatures checked against key [0-9a-f]{16}…; newest at sequence \d+/);
      expect(daemon.kts('verify').stdout).toMatch(/^ok: \d+ events, hash chain intact\n/);
    });

    it('given a pod\'s exported slice, when verified offline with the public key, then it exits 0: every event re-hashed and the covering checkpoint signed', () => {
      const lines = readFileSync(slice, 'utf8').trim().split('\n');
      expect(JSON.parse(lines.at(-1)!)).toMatchObject({ checkpoint: { sequence: expect.any(Number) } });

      const verify = daemon.kts('audit', 'verify', '--file', slice, '--key', pub());

      expect(verify.code).toBe(0);
      expect(verify.stdout).toMatch(new RegExp(`^ok: ${lines.length - 1} events re-hashed, \\d+ links checked; covering checkpoint at sequence \\d+ \\(signed \\S+\\) verified with key [0-9a-f]{16}…\\n`));
    });

    it('given one exported payload edited, when verified offline, then it exits 3 naming the event', () => {
      const lines = readFileSync(slice, 'utf8').trim().split('\n');
      const edited = JSON.parse(lines[1]!) as { sequence: number; payloadJson: string };
      lines[1] = JSON.stringify({ ...edited, payloadJson: '{"edited":true}' });
      const tampered = path.join(daemon.root, 'tampered.jsonl');
      writeFileSync(tampered, lines.join('\n') + '\n');

      const verify = daemon.kts('audit', 'verify', '--file', tampered, '--key', pub());

      expect(verify.code).toBe(3);
      expect(verify.stdout).toMatch(new RegExp(`^BROKEN at sequence ${edited.sequence}: hash mismatch: stored hash [0-9a-f]{64} does not match the recomputed [0-9a-f]{64}: the event was altered`));
    });

    it('given a pod recovery has written to since the last checkpoint, when exported and verified, then the slice says no checkpoint covers it yet', () => {
      const lines = daemon.ktsOk('audit', 'export', '--pod', keptPod).trim().split('\n');
      expect(JSON.parse(lines.at(-1)!)).toEqual({ checkpoint: null, note: expect.stringMatching(/^no checkpoint covers sequence \d+ yet/) });
      const unsigned = path.join(daemon.root, 'kept.jsonl');
      writeFileSync(unsigned, lines.join('\n') + '\n');

      const verify = daemon.kts('audit', 'verify', '--file', unsigned, '--key', pub());

      expect(verify.code).toBe(0);
      expect(verify.stdout).toMatch(/\nnote: no covering checkpoint: no checkpoint covers sequence \d+ yet .*; the events are only consistent among themselves\n$/);
    });

    it('given an unknown pod, when exporting, then it fails naming it', () => {
      const result = daemon.kts('audit', 'export', '--pod', 'no-such-pod');
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/no-such-pod/);
      expect(existsSync(path.join(daemon.root, 'none.jsonl'))).toBe(false);
    });
  });
});
