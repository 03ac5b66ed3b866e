// microVM sandboxes end to end, under TCG on these machines: a real QEMU per pod, the guest image
// built by scripts/build-guest.sh, the in-guest agent running busybox with crun (or runc) inside the VM.
import { execFileSync } from 'node:child_process';
import { closeSync, constants, createReadStream, existsSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { Socket } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QmpClient } from '../src/backends/vmm/qemu/qmpClient.js';
import { busyboxRootfs, ociSpec } from './helpers/bundles.js';
import { REPO, TestDaemon, canRunVms, isAlive, mountsUnder, qemuProcessesUnder, until, writeYaml } from './helpers/daemon.js';
import { controllerClient, taskClient, type ProtoClient } from './helpers/protoClient.js';

const GUEST_DIR = process.env.KTS_GUEST_DIR ?? '/var/lib/kts/guest';

const skip = canRunVms();
const hypervisorToml = (extra = "boot_deadline_seconds = 120") => `[hypervisor]\nguest_dir = "${GUEST_DIR}"\naccelerator = "auto"\n${extra}\n`;

/** A host process's start time (field 22 of /proc/<pid>/stat), or undefined when there is none. */
function startTimeOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

describe.skipIf(skip)(`microVM pods under QEMU${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon(hypervisorToml());
  let vmPod: { podId: string; containerId: string };
  let qemuPid: number;

  beforeAll(async () => {
    execFileSync('bash', [path.join(REPO, 'scripts/build-guest.sh'), GUEST_DIR], {
      stdio: 'ignore', timeout: 900_000, env: { ...process.env, KTS_GUEST_AGENT_DIR: path.join(REPO, 'dist/agent') },
    });
    await daemon.start();
  }, 900_000);
  afterAll(() => daemon.cleanup());

  it('given `kts run --runtime vmm`, then the container runs inside a VM and its output is in `kts logs`', async () => {
    vmPod = JSON.parse(daemon.ktsOk('run', '--runtime', 'vmm', '--json', 'examples/pod.yaml', 'examples/busybox.yaml'));
    const pods = JSON.parse(daemon.ktsOk('pods', '--json')) as Array<{ id: string; kind: string; state: string; pid: number }>;
    const pod = pods.find((p) => p.id === vmPod.podId)!;
    expect(pod).toMatchObject({ kind: 'vmm', state: 'ready' });
    qemuPid = pod.pid;
    expect(readFileSync(`/proc/${qemuPid}/cmdline`, 'utf8')).toContain('qemu-system-x86_64');
    const containers = JSON.parse(daemon.ktsOk('ps', '--json')) as Array<{ id: string; state: string }>;
    expect(containers.find((c) => c.id === vmPod.containerId)?.state).toBe('running');
    await until('the line in kts logs', () => daemon.ktsOk('logs', vmPod.containerId).includes('hello from busybox-pod'), 60_000);
    // Inside the VM the kernel is the guest's, not the host's.
    expect(daemon.ktsOk('exec', vmPod.containerId, '--', 'uname', '-r').trim()).not.toBe(execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim());
    const history = JSON.parse(daemon.ktsOk('history', '--json', vmPod.podId)) as { events: Array<{ type: string; payload: { backend?: Record<string, unknown> } }> };
    const backend = history.events.find((e) => e.type === 'SandboxStarted')?.payload.backend;
    expect(backend?.['hypervisor.accelerator']).toMatch(/^(kvm|tcg)$/);
    // The guest image has crun, so the agent runs containers with it (issue 18: a second under TCG is runc's startup).
    expect(backend?.['guest.oci_runtime']).toMatch(/^crun \d/);
    // Under emulation the agent's node runs interpreted (kts.agent_jit=off); under KVM with its JIT.
    expect(backend?.['guest.agent_jit']).toBe(backend?.['hypervisor.accelerator'] === 'tcg' ? 'off' : 'on');
    // crun has no `events --stats`: the agent reads the container's cgroup instead.
    const stats = JSON.parse(daemon.ktsOk('stats', '--json')) as Array<{ id: string; memoryUsageBytes: number; pids: number }>;
    const ours = stats.find((s) => s.id === vmPod.containerId);
    expect(ours?.memoryUsageBytes).toBeGreaterThan(0);
    expect(ours?.pids).toBeGreaterThanOrEqual(1);
  });

  it('runs a second VM pod and a runc pod at the same time on the same daemon', async () => {
    // Pods of their own: a second pod with the first's metadata is refused, as CRI does.
    const secondPod = writeYaml(daemon.root, 'second-vm.yaml', 'metadata:\n  name: second-vm\n  uid: second-vm-uid\n');
    const runcPod = writeYaml(daemon.root, 'beside-runc.yaml', 'metadata:\n  name: beside-runc\n  uid: beside-runc-uid\n');
    const second = JSON.parse(daemon.ktsOk('run', '--runtime', 'vmm', '--json', secondPod, 'examples/busybox.yaml')) as { podId: string };
    const runc = JSON.parse(daemon.ktsOk('run', '--runtime', 'runc', '--json', runcPod, 'examples/busybox.yaml')) as { podId: string };
    const pods = JSON.parse(daemon.ktsOk('pods', '--json')) as Array<{ id: string; kind: string; state: string }>;
    expect(pods.filter((p) => p.state === 'ready').map((p) => p.kind).sort()).toEqual(['runc', 'vmm', 'vmm']);
    expect(qemuProcessesUnder(daemon.root)).toHaveLength(2);
    daemon.ktsOk('rm', second.podId);
    daemon.ktsOk('rm', runc.podId);
    expect(qemuProcessesUnder(daemon.root)).toHaveLength(1);
  });

  it('given a SIGKILLed daemon, when it starts again, then the VM and its container are reattached', async () => {
    await daemon.kill();
    expect(isAlive(qemuPid)).toBe(true);
    await daemon.start();
    const pod = (JSON.parse(daemon.ktsOk('pods', '--json')) as Array<{ id: string; pid: number; state: string }>).find((p) => p.id === vmPod.podId)!;
    expect(pod).toMatchObject({ pid: qemuPid, state: 'ready' });
    expect(daemon.ktsOk('exec', vmPod.containerId, '--', 'echo', 'still-here').trim()).toBe('still-here');
    const types = (JSON.parse(daemon.ktsOk('history', '--json', vmPod.podId)) as { events: Array<{ type: string }> }).events.map((e) => e.type);
    expect(types).toContain('SandboxReattached');
    expect(types).toContain('ContainerReattached');
  });

  it('kills an exec inside the VM by its exec id: the guest pid is signalled by the agent, never on the host', async () => {
    const task = taskClient(daemon.socket);
    try {
      const process = { args: ['sleep', '600'], cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 }, terminal: false };
      await task.Exec!({ id: vmPod.containerId, exec_id: 'long-sleep', spec: { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify(process)) } });
      const { pid } = await task.Start!({ id: vmPod.containerId, exec_id: 'long-sleep' });
      const hostProcessWithThatPid = startTimeOf(pid);
      await task.Kill!({ id: vmPod.containerId, exec_id: 'long-sleep', signal: 9 });
      expect((await task.Wait!({ id: vmPod.containerId, exec_id: 'long-sleep' })).exit_status).toBe(137);
      if (hostProcessWithThatPid) expect(startTimeOf(pid), `host process ${pid} must be untouched`).toBe(hostProcessWithThatPid);
      await task.Delete!({ id: vmPod.containerId, exec_id: 'long-sleep' });
    } finally {
      task.close();
    }
  });

  it('given a daemon killed after the agent started an exec, when it restarts, then recovery asks the agent and records the exec started, then its exit', async () => {
    await daemon.stop();
    // After a restart the exec's ExecProcess call to the agent is the daemon's first host effect.
    await daemon.start({ KTS_CRASH_AT: 'effect.after:1' });
    expect(daemon.kts('exec', vmPod.containerId, '--', 'sh', '-c', 'sleep 2; exit 5').code).not.toBe(0);
    await daemon.exited();
    expect(daemon.logs).toContain('crash point effect.after reached (vmm.execProcess)');
    await daemon.start();
    type ExecEvent = { type: string; caller: string; payload: { exitStatus?: number } };
    const execEvents = () => (JSON.parse(daemon.ktsOk('history', '--json', vmPod.containerId)) as { events: ExecEvent[] }).events
      .filter((e) => e.type.startsWith('Exec')).slice(-4);
    // Recovery runs once the daemon serves: wait for its outcome of the interrupted start, whichever it is.
    await until('recovery to settle the interrupted exec start', () => execEvents().slice(0, 3).length === 3 && execEvents()[2]!.type !== 'ExecStartRequested' && !execEvents()[0]!.type.startsWith('ExecDeleted'), 30_000)
      .catch(() => undefined);
    expect(execEvents().slice(0, 3).map((e) => e.type)).toEqual(['ExecCreated', 'ExecStartRequested', 'ExecStarted']);
    expect(execEvents()[2]!.caller).toMatch(/^recovery: completed the exec start: its process \d+ was started$/);
    const exited = await until('the exec to exit', () => execEvents().find((e) => e.type === 'ExecExited'), 30_000);
    expect(exited.payload.exitStatus).toBe(5);
  });

  it('when the VM pod is removed, then no QEMU, socket, share, mount or directory is left', () => {
    daemon.ktsOk('rm', vmPod.podId);
    expect(isAlive(qemuPid)).toBe(false);
    expect(qemuProcessesUnder(daemon.root)).toEqual([]);
    expect(mountsUnder(daemon.root)).toEqual([]);
    expect(readdirSync(path.join(daemon.root, 'vms'))).toEqual([]);
  });
});

describe.skipIf(skip)(`a guest that never boots${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const badParams = new TestDaemon(hypervisorToml('kernel_params = "rdinit=/no-such-init"\nboot_deadline_seconds = 60'));
  const badKernel = new TestDaemon(hypervisorToml(`kernel = "${path.join(GUEST_DIR, 'no-such-vmlinuz')}"`));

  beforeAll(async () => {
    await badParams.start();
    await badKernel.start();
  });
  afterAll(async () => {
    await badParams.cleanup();
    await badKernel.cleanup();
  });

  it('fails Start with the console tail when the kernel cannot run its init, and leaves nothing running', () => {
    const result = badParams.kts('run', '--runtime', 'vmm', 'examples/pod.yaml', 'examples/busybox.yaml');
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/kts: .*(VM exited while booting|did not answer).*/s);
    expect(result.stderr).toMatch(/Kernel panic|no-such-init|console/);
    expect(qemuProcessesUnder(badParams.root)).toEqual([]);
    const pods = JSON.parse(badParams.ktsOk('pods', '--json')) as Array<{ state: string }>;
    expect(pods.map((p) => p.state)).toEqual(['failed']);
  });

  it('fails Start at once, naming the file, when the kernel is missing', () => {
    const result = badKernel.kts('run', '--runtime', 'vmm', 'examples/pod.yaml', 'examples/busybox.yaml');
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('no-such-vmlinuz is missing');
    expect(qemuProcessesUnder(badKernel.root)).toEqual([]);
  });
});

describe.skipIf(skip)(`a VM pod driven the way containerd drives it, and its failures${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon(hypervisorToml('boot_deadline_seconds = 120\nhealth_interval_seconds = 1'));
  let controller: ProtoClient;
  let task: ProtoClient;
  const sandboxId = 'ctd-vm-pod';

  beforeAll(async () => {
    await daemon.start();
    controller = controllerClient(daemon.socket);
    task = taskClient(daemon.socket);
    await controller.Create!({ sandbox_id: sandboxId, sandboxer: 'kuasar-vmm' });
  });
  afterAll(async () => {
    controller?.close();
    task?.close();
    await daemon.cleanup();
  });

  /** A bundle as containerd makes one: config.json, an empty rootfs/, overlay mounts for it, and a stdout FIFO. */
  function containerdBundle(name: string, holderPid: number, args: string[]) {
    const work = path.join(daemon.root, 'ctd', name);
    const bundle = path.join(work, 'bundle');
    mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
    for (const dir of ['upper', 'work']) mkdirSync(path.join(work, dir));
    const lower = busyboxRootfs(work);
    // containerd derives these namespace paths from Status's pid: inside a VM they mean nothing and are ignored.
    writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(ociSpec(sandboxId, holderPid, args)));
    const stdout = path.join(work, 'stdout');
    execFileSync('mkfifo', [stdout]);
    const rootfs = [{ type: 'overlay', source: 'overlay', target: '', options: [`lowerdir=${lower}`, `upperdir=${path.join(work, 'upper')}`, `workdir=${path.join(work, 'work')}`] }];
    return { bundle, stdout, rootfs };
  }

  it('runs a Task v3 container from a host bundle, overlay rootfs and FIFOs inside the VM', async () => {
    const started = await controller.Start!({ sandbox_id: sandboxId });
    expect(started).toMatchObject({ address: `ttrpc+unix://${daemon.socket}.ttrpc`, version: 3 });
    const { bundle, stdout, rootfs } = containerdBundle('printer', started.pid, ['sh', '-c', 'echo from-inside-the-vm; exit 4']);
    let out = '';
    createReadStream(stdout).on('data', (d) => (out += d));
    await task.Create!({ id: 'vm-printer', bundle, stdout, rootfs });
    await task.Start!({ id: 'vm-printer' });
    expect((await task.Wait!({ id: 'vm-printer' })).exit_status).toBe(4);
    await until('the FIFO output', () => out.includes('from-inside-the-vm'), 10_000);
    await task.Delete!({ id: 'vm-printer' });
    expect(mountsUnder(bundle)).toEqual([]);
  });

  it('given a container writing to a FIFO, when the daemon is SIGKILLed and restarted, then every line still reaches the FIFO, in order', async () => {
    const { pid } = await controller.Status!({ sandbox_id: sandboxId });
    const { bundle, stdout, rootfs } = containerdBundle('counter', pid, ['sh', '-c', 'i=0; while [ $i -lt 30 ]; do echo line-$i; i=$((i+1)); sleep 0.3; done']);
    // Opened read-write, as containerd's fifo package does, so the daemon's restart is no end of file.
    const reader = new Socket({ fd: openSync(stdout, constants.O_RDWR | constants.O_NONBLOCK), readable: true, writable: false });
    let out = '';
    reader.on('data', (d) => (out += d));
    try {
      await task.Create!({ id: 'vm-counter', bundle, stdout, rootfs });
      await task.Start!({ id: 'vm-counter' });
      await until('the first lines', () => out.includes('line-3\n'), 30_000);
      await daemon.kill();
      await daemon.start();
      expect((await task.Wait!({ id: 'vm-counter' })).exit_status).toBe(0);
      await until('the last line', () => out.includes('line-29\n'), 10_000);
      // At least once: a chunk forwarded just before the kill may come twice, never out of order or lost.
      const lines = out.trim().split('\n').filter((line, index, all) => line !== all[index - 1]);
      expect(lines).toEqual(Array.from({ length: 30 }, (_, i) => `line-${i}`));
      await task.Delete!({ id: 'vm-counter' });
    } finally {
      reader.destroy();
    }
  });

  it('forwards containerd\'s stdin FIFO into the VM: the container reads what is written, and ends at the writer\'s close or at CloseIO', async () => {
    const { pid } = await controller.Status!({ sandbox_id: sandboxId });
    const readAll = (fifo: string) => {
      const reader = new Socket({ fd: openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK), readable: true, writable: false });
      const got = { text: '' };
      reader.on('data', (d) => (got.text += d));
      return { got, close: () => reader.destroy() };
    };
    // 1. The writer writes two lines, then closes: `cat` echoes them and exits 0 at end of file.
    const byClose = containerdBundle('stdin-close', pid, ['sh', '-c', 'cat; echo cat-ended']);
    const stdinByClose = path.join(path.dirname(byClose.stdout), 'stdin');
    execFileSync('mkfifo', [stdinByClose]);
    const outByClose = readAll(byClose.stdout);
    // 2. The writer stays open (as containerd's does): CloseIO ends the stream.
    const byCloseIO = containerdBundle('stdin-closeio', pid, ['sh', '-c', 'read line; echo got:$line; cat; echo cat-ended']);
    const stdinByCloseIO = path.join(path.dirname(byCloseIO.stdout), 'stdin');
    execFileSync('mkfifo', [stdinByCloseIO]);
    const outByCloseIO = readAll(byCloseIO.stdout);
    try {
      await task.Create!({ id: 'vm-stdin-close', bundle: byClose.bundle, stdin: stdinByClose, stdout: byClose.stdout, rootfs: byClose.rootfs });
      await task.Start!({ id: 'vm-stdin-close' });
      const writer = openSync(stdinByClose, constants.O_WRONLY);
      writeSync(writer, 'first line\nsecond line\n');
      closeSync(writer);
      expect((await task.Wait!({ id: 'vm-stdin-close' })).exit_status).toBe(0);
      await until('the echoed lines', () => outByClose.got.text.includes('cat-ended'), 10_000);
      expect(outByClose.got.text).toBe('first line\nsecond line\ncat-ended\n');

      await task.Create!({ id: 'vm-stdin-closeio', bundle: byCloseIO.bundle, stdin: stdinByCloseIO, stdout: byCloseIO.stdout, rootfs: byCloseIO.rootfs });
      await task.Start!({ id: 'vm-stdin-closeio' });
      const heldOpen = openSync(stdinByCloseIO, constants.O_RDWR);
      writeSync(heldOpen, 'hello\n');
      await until('the first line read inside the VM', () => outByCloseIO.got.text.includes('got:hello'), 30_000);
      writeSync(heldOpen, 'more\n');
      await task.CloseIO!({ id: 'vm-stdin-closeio', stdin: true });
      expect((await task.Wait!({ id: 'vm-stdin-closeio' })).exit_status).toBe(0);
      closeSync(heldOpen);
      await until('the end of cat', () => outByCloseIO.got.text.includes('cat-ended'), 10_000);
      expect(outByCloseIO.got.text).toBe('got:hello\nmore\ncat-ended\n');
      await task.Delete!({ id: 'vm-stdin-close' });
      await task.Delete!({ id: 'vm-stdin-closeio' });
    } finally {
      outByClose.close();
      outByCloseIO.close();
    }
  });

  it('turns NOTREADY with a reason when the guest is paused, and READY again when it runs', async () => {
    // QEMU serves one QMP client at a time and the daemon's health check is one: connect per command.
    const qmp = async (command: string) => {
      const client = await QmpClient.connect(path.join(daemon.root, 'vms', sandboxId, 'qmp.sock'));
      await client.execute(command).finally(() => client.close());
    };
    await qmp('stop');
    await until('SANDBOX_NOTREADY', async () => (await controller.Status!({ sandbox_id: sandboxId })).state === 'SANDBOX_NOTREADY', 20_000);
    await qmp('cont');
    await until('SANDBOX_READY', async () => (await controller.Status!({ sandbox_id: sandboxId })).state === 'SANDBOX_READY', 30_000);
    const events = (JSON.parse(daemon.ktsOk('history', '--json', sandboxId)) as { events: Array<{ type: string; payload: { reason?: string } }> }).events;
    expect(events.find((e) => e.type === 'SandboxUnhealthy')?.payload.reason).toMatch(/not running \(paused\)/);
    expect(events.map((e) => e.type)).toContain('SandboxHealthy');
  });

  it('when QEMU dies, marks the sandbox exited and Wait returns', async () => {
    const { pid } = await controller.Status!({ sandbox_id: sandboxId });
    const waited = controller.Wait!({ sandbox_id: sandboxId });
    process.kill(pid, 'SIGKILL');
    const exit = await waited;
    expect(Number(exit.exited_at.seconds)).toBeGreaterThan(0);
    expect((await controller.Status!({ sandbox_id: sandboxId })).state).toBe('SANDBOX_NOTREADY');
    await controller.Shutdown!({ sandbox_id: sandboxId });
    expect(qemuProcessesUnder(daemon.root)).toEqual([]);
    expect(mountsUnder(daemon.root)).toEqual([]);
  });
});

describe.skipIf(skip)(`a microVM guest told to use runc${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon(hypervisorToml('boot_deadline_seconds = 120\nguest_oci_runtime = "runc"'));
  beforeAll(() => daemon.start());
  afterAll(() => daemon.cleanup());

  it('given guest_oci_runtime = "runc", then the guest runs its container and an exec with runc, and records so', () => {
    const pod = JSON.parse(daemon.ktsOk('run', '--runtime', 'vmm', '--json', 'examples/pod.yaml', 'examples/busybox.yaml')) as { podId: string; containerId: string };
    expect(daemon.ktsOk('exec', pod.containerId, '--', 'echo', 'by-runc').trim()).toBe('by-runc');
    const history = JSON.parse(daemon.ktsOk('history', '--json', pod.podId)) as { events: Array<{ type: string; payload: { backend?: Record<string, unknown> } }> };
    expect(history.events.find((e) => e.type === 'SandboxStarted')?.payload.backend?.['guest.oci_runtime']).toMatch(/^runc( \d|$)/);
    daemon.ktsOk('rm', pod.podId);
  });
});
