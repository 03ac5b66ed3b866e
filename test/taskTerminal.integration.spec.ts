// Task API exec with a terminal (kts-console) and OOM kills, through kts's own gRPC Task v3 service
// as containerd drives it: a tty exec that reads its input and sees its size, a hostile flood on the
// terminal, a failed tty exec that leaves no console behind, and a container over its memory limit.
import { execFileSync } from 'node:child_process';
import { constants, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { Socket } from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestDaemon, canRunContainers, consolesUnder, until } from './helpers/daemon.js';
import { busyboxRootfs, ociSpec } from './helpers/bundles.js';
import { controllerClient, taskClient, type ProtoClient } from './helpers/protoClient.js';

const skip = canRunContainers();
const PROCESS_TYPE = 'types.containerd.io/opencontainers/runtime-spec/1/Process';
const DEVPTS = { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] };

/**
 * A FIFO and our end of it, opened read-write and non-blocking as containerd does: opening never waits
 * for the other side, and a console that never came cannot tie up this process's file threads.
 * An input FIFO's socket must not read, or it takes back what it wrote before the console reads it.
 */
function fifo(file: string, direction: 'read' | 'write' = 'read'): Socket {
  execFileSync('mkfifo', [file]);
  return new Socket({ fd: openSync(file, constants.O_RDWR | constants.O_NONBLOCK), readable: direction === 'read' });
}

describe.skipIf(skip)(`Task exec with a terminal and OOM kills over gRPC${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  const sandboxId = 'tty-sandbox';
  let controller: ProtoClient;
  let task: ProtoClient;
  let holderPid: number;
  let work: string;
  let lower: string;

  /** A running container `id` of the sandbox, its bundle changed by `edit`. */
  async function runContainer(id: string, args: string[], edit: (spec: ReturnType<typeof ociSpec>) => void = () => undefined): Promise<string> {
    const dir = path.join(work, id);
    const bundle = path.join(dir, 'bundle');
    for (const d of ['bundle/rootfs', 'upper', 'work']) mkdirSync(path.join(dir, d), { recursive: true });
    const spec = ociSpec(sandboxId, holderPid, args);
    spec.linux.cgroupsPath = `/kts-it/${sandboxId}/${id}`;
    edit(spec);
    writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
    const stdout = path.join(dir, 'stdout');
    fifo(stdout).on('data', () => undefined);
    await task.Create!({
      id, bundle, stdout, terminal: false,
      rootfs: [{ type: 'overlay', source: 'overlay', target: '', options: [`lowerdir=${lower}`, `upperdir=${path.join(dir, 'upper')}`, `workdir=${path.join(dir, 'work')}`] }],
    });
    await task.Start!({ id });
    return dir;
  }

  /** FIFOs for one exec with a terminal: its output as it arrives, and a stream to its input. */
  function terminalFifos(name: string) {
    const stdin = path.join(work, `${name}.in`);
    const stdout = path.join(work, `${name}.out`);
    const input = fifo(stdin, 'write');
    const output = { text: '', bytes: 0 };
    fifo(stdout).on('data', (chunk: Buffer) => {
      output.bytes += chunk.length;
      if (output.text.length < 4096) output.text += chunk.toString('latin1');
    });
    return { stdin, stdout, input, output };
  }

  const execSpec = (args: string[]) => ({ type_url: PROCESS_TYPE, value: Buffer.from(JSON.stringify({ args, cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 }, terminal: true })) });

  beforeAll(async () => {
    await daemon.start();
    controller = controllerClient(daemon.socket);
    task = taskClient(daemon.socket);
    await controller.Create!({ sandbox_id: sandboxId, sandboxer: 'runc', sandbox: { sandbox_id: sandboxId, runtime: { name: 'io.containerd.runc.v2' }, labels: {} } });
    holderPid = (await controller.Start!({ sandbox_id: sandboxId })).pid;
    work = path.join(daemon.root, 'tty');
    mkdirSync(work);
    lower = busyboxRootfs(work);
    // containerd's default spec gives every container a devpts of its own: a terminal needs /dev/ptmx.
    await runContainer('shell', ['sleep', '3600'], (spec) => spec.mounts.push(DEVPTS));
  });
  afterAll(async () => {
    task?.close();
    controller?.close();
    await daemon.cleanup();
  });

  it('gives the exec a terminal that takes its input and has the size ResizePty set; the console ends with it', async () => {
    const { stdin, stdout, input, output } = terminalFifos('tty');
    const script = '[ -t 0 ] && [ -t 1 ] && echo both-are-a-terminal; read line; echo "got:$line"; busybox stty size; exit 7';
    await task.Exec!({ id: 'shell', exec_id: 'tty', terminal: true, stdin, stdout, spec: execSpec(['sh', '-c', script]) });
    await task.Start!({ id: 'shell', exec_id: 'tty' });
    expect(consolesUnder(daemon.root)).toHaveLength(1);
    await until('the exec to reach its read', () => output.text.includes('both-are-a-terminal'));
    await task.ResizePty!({ id: 'shell', exec_id: 'tty', width: 123, height: 45 });
    input.write('hello\n');
    const waited = await Promise.race([task.Wait!({ id: 'shell', exec_id: 'tty' }), new Promise((_, reject) => setTimeout(() => reject(new Error(`no exit; output so far: ${JSON.stringify(output.text)}`)), 10_000))]) as { exit_status: number };
    expect(waited.exit_status).toBe(7);
    await until('the output to be copied', () => output.text.includes('45 123'));
    expect(output.text).toContain('got:hello');
    input.destroy();
    await until('kts-console to exit with the terminal', () => consolesUnder(daemon.root).length === 0);
    // The terminal is gone: resizing it is a precondition failure, not a hang or a crash.
    await expect(task.ResizePty!({ id: 'shell', exec_id: 'tty', width: 80, height: 24 })).rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION });
    await task.Delete!({ id: 'shell', exec_id: 'tty' });
  });

  it('hostile: a flood of binary output and escape sequences is copied, not interpreted; bad sizes are refused', async () => {
    const { stdin, stdout, output } = terminalFifos('flood');
    // 4 MB of random bytes, a terminal-query escape and a resize escape: none of it may reach the daemon as anything but bytes.
    const script = 'busybox head -c 4000000 /dev/urandom; printf "\\033[6n\\033[8;1;1t\\033]0;pwned\\007"; echo; echo flood-done';
    await task.Exec!({ id: 'shell', exec_id: 'flood', terminal: true, stdin, stdout, spec: execSpec(['sh', '-c', script]) });
    await task.Start!({ id: 'shell', exec_id: 'flood' });
    await expect(task.ResizePty!({ id: 'shell', exec_id: 'flood', width: 70000, height: 10 })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(task.ResizePty!({ id: 'shell', exec_id: 'no-such-exec', width: 80, height: 24 })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    expect((await task.Wait!({ id: 'shell', exec_id: 'flood' })).exit_status).toBe(0);
    await until('the whole flood to be copied', () => output.bytes >= 4_000_000);
    await until('kts-console to exit with the terminal', () => consolesUnder(daemon.root).length === 0);
    expect((await task.State!({ id: 'shell' })).status).toBe('RUNNING');
    await task.Delete!({ id: 'shell', exec_id: 'flood' });
  });

  it('a tty exec runc cannot start fails and leaves no kts-console waiting for it', async () => {
    const { stdin, stdout } = terminalFifos('missing');
    await task.Exec!({ id: 'shell', exec_id: 'missing', terminal: true, stdin, stdout, spec: execSpec(['/no/such/program']) });
    await expect(task.Start!({ id: 'shell', exec_id: 'missing' })).rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION });
    await until('no kts-console to be left', () => consolesUnder(daemon.root).length === 0, 5_000);
  });

  it('a container over its memory limit ends with 137, its cgroup counts the OOM kill, and its exit records OOMKilled', async () => {
    await runContainer('hog', ['sh', '-c', 'x=aaaaaaaaaaaaaaaa; i=0; while [ $i -lt 24 ]; do x=$x$x; i=$((i+1)); done'], (spec) => {
      (spec.linux as Record<string, unknown>).resources = { memory: { limit: 16 * 1024 * 1024, swap: 16 * 1024 * 1024 } };
    });
    const waited = await task.Wait!({ id: 'hog' });
    expect(waited.exit_status).toBe(137);
    // What containerd's CRI reads (memory_oom_control.oom_kill) to report the reason OOMKilled.
    const stats = await task.Stats!({ id: 'hog' });
    expect(stats.stats.value.length).toBeGreaterThan(0);
    const history = JSON.parse(daemon.ktsOk('history', '--json', sandboxId)) as { events: Array<{ type: string; streamId: string; payload: { exitStatus?: number; reason?: string } }> };
    const exited = history.events.find((event) => event.type === 'ContainerExited' && event.streamId === 'container-hog');
    expect(exited?.payload).toMatchObject({ exitStatus: 137, reason: expect.stringMatching(/^OOMKilled: /) });
    await task.Delete!({ id: 'hog' });
  });

  it('a container killed with SIGKILL (137, no OOM kill) records no OOM reason', async () => {
    await runContainer('killed', ['sleep', '3600']);
    await task.Kill!({ id: 'killed', signal: 9 });
    expect((await task.Wait!({ id: 'killed' })).exit_status).toBe(137);
    const history = JSON.parse(daemon.ktsOk('history', '--json', sandboxId)) as { events: Array<{ type: string; streamId: string; payload: { reason?: string } }> };
    const exited = history.events.find((event) => event.type === 'ContainerExited' && event.streamId === 'container-killed');
    expect(exited?.payload.reason).toBeUndefined();
    await task.Delete!({ id: 'killed' });
  });
});
