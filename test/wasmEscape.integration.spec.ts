// Hostile WebAssembly modules through a real daemon: a module (or the rootfs it ships in) tries to
// reach host files outside its container's rootfs with symlinks and `..`, and must not. The probe
// module (src/backends/wasm/testdata/probe.wat) runs the file operations its arguments name and
// prints how each went, so every test also proves the module really ran and tried.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { symlink as tarSymlink, file as tarFile, writeLayout } from '../src/images/ociTestLayout.testkit.js';
import { IMAGES_DIR, REPO, TestDaemon, until } from './helpers/daemon.js';
import { adminClient, controllerClient, taskClient, type ProtoClient } from './helpers/protoClient.js';

const WAT2WASM = path.join(REPO, 'node_modules/.bin/wat2wasm');
const PROBE_WAT = path.join(REPO, 'src/backends/wasm/testdata/probe.wat');
const SPIN_WAT = path.join(REPO, 'src/backends/wasm/testdata/spin.wat');
const CLIMB = '../'.repeat(32);

function canRunWasm(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (the daemon mounts each container\'s rootfs)';
  if (!existsSync(path.join(REPO, 'dist/src/daemon.js'))) return 'needs a build: run "npm run build" (scripts/test.sh does)';
  if (!existsSync(WAT2WASM)) return 'needs the wabt devDependency: run npm ci';
  return undefined;
}

const skip = canRunWasm();

describe.skipIf(skip)(`wasm modules stay inside their rootfs${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let controller: ProtoClient;
  let admin: ProtoClient;
  let task: ProtoClient;
  /** A host directory outside every rootfs: what a module must never reach. */
  let host: string;
  let containers = 0;

  /** A writable hand-made rootfs holding /probe.wasm, as an unpacked image would be. */
  function probeRootfs(): string {
    const rootfs = path.join(daemon.root, `probe-rootfs-${++containers}`);
    mkdirSync(rootfs, { recursive: true });
    execFileSync(WAT2WASM, [PROBE_WAT, '-o', path.join(rootfs, 'probe.wasm')]);
    return rootfs;
  }

  /** Task Create of `args` on `rootfs` (a read-write bind, as a container's rootfs is). */
  function prepare(containerId: string, rootfs: string, args: string[]) {
    const spec = {
      ociVersion: '1.0.2',
      process: { args, env: [], cwd: '/', user: { uid: 0, gid: 0 } },
      root: { path: 'rootfs' },
      mounts: [],
      annotations: { 'io.kubernetes.cri.sandbox-id': 'wasm-escape' },
      linux: {},
    };
    return admin.Prepare!({
      sandbox_id: 'wasm-escape', container_id: containerId, spec_json: JSON.stringify(spec),
      rootfs_json: [JSON.stringify({ type: 'bind', source: rootfs, options: ['rbind'] })],
    });
  }

  /** Runs the probe with `ops` on `rootfs` and returns its output. */
  async function probe(rootfs: string, ops: string[]): Promise<string> {
    const containerId = `probe-${containers}`;
    await prepare(containerId, rootfs, ['/probe.wasm', ...ops]);
    await task.Start!({ id: containerId });
    expect((await task.Wait!({ id: containerId })).exit_status).toBe(0);
    return daemon.ktsOk('logs', containerId);
  }

  beforeAll(async () => {
    await daemon.start();
    [controller, admin, task] = [controllerClient(daemon.socket), adminClient(daemon.socket), taskClient(daemon.socket)];
    await controller.Create!({ sandbox_id: 'wasm-escape', sandboxer: 'wasm' });
    await controller.Start!({ sandbox_id: 'wasm-escape' });
    host = mkdtempSync(path.join(tmpdir(), 'kts-wasm-escape-'));
    writeFileSync(path.join(host, 'secret.txt'), 'host secret\n');
    writeFileSync(path.join(host, 'victim.txt'), 'original\n');
  });
  afterAll(async () => {
    for (const client of [controller, admin, task]) client?.close();
    await daemon.cleanup();
    if (host) rmSync(host, { recursive: true, force: true });
  });

  it('given a module that makes a symlink climbing out of its rootfs, when it creates and overwrites host files through it, then no host file is created or changed', async () => {
    const created = path.join(host, 'created-by-module.txt');
    const logs = await probe(probeRootfs(), [
      'symlink', CLIMB, 'up', 'write', `up${created}`, 'pwned', 'write', `up${path.join(host, 'victim.txt')}`, 'pwned',
      'symlink', created, 'abs', 'write', 'abs', 'pwned',
    ]);
    expect(logs).toContain(`write up${created}: errno`);
    expect(existsSync(created)).toBe(false);
    expect(readFileSync(path.join(host, 'victim.txt'), 'utf8')).toBe('original\n');
  });

  it('given an absolute symlink shipped in the rootfs to a host directory, when the module writes and reads through it, then neither reaches the host', async () => {
    const rootfs = probeRootfs();
    symlinkSync(host, path.join(rootfs, 'x'));
    const logs = await probe(rootfs, ['write', 'x/written-through-image-link.txt', 'pwned', 'read', 'x/secret.txt']);
    expect(logs).toContain('write x/written-through-image-link.txt: errno');
    expect(logs).toContain('read x/secret.txt: errno');
    expect(logs).not.toContain('host secret');
    expect(existsSync(path.join(host, 'written-through-image-link.txt'))).toBe(false);
  });

  it('given an image whose layer ships an absolute symlink to a host directory, when its module writes and reads through it, then neither reaches the host', async () => {
    const image = `wasm-escape-link-${process.pid}`;
    const wasm = execFileSync(WAT2WASM, [PROBE_WAT, '--output=-']);
    await writeLayout(IMAGES_DIR, image, [[tarFile('probe.wasm', wasm, { mode: 0o755 }), tarSymlink('x', host)]]);
    try {
      const run = await admin.RunContainer!({
        sandbox_id: 'wasm-escape', name: 'image-link', image: `${image}:latest`, command: ['/probe.wasm'],
        args: ['write', 'x/written-through-image.txt', 'pwned', 'read', 'x/secret.txt'], start: true,
      });
      expect((await task.Wait!({ id: String(run.container_id) })).exit_status).toBe(0);
      const logs = readFileSync(String(run.log_path), 'utf8');
      expect(logs).toContain('write x/written-through-image.txt: errno');
      expect(logs).toContain('read x/secret.txt: errno');
      expect(logs).not.toContain('host secret');
      expect(existsSync(path.join(host, 'written-through-image.txt'))).toBe(false);
    } finally {
      rmSync(path.join(IMAGES_DIR, image), { recursive: true, force: true });
    }
  });

  it('given a path that climbs with `..`, when the module reads a host file by it, then the read fails', async () => {
    const logs = await probe(probeRootfs(), ['read', `${CLIMB}${path.join(host, 'secret.txt').slice(1)}`]);
    expect(logs).toMatch(/read (\.\.\/)+.*secret\.txt: errno \d+/);
    expect(logs).not.toContain('host secret');
  });

  it('given a well-behaved module, when it writes a file in its rootfs, links to it and reads both back, then all of it works', async () => {
    const rootfs = probeRootfs();
    const logs = await probe(rootfs, ['write', 'note.txt', 'kept inside', 'symlink', 'note.txt', 'alias', 'read', 'note.txt', 'read', 'alias']);
    expect(logs).toContain('write note.txt: ok\n');
    expect(logs).toContain('read note.txt: ok\nkept inside\n');
    expect(logs).toContain('read alias: ok\nkept inside\n');
    expect(readFileSync(path.join(rootfs, 'note.txt'), 'utf8')).toBe('kept inside');
  });

  it('given a module file that is a symlink to a wasm file on the host, then the container is refused: the module is read inside the rootfs', async () => {
    const rootfs = probeRootfs();
    copyFileSync(path.join(rootfs, 'probe.wasm'), path.join(host, 'outside.wasm'));
    symlinkSync(path.join(host, 'outside.wasm'), path.join(rootfs, 'linked.wasm'));
    await expect(prepare(`linked-${containers}`, rootfs, ['/linked.wasm'])).rejects.toMatchObject({ details: expect.stringContaining('module /linked.wasm: no such file in the container\'s rootfs') });
  });

  it('given a running module, then its runner sees only the rootfs (own mount namespace, chroot), with no_new_privs, file capabilities only, and none of the daemon\'s fds', async () => {
    const rootfs = probeRootfs();
    execFileSync(WAT2WASM, [SPIN_WAT, '-o', path.join(rootfs, 'spin.wasm')]);
    await prepare('confined', rootfs, ['/spin.wasm']);
    await task.Start!({ id: 'confined' });
    const daemonPid = daemon.process!.pid!;
    const runnerPid = await until('the runner process', () => readdirSync('/proc').filter((name) => /^\d+$/.test(name)).find((pid) => {
      try {
        return readFileSync(`/proc/${pid}/status`, 'utf8').includes(`PPid:\t${daemonPid}\n`) && readlinkSync(`/proc/${pid}/exe`).endsWith('/kts-wasm-runner');
      } catch {
        return false;
      }
    }));
    const status = readFileSync(`/proc/${runnerPid}/status`, 'utf8');
    expect(status).toMatch(/^NoNewPrivs:\t1$/m);
    // CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER and CAP_FSETID only.
    expect(status).toMatch(/^CapEff:\t000000000000001b$/m);
    expect(readlinkSync(`/proc/${runnerPid}/ns/mnt`)).not.toBe(readlinkSync(`/proc/${daemonPid}/ns/mnt`));
    // Its root, seen through /proc, holds just what the rootfs holds.
    expect(readdirSync(`/proc/${runnerPid}/root`).sort()).toEqual(readdirSync(rootfs).sort());
    // The only mount it can see is its rootfs (the host's tree is detached from its namespace).
    const mounts = readFileSync(`/proc/${runnerPid}/mountinfo`, 'utf8').trim().split('\n').map((line) => line.split(' ')[4]);
    expect(mounts).toEqual(['/']);
    const fdTargets = readdirSync(`/proc/${runnerPid}/fd`).map((fd) => readlinkSync(`/proc/${runnerPid}/fd/${fd}`));
    expect(fdTargets.filter((target) => target.startsWith(daemon.root) && !target.includes('/confined/'))).toEqual([]);
    expect(fdTargets.some((target) => target.endsWith('.db') || target.endsWith('.sock'))).toBe(false);
    await task.Kill!({ id: 'confined', signal: 9 });
    expect((await task.Wait!({ id: 'confined' })).exit_status).toBe(137);
  });
});
