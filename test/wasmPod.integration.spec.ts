// WebAssembly sandboxes end to end: a real daemon runs WASI modules from the images
// scripts/build-wasm-images.sh builds (hello, trap, spin, cat, grow), driven over its socket the
// way containerd and the kts CLI drive it.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, TestDaemon, logText, mountsUnder, until, writeYaml } from './helpers/daemon.js';
import { freshPodYaml } from './helpers/podYaml.js';
import { adminClient, controllerClient, taskClient, type ProtoClient } from './helpers/protoClient.js';

const FIRST_WASM_PID = 1 << 22;
const WAT_DIR = path.join(REPO, 'src/backends/wasm/testdata');
const WAT2WASM = path.join(REPO, 'node_modules/.bin/wat2wasm');

function canRunWasm(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (the daemon mounts each container\'s rootfs)';
  if (!existsSync(path.join(REPO, 'dist/native/kts-wasm-runner'))) return 'needs a build: run "npm run build" (scripts/test.sh does; it builds the kts-wasm-runner crate)';
  if (!existsSync(WAT2WASM)) return 'needs the wabt devDependency: run npm ci';
  return undefined;
}

/** A directory holding `/<name>.wasm`, compiled from the test module's WebAssembly text: a hand-made rootfs. */
function moduleRootfs(dir: string, name: string): string {
  mkdirSync(dir, { recursive: true });
  execFileSync(WAT2WASM, [path.join(WAT_DIR, `${name}.wat`), '-o', path.join(dir, `${name}.wasm`)]);
  return dir;
}

/** An OCI spec for a module in a wasm sandbox, as containerd would write it. */
function wasmSpec(sandboxId: string, args: string[], extra: { memoryLimit?: number; mounts?: object[] } = {}) {
  return {
    ociVersion: '1.0.2',
    process: { args, env: ['GREETING=from-spec'], cwd: '/', user: { uid: 0, gid: 0 } },
    root: { path: 'rootfs' },
    mounts: extra.mounts ?? [],
    annotations: { 'io.kubernetes.cri.sandbox-id': sandboxId },
    linux: extra.memoryLimit === undefined ? {} : { resources: { memory: { limit: extra.memoryLimit } } },
  };
}

interface HistoryEvent { type: string; streamId: string; payload: Record<string, unknown> }

const skip = canRunWasm();

describe.skipIf(skip)(`WebAssembly sandboxes${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let controller: ProtoClient;
  let admin: ProtoClient;
  let task: ProtoClient;

  const history = (ref: string) => (JSON.parse(daemon.ktsOk('history', '--json', ref)) as { chainOk: boolean; events: HistoryEvent[] });
  const exitEvent = (ref: string, containerId: string) => history(ref).events.find((e) => e.type === 'ContainerExited' && e.streamId === `container-${containerId}`);
  const daemonFdsUnder = (dir: string) => readdirSync(`/proc/${daemon.process!.pid}/fd`)
    .map((fd) => { try { return readlinkSync(`/proc/${daemon.process!.pid}/fd/${fd}`); } catch { return ''; } })
    .filter((target) => target.startsWith(dir));

  async function startPod(sandboxId: string): Promise<void> {
    await controller.Create!({ sandbox_id: sandboxId, sandboxer: 'wasm' });
    await controller.Start!({ sandbox_id: sandboxId });
  }

  /** Kuasar's Prepare (as Task Create): a container of `args` on a read-only bind of a hand-made rootfs. */
  function prepare(sandboxId: string, containerId: string, rootfs: string, args: string[], extra: Parameters<typeof wasmSpec>[2] = {}) {
    return admin.Prepare!({
      sandbox_id: sandboxId, container_id: containerId, spec_json: JSON.stringify(wasmSpec(sandboxId, args, extra)),
      rootfs_json: [JSON.stringify({ type: 'bind', source: rootfs, options: ['rbind', 'ro'] })],
    });
  }

  async function runImage(sandboxId: string, name: string, image: string, args: string[] = []): Promise<{ containerId: string; logPath: string }> {
    const run = await admin.RunContainer!({ sandbox_id: sandboxId, name, image, args, env: { GREETING: 'kuasar-ts' }, start: true });
    return { containerId: String(run.container_id), logPath: String(run.log_path) };
  }

  beforeAll(async () => {
    await daemon.start();
    [controller, admin, task] = [controllerClient(daemon.socket), adminClient(daemon.socket), taskClient(daemon.socket)];
  });
  afterAll(async () => {
    for (const client of [controller, admin, task]) client?.close();
    await daemon.cleanup();
  });

  it('given `kts run --runtime wasm`, when the hello module exits 7, then its output is in `kts logs` and 7 comes back from Wait and `kts ps`', async () => {
    const container = writeYaml(daemon.root, 'hello.yaml', [
      'metadata: { name: hello }', 'image: { image: "wasm-hello:latest" }', 'args: ["7"]', 'envs: [{ key: GREETING, value: kuasar-ts }]',
    ].join('\n'));
    const run = JSON.parse(daemon.ktsOk('run', '--json', '--runtime', 'wasm', freshPodYaml(), container)) as { podId: string; containerId: string; pid: number };
    expect(run.pid).toBeGreaterThanOrEqual(FIRST_WASM_PID);
    const wait = await task.Wait!({ id: run.containerId });
    expect(wait.exit_status).toBe(7);
    const ps = JSON.parse(daemon.ktsOk('ps', '-a', '--json')) as Array<{ id: string; state: string; exitCode: number | null; pid: number }>;
    expect(ps.find((c) => c.id === run.containerId)).toMatchObject({ state: 'stopped', exitCode: 7, pid: run.pid });
    const logs = daemon.ktsOk('logs', run.containerId);
    expect(logs).toContain('hello from wasm\narg: /hello.wasm\narg: 7\n');
    expect(logs).toContain('env: GREETING=kuasar-ts');
    const pod = (JSON.parse(daemon.ktsOk('pods', '--json')) as Array<{ id: string; kind: string; state: string; pid: number }>).find((p) => p.id === run.podId);
    // No host process per wasm sandbox (only one runner per module): the pod reports the daemon's pid.
    expect(pod).toMatchObject({ kind: 'wasm', state: 'ready', pid: daemon.process!.pid });
    const events = history(run.podId);
    expect(events.chainOk).toBe(true);
    expect(events.events.map((e) => e.type)).toEqual([
      'SandboxCreated', 'SandboxStartRequested', 'SandboxStarted', 'ContainerCreateRequested', 'ContainerCreated', 'ContainerStartRequested', 'ContainerStarted', 'ContainerExited',
    ]);
    const started = events.events.filter((e) => 'pid' in e.payload && e.streamId.startsWith('container-')).map((e) => e.payload.pid);
    expect(new Set(started)).toEqual(new Set([run.pid]));
  });

  it('given the example container, when it is run as in the README, then it prints and exits 0', async () => {
    const run = JSON.parse(daemon.ktsOk('run', '--json', '--runtime', 'wasm', freshPodYaml(), path.join(REPO, 'examples/wasm-hello.yaml'))) as { containerId: string };
    expect((await task.Wait!({ id: run.containerId })).exit_status).toBe(0);
    expect(daemon.ktsOk('logs', run.containerId)).toContain('env: GREETING=kuasar-ts');
  });

  it('given 10 sandboxes of 5 containers started at once, when one container traps, then it alone exits non-zero and the other 49 finish normally', async () => {
    const sandboxIds = Array.from({ length: 10 }, (_, i) => `wasm-fleet-${i}`);
    await Promise.all(sandboxIds.map(startPod));
    const started = Date.now();
    const containers = await Promise.all(sandboxIds.flatMap((sandboxId, s) => Array.from({ length: 5 }, async (_, c) => {
      const trap = s === 3 && c === 2;
      const run = await runImage(sandboxId, trap ? 'trap' : `hello-${c}`, trap ? 'wasm-trap:latest' : 'wasm-hello:latest');
      return { sandboxId, ...run, trap };
    })));
    const exits = await Promise.all(containers.map(async (c) => ({ ...c, exitStatus: Number((await task.Wait!({ id: c.containerId })).exit_status) })));
    console.log(`50 wasm containers in 10 sandboxes created, run and exited in ${Date.now() - started} ms`);
    const trapped = exits.filter((c) => c.trap);
    const normal = exits.filter((c) => !c.trap);
    expect(trapped.map((c) => c.exitStatus)).toEqual([134]);
    expect(normal).toHaveLength(49);
    expect(normal.every((c) => c.exitStatus === 0)).toBe(true);
    // The log files `kts logs` reads (49 CLI runs would take most of a minute).
    for (const c of normal) expect(readFileSync(c.logPath, 'utf8')).toContain('hello from wasm');
    const trapLogs = daemon.ktsOk('logs', trapped[0]!.containerId);
    expect(trapLogs).toContain('about to trap');
    expect(trapLogs).toMatch(/kts: wasm module \/trap.wasm \(pid \d+\) ended: wasm trap: wasm `unreachable` instruction executed/);
    expect(exitEvent(trapped[0]!.sandboxId, trapped[0]!.containerId)?.payload.reason).toMatch(/^wasm trap: wasm `unreachable` instruction executed/);
    const pods = JSON.parse(daemon.ktsOk('pods', '--json')) as Array<{ id: string; state: string }>;
    expect(pods.filter((p) => sandboxIds.includes(p.id)).every((p) => p.state === 'ready')).toBe(true);
    expect(daemonFdsUnder(path.join(daemon.root, 'bundles'))).toEqual([]);
  });

  it('given a spinning module, when execs run beside it (a spinning one killed by its exec id) and Kill ends it, then every runner has ended and every exit is recorded', async () => {
    await startPod('wasm-spin');
    const rootfs = moduleRootfs(path.join(daemon.root, 'spin-rootfs'), 'spin');
    moduleRootfs(rootfs, 'hello');
    await prepare('wasm-spin', 'spin', rootfs, ['/spin.wasm']);
    await task.Start!({ id: 'spin' });
    await until('the module to spin', () => daemon.ktsOk('logs', 'spin').includes('spinning'));
    const exec = daemon.kts('exec', 'spin', '--', '/hello.wasm', '3');
    expect(exec.code).toBe(3);
    expect(exec.stdout).toContain('arg: 3');
    // A second module spinning as an exec, through the Task API as containerd would, ended by its exec id.
    const execOut = path.join(daemon.root, 'spin-exec.out');
    const execSpec = { args: ['/spin.wasm'], env: [], cwd: '/' };
    await task.Exec!({ id: 'spin', exec_id: 'spin-too', stdout: execOut, stderr: execOut, spec: { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify(execSpec)) } });
    const { pid: execPid } = await task.Start!({ id: 'spin', exec_id: 'spin-too' });
    expect(execPid).toBeGreaterThan(FIRST_WASM_PID);
    await until('the exec to spin', () => existsSync(execOut) && readFileSync(execOut, 'utf8').includes('spinning'));
    expect((await task.Pids!({ id: 'spin' })).processes.map((p: { pid: number }) => p.pid)).toContain(execPid);
    await task.Kill!({ id: 'spin', exec_id: 'spin-too', signal: 9 });
    expect((await task.Wait!({ id: 'spin', exec_id: 'spin-too' })).exit_status).toBe(137);
    const killedAt = performance.now();
    await task.Kill!({ id: 'spin', signal: 9 });
    const wait = await task.Wait!({ id: 'spin' });
    const killMs = performance.now() - killedAt;
    console.log(`a spinning wasm module was killed and its exit recorded in ${killMs.toFixed(1)} ms (Task Kill → Wait)`);
    expect(wait.exit_status).toBe(137);
    expect(exitEvent('wasm-spin', 'spin')?.payload).toMatchObject({ exitStatus: 137, reason: 'killed by signal 9' });
    expect(JSON.parse(daemon.ktsOk('ps', '-a', '--json', '--pod', 'wasm-spin'))).toEqual([expect.objectContaining({ id: 'spin', state: 'stopped', exitCode: 137 })]);
    expect(history('wasm-spin').events.map((e) => e.type)).toEqual(expect.arrayContaining(['ExecStarted', 'ExecExited', 'ContainerKillRequested', 'ContainerExited']));
  });

  it('given a sleeping module, when its short sleep ends it goes on, and when a long sleep is killed it ends at once', async () => {
    await startPod('wasm-sleep');
    const short = await runImage('wasm-sleep', 'nap', 'wasm-sleep:latest', ['1']);
    expect((await task.Wait!({ id: short.containerId })).exit_status).toBe(0);
    expect(logText(short.logPath)).toBe('sleeping\nwoke\n');
    const long = await runImage('wasm-sleep', 'hibernate', 'wasm-sleep:latest');
    await until('the module to sleep', () => readFileSync(long.logPath, 'utf8').includes('sleeping'));
    const killedAt = performance.now();
    await task.Kill!({ id: long.containerId, signal: 15 });
    expect((await task.Wait!({ id: long.containerId })).exit_status).toBe(143);
    console.log(`a sleeping wasm module was killed and its exit recorded in ${(performance.now() - killedAt).toFixed(1)} ms (Task Kill → Wait)`);
  });

  it('given a module that grows its memory, when it passes the container\'s 1 MiB limit, then it fails with exit 137 and says it ran out of memory', async () => {
    await startPod('wasm-grow');
    const rootfs = moduleRootfs(path.join(daemon.root, 'grow-rootfs'), 'grow');
    await prepare('wasm-grow', 'grow', rootfs, ['/grow.wasm'], { memoryLimit: 1024 * 1024 });
    await task.Start!({ id: 'grow' });
    expect((await task.Wait!({ id: 'grow' })).exit_status).toBe(137);
    const logs = daemon.ktsOk('logs', 'grow');
    expect(logs).toContain('grow: memory.grow failed at 16 pages');
    expect(logs).toContain('out of memory: the module\'s memory is at the container\'s limit of 16 pages (1 MiB)');
    expect(exitEvent('wasm-grow', 'grow')?.payload.reason).toMatch(/^out of memory/);
  });

  it('given a memory limit below what a module needs at start, then the container is refused, saying so', async () => {
    const rootfs = moduleRootfs(path.join(daemon.root, 'small-rootfs'), 'hello');
    await expect(prepare('wasm-grow', 'too-small', rootfs, ['/hello.wasm'], { memoryLimit: 32 * 1024 })).rejects.toMatchObject({
      code: status.FAILED_PRECONDITION,
      details: expect.stringContaining('module /hello.wasm: the module needs 1 page (0.06 MiB) of memory at start, more than the container\'s memory limit of 0 pages'),
    });
  });

  it('given a preopened directory, when the module reads a file in it and one outside it, then the first is printed and the second refused', async () => {
    await startPod('wasm-files');
    const rootfs = moduleRootfs(path.join(daemon.root, 'cat-rootfs'), 'cat');
    const shared = path.join(daemon.root, 'cat-host', 'shared');
    mkdirSync(shared, { recursive: true });
    writeFileSync(path.join(shared, 'hello.txt'), 'a preopened file\n');
    writeFileSync(path.join(daemon.root, 'cat-host', 'secret.txt'), 'not for the module\n');
    await prepare('wasm-files', 'cat', rootfs, ['/cat.wasm', 'hello.txt', '../secret.txt'], {
      mounts: [{ destination: '/data', type: 'bind', source: shared, options: ['rbind', 'ro'] }],
    });
    await task.Start!({ id: 'cat' });
    expect((await task.Wait!({ id: 'cat' })).exit_status).toBe(1);
    const logs = daemon.ktsOk('logs', 'cat');
    expect(logs).toContain('a preopened file\n');
    expect(logs).toContain('cat: ../secret.txt: WASI errno 63 (EPERM: outside the preopened directories)');
    expect(logs).not.toContain('not for the module');
    // The runner opens the preopens; the daemon keeps no fd on a container's directories.
    expect(daemonFdsUnder(path.join(daemon.root, 'bundles'))).toEqual([]);
    expect(daemonFdsUnder(path.join(daemon.root, 'wasm'))).toEqual([]);
  });

  it('given FIFOs as execs\' stdin, when cat runs without arguments, then what is written comes out, the writer closing ends it, and a kill ends a blocked read', async () => {
    await startPod('wasm-stdin');
    const rootfs = moduleRootfs(path.join(daemon.root, 'stdin-rootfs'), 'spin');
    moduleRootfs(rootfs, 'cat');
    await prepare('wasm-stdin', 'stdin-spin', rootfs, ['/spin.wasm']);
    await task.Start!({ id: 'stdin-spin' });
    const catExec = async (execId: string) => {
      const fifo = path.join(daemon.root, `${execId}.stdin`);
      const out = path.join(daemon.root, `${execId}.out`);
      execFileSync('mkfifo', [fifo]);
      // Opens once the runner opens the reading end, as containerd's writer does.
      const writer = open(fifo, 'w');
      const spec = { args: ['/cat.wasm'], env: [], cwd: '/' };
      await task.Exec!({ id: 'stdin-spin', exec_id: execId, stdin: fifo, stdout: out, stderr: out, spec: { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify(spec)) } });
      await task.Start!({ id: 'stdin-spin', exec_id: execId });
      const noReader = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`nothing opened ${fifo} for reading within 5 s`)), 5000).unref());
      return { writer: await Promise.race([writer, noReader]), out };
    };
    const fed = await catExec('cat-fed');
    await fed.writer.write('through the FIFO\n');
    await fed.writer.close();
    expect((await task.Wait!({ id: 'stdin-spin', exec_id: 'cat-fed' })).exit_status).toBe(0);
    expect(readFileSync(fed.out, 'utf8')).toBe('through the FIFO\n');
    const held = await catExec('cat-held');
    await task.Kill!({ id: 'stdin-spin', exec_id: 'cat-held', signal: 9 });
    expect((await task.Wait!({ id: 'stdin-spin', exec_id: 'cat-held' })).exit_status).toBe(137);
    await held.writer.close();
    await task.Kill!({ id: 'stdin-spin', signal: 9 });
  });

  it('given running modules, when the daemon is killed and restarted, then they are recorded stopped with 255 and removing the pod leaves no mount', async () => {
    await startPod('wasm-restart');
    const { containerId } = await runImage('wasm-restart', 'spin', 'wasm-spin:latest');
    await until('the module to spin', () => daemon.ktsOk('logs', containerId).includes('spinning'));
    await daemon.kill();
    await daemon.start();
    const container = (JSON.parse(daemon.ktsOk('ps', '-a', '--json', '--pod', 'wasm-restart')) as Array<{ id: string; state: string; exitCode: number }>)[0];
    expect(container).toMatchObject({ id: containerId, state: 'stopped', exitCode: 255 });
    expect(exitEvent('wasm-restart', containerId)?.payload.reason).toMatch(/runner dies with the daemon and does not survive it/);
    const pod = (JSON.parse(daemon.ktsOk('pods', '--json')) as Array<{ id: string; state: string }>).find((p) => p.id === 'wasm-restart');
    expect(pod?.state).toBe('stopped');
    daemon.ktsOk('rm', 'wasm-restart');
    expect(mountsUnder(path.join(daemon.root, 'bundles', 'wasm-restart'))).toEqual([]);
    expect(existsSync(path.join(daemon.root, 'wasm', 'sandboxes', 'wasm-restart'))).toBe(false);
    expect(history('wasm-restart').chainOk).toBe(true);
  });
});
