// Store faults against a real daemon: a full disk fails a request cleanly and the daemon keeps serving;
// a corrupt store file is refused at start with one line saying how to restore; `kts audit verify`
// names the first bad row, through the daemon or straight from the file.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, TestDaemon, canRunContainers } from './helpers/daemon.js';

const skip = canRunContainers();
const POD = path.join(REPO, 'examples/pod.yaml');
const BUSYBOX = path.join(REPO, 'examples/busybox.yaml');
const PAGE_SIZE = 4096;

/** Rewrites one event's payload behind the daemon's back, as someone with write access to the file could. */
function tamperPayload(db: string, type: string): { sequence: number; streamId: string } {
  const raw = new Database(db);
  try {
    raw.exec('DROP TRIGGER IF EXISTS events_append_only_no_update');
    const row = raw.prepare<[string], { sequence: number; stream_id: string }>('SELECT sequence, stream_id FROM events WHERE type = ? ORDER BY sequence LIMIT 1').get(type)!;
    raw.prepare('UPDATE events SET payload = ? WHERE sequence = ?').run('{"tampered":true}', row.sequence);
    return { sequence: row.sequence, streamId: row.stream_id };
  } finally {
    raw.close();
  }
}

function overwriteEventsRootPage(db: string): void {
  const raw = new Database(db, { readonly: true });
  const { rootpage } = raw.prepare<[], { rootpage: number }>("SELECT rootpage FROM sqlite_schema WHERE name = 'events'").get()!;
  raw.close();
  execFileSync('dd', ['if=/dev/urandom', `of=${db}`, `bs=${PAGE_SIZE}`, `seek=${rootpage - 1}`, 'count=1', 'conv=notrunc'], { stdio: 'ignore' });
}

describe.skipIf(skip)(`store faults${skip ? ` (skipped: ${skip})` : ''}`, () => {
  describe('a full disk under the event store', () => {
    const disk = mkdtempSync(path.join(tmpdir(), 'kts-it-tmpfs-'));
    const filler = path.join(disk, 'filler');
    let daemon: TestDaemon;

    beforeAll(async () => {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', disk]);
      daemon = new TestDaemon('', { db: path.join(disk, 'kts.db') });
      await daemon.start();
    });
    afterAll(async () => {
      // cleanup() removes pods through the daemon, which needs room to record that.
      rmSync(filler, { force: true });
      await daemon?.cleanup();
      execFileSync('umount', [disk]);
      rmdirSync(disk);
    });

    it('given the disk is full, when `kts run` starts a pod, then it fails with one line naming the full disk, records nothing, and the daemon keeps serving', () => {
      // dd stops with ENOSPC once every page of the tmpfs is taken: that is the point.
      expect(() => execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k'], { stdio: 'ignore' })).toThrow();

      const run = daemon.kts('run', POD, BUSYBOX);

      expect(run.code).not.toBe(0);
      expect(run.stderr).toBe(`kts: event store ${daemon.db}: disk full (SQLITE_FULL); the request was not recorded — free space and retry\n`);
      expect(daemon.process?.exitCode).toBeNull();
      expect(JSON.parse(daemon.ktsOk('pods', '--json'))).toEqual([]);
      expect(execFileSync('runc', ['--root', daemon.runcRoot, 'list', '-q'], { encoding: 'utf8' }).trim()).toBe('');
    });

    it('given the space is freed, when `kts run` is retried, then the pod runs and `kts audit verify` says the chain is intact', () => {
      rmSync(filler);

      const run = JSON.parse(daemon.ktsOk('run', '--json', POD, BUSYBOX)) as { podId: string };

      const pods = JSON.parse(daemon.ktsOk('pods', '--json')) as Array<{ id: string; state: string }>;
      expect(pods).toEqual([expect.objectContaining({ id: run.podId, state: 'ready' })]);
      expect(daemon.ktsOk('audit', 'verify')).toMatch(/^ok: \d+ events, hash chain intact\n/);
    });
  });

  describe('a tampered, then corrupt, store file', () => {
    const daemon = new TestDaemon();
    let tampered: { sequence: number; streamId: string };
    const brokenLine = () =>
      new RegExp(`^BROKEN at sequence ${tampered.sequence} \\(stream ${tampered.streamId}, event SandboxCreated\\): hash mismatch: stored hash [0-9a-f]{64} does not match the recomputed [0-9a-f]{64}: the event was altered \\(the ${tampered.sequence - 1} events before it verify\\)\\n`);

    beforeAll(async () => {
      await daemon.start();
      const { podId } = JSON.parse(daemon.ktsOk('run', '--json', POD, BUSYBOX)) as { podId: string };
      daemon.ktsOk('rm', podId);
    });
    afterAll(() => daemon.cleanup());

    it('given a payload rewritten under a running daemon, when `kts audit verify` asks the daemon, then it exits 3 naming the row: sequence, stream, type and hash mismatch', () => {
      tampered = tamperPayload(daemon.db, 'SandboxCreated');

      const verify = daemon.kts('audit', 'verify');

      expect(verify.code).toBe(3);
      expect(verify.stdout).toMatch(brokenLine());
      expect(daemon.kts('verify')).toEqual(verify);
    });

    it('given the daemon is stopped, when `kts audit verify --db` reads a copy of the file, then it names the same row and leaves the file as it was', async () => {
      await daemon.stop();
      const copy = path.join(daemon.root, 'copy.db');
      copyFileSync(daemon.db, copy);
      const before = execFileSync('sha256sum', [copy], { encoding: 'utf8' });

      const verify = daemon.kts('audit', 'verify', '--db', copy);

      expect(verify.code).toBe(3);
      expect(verify.stdout).toMatch(brokenLine());
      expect(execFileSync('sha256sum', [copy], { encoding: 'utf8' })).toBe(before);
    });

    it('given a page of the event table overwritten, when the daemon starts, then it exits 1 with one line naming the file and how to restore', async () => {
      overwriteEventsRootPage(daemon.db);

      const { code, output } = await daemon.startExpectingFailure();

      expect(code).toBe(1);
      const errors = output.split('\n').filter((line) => line.startsWith('kts:'));
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatch(new RegExp(
        `^kts: event store ${daemon.db} is corrupt \\(quick_check: .+\\): stop here; restore the file from a backup, or move it aside to start with an empty store \\(the sandboxes it recorded will not be recovered\\)$`,
      ));
    });

    it('given the corrupt file, when `kts audit verify --db` reads it, then it exits 1: it could not check', () => {
      const verify = daemon.kts('audit', 'verify', '--db', daemon.db);

      expect(verify.code).toBe(1);
      expect(verify.stderr).toMatch(new RegExp(`^kts: event store ${daemon.db} is corrupt \\(SQLITE_CORRUPT`));
    });
  });
});
