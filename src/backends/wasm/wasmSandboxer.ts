import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, realpath, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ResourceLimits } from 'node:worker_threads';
import { alreadyExists, errorMessage, failedPrecondition, notFound } from '../../core/errors.js';
import { validateId } from '../../core/ids.js';
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
import { writeFileAtomic } from '../host/files.js';
import { bindMount, mountRootfs, unmountUnder } from '../host/mounts.js';
import { closeFdsUnder } from './leakedFds.js';
import { loadModule } from './moduleLoader.js';
import { WASM_PAGE_BYTES } from './moduleMemory.js';
import { appendNotice, openModuleStdio } from './moduleStdio.js';
import { defaultWorkerScript, ModuleWorker } from './moduleWorker.js';
import { WorkerPool } from './workerPool.js';
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
  /** Bounds each worker's own JavaScript heap (a module's linear memory is capped separately). */
  workerResourceLimits?: ResourceLimits;
  readyTimeoutMs?: number;
  /** How long to wait for containerd to open the reading end of a stdout/stderr FIFO. */
  fifoReaderDeadlineMs?: number;
  workerScript?: string;
  /** Booted workers kept ready while wasm sandboxes run (each ~8 MB; saves ~30 ms per start). */
  warmWorkers?: number;
  logger?: WasmLogger;
}

export const DEFAULT_WASM_MEMORY_LIMIT_BYTES = 512 * 1024 * 1024;
const DEFAULT_WORKER_LIMITS: ResourceLimits = { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 };
const LOST_IN_RESTART = 'the daemon stopped while the module ran: wasm modules run inside the daemon and do not survive it';
const silentLogger: WasmLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

/** One module running (or done) in a worker: a container's init or an exec. */
interface ModuleProcess {
  pid: number;
  worker: ModuleWorker;
  /** Settles after the exit is written to the exit record and the reason to stderr. */
  exit: Promise<ProcessExit>;
}

interface LiveContainer {
  containerId: string;
  paths: WasmContainerPaths;
  plan: WasmContainerPlan;
  /** Guest directory → host directory, the rootfs last as `/`. */
  preopens: Record<string, string>;
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
 * WebAssembly sandboxes: each container (and exec) is a WASI preview 1 module run by Node's WASI in
 * a worker thread of this daemon. No host process per sandbox or container exists (the sandbox's
 * pid is the daemon's own); a module's pid is synthetic (see wasmPids.ts). A trap, a memory cap or
 * a kill ends one worker, never the daemon. Modules cannot outlive the daemon: after a restart every
 * container that was running reports `stopped` with exit status 255.
 */
export class WasmSandboxer implements Sandboxer {
  readonly kind = 'wasm';
  private readonly sandboxes = new Map<string, LiveSandbox>();
  private readonly pidAllocator: WasmPidAllocator;
  private readonly logger: WasmLogger;
  private readonly workers: WorkerPool;

  constructor(private readonly options: WasmSandboxerOptions) {
    this.pidAllocator = new WasmPidAllocator(pidReservationFile(options.rootDir));
    this.logger = options.logger ?? silentLogger;
    this.workers = new WorkerPool(options.workerScript ?? defaultWorkerScript(), options.workerResourceLimits ?? DEFAULT_WORKER_LIMITS, options.warmWorkers ?? 1);
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
    this.workers.fill();
    this.logger.info({ sandboxId: spec.sandboxId }, 'wasm sandbox started');
    return { pid: process.pid, details: { 'kts.wasm.runtime': `node:wasi preview1, Node ${process.versions.node}`, 'kts.wasm.isolation': 'worker_thread' } };
  }

  async stopSandbox(sandboxId: string, _options: { timeoutMs: number }): Promise<ProcessExit> {
    const paths = await this.existingSandbox(sandboxId);
    const sandbox = this.sandboxes.get(sandboxId);
    // Started by an earlier daemon: its modules ended with that daemon.
    if (!sandbox) return { exitStatus: LOST_EXIT_STATUS, exitedAt: new Date(), reason: LOST_IN_RESTART };
    if (sandbox.stoppedExit) return sandbox.stoppedExit;
    await Promise.all([...sandbox.processes.values()].map((p) => p.worker.kill(9)));
    await Promise.all([...sandbox.processes.values()].map((p) => p.exit));
    sandbox.markStopped({ exitStatus: 0, exitedAt: new Date() });
    await this.drainPoolIfIdle();
    this.logger.info({ sandboxId, dir: paths.dir }, 'wasm sandbox stopped');
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
      await rm(paths.dir, { recursive: true, force: true });
      this.logger.info({ sandboxId }, 'wasm sandbox removed');
    }
    this.sandboxes.delete(sandboxId);
  }

  /** Sandbox directories, and container directories in them, that the event log knows nothing of. */
  async sweepOrphans(known: KnownResources): Promise<string[]> {
    const removed: string[] = [];
    for (const sandboxId of await readdir(join(wasmRootDir(this.options.rootDir), 'sandboxes')).catch(() => [] as string[])) {
      const paths = this.paths(sandboxId);
      if (!known.sandboxIds.has(sandboxId)) {
        await this.removeSandbox(sandboxId);
        removed.push(`wasm sandbox directory ${paths.dir} and its container mounts`);
        continue;
      }
      for (const containerId of await readdir(paths.containersDir).catch(() => [] as string[])) {
        if (known.containerIds.has(containerId)) continue;
        await this.deleteContainer(sandboxId, containerId);
        removed.push(`wasm container directory ${wasmContainerPaths(paths, containerId).dir} and its mounts`);
      }
    }
    return removed;
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
      await mountRootfs(spec.rootfsMounts, plan.rootfs);
      const preopens = await this.mountDirectories(plan, paths);
      const container: LiveContainer = { containerId: spec.containerId, paths, plan, preopens, init: undefined!, execs: new Map() };
      container.init = await this.launch(sandbox, container, pid, config.process, spec.stdio);
      sandbox.containers.set(spec.containerId, container);
      return { pid };
    } catch (error) {
      await this.removeContainerFiles(paths).catch((cleanup: unknown) =>
        this.logger.error({ containerId: spec.containerId, error: errorMessage(cleanup) }, 'cleanup after a failed wasm create failed'));
      throw error;
    }
  }

  /**
   * Each directory bind mount becomes a preopened directory, through a private bind mount under
   * the container's own directory: the kernel then enforces `ro`, which WASI preopens cannot express.
   */
  private async mountDirectories(plan: WasmContainerPlan, paths: WasmContainerPaths): Promise<Record<string, string>> {
    const preopens: Record<string, string> = {};
    for (const [index, mount] of plan.mounts.entries()) {
      const isDirectory = await stat(mount.hostPath).then((stats) => stats.isDirectory(), () => false);
      // File mounts (/etc/hosts and the like from CRI) cannot be preopened; WASI only opens directories.
      if (!isDirectory) continue;
      const target = join(paths.mountsDir, String(index));
      await mkdir(target, { recursive: true });
      await bindMount(mount.hostPath, target, mount.readonly);
      preopens[mount.guestPath] = target;
    }
    preopens['/'] ??= plan.rootfs;
    return preopens;
  }

  async startContainer(sandboxId: string, containerId: string): Promise<{ pid: number }> {
    const container = await this.liveContainer(sandboxId, containerId);
    container.init.worker.start();
    return { pid: container.init.pid };
  }

  async killContainer(sandboxId: string, containerId: string, signal: number, all: boolean): Promise<void> {
    const container = await this.liveContainer(sandboxId, containerId);
    if (!signalEndsModule(signal)) return;
    const targets = all ? [container.init, ...container.execs.values()] : [container.init];
    await Promise.all(targets.map((target) => target.worker.kill(signal)));
  }

  async deleteContainer(sandboxId: string, containerId: string): Promise<void> {
    const paths = wasmContainerPaths(this.paths(sandboxId), validateId('container id', containerId));
    if (!existsSync(paths.dir)) return;
    const sandbox = this.sandboxes.get(sandboxId);
    const container = sandbox?.containers.get(containerId);
    if (sandbox && container) {
      const processes = [container.init, ...container.execs.values()];
      await Promise.all(processes.map((p) => p.worker.kill(9)));
      await Promise.all(processes.map((p) => p.exit));
      sandbox.containers.delete(containerId);
    }
    await this.removeContainerFiles(paths);
  }

  async containerStatus(sandboxId: string, containerId: string): Promise<ContainerStatus> {
    const paths = wasmContainerPaths(this.paths(sandboxId), validateId('container id', containerId));
    const container = this.sandboxes.get(sandboxId)?.containers.get(containerId);
    if (container) {
      const { pid, worker, exit } = container.init;
      if (worker.running) return { state: worker.started ? 'running' : 'created', pid };
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
    if (!container.init.worker.running) throw failedPrecondition(`container ${containerId} has exited; exec needs a running container`);
    const exec = await this.launch(sandbox, container, this.pidAllocator.allocate(), process, stdio);
    container.execs.set(execId, exec);
    exec.worker.start();
    return { pid: exec.pid };
  }

  async killExec(sandboxId: string, containerId: string, execId: string, signal: number): Promise<void> {
    const exec = (await this.liveContainer(sandboxId, containerId)).execs.get(validateId('exec id', execId));
    if (!exec) throw notFound(`exec ${execId} not found in container ${containerId}`);
    if (signalEndsModule(signal)) await exec.worker.kill(signal);
  }

  async waitProcessExit(sandboxId: string, pid: number): Promise<ProcessExit> {
    await this.existingSandbox(sandboxId);
    const live = this.sandboxes.get(sandboxId)?.processes.get(pid);
    return live ? live.exit : this.recordedExit(sandboxId, pid);
  }

  async pids(sandboxId: string, containerId: string): Promise<number[]> {
    const container = await this.liveContainer(sandboxId, containerId);
    return [container.init, ...container.execs.values()].filter((p) => p.worker.running).map((p) => p.pid);
  }

  async stats(sandboxId: string, containerId: string): Promise<ContainerStats> {
    const container = await this.liveContainer(sandboxId, containerId);
    const running = [container.init, ...container.execs.values()].filter((p) => p.worker.running);
    return {
      // A worker thread's CPU time is not observable from Node 20; 0 says "not measured".
      cpuUsageNanos: 0,
      cpuUserNanos: 0,
      cpuKernelNanos: 0,
      memoryUsageBytes: running.reduce((sum, p) => sum + p.worker.memoryPages * WASM_PAGE_BYTES, 0),
      memoryLimitBytes: container.plan.memoryLimitPages * WASM_PAGE_BYTES,
      pidsCurrent: running.length,
      pidsLimit: 0,
    };
  }

  /** Modules cannot outlive the daemon: each is ended, and its exit recorded as lost to the restart. */
  async close(): Promise<void> {
    const processes = [...this.sandboxes.values()].flatMap((sandbox) => [...sandbox.processes.values()]);
    await Promise.all(processes.map((p) => p.worker.abandon('the daemon stopped while the module ran')));
    await Promise.all(processes.map((p) => p.exit));
    this.sandboxes.clear();
    await this.workers.drain();
  }

  private async drainPoolIfIdle(): Promise<void> {
    if (![...this.sandboxes.values()].some((sandbox) => !sandbox.stoppedExit)) await this.workers.drain();
  }

  // ------------------------------------------------------------------ processes

  /** Compiles the module a process names and readies it in a worker; the caller starts it. */
  private async launch(sandbox: LiveSandbox, container: LiveContainer, pid: number, process: OciProcess, stdio: StdioPaths): Promise<ModuleProcess> {
    const plan = processPlan(process);
    const { module } = await loadModule(container.plan.rootfs, plan.modulePath, container.plan.memoryLimitPages);
    const moduleStdio = await openModuleStdio(stdio, this.options.fifoReaderDeadlineMs ?? 10_000);
    let worker: ModuleWorker;
    try {
      worker = await ModuleWorker.launch({
        worker: this.workers.take(),
        setup: { module, args: plan.args, env: plan.env, preopens: container.preopens, stdio: moduleStdio.fds },
        readyTimeoutMs: this.options.readyTimeoutMs ?? 10_000,
      });
    } catch (error) {
      await moduleStdio.close();
      throw error;
    }
    const exit = worker.outcome.then(async (outcome) => {
      const { exitStatus, reason } = moduleExit(outcome, container.plan.memoryLimitPages);
      const processExit: ProcessExit = { exitStatus, exitedAt: new Date(), ...(reason !== undefined && { reason }) };
      if (reason !== undefined) await appendNotice(stdio.stderr, `kts: wasm module ${plan.modulePath} (pid ${pid}) ended: ${reason}\n`);
      await moduleStdio.close();
      await this.recordExit(sandbox, pid, processExit);
      await this.afterProcessEnded(container);
      this.logger.info({ sandboxId: sandbox.sandboxId, containerId: container.containerId, pid, exitStatus, reason }, 'wasm module ended');
      return processExit;
    });
    const moduleProcess: ModuleProcess = { pid, worker, exit };
    sandbox.processes.set(pid, moduleProcess);
    return moduleProcess;
  }

  private async recordExit(sandbox: LiveSandbox, pid: number, exit: ProcessExit): Promise<void> {
    const text = JSON.stringify({ exitStatus: exit.exitStatus, exitedAt: exit.exitedAt.toISOString(), reason: exit.reason });
    await writeFileAtomic(sandbox.paths.exitFile(pid), text).catch((error: unknown) =>
      this.logger.warn({ pid, error: errorMessage(error) }, 'could not record a wasm module\'s exit (its sandbox was removed?)'));
  }

  /** Once no module of a container runs, the fds uvwasi left on its directories are closed. */
  private async afterProcessEnded(container: LiveContainer): Promise<void> {
    const processes = [container.init, ...container.execs.values()].filter((p): p is ModuleProcess => p !== undefined);
    if (processes.some((p) => p.worker.running)) return;
    await closeContainerFds(container.plan.rootfs, container.paths);
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
    if (record) await closeContainerFds(record.rootfs, paths);
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

async function closeContainerFds(rootfs: string, paths: WasmContainerPaths): Promise<void> {
  const dirs = await Promise.all([rootfs, paths.mountsDir].map((dir) => realpath(dir).catch(() => dir)));
  await closeFdsUnder(dirs);
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
