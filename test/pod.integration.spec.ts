import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, TestDaemon, canRunContainers, isAlive, mountsUnder, until, writeYaml } from './helpers/daemon.js';

const skip = canRunContainers();
const POD = path.join(REPO, 'examples/pod.yaml');
const BUSYBOX = path.join(REPO, 'examples/busybox.yaml');

describe.skipIf(skip)(`a busybox pod through the kts CLI${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let podId = '';
  let containerId = '';
  let holderPid = 0;
  let containerPid = 0;

  beforeAll(async () => {
    await daemon.start();
  });
  afterAll(() => daemon.cleanup());

  it('given a running daemon, when `kts run` starts the example pod, then the pod is ready and its container running', () => {
    const run = JSON.parse(daemon.ktsOk('run', '--json', POD, BUSYBOX)) as { podId: string; containerId: string; pid: number };
    podId = run.podId;
    containerId = run.containerId;
    const pods = JSON.parse(daemon.ktsOk('pods', '--json')) as Array<{ id: string; state: string; name: string; pid: number; kind: string }>;
    const pod = pods.find((p) => p.id === podId)!;
    expect(pod).toMatchObject({ state: 'ready', name: 'busybox-pod', kind: 'runc' });
    holderPid = pod.pid;
    const containers = JSON.parse(daemon.ktsOk('ps', '--json')) as Array<{ id: string; name: string; podId: string; state: string; pid: number }>;
    const container = containers.find((c) => c.id === containerId)!;
    expect(container).toMatchObject({ name: 'busybox', podId, state: 'running' });
    containerPid = container.pid;
    expect(isAlive(containerPid)).toBe(true);
  });

  it('runs the container in the pod\'s own namespaces, not the host\'s', () => {
    for (const ns of ['net', 'uts', 'ipc', 'pid']) {
      const pod = readlinkSync(`/proc/${holderPid}/ns/${ns}`);
      expect(pod).not.toBe(readlinkSync(`/proc/self/ns/${ns}`));
      expect(readlinkSync(`/proc/${containerPid}/ns/${ns}`)).toBe(pod);
    }
  });

  it('shows the container\'s output in `kts logs`', async () => {
    const logs = await until('the greeting in kts logs', () => {
      const out = daemon.ktsOk('logs', containerId);
      return out.includes('hello from busybox-pod') && out;
    });
    expect(logs).toContain('in /tmp, GREETING=kuasar-ts');
  });

  it('runs a command in the container with `kts exec` and returns its exit code', () => {
    expect(daemon.ktsOk('exec', containerId, '--', 'hostname').trim()).toBe('busybox-pod');
    const failing = daemon.kts('exec', containerId, '--', 'sh', '-c', 'echo oops >&2; exit 4');
    expect(failing.code).toBe(4);
  });

  it('lists every transition in `kts history`, with trace ids, and the hash chain verifies', () => {
    const history = JSON.parse(daemon.ktsOk('history', '--json', podId)) as { chainOk: boolean; events: Array<{ type: string; traceId: string; stateBefore: string; stateAfter: string }> };
    expect(history.chainOk).toBe(true);
    const types = history.events.map((e) => e.type);
    expect(types.slice(0, 3)).toEqual(['SandboxCreated', 'SandboxStartRequested', 'SandboxStarted']);
    expect(types).toEqual(expect.arrayContaining(['ContainerCreateRequested', 'ContainerCreated', 'ContainerStartRequested', 'ContainerStarted', 'ExecCreated', 'ExecStarted', 'ExecExited']));
    expect(history.events.every((e) => /^[0-9a-f]{32}$/.test(e.traceId) || e.traceId === '')).toBe(true);
    const runTraces = new Set(history.events.slice(0, 7).map((e) => e.traceId));
    expect(runTraces.size).toBe(1); // one `kts run` is one trace
    const table = daemon.ktsOk('history', podId);
    expect(table).toContain('created → starting');
    expect(table).toContain('hash chain: verified');
  });

  it('when the pod is stopped and removed, then no process, mount, socket or directory is left behind', async () => {
    daemon.ktsOk('stop', podId);
    const afterStop = JSON.parse(daemon.ktsOk('ps', '-a', '--json')) as Array<{ id: string; state: string; exitCode: number }>;
    expect(afterStop.find((c) => c.id === containerId)).toMatchObject({ state: 'stopped', exitCode: 137 });
    daemon.ktsOk('rm', podId);
    await until('processes to be gone', () => !isAlive(containerPid) && !isAlive(holderPid));
    expect(JSON.parse(daemon.ktsOk('pods', '--json'))).toEqual([]);
    expect(JSON.parse(daemon.ktsOk('ps', '--json'))).toEqual([]);
    expect(mountsUnder(daemon.root)).toEqual([]);
    expect(existsSync(path.join(daemon.root, 'sandboxes', podId))).toBe(false);
    const history = JSON.parse(daemon.ktsOk('history', '--json', podId)) as { events: Array<{ type: string }> };
    expect(history.events.at(-1)!.type).toBe('SandboxRemoved');
  });

  /** A cgroup file of the container, under cgroup v2 (`/sys/fs/cgroup/kts/<pod>/<container>/`) or v1's controller hierarchy. */
  function cgroupFile(pod: string, container: string, v2: string, v1: [string, string]): string {
    const candidates = [path.join('/sys/fs/cgroup/kts', pod, container, v2), path.join('/sys/fs/cgroup', v1[0], 'kts', pod, container, v1[1])];
    const found = candidates.find((file) => existsSync(file));
    if (!found) throw new Error(`no cgroup file among ${candidates.join(', ')}`);
    return readFileSync(found, 'utf8').trim();
  }

  it('applies the container YAML\'s linux.resources and mounts: memory and CPU limits in its cgroup, the host directory read-only at its path', () => {
    const hostDir = path.join(daemon.root, 'data');
    mkdirSync(hostDir);
    writeFileSync(path.join(hostDir, 'greeting'), 'from-the-host\n');
    const yaml = writeYaml(daemon.root, 'limited.yaml', [
      'metadata:\n  name: limited', 'image:\n  image: busybox', 'command: ["sleep", "600"]',
      `mounts:\n  - container_path: /data\n    host_path: ${hostDir}\n    readonly: true`,
      'linux:\n  resources:\n    memory_limit_in_bytes: 67108864\n    cpu_period: 100000\n    cpu_quota: 50000',
    ].join('\n'));
    const run = JSON.parse(daemon.ktsOk('run', '--json', POD, yaml)) as { podId: string; containerId: string };
    try {
      expect(cgroupFile(run.podId, run.containerId, 'memory.max', ['memory', 'memory.limit_in_bytes'])).toBe('67108864');
      const cpu = existsSync('/sys/fs/cgroup/cpu/kts') ? cgroupFile(run.podId, run.containerId, 'cpu.max', ['cpu', 'cpu.cfs_quota_us']) : cgroupFile(run.podId, run.containerId, 'cpu.max', ['cpu', 'cpu.max']);
      expect(cpu).toMatch(/^50000( 100000)?$/);
      expect(daemon.ktsOk('exec', run.containerId, '--', 'cat', '/data/greeting')).toBe('from-the-host\n');
      expect(daemon.kts('exec', run.containerId, '--', 'touch', '/data/new').code).not.toBe(0);
      expect(readdirSync(hostDir)).toEqual(['greeting']);
    } finally {
      daemon.ktsOk('rm', run.podId);
    }
  });

  it('refuses a mount whose host path does not exist, naming it, and removes the pod it made for it', () => {
    const yaml = writeYaml(daemon.root, 'bad-mount.yaml', 'metadata:\n  name: bad\nimage:\n  image: busybox\nmounts:\n  - container_path: /data\n    host_path: /no/such/dir\n');
    const result = daemon.kts('run', POD, yaml);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe('kts: mounts[0].host_path /no/such/dir does not exist on the host\n');
    expect(JSON.parse(daemon.ktsOk('pods', '--json'))).toEqual([]);
    expect(mountsUnder(daemon.root)).toEqual([]);
  });
});
