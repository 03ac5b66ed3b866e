import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestDaemon, canRunContainers, isAlive, until, writeYaml } from './helpers/daemon.js';
import { taskClient } from './helpers/protoClient.js';

const skip = canRunContainers();

describe.skipIf(skip)(`SIGKILL of the daemon while a container runs${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let podId = '';
  let containerId = '';
  let containerPid = 0;

  beforeAll(async () => {
    await daemon.start();
  });
  afterAll(() => daemon.cleanup());

  it('given a running container, when the daemon is SIGKILLed and started again, then pod and container come back unharmed', async () => {
    const pod = writeYaml(daemon.root, 'pod.yaml', 'metadata:\n  name: survivor\n');
    const marker = path.join('/tmp', 'done');
    const container = writeYaml(daemon.root, 'c.yaml', [
      'metadata:\n  name: waiter', 'image:\n  image: busybox',
      // Exits 7 once told to, so the exit happens after the restart.
      `command: ["sh", "-c", "echo started; while [ ! -e ${marker} ]; do sleep 0.1; done; exit 7"]`,
    ].join('\n'));
    const run = JSON.parse(daemon.ktsOk('run', '--json', pod, container)) as { podId: string; containerId: string; pid: number };
    podId = run.podId;
    containerId = run.containerId;
    containerPid = run.pid;
    await until('container output', () => daemon.ktsOk('logs', containerId).includes('started'));

    await daemon.kill();
    expect(isAlive(containerPid)).toBe(true);
    await daemon.start();

    const pods = JSON.parse(daemon.ktsOk('pods', '--json')) as Array<{ id: string; state: string }>;
    expect(pods.find((p) => p.id === podId)?.state).toBe('ready');
    const ps = JSON.parse(daemon.ktsOk('ps', '--json')) as Array<{ id: string; state: string; pid: number }>;
    expect(ps.find((c) => c.id === containerId)).toMatchObject({ state: 'running', pid: containerPid });
    expect(isAlive(containerPid)).toBe(true);
    const history = JSON.parse(daemon.ktsOk('history', '--json', podId)) as { events: Array<{ type: string; caller: string }> };
    const recovered = history.events.filter((e) => e.caller.startsWith('recovery: '));
    expect(recovered.map((e) => e.type)).toEqual(['ContainerReattached', 'SandboxReattached']);
    expect(recovered[1]!.caller).toMatch(/^recovery: reattached: the sandbox process \d+ still runs$/);
  });

  it('then the container\'s later exit is recorded with its real exit code', async () => {
    daemon.ktsOk('exec', containerId, '--', 'touch', '/tmp/done');
    const stopped = await until('the container to stop', () => {
      const ps = JSON.parse(daemon.ktsOk('ps', '-a', '--json')) as Array<{ id: string; state: string; exitCode: number | null }>;
      const c = ps.find((x) => x.id === containerId);
      return c?.state === 'stopped' && c;
    });
    expect(stopped.exitCode).toBe(7);
    expect(isAlive(containerPid)).toBe(false);
  });

  it('and an exit that happens while the daemon is down is recorded on the next start', async () => {
    const container = writeYaml(daemon.root, 'c2.yaml', 'metadata:\n  name: quick\nimage:\n  image: busybox\ncommand: ["sh", "-c", "sleep 1; exit 3"]\n');
    const pod = writeYaml(daemon.root, 'pod2.yaml', 'metadata:\n  name: brief\n');
    const run = JSON.parse(daemon.ktsOk('run', '--json', pod, container)) as { containerId: string; pid: number };
    await daemon.kill();
    await until('the container to exit while the daemon is down', () => !isAlive(run.pid));
    await daemon.start();
    const ps = JSON.parse(daemon.ktsOk('ps', '-a', '--json')) as Array<{ id: string; state: string; exitCode: number | null }>;
    expect(ps.find((c) => c.id === run.containerId)).toMatchObject({ state: 'stopped', exitCode: 3 });
  });
});

describe.skipIf(skip)(`a daemon killed during an exec start${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  afterAll(() => daemon.cleanup());

  interface HistoryEvent { type: string; caller: string; payload: { execId?: string; pid?: number; reason?: string; exitStatus?: number } }
  const containerEvents = (containerId: string): HistoryEvent[] =>
    (JSON.parse(daemon.ktsOk('history', '--json', containerId)) as { events: HistoryEvent[] }).events.filter((e) => e.type.startsWith('Exec'));

  // After a restart with KTS_CRASH_AT armed, the exec's `runc exec` is the daemon's first host effect.
  it.each([
    ['effect.before:1', 'before runc exec ran', 'ExecStartFailed', /^recovery: rolled back the exec start: no process of it was started$/],
    ['effect.after:1', 'after runc exec ran, before its pid was recorded', 'ExecStarted', /^recovery: completed the exec start: its process \d+ was started$/],
  ])('given a crash at %s (%s), when the daemon restarts, then recovery records %s for the exec', async (crashAt, _when, outcome, cause) => {
    await daemon.start();
    const pod = writeYaml(daemon.root, 'pod.yaml', 'metadata:\n  name: exec-crash\n');
    const container = writeYaml(daemon.root, 'c.yaml', 'metadata:\n  name: host\nimage:\n  image: busybox\ncommand: ["sleep", "600"]\n');
    const { podId, containerId } = JSON.parse(daemon.ktsOk('run', '--json', pod, container)) as { podId: string; containerId: string };
    await daemon.stop();
    await daemon.start({ KTS_CRASH_AT: crashAt });

    const exec = daemon.kts('exec', containerId, '--', 'sh', '-c', 'sleep 1; exit 4');
    expect(exec.code).not.toBe(0);
    await daemon.exited();
    expect(daemon.logs).toContain(`crash point ${crashAt.split(':')[0]} reached (runc.execProcess)`);
    await daemon.start();

    const events = containerEvents(containerId);
    expect(events.map((e) => e.type).slice(0, 3)).toEqual(['ExecCreated', 'ExecStartRequested', outcome]);
    expect(events[2]!.caller).toMatch(cause);
    if (outcome === 'ExecStarted') {
      // The adopted process is watched like any other (it may have ended already): its real exit status is recorded.
      const exited = await until('the adopted exec to exit', () => containerEvents(containerId).find((e) => e.type === 'ExecExited'));
      expect(exited.payload.exitStatus).toBe(4);
    } else {
      expect(events).toHaveLength(3);
    }
    daemon.ktsOk('rm', podId);
    await daemon.stop();
  });

  it('given an exec created but not started, when the daemon is killed and restarted, then Task Start still runs it', async () => {
    await daemon.start();
    const pod = writeYaml(daemon.root, 'pod.yaml', 'metadata:\n  name: exec-kept\n');
    const container = writeYaml(daemon.root, 'c.yaml', 'metadata:\n  name: host\nimage:\n  image: busybox\ncommand: ["sleep", "600"]\n');
    const { podId, containerId } = JSON.parse(daemon.ktsOk('run', '--json', pod, container)) as { podId: string; containerId: string };
    const stdout = path.join(daemon.root, 'exec-kept.out');
    writeFileSync(stdout, '');
    const process = { args: ['sh', '-c', 'echo kept-across-the-restart'], cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 }, terminal: false };
    const spec = { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify(process)) };
    let task = taskClient(daemon.socket);
    await task.Exec!({ id: containerId, exec_id: 'kept', spec, stdout });
    task.close();
    await daemon.kill();
    await daemon.start();
    task = taskClient(daemon.socket);
    try {
      await task.Start!({ id: containerId, exec_id: 'kept' });
      expect((await task.Wait!({ id: containerId, exec_id: 'kept' })).exit_status).toBe(0);
      expect(readFileSync(stdout, 'utf8')).toBe('kept-across-the-restart\n');
      await task.Delete!({ id: containerId, exec_id: 'kept' });
    } finally {
      task.close();
    }
    daemon.ktsOk('rm', podId);
    expect(existsSync(path.join(daemon.root, 'exec-specs', containerId))).toBe(false);
    await daemon.stop();
  });
});
