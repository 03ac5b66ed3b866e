// A hostile guest against the host through the VM's 9p share (issue 12, findings 3–6 and 9), with a real
// daemon, a real QEMU (TCG here) and the real agent. The guest's view of the share IS the host directory
// vms/<id>/share (security_model=none: a symlink or FIFO the guest makes there is that host object), so
// the test plays the guest by planting links, FIFOs and renames in that directory from the host side, at
// the moments a guest that knows its own container and exec ids would; one VM runs every attack in turn.
import { execFileSync } from 'node:child_process';
import {
  appendFileSync, constants, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxRootfs, ociSpec } from './helpers/bundles.js';
import { TestDaemon, canRunVms, mountsUnder, until } from './helpers/daemon.js';
import { controllerClient, taskClient, type ProtoClient } from './helpers/protoClient.js';
import { fifoReader } from '../src/agentProtocol/fifoReader.testkit.js';

const GUEST_DIR = process.env.KTS_GUEST_DIR ?? '/var/lib/kts/guest';
const skip = canRunVms() ?? (existsSync(path.join(GUEST_DIR, 'initrd.img')) ? undefined : `needs the guest image in ${GUEST_DIR} (scripts/build-guest.sh)`);
const STDIO_MAX = 256 * 1024;
const CONSOLE_MAX = 64 * 1024;
const PROCESS_TYPE = 'types.containerd.io/opencontainers/runtime-spec/1/Process';
const SECRET = 'SECRET-OF-ANOTHER-VM\n';

const within = <T>(what: string, promise: Promise<T>, seconds: number) =>
  Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what} did not return in ${seconds} s: the daemon is stuck`)), seconds * 1000).unref())]);

describe.skipIf(skip)(`a hostile guest writing its 9p share${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon(`[hypervisor]\nguest_dir = "${GUEST_DIR}"\naccelerator = "auto"\nboot_deadline_seconds = 120\n`
    + `share_stdio_max_bytes = ${STDIO_MAX}\nconsole_max_bytes = ${CONSOLE_MAX}\n`);
  const sandboxId = 'escape-pod';
  /** Host directories the guest must never reach: a canary with a victim file, and the sources of two bind mounts. */
  let canary: string;
  let victim: string;
  let roSource: string;
  let rwSource: string;
  let controller: ProtoClient;
  let task: ProtoClient;
  let holderPid: number;
  const readers: Array<{ close: () => void }> = [];
  const share = path.join(daemon.root, 'vms', sandboxId, 'share');
  const inShare = (...parts: string[]) => path.join(share, ...parts);
  const canaryIntact = () => {
    expect(readdirSync(canary)).toEqual(['victim']);
    expect(readFileSync(victim, 'utf8')).toBe('precious');
    expect(mountsUnder(canary)).toEqual([]);
  };

  beforeAll(async () => {
    canary = mkdtempSync(path.join(tmpdir(), 'kts-canary-'));
    victim = path.join(canary, 'victim');
    roSource = mkdtempSync(path.join(tmpdir(), 'kts-ro-'));
    rwSource = mkdtempSync(path.join(tmpdir(), 'kts-rw-'));
    writeFileSync(victim, 'precious');
    await daemon.start();
    controller = controllerClient(daemon.socket);
    task = taskClient(daemon.socket);
    await controller.Create!({ sandbox_id: sandboxId, sandboxer: 'kuasar-vmm' });
    holderPid = (await controller.Start!({ sandbox_id: sandboxId })).pid;
  }, 300_000);
  afterAll(async () => {
    for (const reader of readers) reader.close();
    controller?.close();
    task?.close();
    await daemon.cleanup();
    for (const dir of [canary, roSource, rwSource].filter(Boolean)) {
      for (const point of mountsUnder(dir).reverse()) execFileSync('umount', ['-l', point]);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  /** A bundle as containerd makes one (overlay rootfs over busybox), with extra OCI mounts and a stdout FIFO being read. */
  function bundle(name: string, args: string[], mounts: object[] = []) {
    const work = path.join(daemon.root, 'ctd', name);
    const bundleDir = path.join(work, 'bundle');
    mkdirSync(path.join(bundleDir, 'rootfs'), { recursive: true });
    for (const dir of ['upper', 'work']) mkdirSync(path.join(work, dir));
    const lower = busyboxRootfs(work);
    for (const applet of ['dd', 'tr', 'ls']) execFileSync('ln', ['-sf', 'busybox', path.join(lower, 'bin', applet)]);
    const spec = ociSpec(sandboxId, holderPid, args);
    // Each container its own cgroup: deleting one must not kill the others with it.
    const linux = { ...spec.linux, cgroupsPath: `/kts-it/${sandboxId}/${name}` };
    writeFileSync(path.join(bundleDir, 'config.json'), JSON.stringify({ ...spec, linux, mounts: [...spec.mounts, ...mounts] }));
    const stdout = fifoReader(path.join(work, 'stdout'));
    readers.push(stdout);
    const rootfs = [{ type: 'overlay', source: 'overlay', target: '', options: [`lowerdir=${lower}`, `upperdir=${path.join(work, 'upper')}`, `workdir=${path.join(work, 'work')}`] }];
    return { bundleDir, work, stdoutPath: path.join(work, 'stdout'), stdout: stdout.got, rootfs };
  }

  async function createAndStart(id: string, made: ReturnType<typeof bundle>): Promise<number> {
    const began = Date.now();
    await task.Create!({ id, bundle: made.bundleDir, stdout: made.stdoutPath, rootfs: made.rootfs });
    const createMs = Date.now() - began;
    console.log(`vmEscape: Task.Create of ${id} took ${createMs} ms`);
    await task.Start!({ id });
    return createMs;
  }

  const execSpec = (args: string[]) => ({ type_url: PROCESS_TYPE, value: Buffer.from(JSON.stringify({ args, cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 }, terminal: false })) });
  const execStarting = async (id: string, execId: string, args: string[], stdout: string) => {
    await task.Exec!({ id, exec_id: execId, spec: execSpec(args), stdout });
    return task.Start!({ id, exec_id: execId });
  };

  let main: ReturnType<typeof bundle>;

  it('finding 3: a symlink planted as the container\'s share directory makes the daemon write or mount nothing outside the share', async () => {
    mkdirSync(inShare('c'), { recursive: true });
    symlinkSync(canary, inShare('c', 'planted'));
    const made = bundle('planted', ['sleep', '600']);
    await task.Create!({ id: 'planted', bundle: made.bundleDir, stdout: made.stdoutPath, rootfs: made.rootfs }).catch(() => undefined);
    canaryIntact();
    // The failed create cleaned up after itself: the link is gone, its target untouched.
    await task.Delete!({ id: 'planted' }).catch(() => undefined);
    expect(existsSync(inShare('c', 'planted'))).toBe(false);
    canaryIntact();
  });

  it('finding 4: a bind mount marked read-only cannot be written through the share; a read-write one can (happy path)', async () => {
    writeFileSync(path.join(roSource, 'config'), 'original');
    main = bundle('main', ['sh', '-c', 'while true; do echo tick; sleep 1; done'], [
      { destination: '/ro', type: 'bind', source: roSource, options: ['rbind', 'ro'] },
      { destination: '/rw', type: 'bind', source: rwSource, options: ['rbind', 'rw'] },
    ]);
    await createAndStart('main', main);
    await until('the first tick', () => main.stdout.text.includes('tick'), 60_000);
    // Indexes 2 and 3: ociSpec's proc and /dev tmpfs come first.
    expect(() => writeFileSync(inShare('c', 'main', 'm', '2', 'config'), 'overwritten by the guest')).toThrow(/EROFS/);
    expect(() => writeFileSync(inShare('c', 'main', 'm', '2', 'new'), 'x')).toThrow(/EROFS/);
    expect(readFileSync(path.join(roSource, 'config'), 'utf8')).toBe('original');
    writeFileSync(inShare('c', 'main', 'm', '3', 'from-guest'), 'ok');
    expect(readFileSync(path.join(rwSource, 'from-guest'), 'utf8')).toBe('ok');
  });

  it('a device node the guest makes in the share opens nothing on the host (the share and its binds are nodev)', () => {
    // security_model=none makes it a real host node; QEMU opens guest files through this same mount.
    for (const node of [inShare('dev-null'), inShare('c', 'main', 'dev-null'), inShare('c', 'main', 'm', '3', 'dev-null')]) {
      execFileSync('mknod', [node, 'c', '1', '3']);
      expect(() => openSync(node, constants.O_RDONLY)).toThrow(/EACCES/);
      rmSync(node);
    }
  });

  it('finding 3: an exec directory linked to a host directory, and an exec stdout linked to a host file, are refused; the host is untouched', async () => {
    const log = (name: string) => path.join(main.work, `${name}.log`);
    symlinkSync(canary, inShare('c', 'main', 'exec'));
    await expect(execStarting('main', 'e1', ['echo', 'x'], log('e1'))).rejects.toThrow();
    canaryIntact();
    rmSync(inShare('c', 'main', 'exec'));
    mkdirSync(inShare('c', 'main', 'exec', 'e2'), { recursive: true });
    symlinkSync(victim, inShare('c', 'main', 'exec', 'e2', 'stdout'));
    await expect(execStarting('main', 'e2', ['echo', 'x'], log('e2'))).rejects.toThrow();
    canaryIntact();
  });

  it('finding 5: a FIFO where the daemon would create a share file fails that exec at once and stalls nothing', async () => {
    mkdirSync(inShare('c', 'main', 'exec', 'e3'), { recursive: true });
    execFileSync('mkfifo', [inShare('c', 'main', 'exec', 'e3', 'stdout')]);
    await expect(within('Exec with a planted FIFO', execStarting('main', 'e3', ['echo', 'x'], path.join(main.work, 'e3.log')), 30)).rejects.toThrow(/regular file|refused/);
  });

  it('happy path: an exec still runs and its output reaches the host file', async () => {
    const log = path.join(main.work, 'e4.log');
    await execStarting('main', 'e4', ['echo', 'via-exec'], log);
    expect((await task.Wait!({ id: 'main', exec_id: 'e4' })).exit_status).toBe(0);
    await until('the exec output', () => existsSync(log) && readFileSync(log, 'utf8') === 'via-exec\n', 10_000);
    await task.Delete!({ id: 'main', exec_id: 'e4' });
  });

  it('finding 5: a rewritten bundle marker does not make the daemon unmount another container\'s rootfs, and a FIFO marker does not stall removal', async () => {
    const other = bundle('other', ['sleep', '600']);
    await createAndStart('other', other);
    const mainRootfs = path.join(main.bundleDir, 'rootfs');
    expect(mountsUnder(mainRootfs)).not.toEqual([]);
    writeFileSync(inShare('c', 'other', 'host-bundle'), main.bundleDir);
    await task.Kill!({ id: 'other', signal: 9 });
    await task.Wait!({ id: 'other' });
    await within('Delete', task.Delete!({ id: 'other' }), 60);
    expect(mountsUnder(mainRootfs)).not.toEqual([]);
    expect(mountsUnder(path.join(other.bundleDir, 'rootfs'))).toEqual([]);

    const fifoMarked = bundle('fifo-marked', ['sleep', '600']);
    await createAndStart('fifo-marked', fifoMarked);
    execFileSync('mkfifo', [inShare('c', 'fifo-marked', 'host-bundle')]);
    await task.Kill!({ id: 'fifo-marked', signal: 9 });
    await task.Wait!({ id: 'fifo-marked' });
    await within('Delete with a FIFO in the share', task.Delete!({ id: 'fifo-marked' }), 60);
    expect(mountsUnder(path.join(fifoMarked.bundleDir, 'rootfs'))).toEqual([]);
    // The other container was never touched.
    const log = path.join(main.work, 'e5.log');
    await execStarting('main', 'e5', ['cat', '/proc/self/mounts'], log);
    expect((await task.Wait!({ id: 'main', exec_id: 'e5' })).exit_status).toBe(0);
  });

  it('finding 6: after a restart, a pump whose exec directory the guest swapped for a link reads nothing outside the share; the container\'s own pump carries on', async () => {
    const ticker = fifoReader(path.join(main.work, 'ticker'));
    readers.push(ticker);
    await execStarting('main', 'ticker', ['sh', '-c', 'while true; do echo tock; sleep 1; done'], path.join(main.work, 'ticker'));
    await until('the exec ticking', () => ticker.got.text.includes('tock'), 30_000);
    await daemon.kill();
    // Another VM's container directory, as far as this guest can tell: its outputs are longer than any offset reached.
    const elsewhere = path.join(daemon.root, 'another-share', 'c', 'main');
    mkdirSync(path.join(elsewhere, 'exec', 'ticker'), { recursive: true });
    for (const file of ['stdout', 'exec/ticker/stdout']) writeFileSync(path.join(elsewhere, file), SECRET.repeat(20_000));
    renameSync(inShare('c', 'main', 'exec', 'ticker'), inShare('c', 'main', 'exec', 'ticker-moved'));
    symlinkSync(path.join(elsewhere, 'exec', 'ticker'), inShare('c', 'main', 'exec', 'ticker'));
    // The container's own directory is the guest's to rename too, unless the kernel refuses.
    let swappedContainerDir = false;
    try {
      renameSync(inShare('c', 'main'), inShare('c', 'main-moved'));
      symlinkSync(elsewhere, inShare('c', 'main'));
      swappedContainerDir = true;
    } catch (error) {
      expect((error as NodeJS.ErrnoException).code).toBe('EBUSY');
    }
    const ticksBefore = main.stdout.text.length;
    await daemon.start();
    expect((await controller.Status!({ sandbox_id: sandboxId })).state).toBe('SANDBOX_READY');
    if (!swappedContainerDir) await until('the container\'s ticks after the restart', () => main.stdout.text.length > ticksBefore + 10, 30_000);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    expect(ticker.got.text).not.toContain('SECRET');
    expect(main.stdout.text).not.toContain('SECRET');
    expect(swappedContainerDir).toBe(false);
  });

  it('finding 9: a container writing 4 MiB into a FIFO gets every byte through, and the share file keeps no more than about share_stdio_max_bytes on disk', async () => {
    const flood = bundle('flood', ['sh', '-c', 'dd if=/dev/zero bs=65536 count=64 2>/dev/null | tr "\\0" a']);
    await createAndStart('flood', flood);
    expect((await task.Wait!({ id: 'flood' })).exit_status).toBe(0);
    await until('4 MiB through the FIFO', () => flood.stdout.bytes >= 4 * 1024 * 1024, 60_000);
    expect(flood.stdout.bytes).toBe(4 * 1024 * 1024);
    const onDisk = statSync(inShare('c', 'flood', 'stdout')).blocks * 512;
    console.log(`vmEscape: share stdout after 4 MiB: ${onDisk} bytes on disk`);
    expect(onDisk).toBeLessThanOrEqual(2 * STDIO_MAX + 64 * 1024);
    await task.Delete!({ id: 'flood' });
  });

  it('finding 9: a chattering console is rotated to console_max_bytes, one old copy kept', async () => {
    const consoleLog = path.join(daemon.root, 'vms', sandboxId, 'console.log');
    appendFileSync(consoleLog, 'guest chatter '.repeat(30_000));
    await until('the console rotated', () => statSync(consoleLog).size <= CONSOLE_MAX && existsSync(`${consoleLog}.1`), 15_000);
    expect(statSync(`${consoleLog}.1`).size).toBeLessThanOrEqual(CONSOLE_MAX);
  });

  it('when the pod is shut down, nothing stays mounted, the share is gone, and the host canary and read-only source are untouched', async () => {
    await controller.Shutdown!({ sandbox_id: sandboxId });
    expect(mountsUnder(daemon.root)).toEqual([]);
    expect(existsSync(share)).toBe(false);
    canaryIntact();
    expect(readdirSync(roSource)).toEqual(['config']);
  });
});
