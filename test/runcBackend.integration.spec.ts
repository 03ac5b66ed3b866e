import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isKtsError } from '../src/core/errors.js';
import type { ContainerSpec, MountSpec } from '../src/core/sandboxer.js';
import { RuncSandboxer, type RuncSandboxerOptions } from '../src/backends/runc/runcSandboxer.js';
import { mountPointsUnder, unmountUnder } from '../src/host/mounts.js';

const repoRoot = join(import.meta.dirname, '..');

function findRunc(): string | undefined {
  try {
    return execFileSync('which', ['runc'], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

const skipReason =
  process.getuid?.() !== 0 ? 'needs root (runc, mounts, namespaces)'
  : findRunc() === undefined ? 'runc is not installed'
  : !existsSync('/bin/busybox') ? '/bin/busybox (busybox-static) is not installed'
  : undefined;
if (skipReason) console.warn(`runcBackend.integration.spec.ts skipped: ${skipReason}`);

/** The host pid is alive and not a zombie waiting to be reaped. */
function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\S+ \(.*\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

async function eventually(check: () => boolean, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await sleep(50);
  }
  return check();
}

describe.skipIf(skipReason !== undefined)('runc backend with kts-sandbox-init (real runc)', () => {
  const sandboxId = `it-${process.pid}`;
  let base: string;
  let lowerDir: string;
  let options: RuncSandboxerOptions;
  let sandboxer: RuncSandboxer;
  let holderPid: number;

  beforeAll(() => {
    execFileSync('bash', [join(repoRoot, 'scripts/build-native.sh')], { stdio: 'inherit' });
    base = mkdtempSync('/tmp/kts-runc-it-');
    lowerDir = join(base, 'busybox');
    mkdirSync(join(lowerDir, 'bin'), { recursive: true });
    copyFileSync('/bin/busybox', join(lowerDir, 'bin/busybox'));
    execFileSync('chmod', ['0755', join(lowerDir, 'bin/busybox')]);
    for (const applet of execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).split('\n')) {
      if (applet && applet !== 'busybox') symlinkSync('busybox', join(lowerDir, 'bin', applet));
    }
    options = { rootDir: join(base, 'state'), runcRoot: join(base, 'runc-root') };
    sandboxer = new RuncSandboxer(options);
  });

  afterAll(async () => {
    const cleaner = new RuncSandboxer(options);
    await cleaner.removeSandbox(sandboxId).catch((error: unknown) => console.error('cleanup failed', error));
    await cleaner.close();
    await sandboxer.close();
    await unmountUnder(base);
    rmSync(base, { recursive: true, force: true });
    for (const hierarchy of ['blkio', 'cpu,cpuacct', 'cpuset', 'devices', 'freezer', 'memory', 'pids', 'systemd', 'unified']) {
      try {
        rmdirSync(`/sys/fs/cgroup/${hierarchy}/kts`);
      } catch {
        // absent, or used by someone else
      }
    }
  });

  function containerSpec(containerId: string, args: string[], stdoutName?: string): ContainerSpec {
    const bundleDir = join(base, 'bundles', containerId);
    const upper = join(base, 'layers', containerId, 'upper');
    const work = join(base, 'layers', containerId, 'work');
    mkdirSync(bundleDir, { recursive: true });
    mkdirSync(upper, { recursive: true });
    mkdirSync(work, { recursive: true });
    writeFileSync(join(bundleDir, 'config.json'), JSON.stringify(ociConfig(containerId, args)));
    const rootfsMounts: MountSpec[] = [
      { type: 'overlay', source: 'overlay', options: [`lowerdir=${lowerDir}`, `upperdir=${upper}`, `workdir=${work}`] },
    ];
    const stdout = stdoutName === undefined ? undefined : join(base, stdoutName);
    return { sandboxId, containerId, bundleDir, rootfsMounts, stdio: { stdout, stderr: stdout } };
  }

  function ociConfig(containerId: string, args: string[]): object {
    const podNamespace = (type: string, file: string) => ({ type, path: `/proc/${holderPid}/ns/${file}` });
    return {
      ociVersion: '1.0.2',
      process: { terminal: false, user: { uid: 0, gid: 0 }, args, env: ['PATH=/bin'], cwd: '/', noNewPrivileges: true },
      root: { path: 'rootfs', readonly: false },
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc' },
        { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
        { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
        { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
        { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      ],
      linux: {
        namespaces: [podNamespace('pid', 'pid'), podNamespace('network', 'net'), podNamespace('ipc', 'ipc'), podNamespace('uts', 'uts'), { type: 'mount' }],
        cgroupsPath: `/kts/${sandboxId}/${containerId}`,
        maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware'],
        readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
      },
    };
  }

  it('starts a sandbox whose holder owns new network and uts namespaces', async () => {
    const started = await sandboxer.startSandbox({ sandboxId, name: 'pod-a', namespace: 'default', hostname: 'pod-a', annotations: {} });
    holderPid = started.pid;
    expect(readlinkSync(`/proc/${holderPid}/ns/net`)).not.toBe(readlinkSync('/proc/self/ns/net'));
    expect(readlinkSync(`/proc/${holderPid}/ns/uts`)).not.toBe(readlinkSync('/proc/self/ns/uts'));
    expect(readlinkSync(`/proc/${holderPid}/ns/pid`)).not.toBe(readlinkSync('/proc/self/ns/pid'));
    await expect(sandboxer.sandboxStatus(sandboxId)).resolves.toEqual({ alive: true, pid: holderPid });
    await expect(sandboxer.startSandbox({ sandboxId, name: 'pod-a', namespace: 'default', hostname: 'x', annotations: {} })).rejects.toSatisfy(
      (error: unknown) => isKtsError(error, 'already_exists'),
    );
  });

  it('runs a container that prints a line and exits 3, and records the exit', async () => {
    const spec = containerSpec('c-exit', ['sh', '-c', 'echo "hello from $(hostname)"; exit 3'], 'c-exit.log');
    const startedAt = performance.now();
    const { pid } = await sandboxer.createContainer(spec);
    const createdAt = performance.now();
    const started = await sandboxer.startContainer(sandboxId, 'c-exit');
    const doneAt = performance.now();
    console.log(`runc create ${(createdAt - startedAt).toFixed(1)} ms + start ${(doneAt - createdAt).toFixed(1)} ms = ${(doneAt - startedAt).toFixed(1)} ms`);
    expect(started.pid).toBe(pid);

    const exit = await sandboxer.waitProcessExit(sandboxId, pid);
    expect(exit.exitStatus).toBe(3);
    expect(Math.abs(exit.exitedAt.getTime() - Date.now())).toBeLessThan(60_000);
    expect(readFileSync(join(base, 'c-exit.log'), 'utf8')).toBe('hello from pod-a\n');
    const status = await sandboxer.containerStatus(sandboxId, 'c-exit');
    expect(status.state).toBe('stopped');
    expect(status.exit?.exitStatus).toBe(3);
  });

  it('reports pids and stats, runs execs, and records 137 for SIGKILL', async () => {
    const { pid } = await sandboxer.createContainer(containerSpec('c-sleep', ['sleep', '1000']));
    await sandboxer.startContainer(sandboxId, 'c-sleep');
    expect(await sandboxer.pids(sandboxId, 'c-sleep')).toContain(pid);
    const stats = await sandboxer.stats(sandboxId, 'c-sleep');
    expect(stats.pidsCurrent).toBeGreaterThanOrEqual(1);
    expect(stats.memoryUsageBytes).toBeGreaterThan(0);
    expect(stats.cpuUsageNanos).toBeGreaterThan(0);

    const execOut = join(base, 'exec-hi.log');
    const execProcess = (args: string[]) => ({ terminal: false, user: { uid: 0, gid: 0 }, args, env: ['PATH=/bin'], cwd: '/' });
    const hi = await sandboxer.execProcess(sandboxId, 'c-sleep', 'exec-hi', execProcess(['echo', 'hi']), { stdout: execOut });
    expect((await sandboxer.waitProcessExit(sandboxId, hi.pid)).exitStatus).toBe(0);
    expect(readFileSync(execOut, 'utf8')).toBe('hi\n');
    const five = await sandboxer.execProcess(sandboxId, 'c-sleep', 'exec-5', execProcess(['sh', '-c', 'exit 5']), {});
    expect((await sandboxer.waitProcessExit(sandboxId, five.pid)).exitStatus).toBe(5);

    await sandboxer.killContainer(sandboxId, 'c-sleep', 9, false);
    expect((await sandboxer.waitProcessExit(sandboxId, pid)).exitStatus).toBe(137);
    expect((await sandboxer.containerStatus(sandboxId, 'c-sleep')).state).toBe('stopped');
    await sandboxer.deleteContainer(sandboxId, 'c-sleep');
    await sandboxer.deleteContainer(sandboxId, 'c-sleep');
    expect((await sandboxer.containerStatus(sandboxId, 'c-sleep')).state).toBe('absent');
    expect(await mountPointsUnder(join(base, 'bundles', 'c-sleep'))).toEqual([]);
  });

  it('fails a create with runc\'s own reason and leaves nothing behind', async () => {
    const spec = containerSpec('c-broken', ['true']);
    rmSync(join(spec.bundleDir, 'config.json'));
    const failure = sandboxer.createContainer(spec);
    await expect(failure).rejects.toSatisfy((error: unknown) => isKtsError(error, 'failed_precondition'));
    await expect(failure).rejects.toThrow(/config\.json/);
    expect(await mountPointsUnder(spec.bundleDir)).toEqual([]);
    expect((await sandboxer.containerStatus(sandboxId, 'c-broken')).state).toBe('absent');
  });

  it('fails a create whose rootfs cannot be mounted with mount\'s own words and leaves nothing behind', async () => {
    const spec = containerSpec('c-nolower', ['true']);
    spec.rootfsMounts = [{ type: 'overlay', source: 'overlay', options: [`lowerdir=${join(base, 'no-such-layer')}`, ...spec.rootfsMounts[0]!.options.slice(1)] }];
    const failure = sandboxer.createContainer(spec);
    await expect(failure).rejects.toThrow(/mount overlay overlay on .*rootfs: .*mount.*(No such file|does not exist|wrong fs type|special device)/is);
    expect(await mountPointsUnder(spec.bundleDir)).toEqual([]);
    expect((await sandboxer.containerStatus(sandboxId, 'c-nolower')).state).toBe('absent');
  });

  it('mounts an overlay rootfs of many layers whose options nearly fill the page the kernel takes for them', async () => {
    // Layers of long paths until the options are nearly a page (mount(2) takes at most one): an image of many
    // layers, as containerd hands over its snapshots.
    const spec = containerSpec('c-many', ['cat', '/marker'], 'c-many.log');
    const [, ...upperAndWork] = spec.rootfsMounts[0]!.options;
    const layers: string[] = [];
    const optionsWith = (all: string[]) => [`lowerdir=${[...all, lowerDir].join(':')}`, ...upperAndWork];
    for (let i = 0; optionsWith([...layers, 'x'.repeat(100)]).join(',').length < 4000; i++) {
      layers.push(join(base, 'layers', 'many', `${String(i).padStart(2, '0')}-${'l'.repeat(80)}`));
    }
    for (const layer of layers) mkdirSync(layer, { recursive: true });
    writeFileSync(join(layers[0]!, 'marker'), 'top layer\n');
    spec.rootfsMounts = [{ type: 'overlay', source: 'overlay', options: optionsWith(layers) }];
    expect(spec.rootfsMounts[0]!.options.join(',').length).toBeGreaterThan(3800);
    const { pid } = await sandboxer.createContainer(spec);
    await sandboxer.startContainer(sandboxId, 'c-many');
    expect((await sandboxer.waitProcessExit(sandboxId, pid)).exitStatus).toBe(0);
    expect(readFileSync(join(base, 'c-many.log'), 'utf8')).toBe('top layer\n');
    await sandboxer.deleteContainer(sandboxId, 'c-many');
    expect(await mountPointsUnder(spec.bundleDir)).toEqual([]);
  });

  it('refuses to start a created container whose init died with FAILED_PRECONDITION naming runc\'s reason', async () => {
    const { pid } = await sandboxer.createContainer(containerSpec('c-dead', ['true']));
    process.kill(pid, 'SIGKILL');
    expect(await eventually(() => !processAlive(pid))).toBe(true);
    const start = sandboxer.startContainer(sandboxId, 'c-dead');
    await expect(start).rejects.toSatisfy((error: unknown) => isKtsError(error, 'failed_precondition'));
    await expect(start).rejects.toThrow(/runc start c-dead: .*stopped/);
    await sandboxer.deleteContainer(sandboxId, 'c-dead');
    expect((await sandboxer.containerStatus(sandboxId, 'c-dead')).state).toBe('absent');
  });

  it('gives the exit of a process that ended while no daemon was watching', async () => {
    const { pid } = await sandboxer.createContainer(containerSpec('c-late', ['sh', '-c', 'sleep 0.3; exit 7']));
    await sandboxer.startContainer(sandboxId, 'c-late');
    await sandboxer.close(); // the daemon is gone
    const exitFile = join(options.rootDir, 'sandboxes', sandboxId, 'exits', String(pid));
    expect(await eventually(() => existsSync(exitFile))).toBe(true);

    sandboxer = new RuncSandboxer(options); // the daemon is back
    expect(await sandboxer.waitProcessExit(sandboxId, pid)).toMatchObject({ exitStatus: 7 });
    expect((await sandboxer.containerStatus(sandboxId, 'c-late')).exit?.exitStatus).toBe(7);
    await expect(sandboxer.sandboxStatus(sandboxId)).resolves.toEqual({ alive: true, pid: holderPid });
  });

  it('removes the sandbox: no process, no mount, no directory, no cgroup left', async () => {
    const { pid: sleeperPid } = await sandboxer.createContainer(containerSpec('c-left', ['sh', '-c', 'sleep 1000 & sleep 1000']));
    await sandboxer.startContainer(sandboxId, 'c-left');
    const sandboxDir = join(options.rootDir, 'sandboxes', sandboxId);
    const initPid = Number(readFileSync(join(sandboxDir, 'init.pid'), 'utf8').split(' ')[0]);
    const containerPids = await sandboxer.pids(sandboxId, 'c-left');
    expect(containerPids.length).toBe(2);
    const sandboxExit = sandboxer.waitSandboxExit(sandboxId);

    await sandboxer.removeSandbox(sandboxId);
    expect((await sandboxExit).exitStatus).toBe(137);
    for (const pid of [initPid, holderPid, sleeperPid, ...containerPids]) {
      expect(await eventually(() => !processAlive(pid)), `pid ${pid} still alive`).toBe(true);
    }
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(base);
    expect(existsSync(sandboxDir)).toBe(false);
    expect(existsSync(`/sys/fs/cgroup/memory/kts/${sandboxId}`)).toBe(false);
    expect((await sandboxer.containerStatus(sandboxId, 'c-left')).state).toBe('absent');
    await sandboxer.removeSandbox(sandboxId);
  });
});
