// Retention (issue 19, item 4): a real daemon with [audit] retain_events moves removed pods' events to
// signed archives as pods come and go; its SQLite file stays bounded, `kts audit verify` still passes
// across the pruned point, the history of an archived pod says where it went, and each archive verifies
// offline with the public key alone (a tampered one is refused). Also: an edited snapshot or read-model
// row of the same store is named by verify.
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, TestDaemon, canRunContainers, until } from './helpers/daemon.js';
import { freshPodYaml } from './helpers/podYaml.js';

const skip = canRunContainers();
const BUSYBOX = path.join(REPO, 'examples/busybox.yaml');
const RETAIN_EVENTS = 40;
const LIFECYCLES = 12;

const eventCount = (db: string) => {
  const reader = new Database(db, { readonly: true });
  try {
    return reader.prepare<[], { count: number }>('SELECT count(*) AS count FROM events').get()!.count;
  } finally {
    reader.close();
  }
};

describe.skipIf(skip)(`retention of the event log${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon(`[audit]\nretain_events = ${RETAIN_EVENTS}\ncheckpoint_every = 10\n`, { topToml: 'sweep_interval_seconds = 1' });
  const archiveDir = path.join(daemon.root, 'audit', 'archive');
  const publicKey = path.join(daemon.root, 'audit', 'ed25519.key.pub');
  const removed: string[] = [];
  const counts: number[] = [];

  beforeAll(async () => {
    await daemon.start();
    for (let n = 0; n < LIFECYCLES; n++) {
      const { podId } = JSON.parse(daemon.ktsOk('run', '--json', freshPodYaml(), BUSYBOX)) as { podId: string };
      daemon.ktsOk('rm', podId);
      removed.push(podId);
      // One sweep round (1 s) lets retention catch up before the next pod.
      await new Promise((resolve) => setTimeout(resolve, 1200));
      counts.push(eventCount(daemon.db));
    }
  }, 120_000);
  afterAll(() => daemon.cleanup());

  it('keeps the log bounded: removed pods leave it for archives once it holds more than retain_events', async () => {
    // A lifecycle records about 20 events: without retention the log would hold ~240 by now.
    expect(Math.max(...counts.slice(4))).toBeLessThanOrEqual(RETAIN_EVENTS + 25);
    const archives = readdirSync(archiveDir).filter((name) => name.endsWith('.jsonl.gz'));
    expect(archives.length).toBeGreaterThanOrEqual(2);
    expect(daemon.logs).toContain('"msg":"audit prune"');
  });

  it('verifies across the pruned point, through the daemon and offline on the file', () => {
    const online = daemon.kts('audit', 'verify');
    expect(online.code, online.stdout + online.stderr).toBe(0);
    expect(online.stdout).toMatch(/^ok: \d+ events, hash chain intact/);
    const offline = daemon.kts('audit', 'verify', '--db', daemon.db, '--key', publicKey);
    expect(offline.code, offline.stdout + offline.stderr).toBe(0);
  });

  it('says where an archived pod\'s history went', () => {
    const history = daemon.kts('history', removed[0]!);
    expect(history.code).toBe(1);
    expect(history.stderr).toMatch(new RegExp(`pod ${removed[0]} \\(.*\\) was archived by retention: its events, up to sequence \\d+, are in ${archiveDir}/events-1-\\d+\\.jsonl\\.gz`));
  });

  it('verifies each archive offline with the public key alone, and refuses one with an event edited or cut', () => {
    const [first] = readdirSync(archiveDir).filter((name) => name.endsWith('.jsonl.gz')).sort((a, b) => Number(a.split('-')[1]) - Number(b.split('-')[1]));
    const archive = path.join(archiveDir, first!);
    const ok = daemon.kts('audit', 'verify', '--file', archive, '--key', publicKey);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/^ok: \d+ events re-hashed, \d+ links checked/);
    expect(ok.stdout).toMatch(/note: a retention archive: events 1\.\.\d+/);

    const lines = gunzipSync(readFileSync(archive)).toString().trim().split('\n');
    const edited = path.join(daemon.root, 'edited.jsonl.gz');
    writeFileSync(edited, gzipSync(lines.map((line, index) => (index === 1 ? line.replace(/"time":"[^"]+"/, '"time":"2020-01-01T00:00:00.000Z"') : line)).join('\n')));
    const refused = daemon.kts('audit', 'verify', '--file', edited, '--key', publicKey);
    expect(refused.code).toBe(3);
    expect(refused.stdout).toMatch(/^BROKEN at sequence \d+: hash mismatch/);

    const cut = path.join(daemon.root, 'cut.jsonl.gz');
    writeFileSync(cut, gzipSync([...lines.slice(0, 2), ...lines.slice(3)].join('\n')));
    const missing = daemon.kts('audit', 'verify', '--file', cut, '--key', publicKey);
    expect(missing.code).toBe(3);
  });

  it('names an edited read-model row of a copy of the store (the chain itself intact)', async () => {
    const { podId } = JSON.parse(daemon.ktsOk('run', '--json', freshPodYaml(), BUSYBOX)) as { podId: string };
    const copy = path.join(daemon.root, 'rows-edited.db');
    // SQLite's backup: a consistent copy of a database the daemon is writing (its WAL included).
    const source = new Database(daemon.db, { readonly: true });
    await source.backup(copy).finally(() => source.close());
    const db = new Database(copy);
    try {
      expect(db.prepare("UPDATE sandboxes SET state = 'stopped', pid = 1 WHERE id = ?").run(podId).changes).toBe(1);
    } finally {
      db.close();
    }
    const result = daemon.kts('audit', 'verify', '--db', copy, '--key', publicKey);
    expect(result.code).toBe(3);
    expect(result.stdout).toContain(`MISMATCH in sandbox-${podId}, its row: its state, pid differ from what its events give`);
  });
});

// An idle daemon with nothing removed keeps every event.
describe.skipIf(skip)(`retention with nothing to prune${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon('[audit]\nretain_events = 5\n', { topToml: 'sweep_interval_seconds = 1' });
  beforeAll(() => daemon.start());
  afterAll(() => daemon.cleanup());

  it('never prunes a live pod\'s events, however far over the cap', async () => {
    const { podId } = JSON.parse(daemon.ktsOk('run', '--json', freshPodYaml(), BUSYBOX)) as { podId: string };
    const before = eventCount(daemon.db);
    await until('two sweep rounds', async () => (await new Promise((resolve) => setTimeout(resolve, 2500)), true));
    expect(eventCount(daemon.db)).toBeGreaterThanOrEqual(before);
    expect(daemon.kts('history', podId).code).toBe(0);
  });
});
