// Resources on the host that no record owns (here: the database was lost while a pod ran) are
// found by recovery's scan of kts's own directories and runc root, removed, and recorded.
import { rmSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { TestDaemon, canRunContainers, isAlive, mountsUnder } from './helpers/daemon.js';

const skip = canRunContainers();

describe.skipIf(skip)(`orphans are swept at start${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  afterAll(() => daemon.cleanup());

  it('given a running pod whose database is lost, when the daemon starts, then its init, container and mounts are removed and recorded', async () => {
    await daemon.start();
    const { podId, pid } = JSON.parse(daemon.ktsOk('run', '--json', 'examples/pod.yaml', 'examples/busybox.yaml')) as { podId: string; pid: number };
    expect(isAlive(pid)).toBe(true);
    await daemon.kill();
    for (const file of ['kts.db', 'kts.db-wal', 'kts.db-shm']) rmSync(path.join(daemon.root, file), { force: true });

    await daemon.start();
    expect(isAlive(pid)).toBe(false);
    expect(mountsUnder(path.join(daemon.root, 'sandboxes'))).toEqual([]);
    expect(JSON.parse(daemon.ktsOk('pods', '--json'))).toEqual([]);
    const db = new Database(daemon.db, { readonly: true });
    const orphans = db.prepare("SELECT type, payload FROM events WHERE stream_id = 'node'").all() as Array<{ type: string; payload: string }>;
    db.close();
    expect(orphans.map((row) => row.type)).toContain('OrphanRemoved');
    expect(orphans.map((row) => JSON.parse(row.payload).resource)).toContain(`runc sandbox directory ${path.join(daemon.root, 'sandboxes', podId)} and its processes`);
    expect(daemon.ktsOk('verify')).toMatch(/hash chain intact/);
  });
});
