// The 1:1-shim peer: containerd 1.6 (Debian's containerd, ctr, containerd-shim-runc-v2) started by
// the bench on a private socket with its own root and state directories, the busybox image imported
// from the same OCI layout kts runs, `ctr run -d` to start a container, and a stop() that removes
// every task, container, snapshot, mount, shim and directory it made.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pidsOf } from './procfs.mjs';
import { runChecked, runTimed } from './spawn.mjs';
import { sleep } from './stats.mjs';

export const SHIM = '/usr/bin/containerd-shim-runc-v2';
const NAMESPACE = 'kts-bench';
/** The shim puts its sockets and runc state under here whatever containerd's `state` says. */
const SHIM_STATE_DIR = '/run/containerd';

/**
 * The whole config: only where containerd keeps its files and listens. Everything else is
 * containerd's default (plugins that cannot work here, aufs/btrfs/zfs/devmapper, skip themselves).
 */
function configToml(dir) {
  return `version = 2\nroot = "${dir}/root"\nstate = "${dir}/state"\n[grpc]\n  address = "${dir}/containerd.sock"\n`;
}

/** Mount points at or below dir, deepest first, from /proc/self/mountinfo. */
function mountsUnder(dir) {
  const points = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((line) => line.split(' ')[4]).filter(Boolean);
  return points.filter((point) => point === dir || point.startsWith(`${dir}/`)).sort((a, b) => b.length - a.length);
}

/** Removes the directories below (and including) dir that are empty, deepest first; leaves files alone. */
function removeEmptyDirs(dir) {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) removeEmptyDirs(path.join(dir, entry.name));
  if (readdirSync(dir).length === 0) rmdirSync(dir);
}

/** Waits (up to 10 s) until the pids are gone from /proc: exited shims are zombies until init reaps them. */
async function waitGone(pids) {
  for (let i = 0; i < 200 && pids.some((pid) => existsSync(`/proc/${pid}`)); i++) await sleep(50);
}

export async function startContainerd({ imageLayout }) {
  const hadShimStateDir = existsSync(SHIM_STATE_DIR);
  const dir = mkdtempSync(path.join(tmpdir(), 'kts-bench-containerd-'));
  const socket = path.join(dir, 'containerd.sock');
  writeFileSync(path.join(dir, 'config.toml'), configToml(dir));
  const log = openSync(path.join(dir, 'containerd.log'), 'a');
  const daemon = spawn('containerd', ['--config', path.join(dir, 'config.toml')], { stdio: ['ignore', log, log] });
  closeSync(log);
  const exit = new Promise((resolve) => daemon.once('exit', resolve));
  const ctrArgs = (args) => ['-a', socket, '-n', NAMESPACE, ...args];
  const ctr = (...args) => runChecked('ctr', ctrArgs(args));

  for (let i = 0; (await runTimed('ctr', ctrArgs(['version']))).code !== 0; i++) {
    if (i > 200 || daemon.exitCode !== null) throw new Error(`containerd did not come up; see ${dir}/containerd.log`);
    await sleep(50);
  }
  const archive = path.join(dir, 'busybox.tar');
  await runChecked('tar', ['-C', imageLayout, '-cf', archive, '.']);
  // The layout's manifest is annotated ref.name "latest": --base-name makes it busybox:latest.
  await ctr('images', 'import', '--base-name', 'busybox', '--index-name', 'busybox-index:latest', archive);

  const shimsSeen = new Set();
  const peer = {
    dir, socket, pid: daemon.pid, image: 'busybox:latest',
    version: (await ctr('version')).stdout.match(/Server:\s+Version:\s+(\S+)/)?.[1] ?? 'unknown',
    ctr,
    /** `ctr run -d`: container + task started, the shim serving it; timed spawn → exit. */
    run: (id) => ctr('run', '-d', '--snapshotter', 'overlayfs', peer.image, id, 'sleep', '600'),
    /** SIGKILLs and deletes the task, then the container and its snapshot. */
    async remove(id) {
      await runTimed('ctr', ctrArgs(['task', 'rm', '-f', id]));
      await ctr('containers', 'rm', id);
    },
    async removeAll() {
      for (const pid of peer.shimPids()) shimsSeen.add(pid);
      const ids = (await ctr('containers', 'ls', '-q')).stdout.split('\n').filter(Boolean);
      for (let i = 0; i < ids.length; i += 8) await Promise.all(ids.slice(i, i + 8).map((id) => peer.remove(id)));
    },
    /** Pids of the shims of this containerd (one per running container, as 1.6 starts them). */
    shimPids: () => pidsOf(SHIM, `-address ${socket}`),
    async stop() {
      try {
        await peer.removeAll();
      } finally {
        daemon.kill('SIGTERM');
        await exit;
        for (const pid of peer.shimPids()) process.kill(pid, 'SIGKILL');
        for (const point of mountsUnder(dir)) await runTimed('umount', ['-l', point]);
        rmSync(dir, { recursive: true, force: true });
        if (!hadShimStateDir) removeEmptyDirs(SHIM_STATE_DIR);
        await waitGone([...shimsSeen]);
      }
    },
  };
  return peer;
}
