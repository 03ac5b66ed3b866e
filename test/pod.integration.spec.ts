import { existsSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, TestDaemon, canRunContainers, isAlive, mountsUnder, until } from './helpers/daemon.js';

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
    const afterStop = JSON.parse(daemon.ktsOk('ps', '--json')) as Array<{ id: string; state: string; exitCode: number }>;
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
});
