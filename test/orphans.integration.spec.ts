// Resources on the host that no record owns (here: the database was lost while a pod ran) are
// found by recovery's scan of kts's own directories and runc root, removed, and recorded.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { TestDaemon, canRunContainers, canRunVms, isAlive, mountsUnder } from './helpers/daemon.js';
import { taskClient } from './helpers/protoClient.js';

const skip = canRunContainers();
const skipQemu = canRunVms();

describe.skipIf(skip)(`orphans are swept at start${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  afterAll(() => daemon.cleanup());

  const nodeEvents = () => {
    const db = new Database(daemon.db, { readonly: true });
    try {
      return db.prepare("SELECT type, payload FROM events WHERE stream_id = 'node'").all() as Array<{ type: string; payload: string }>;
    } finally {
      db.close();
    }
  };

  it('given a running pod whose database is lost, when the daemon starts, then its init, container, mounts and waiting exec specs are removed and recorded', async () => {
    await daemon.start();
    const { podId, containerId, pid } = JSON.parse(daemon.ktsOk('run', '--json', 'examples/pod.yaml', 'examples/busybox.yaml')) as { podId: string; containerId: string; pid: number };
    expect(isAlive(pid)).toBe(true);
    // An exec created and not started leaves its spec waiting on disk.
    const task = taskClient(daemon.socket);
    const spec = { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify({ args: ['true'], cwd: '/', env: [], user: { uid: 0, gid: 0 } })) };
    await task.Exec!({ id: containerId, exec_id: 'waiting', spec }).finally(() => task.close());
    const specDir = path.join(daemon.root, 'exec-specs', containerId);
    expect(existsSync(specDir)).toBe(true);
    await daemon.kill();
    for (const file of ['kts.db', 'kts.db-wal', 'kts.db-shm']) rmSync(path.join(daemon.root, file), { force: true });

    await daemon.start();
    expect(isAlive(pid)).toBe(false);
    expect(mountsUnder(path.join(daemon.root, 'sandboxes'))).toEqual([]);
    expect(JSON.parse(daemon.ktsOk('pods', '--json'))).toEqual([]);
    const orphans = nodeEvents();
    expect(orphans.map((row) => row.type)).toContain('OrphanRemoved');
    expect(orphans.map((row) => JSON.parse(row.payload).resource)).toContain(`runc sandbox directory ${path.join(daemon.root, 'sandboxes', podId)} and its processes`);
    expect(existsSync(specDir)).toBe(false);
    expect(orphans.map((row) => JSON.parse(row.payload).resource)).toContain(`exec specs of container ${containerId} in ${specDir}`);
    expect(daemon.ktsOk('verify')).toMatch(/hash chain intact/);
  });

  // A daemon killed while it removed a VM (directory deleted, QEMU not yet ended) leaves a QEMU only its command line names.
  it.skipIf(skipQemu)(`given a QEMU whose VM directory is gone, when the daemon starts, then the QEMU is killed and recorded${skipQemu ? ` (skipped: ${skipQemu})` : ''}`, async () => {
    await daemon.kill();
    const sandboxId = 'f'.repeat(32);
    const vmDir = path.join(daemon.root, 'vms', sandboxId);
    mkdirSync(vmDir, { recursive: true });
    const pidFile = path.join(vmDir, 'qemu.pid');
    execFileSync('qemu-system-x86_64', ['-machine', 'none', '-display', 'none', '-nodefaults', '-pidfile', pidFile, '-daemonize']);
    const qemuPid = Number(readFileSync(pidFile, 'utf8'));
    rmSync(vmDir, { recursive: true });
    try {
      await daemon.start();
      expect(isAlive(qemuPid)).toBe(false);
      expect(nodeEvents().map((row) => JSON.parse(row.payload).resource)).toContain(`QEMU process ${qemuPid} of VM ${sandboxId}, whose directory was gone`);
    } finally {
      if (isAlive(qemuPid)) process.kill(qemuPid, 'SIGKILL');
    }
  });
});
