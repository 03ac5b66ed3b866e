// Issue 15, items 0 and 1: the daemon never dies of the host's state (busy mounts, a file where a
// directory is expected, a directory that cannot be removed: each is cleaned or recorded and retried),
// and a kts-sandbox-init the daemon spawned just before it died is found and killed by recovery.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestDaemon, canRunContainers, mountsUnder, REPO, until } from './helpers/daemon.js';
import { freshPodYaml } from './helpers/podYaml.js';
import { controllerClient } from './helpers/protoClient.js';

const skip = canRunContainers();

/** Events of the node stream: what the sweeps removed or could not remove. */
function nodeEvents(db: string): Array<{ type: string; resource: string; reason: string }> {
  const store = new Database(db, { readonly: true });
  try {
    return (store.prepare(`SELECT type, payload FROM events WHERE stream_id = 'node' ORDER BY sequence`).all() as Array<{ type: string; payload: string }>)
      .map((row) => ({ type: row.type, ...(JSON.parse(row.payload) as { resource: string; reason: string }) }));
  } finally {
    store.close();
  }
}

/** A host directory with a file in it, bound onto `target`, and a process whose cwd is inside it (so a plain umount fails with EBUSY). */
function busyBind(target: string): { precious: string; holder: ChildProcess } {
  const precious = mkdtempSync(path.join(tmpdir(), 'kts-precious-'));
  writeFileSync(path.join(precious, 'keep.txt'), 'the host\'s, not the daemon\'s');
  mkdirSync(target, { recursive: true });
  execFileSync('mount', ['--bind', precious, target]);
  const holder = spawn('sleep', ['600'], { cwd: target, stdio: 'ignore' });
  return { precious, holder };
}

/** kts-sandbox-init processes started for `<root>/sandboxes/<id>`. */
function initsOf(root: string, sandboxId: string): number[] {
  const dir = path.join(root, 'sandboxes', sandboxId);
  return readdirSync('/proc').filter((entry) => /^\d+$/.test(entry)).map(Number).filter((pid) => {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return path.basename(argv[0] ?? '') === 'kts-sandbox-init' && argv[argv.indexOf('--dir') + 1] === dir;
    } catch {
      return false;
    }
  });
}

describe.skipIf(skip)(`the daemon and the host's state${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const holders: ChildProcess[] = [];
  const precious: string[] = [];
  const stuck: string[] = [];

  afterAll(() => {
    for (const holder of holders) holder.kill('SIGKILL');
    for (const file of stuck.filter((name) => existsSync(name))) execFileSync('chattr', ['-i', file], { stdio: 'ignore' });
    for (const dir of precious) rmSync(dir, { recursive: true, force: true });
  });

  describe('leftovers found at start', () => {
    const daemon = new TestDaemon('', { topToml: 'sweep_interval_seconds = 1' });
    let immutable: string;

    beforeAll(async () => {
      // Left by an earlier life of the daemon, none of them owned by a record.
      const bundle = busyBind(path.join(daemon.root, 'bundles', 'ghost-pod', 'ghost-ctr', 'bundle', 'rootfs'));
      const share = busyBind(path.join(daemon.root, 'vms', 'ghost-vm', 'share', 'ghost-ctr'));
      holders.push(bundle.holder, share.holder);
      precious.push(bundle.precious, share.precious);
      mkdirSync(path.join(daemon.root, 'sandboxes'), { recursive: true });
      writeFileSync(path.join(daemon.root, 'sandboxes', 'ghost-file'), 'a file where a sandbox directory is expected');
      writeFileSync(path.join(daemon.root, 'bundles', 'ghost-file'), 'a file where a pod\'s bundles are expected');
      mkdirSync(path.join(daemon.root, 'sandboxes', 'ghost-stuck'));
      immutable = path.join(daemon.root, 'sandboxes', 'ghost-stuck', 'immutable');
      writeFileSync(immutable, '');
      execFileSync('chattr', ['+i', immutable]);
      stuck.push(immutable);
      await daemon.start();
    }, 60_000);
    afterAll(() => daemon.cleanup(), 60_000);

    it('starts and serves; busy mounts are detached without touching what they showed, and each removal is recorded', async () => {
      expect(daemon.ktsOk('pods', '-q')).toBe('');
      for (const dir of precious) expect(readFileSync(path.join(dir, 'keep.txt'), 'utf8')).toContain('the host\'s');
      expect(mountsUnder(daemon.root)).toEqual([]);
      expect(existsSync(path.join(daemon.root, 'bundles', 'ghost-pod'))).toBe(false);
      expect(existsSync(path.join(daemon.root, 'vms', 'ghost-vm'))).toBe(false);
      expect(existsSync(path.join(daemon.root, 'bundles', 'ghost-file'))).toBe(false);
      const removed = nodeEvents(daemon.db).filter((event) => event.type === 'OrphanRemoved').map((event) => event.resource).join('\n');
      expect(removed).toContain('ghost-pod');
      expect(removed).toContain('ghost-vm');
    });

    it('records what it cannot remove once, keeps serving, and removes it at a later sweep once it can', async () => {
      const failed = () => nodeEvents(daemon.db).filter((event) => event.type === 'CleanupFailed' && event.resource.includes('ghost-stuck'));
      expect(failed()).toHaveLength(1);
      // Node's recursive rm reports an immutable file's EPERM as the ENOTDIR of its retry as a directory.
      expect(failed()[0]!.reason).toMatch(/operation not permitted|EPERM|ENOTDIR/i);
      // Three more sweeps fail the same way: the log does not grow with them.
      await new Promise((resolve) => setTimeout(resolve, 3500));
      expect(failed()).toHaveLength(1);
      expect(daemon.ktsOk('pods', '-q')).toBe('');
      execFileSync('chattr', ['-i', immutable]);
      await until('a sweep to remove ghost-stuck', () => !existsSync(path.join(daemon.root, 'sandboxes', 'ghost-stuck')), 10_000);
      await until('its removal to be recorded', () => nodeEvents(daemon.db).some((event) => event.type === 'OrphanRemoved' && event.resource.includes('ghost-stuck')), 5_000);
      expect(daemon.process?.exitCode).toBe(null);
    });
  });

  describe('a busy mount in a container\'s bundle when its pod is removed', () => {
    const daemon = new TestDaemon('', { topToml: 'sweep_interval_seconds = 1' });
    afterAll(() => daemon.cleanup(), 60_000);

    it('kts rm succeeds, the daemon keeps serving, the host directory bound there is untouched and the bundle goes', async () => {
      await daemon.start();
      const { podId, containerId } = JSON.parse(daemon.ktsOk('run', '--json', freshPodYaml(), path.join(REPO, 'examples/busybox.yaml'))) as { podId: string; containerId: string };
      const containerDir = path.join(daemon.root, 'bundles', podId, containerId);
      // What a hostile guest once made `kts rm` leave behind: a mount in the bundle that is still busy.
      const { precious: hostDir, holder } = busyBind(path.join(containerDir, 'left-mounted'));
      holders.push(holder);
      precious.push(hostDir);
      daemon.ktsOk('rm', podId);
      await until('the bundle to be removed', () => !existsSync(path.join(daemon.root, 'bundles', podId)), 15_000);
      expect(readFileSync(path.join(hostDir, 'keep.txt'), 'utf8')).toContain('the host\'s');
      expect(mountsUnder(daemon.root)).toEqual([]);
      // Still alive after the sweeps that follow.
      await new Promise((resolve) => setTimeout(resolve, 2500));
      expect(daemon.process?.exitCode).toBe(null);
      expect(daemon.ktsOk('pods', '-q')).toBe('');
      expect(daemon.logs).not.toContain('unhandled rejection');
    }, 60_000);
  });

  describe('a sandbox init spawned just before the daemon died', () => {
    const daemon = new TestDaemon();
    afterAll(() => daemon.cleanup(), 60_000);

    it('is found by recovery and killed, the start is rolled back, and nothing of the sandbox is left', async () => {
      // Deterministic: the daemon SIGKILLs itself once kts-sandbox-init runs and before init.pid is written.
      await daemon.start({ KTS_CRASH_AT: 'process.spawned:1' });
      const controller = controllerClient(daemon.socket);
      await controller.Create!({ sandbox_id: 'racing', sandboxer: 'runc', sandbox: { sandbox_id: 'racing', labels: {} } });
      await expect(controller.Start!({ sandbox_id: 'racing' })).rejects.toBeDefined();
      controller.close();
      await daemon.exited();
      expect(daemon.logs).toContain('crash point process.spawned reached');
      // The init the dead daemon spawned goes on starting while nobody watches.
      await until('the orphaned init to run', () => initsOf(daemon.root, 'racing').length > 0, 5_000);
      await daemon.start();
      await until('recovery to kill the init', () => initsOf(daemon.root, 'racing').length === 0, 10_000);
      const history = JSON.parse(daemon.ktsOk('history', '--json', 'racing')) as { events: Array<{ type: string }> };
      expect(history.events.map((event) => event.type)).toContain('SandboxStartFailed');
      expect(existsSync(path.join(daemon.root, 'sandboxes', 'racing'))).toBe(false);
      expect(mountsUnder(daemon.root)).toEqual([]);
    }, 60_000);
  });
});
