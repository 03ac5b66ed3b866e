import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { alreadyExists, errorMessage, failedPrecondition, notFound } from '../../core/errors.js';
import { validateId } from '../../core/ids.js';
import { Sweep } from '../../core/sweep.js';
import type {
  ContainerSpec,
  ContainerStats,
  ContainerStatus,
  KnownResources,
  OciProcess,
  ProcessExit,
  SandboxSpec,
  Sandboxer,
  StartedSandbox,
  StdioPaths,
} from '../../core/sandboxer.js';
import { validateOciSpec } from '../../oci/containerSpec.js';
import { writeFileAtomic } from '../../host/files.js';
import { bindMount, mountRootfs, removeTree, unmountUnder } from '../../host/mounts.js';
import { WASM_PAGE_BYTES } from './moduleMemory.js';
import { defaultRunnerBinary, ModuleRunner, type RunnerPreopen } from './moduleRunner.js';
import { appendNotice, openModuleStdio } from './moduleStdio.js';
import { appendLogNotice, defaultLogPumpBinary, startLogPump, waitForLogPump } from '../../host/logPump.js';
import { LOST_EXIT_STATUS, moduleExit, signalEndsModule } from './wasmExit.js';
import { pidReservationFile, wasmContainerPaths, wasmRootDir, wasmSandboxPaths, type WasmContainerPaths, type WasmSandboxPaths } from './wasmPaths.js';
import { WasmPidAllocator } from './wasmPids.js';
import { containerPlan, processPlan, type WasmContainerPlan } from './wasmProgram.js';

export interface WasmLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

export interface WasmSandboxerOptions {
  /** Sandboxes live in `<rootDir>/wasm/sandboxes/<sandboxId>`. */
  rootDir: string;
  /** The memory cap of a container whose spec sets no memory limit. */
  defaultMemoryLimitBytes?: number;
  readyTimeoutMs?: number;
  /** How long to wait for containerd to open the reading end of a stdout/stderr FIFO. */
  fifoReaderDeadlineMs?: number;
  /** kts-wasm-runner, built by scripts/build-native.sh. */
  runnerBinary?: string;
  logger?: WasmLogger;
}

export const DEFAULT_WASM_MEMORY_LIMIT_BYTES = 512 * 1024 * 1024;
const LOST_IN_RESTART = 'the daemon stopped while the module ran: a wasm module\'s runner dies with the daemon and does not survive it';
const silentLogger: WasmLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

/** One module running (or done) in its runner: a container's init or an exec. */
interface ModuleProcess {
  /** Synthetic (see wasmPids.ts); the runner's own pid is `runner.hostPid`. */
  pid: number;
  runner: ModuleRunner;
  /** Settles after the exit is written to the exit record and the reason to stderr. */
  exit: Promise<ProcessExit>;
}

interface LiveContainer {
  containerId: string;
  paths: WasmContainerPaths;
  plan: WasmContainerPlan;
  /** The directories the module sees, the rootfs last as `/`. */
  preopens: RunnerPreopen[];
  init: ModuleProcess;
  execs: Map<string, ModuleProcess>;
}

interface LiveSandbox {
  sandboxId: string;
  paths: WasmSandboxPaths;
  containers: Map<string, LiveContainer>;
  processes: Map<number, ModuleProcess>;
  /** Set once stopped: a wasm sandbox has no process of its own, it ends when asked to. */
  stoppedExit?: ProcessExit;
  stopped: Promise<ProcessExit>;
  markStopped(exit: ProcessExit): void;
}

/** What survives the daemon of one container: enough to report it stopped and to unmount its rootfs. */
interface ContainerRecord {
  pid: number;
  bundleDir: string;
  rootfs: string;
}

/**
 * WebAssembly sandboxes: each container (and exec) is a WASI preview 1 module run by wasmtime in a
 * kts-wasm-runner process of its own (runner/src/main.rs), whose file access cannot leave its
 * preopens and which is chrooted into the container's rootfs. A sandbox has no process of its own
 * (its pid is the daemon's); a module's pid is synthetic (see wasmPids.ts). A trap, a memory cap or
 * a kill ends one runner, never the daemon. Runners die with the daemon: after a restart every
 * container that was running reports `stopped` with exit status 255.
 */
export class WasmSandboxer implements Sandboxer {
  readonly kind = 'wasm';
  readonly containersWriteStdio = true;
  private readonly sandboxes = new Map<string, LiveSandbox>();
  private readonly pidAllocator: WasmPidAllocator;
  private readonly logger: WasmLogger;
  private readonly runnerBinary: string;
  private readonly logPumpBinary = defaultLogPumpBinary(defaultRunnerBinary());

  constructor(private readonly options: WasmSandboxerOptions) {
    this.pidAllocator = new WasmPidAllocator(pidReservationFile(options.rootDir));
    this.logger = options.logger ?? silentLogger;
    this.runnerBinary = options.runnerBinary ?? defaultRunnerBinary();
  }

  // ------------------------------------------------------------------ sandboxes

  async startSandbox(spec: SandboxSpec): Promise<StartedSandbox> {
    const paths = this.paths(spec.sandboxId);
    await mkdir(dirname(paths.dir), { recursive: true });
    await mkdir(paths.dir).catch((error: NodeJS.ErrnoException) => {
      throw error.code === 'EEXIST' ? alreadyExists(`sandbox ${spec.sandboxId} already exists`) : error;
    });
    await mkdir(paths.containersDir);
    await mkdir(paths.exitsDir);
    this.sandboxes.set(spec.sandboxId, newLiveSandbox(spec.sandboxId, paths));
    this.logger.info({ sandbox_id: spec.sandboxId }, 'wasm sandbox started');
    return { pid: process.pid, details: { 'kts.wasm.runtime': 'wasmtime 48 (wasmtime-wasi preview1) in kts-wasm-runner', 'kts.wasm.isolation': 'process per module: capability-based preopens, chroot to the rootfs, no_new_privs' } };
  }

  async stopSandbox(sandboxId: string, _options: { timeoutMs: number }): Promise<ProcessExit> {
    const paths = await this.existingSandbox(sandboxId);
    const sandbox = this.sandboxes.get(sandboxId);
    // Started by an earlier daemon: its modules ended with that daemon.
    if (!sandbox) return { exitStatus: LOST_EXIT_STATUS, exitedAt: new Date(), reason: LOST_IN_RESTART };
    if (sandbox.stoppedExit) return sandbox.stoppedExit;
    await Promise.all([...sandbox.processes.values()].map((p) => p.runner.kill(9)));
    await Promise.all([...sandbox.processes.values()].map((p) => p.exit));
    sandbox.markStopped({ exitStatus: 0, exitedAt: new Date() });
    this.logger.info({ sandbox_id: sandboxId, dir: paths.dir }, 'wasm sandbox stopped');
    return sandbox.stoppedExit!;
  }

  async sandboxStatus(sandboxId: string): Promise<{ alive: boolean; pid?: number }> {
    const sandbox = this.sandboxes.get(validateId('sandbox id', sandboxId));
    return sandbox && !sandbox.stoppedExit ? { alive: true, pid: process.pid } : { alive: false };
  }

  async waitSandboxExit(sandboxId: string): Promise<ProcessExit> {
    await this.existingSandbox(sandboxId);
    const sandbox = this.sandboxes.get(sandboxId);
    return sandbox ? sandbox.stopped : { exitStatus: LOST_EXIT_STATUS, exitedAt: new Date(), reason: LOST_IN_RESTART };
  }

  async removeSandbox(sandboxId: string): Promise<void> {
    const paths = this.paths(sandboxId);
    if (existsSync(paths.dir)) {
      await this.stopSandbox(sandboxId, { timeoutMs: 0 });
      for (const containerId of await readdir(paths.containersDir).catch(() => [])) {
        await this.removeContainerFiles(wasmContainerPaths(paths, containerId));
      }
      await removeTree(paths.dir);
      this.logger.info({ sandbox_id: sandboxId }, 'wasm sandbox removed');
    }
    this.sandboxes.delete(sandboxId);
  }

  /** Sandbox directories, and container directories in them, that the event log knows nothing of. */
  async sweepOrphans(known: KnownResources): Promise<string[]> {
    const sweep = new Sweep();
    for (const sandboxId of await readdir(join(wasmRootDir(this.options.rootDir), 'sandboxes')).catch(() => [] as string[])) {
      const paths = this.paths(sandboxId);
      if (!known.sandboxIds.has(sandboxId)) {
        await sweep.attempt(`wasm sandbox directory ${paths.dir} and its container mounts`, () => this.removeSandbox(sandboxId));
        continue;
      }
      for (const containerId of await readdir(paths.containersDir).catch(() => [] as string[])) {
        if (known.containerIds.has(containerId)) continue;
        await sweep.attempt(`wasm container directory ${wasmContainerPaths(paths, containerId).dir} and its mounts`, () => this.deleteContainer(sandboxId, containerId));
      }
    }
    return sweep.finish();
  }

  // ------------------------------------------------------------------ containers

  async createContainer(spec: ContainerSpec): Promise<{ pid: number }> {
    const sandbox = await this.liveSandbox(spec.sandboxId);
    const paths = wasmContainerPaths(sandbox.paths, validateId('container id', spec.containerId));
    await mkdir(paths.dir).catch((error: NodeJS.ErrnoException) => {
      throw error.code === 'EEXIST' ? alreadyExists(`container ${spec.containerId} already exists`) : error;
    });
    try {
      const config = validateOciSpec(JSON.parse(await readFile(join(spec.bundleDir, 'config.json'), 'utf8')));
      const plan = containerPlan(config, spec.bundleDir, this.options.defaultMemoryLimitBytes ?? DEFAULT_WASM_MEMORY_LIMIT_BYTES);
      const pid = this.pidAllocator.allocate();
      const record: ContainerRecord = { pid, bundleDir: spec.bundleDir, rootfs: plan.rootfs };
      await writeFileAtomic(paths.record, JSON.stringify(record));
      await mkdir(plan.rootfs, { recursive: true });
      await mkdir(paths.runnerRoot);
      await mountRootfs(spec.rootfsMounts, plan.rootfs);
      const preopens = await this.mountDirectories(plan, paths);
      const container: LiveContainer = { containerId: spec.containerId, paths, plan, preopens, init: undefined!, execs: new Map() };
      container.init = await this.launchInit(sandbox, container, pid, config.process, spec);
      sandbox.containers.set(spec.containerId, container);
      return { pid };
    } catch (error) {
      await this.removeContainerFiles(paths).catch((cleanup: unknown) =>
        this.logger.error({ container_id: spec.containerId, error: errorMessage(cleanup) }, 'cleanup after a failed wasm create failed'));
      throw error;
    }
  }

  /**
   * Each directory bind mount becomes a preopened directory, through a private bind mount under
   * the container's own directory: the kernel then enforces `ro` (the runner's read-only preopen
   * is a second check).
   */
  private async mountDirectories(plan: WasmContainerPlan, paths: WasmContainerPaths): Promise<RunnerPreopen[]> {
    const preopens: RunnerPreopen[] = [];
    for (const [index, mount] of plan.mounts.entries()) {
      const isDirectory = await stat(mount.hostPath).then((stats) => stats.isDirectory(), () => false);
      // File mounts (/etc/hosts and the like from CRI) cannot be preopened; WASI only opens directories.
      if (!isDirectory) continue;
      const target = join(paths.mountsDir, String(index));
      await mkdir(target, { recursive: true });
      await bindMount(mount.hostPath, target, mount.readonly);
      preopens.push({ guest: mount.guestPath, host: target, readOnly: mount.readonly });
    }
    if (!preopens.some((preopen) => preopen.guest === '/')) preopens.push({ guest: '/', host: plan.rootfs, readOnly: false });
    return preopens;
  }

  async startContainer(sandboxId: string, containerId: string): Promise<{ pid: number }> {
    const container = await this.liveContainer(sandboxId, containerId);
    container.init.runner.start();
    return { pid: container.init.pid };
  }

  async killContainer(sandboxId: string, containerId: string, signal: number, all: boolean): Promise<void> {
    const container = await this.liveContainer(sandboxId, containerId);
    if (!signalEndsModule(signal)) return;
    const targets = all ? [container.init, ...container.execs.values()] : [container.init];
    await Promise.all(targets.map((target) => target.runner.kill(signal)));
  }

  async deleteContainer(sandboxId: string, containerId: string): Promise<void> {
    const paths = wasmContainerPaths(this.paths(sandboxId), validateId('container id', containerId));
    if (!existsSync(paths.dir)) return;
    const sandbox = this.sandboxes.get(sandboxId);
    const container = sandbox?.containers.get(containerId);
    if (sandbox && container) {
      const processes = [container.init, ...container.execs.values()];
      await Promise.all(processes.map((p) => p.runner.kill(9)));
      await Promise.all(processes.map((p) => p.exit));
      sandbox.containers.delete(containerId);
    }
    await this.removeContainerFiles(paths);
  }

  async containerStatus(sandboxId: string, containerId: string): Promise<ContainerStatus> {
    const paths = wasmContainerPaths(this.paths(sandboxId), validateId('container id', containerId));
    const container = this.sandboxes.get(sandboxId)?.containers.get(containerId);
    if (container) {
      const { pid, runner, exit } = container.init;
      if (runner.running) return { state: runner.started ? 'running' : 'created', pid };
      return { state: 'stopped', pid, exit: await exit };
    }
    const record = await readContainerRecord(paths);
    if (!record) return { state: 'absent' };
    return { state: 'stopped', pid: record.pid, exit: await this.recordedExit(sandboxId, record.pid) };
  }

  async execProcess(sandboxId: string, containerId: string, execId: string, process: OciProcess, stdio: StdioPaths): Promise<{ pid: number }> {
    const sandbox = await this.liveSandbox(sandboxId);
    const container = await this.liveContainer(sandboxId, containerId);
    validateId('exec id', execId);
    if (container.execs.has(execId)) throw alreadyExists(`exec ${execId} already exists in container ${containerId}`);
    if (!container.init.runner.running) throw failedPrecondition(`container ${containerId} has exited; exec needs a running container`);
    const exec = await this.launch(sandbox, container, this.pidAllocator.allocate(), process, stdio);
    container.execs.set(execId, exec);
    exec.runner.start();
    return { pid: exec.pid };
  }

  async killExec(sandboxId: string, containerId: string, execId: string, signal: number): Promise<void> {
    const exec = (await this.liveContainer(sandboxId, containerId)).execs.get(validateId('exec id', execId));
    if (!exec) throw notFound(`exec ${execId} not found in container ${containerId}`);
    if (signalEndsModule(signal)) await exec.runner.kill(signal);
  }

  async waitProcessExit(sandboxId: string, pid: number): Promise<ProcessExit> {
    await this.existingSandbox(sandboxId);
    const live = this.sandboxes.get(sandboxId)?.processes.get(pid);
    return live ? live.exit : this.recordedExit(sandboxId, pid);
  }

  async pids(sandboxId: string, containerId: string): Promise<number[]> {
    const container = await this.liveContainer(sandboxId, containerId);
    return [container.init, ...container.execs.values()].filter((p) => p.runner.running).map((p) => p.pid);
  }

  async stats(sandboxId: string, containerId: string): Promise<ContainerStats> {
    const container = await this.liveContainer(sandboxId, containerId);
    const running = [container.init, ...container.execs.values()].filter((p) => p.runner.running);
    const usages = await Promise.all(running.map((p) => p.runner.usage()));
    const total = (field: 'residentBytes' | 'cpuUserNanos' | 'cpuKernelNanos') => usages.reduce((sum, usage) => sum + usage[field], 0);
    return {
      cpuUsageNanos: total('cpuUserNanos') + total('cpuKernelNanos'),
      cpuUserNanos: total('cpuUserNanos'),
      cpuKernelNanos: total('cpuKernelNanos'),
      // The runners' resident memory: the modules' linear memory plus their compiled code and wasmtime.
      memoryUsageBytes: total('residentBytes'),
      memoryLimitBytes: container.plan.memoryLimitPages * WASM_PAGE_BYTES,
      pidsCurrent: running.length,
      pidsLimit: 0,
    };
  }

  /** Modules cannot outlive the daemon: each is ended, and its exit recorded as lost to the restart. */
  async close(): Promise<void> {
    const processes = [...this.sandboxes.values()].flatMap((sandbox) => [...sandbox.processes.values()]);
    await Promise.all(processes.map((p) => p.runner.abandon('the daemon stopped while the module ran')));
    await Promise.all(processes.map((p) => p.exit));
    this.sandboxes.clear();
  }

  // ------------------------------------------------------------------ processes

  /** The container's own module; a log kts keeps is written by a kts-log-pump, as a runc container's is. */
  private async launchInit(sandbox: LiveSandbox, container: LiveContainer, pid: number, process: OciProcess, spec: ContainerSpec): Promise<ModuleProcess> {
    if (!spec.logPath) return this.launch(sandbox, container, pid, process, spec.stdio);
    const logPump = await startLogPump(this.logPumpBinary, { logPath: spec.logPath, dir: container.paths.dir });
    const log = { path: spec.logPath, pumpDir: container.paths.dir };
    return this.launch(sandbox, container, pid, process, { ...spec.stdio, ...logPump.stdio }, log).catch((error: unknown) => {
      logPump.stop();
      throw error;
    });
  }

  /** Starts the runner of the module a process names, which loads it and waits; the caller starts it. */
  private async launch(sandbox: LiveSandbox, container: LiveContainer, pid: number, process: OciProcess, stdio: StdioPaths, log?: { path: string; pumpDir: string }): Promise<ModuleProcess> {
    const plan = processPlan(process);
    const moduleStdio = await openModuleStdio(stdio, this.options.fifoReaderDeadlineMs ?? 10_000);
    // The runner holds its own copies of the stdio fds once spawned; the daemon's are closed either way.
    const runner = await ModuleRunner.launch({
      runnerBinary: this.runnerBinary,
      rootfs: container.plan.rootfs,
      scratchDir: container.paths.runnerRoot,
      modulePath: plan.modulePath,
      args: plan.args,
      env: plan.env,
      preopens: container.preopens,
      memoryLimitPages: container.plan.memoryLimitPages,
      stdio: moduleStdio.fds,
      ...(stdio.stdin !== undefined && { stdinPath: stdio.stdin }),
      readyTimeoutMs: this.options.readyTimeoutMs ?? 10_000,
    }).finally(() => moduleStdio.close());
    const exit = runner.outcome.then(async (outcome) => {
      const { exitStatus, reason } = moduleExit(outcome, container.plan.memoryLimitPages);
      const processExit: ProcessExit = { exitStatus, exitedAt: new Date(), ...(reason !== undefined && { reason }) };
      // After the module's last lines, which its log pump may still be writing.
      if (log) await waitForLogPump(log.pumpDir);
      const notice = `kts: wasm module ${plan.modulePath} (pid ${pid}) ended: ${reason}\n`;
      if (reason !== undefined) await (log ? appendLogNotice(log.path, notice) : appendNotice(stdio.stderr, notice));
      await this.recordExit(sandbox, pid, processExit);
      this.logger.info({ sandbox_id: sandbox.sandboxId, container_id: container.containerId, pid, runnerPid: runner.hostPid, exitStatus, reason }, 'wasm module ended');
      return processExit;
    });
    this.logger.info({ sandbox_id: sandbox.sandboxId, container_id: container.containerId, pid, runnerPid: runner.hostPid, module: plan.modulePath }, 'wasm module ready');
    const moduleProcess: ModuleProcess = { pid, runner, exit };
    sandbox.processes.set(pid, moduleProcess);
    return moduleProcess;
  }

  private async recordExit(sandbox: LiveSandbox, pid: number, exit: ProcessExit): Promise<void> {
    const text = JSON.stringify({ exitStatus: exit.exitStatus, exitedAt: exit.exitedAt.toISOString(), reason: exit.reason });
    await writeFileAtomic(sandbox.paths.exitFile(pid), text).catch((error: unknown) =>
      this.logger.warn({ pid, error: errorMessage(error) }, 'could not record a wasm module\'s exit (its sandbox was removed?)'));
  }

  /** An exit recorded on disk, or (for a module that was running when a daemon stopped) 255, recorded now. */
  private async recordedExit(sandboxId: string, pid: number): Promise<ProcessExit> {
    const paths = this.paths(sandboxId);
    const text = await readFile(paths.exitFile(pid), 'utf8').catch(() => undefined);
    const recorded = text === undefined ? undefined : parseExitRecord(text);
    if (recorded) return recorded;
    const lost: ProcessExit = { exitStatus: LOST_EXIT_STATUS, exitedAt: new Date(), reason: LOST_IN_RESTART };
    if (existsSync(paths.exitsDir)) await writeFileAtomic(paths.exitFile(pid), JSON.stringify({ ...lost, exitedAt: lost.exitedAt.toISOString() }));
    return lost;
  }

  // ------------------------------------------------------------------ files

  private async removeContainerFiles(paths: WasmContainerPaths): Promise<void> {
    const record = await readContainerRecord(paths);
    await unmountUnder(paths.mountsDir);
    if (record) await unmountUnder(record.rootfs);
    await rm(paths.dir, { recursive: true, force: true });
  }

  private paths(sandboxId: string): WasmSandboxPaths {
    return wasmSandboxPaths(this.options.rootDir, validateId('sandbox id', sandboxId));
  }

  private async existingSandbox(sandboxId: string): Promise<WasmSandboxPaths> {
    const paths = this.paths(sandboxId);
    if (!existsSync(paths.dir)) throw notFound(`wasm sandbox ${sandboxId} not found`);
    return paths;
  }

  private async liveSandbox(sandboxId: string): Promise<LiveSandbox> {
    await this.existingSandbox(sandboxId);
    const sandbox = this.sandboxes.get(sandboxId);
    if (!sandbox || sandbox.stoppedExit) throw failedPrecondition(`wasm sandbox ${sandboxId} is not running`);
    return sandbox;
  }

  private async liveContainer(sandboxId: string, containerId: string): Promise<LiveContainer> {
    await this.existingSandbox(sandboxId);
    const container = this.sandboxes.get(sandboxId)?.containers.get(validateId('container id', containerId));
    if (!container) throw notFound(`container ${containerId} not found in wasm sandbox ${sandboxId} (or it ended with an earlier daemon)`);
    return container;
  }
}

function newLiveSandbox(sandboxId: string, paths: WasmSandboxPaths): LiveSandbox {
  let resolveStopped: (exit: ProcessExit) => void = () => undefined;
  const sandbox: LiveSandbox = {
    sandboxId,
    paths,
    containers: new Map(),
    processes: new Map(),
    stopped: new Promise((resolve) => (resolveStopped = resolve)),
    markStopped(exit) {
      sandbox.stoppedExit = exit;
      resolveStopped(exit);
    },
  };
  return sandbox;
}

async function readContainerRecord(paths: WasmContainerPaths): Promise<ContainerRecord | undefined> {
  const text = await readFile(paths.record, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const record = JSON.parse(text) as Partial<ContainerRecord>;
    if (typeof record.pid === 'number' && typeof record.bundleDir === 'string' && typeof record.rootfs === 'string') return record as ContainerRecord;
  } catch {
    // A record cut short by a crash during create: the container never ran.
  }
  return undefined;
}

function parseExitRecord(text: string): ProcessExit | undefined {
  try {
    const json = JSON.parse(text) as { exitStatus?: unknown; exitedAt?: unknown; reason?: unknown };
    if (typeof json.exitStatus !== 'number' || typeof json.exitedAt !== 'string') return undefined;
    return { exitStatus: json.exitStatus, exitedAt: new Date(json.exitedAt), ...(typeof json.reason === 'string' && { reason: json.reason }) };
  } catch {
    return undefined;
  }
}
