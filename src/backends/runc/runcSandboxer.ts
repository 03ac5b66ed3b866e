import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { alreadyExists, errorMessage, failedPrecondition, internal, invalidArgument, isKtsError, notFound } from '../../core/errors.js';
import { validateId } from '../../core/ids.js';
import { Sweep } from '../../core/sweep.js';
import type {
  ContainerSpec,
  ContainerStats,
  StartedSandbox,
  ContainerStatus,
  KnownResources,
  OciProcess,
  ProcessExit,
  SandboxSpec,
  Sandboxer,
  StdioPaths,
} from '../../core/sandboxer.js';
import { resolvConf } from '../../oci/podLinux.js';
import { withSpan, type SpanAttributes } from '../../telemetry/tracing.js';
import { cgroupV2Stats, memoryCgroupOomKills, removeCgroupDir } from './cgroups.js';
import { readExitFile, readInitIdentity, SandboxWatch } from './exitWatcher.js';
import { mountRootfs, removeTree, unmountUnder } from '../../host/mounts.js';
import { containerPaths, sandboxPaths, type ContainerPaths, type SandboxPaths } from './paths.js';
import { findProcesses, isProcessAlive, readPidFile, type ProcessIdentity } from '../../host/procfs.js';
import { RuncCli, runcLogErrors } from './runcCli.js';
import { runInSandbox, spawnSandboxInit, waitForHolder, writeFileAtomic, type SandboxCommandResult } from './sandboxInit.js';
import { defaultConsoleBinary, resizeConsole, startConsole } from './console.js';
import { defaultLogPumpBinary, startLogPump, waitForLogPump, type RunningLogPump } from '../../host/logPump.js';

export interface RuncLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

export interface RuncSandboxerOptions {
  /** Sandboxes live in `<rootDir>/sandboxes/<sandboxId>`. */
  rootDir: string;
  runcBinary?: string;
  /** The OCI runtime as SandboxStarted records it (`oci.runtime`, e.g. "runc 1.1.5+ds1"); not recorded without it. */
  ociRuntime?: Promise<string>;
  /** runc --root: a state directory of our own (default `<rootDir>/runc`), so we never see other runtimes' or daemons' containers. */
  runcRoot?: string;
  /** kts-sandbox-init, built by scripts/build-native.sh. */
  initBinary?: string;
  sandboxReadyDeadlineMs?: number;
  /** How long removeSandbox lets a live sandbox stop before killing it. */
  removeStopTimeoutMs?: number;
  logger?: RuncLogger;
}

/** A JSON object file, or undefined when it is missing or not an object. */
async function readJsonObject(file: string): Promise<Record<string, unknown> | undefined> {
  try {
    const parsed: unknown = JSON.parse(await readFile(file, 'utf8'));
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const silentLogger: RuncLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

/** `<repo>/dist/native/kts-sandbox-init`, found from this module's location in src/ or dist/src/. */
export function defaultInitBinary(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return join(dir, 'dist', 'native', 'kts-sandbox-init');
}

/**
 * Sandboxes whose pods are namespaces held by one kts-sandbox-init each, and whose containers are
 * run by runc as children of that init (see sandbox-init.c for why).
 */
export class RuncSandboxer implements Sandboxer {
  readonly kind = 'runc';
  /** The holder joins the given netns (kts's CNI one or containerd's), else makes one with loopback only. */
  readonly podNetwork = true;
  readonly containersWriteStdio = true;
  private readonly runc: RuncCli;
  private readonly initBinary: string;
  private readonly consoleBinary: string;
  private readonly logPumpBinary: string;
  private readonly readyDeadlineMs: number;
  private readonly removeStopTimeoutMs: number;
  private readonly logger: RuncLogger;
  private readonly watches = new Map<string, SandboxWatch>();

  constructor(private readonly options: RuncSandboxerOptions) {
    this.runc = new RuncCli(options.runcBinary ?? 'runc', options.runcRoot ?? join(options.rootDir, 'runc'));
    this.initBinary = options.initBinary ?? defaultInitBinary();
    this.consoleBinary = defaultConsoleBinary(this.initBinary);
    this.logPumpBinary = defaultLogPumpBinary(this.initBinary);
    this.readyDeadlineMs = options.sandboxReadyDeadlineMs ?? 10_000;
    this.removeStopTimeoutMs = options.removeStopTimeoutMs ?? 10_000;
    this.logger = options.logger ?? silentLogger;
  }

  // ------------------------------------------------------------------ sandboxes

  async startSandbox(spec: SandboxSpec): Promise<StartedSandbox> {
    const paths = this.paths(spec.sandboxId);
    await mkdir(dirname(paths.dir), { recursive: true });
    await mkdir(paths.dir).catch((error: NodeJS.ErrnoException) => {
      throw error.code === 'EEXIST' ? alreadyExists(`sandbox ${spec.sandboxId} already exists`) : error;
    });
    try {
      await mkdir(paths.containersDir);
      const resolver = resolvConf(spec.linux?.dns);
      if (resolver !== undefined) await writeFile(paths.resolvConf, resolver, { mode: 0o644 });
      const watch = this.watch(spec.sandboxId);
      const init = await spawnSandboxInit({
        initBinary: this.initBinary,
        paths,
        hostname: spec.hostname,
        netnsPath: spec.netnsPath,
        linux: spec.linux,
        onExit: () => watch.notifyInitExited(),
      });
      const holderPid = await waitForHolder(paths, watch.initExited(), this.readyDeadlineMs);
      this.logger.info({ sandbox_id: spec.sandboxId, initPid: init.identity.pid, holderPid }, 'runc sandbox started');
      const ociRuntime = await this.options.ociRuntime;
      return { pid: holderPid, ...(ociRuntime && { details: { 'oci.runtime': ociRuntime } }) };
    } catch (error) {
      await this.discardFailedStart(spec.sandboxId, paths);
      throw error;
    }
  }

  private async discardFailedStart(sandboxId: string, paths: SandboxPaths): Promise<void> {
    const init = await readInitIdentity(paths);
    // SIGKILL the init: its holder follows through PR_SET_PDEATHSIG.
    if (init && (await isProcessAlive(init))) process.kill(init.pid, 'SIGKILL');
    // An init whose identity file was never written (the daemon died right after spawning it) is found by its command line.
    if (!init) await this.killInits(sandboxId, await this.initProcesses());
    this.dropWatch(sandboxId);
    await rm(paths.dir, { recursive: true, force: true });
  }

  async stopSandbox(sandboxId: string, options: { timeoutMs: number }): Promise<ProcessExit> {
    const paths = await this.existingSandbox(sandboxId);
    const watch = this.watch(sandboxId);
    const init = await readInitIdentity(paths);
    if (init && (await isProcessAlive(init))) {
      await this.killAllContainers(paths);
      // SIGTERM makes the init kill the holder (and so the pod's pid namespace) and record every exit.
      process.kill(init.pid, 'SIGTERM');
      const stopped = await Promise.race([watch.initExited().then(() => true), sleep(options.timeoutMs, false)]);
      if (!stopped && (await isProcessAlive(init))) {
        this.logger.warn({ sandbox_id: sandboxId, initPid: init.pid, timeoutMs: options.timeoutMs }, 'sandbox init ignored SIGTERM; killing it');
        process.kill(init.pid, 'SIGKILL');
      }
    }
    const exit = await watch.waitSandboxExit();
    this.logger.info({ sandbox_id: sandboxId, exitStatus: exit.exitStatus }, 'runc sandbox stopped');
    return exit;
  }

  private async killAllContainers(paths: SandboxPaths): Promise<void> {
    const containerIds = await this.containerIds(paths);
    await Promise.all(
      containerIds.map((containerId) =>
        this.runc.kill(containerId, 9, true).catch((error: unknown) => {
          // A stopped or never-started container has nothing left to kill.
          if (!isKtsError(error, 'failed_precondition') && !isKtsError(error, 'not_found')) throw error;
        }),
      ),
    );
  }

  async sandboxStatus(sandboxId: string): Promise<{ alive: boolean; pid?: number }> {
    const paths = this.paths(sandboxId);
    const [init, holderPid] = await Promise.all([readInitIdentity(paths), readPidFile(paths.holderPid)]);
    const alive = init !== undefined && (await isProcessAlive(init));
    return holderPid === undefined ? { alive } : { alive, pid: holderPid };
  }

  async waitSandboxExit(sandboxId: string): Promise<ProcessExit> {
    await this.existingSandbox(sandboxId);
    return this.watch(sandboxId).waitSandboxExit();
  }

  async removeSandbox(sandboxId: string): Promise<void> {
    const paths = this.paths(sandboxId);
    if (!existsSync(paths.dir)) {
      await this.killInits(sandboxId, await this.initProcesses());
      this.dropWatch(sandboxId);
      return;
    }
    const recorded = await readInitIdentity(paths);
    await this.stopSandbox(sandboxId, { timeoutMs: this.removeStopTimeoutMs });
    // Without init.pid, stopSandbox had no init to stop: one spawned just before a crash is found by its command line.
    if (!recorded) await this.killInits(sandboxId, await this.initProcesses());
    for (const containerId of await this.containerIds(paths)) {
      await this.removeContainerState(containerId, containerPaths(paths, containerId));
    }
    await unmountUnder(paths.dir);
    await this.removeCgroupParents(paths);
    const watch = this.watches.get(sandboxId);
    await watch?.settle();
    this.dropWatch(sandboxId);
    await removeTree(paths.dir);
    this.logger.info({ sandbox_id: sandboxId }, 'runc sandbox removed');
  }

  async sweepOrphans(known: KnownResources): Promise<string[]> {
    const sweep = new Sweep();
    for (const sandboxId of await readdir(join(this.options.rootDir, 'sandboxes')).catch(() => [] as string[])) {
      if (known.sandboxIds.has(sandboxId)) continue;
      await sweep.attempt(`runc sandbox directory ${join(this.options.rootDir, 'sandboxes', sandboxId)} and its processes`, () => this.removeSandbox(sandboxId));
    }
    for (const container of await this.runc.list()) {
      if (known.containerIds.has(container.id)) continue;
      await sweep.attempt(`runc container ${container.id} (bundle ${container.bundle})`, async () => {
        await this.runc.forceDelete(container.id);
        if (container.bundle) await unmountUnder(join(container.bundle, 'rootfs'));
      });
    }
    // Inits whose directory is already gone, or that were still starting when the directories were listed.
    for (const [sandboxId, inits] of await this.initProcesses()) {
      if (known.sandboxIds.has(sandboxId)) continue;
      const pids = inits.map((init) => init.pid).join(', ');
      await sweep.attempt(`kts-sandbox-init process ${pids} of sandbox ${sandboxId}, which no record owns`,
        async () => (await this.killInits(sandboxId, new Map([[sandboxId, inits]]))).length > 0);
    }
    return sweep.finish();
  }

  /** Every kts-sandbox-init of this daemon (and the holder it forked), by the `--dir <root>/sandboxes/<id>` it was started with. */
  private async initProcesses(): Promise<Map<string, ProcessIdentity[]>> {
    const sandboxesDir = join(this.options.rootDir, 'sandboxes');
    const dirOf = (argv: string[]) => argv[argv.indexOf('--dir') + 1] ?? '';
    const found = await findProcesses((argv) => argv[0] === this.initBinary && argv.includes('--dir') && dirname(dirOf(argv)) === sandboxesDir);
    const bySandbox = new Map<string, ProcessIdentity[]>();
    for (const { identity, argv } of found) {
      const sandboxId = dirOf(argv).slice(sandboxesDir.length + 1);
      bySandbox.set(sandboxId, [...(bySandbox.get(sandboxId) ?? []), identity]);
    }
    return bySandbox;
  }

  /** SIGKILLs the inits of `sandboxId` found in `inits` and waits until they are gone; the pids it killed. */
  private async killInits(sandboxId: string, inits: Map<string, ProcessIdentity[]>): Promise<number[]> {
    const strays = inits.get(sandboxId) ?? [];
    for (const stray of strays) if (await isProcessAlive(stray)) process.kill(stray.pid, 'SIGKILL');
    for (const stray of strays) while (await isProcessAlive(stray)) await sleep(20);
    if (strays.length > 0) this.logger.warn({ sandbox_id: sandboxId, pids: strays.map((p) => p.pid) }, 'killed a kts-sandbox-init no record named');
    return strays.map((p) => p.pid);
  }

  // ------------------------------------------------------------------ containers

  async createContainer(spec: ContainerSpec): Promise<{ pid: number }> {
    const paths = await this.existingSandbox(spec.sandboxId);
    const container = containerPaths(paths, validateId('container id', spec.containerId));
    await mkdir(container.dir).catch((error: NodeJS.ErrnoException) => {
      throw error.code === 'EEXIST' ? alreadyExists(`container ${spec.containerId} already exists`) : error;
    });
    const rootfs = join(spec.bundleDir, 'rootfs');
    let logPump: RunningLogPump | undefined;
    try {
      await writeFileAtomic(container.bundleRecord, spec.bundleDir);
      await mkdir(rootfs, { recursive: true });
      await mountRootfs(spec.rootfsMounts, rootfs);
      await this.recordCgroupParent(paths, spec.bundleDir);
      const bundle = await this.bundleWithPodMounts(paths, container, spec.bundleDir);
      // A log kts keeps goes through a pump of the container's own, which outlives the daemon as the container does.
      if (spec.logPath) logPump = await startLogPump(this.logPumpBinary, { logPath: spec.logPath, dir: container.dir });
      const stdio = logPump ? { ...spec.stdio, ...logPump.stdio } : spec.stdio;
      const pid = await this.runcInSandbox('runc.create', { 'container.id': spec.containerId }, spec.sandboxId,
        (log) => this.runc.createArgv(spec.containerId, bundle, container.initPid, log), stdio, (result) => this.commandPid(result, `${this.runc.name} create ${spec.containerId}`, container.initPid));
      return { pid };
    } catch (error) {
      logPump?.stop(); // it ends by itself once its writers are gone; one whose FIFOs runc never opened must be told
      await this.undoCreate(spec.containerId, container, rootfs, error);
      throw error;
    }
  }

  /** Leaves nothing of a failed create; a runc container of the same id that is not ours stays. */
  private async undoCreate(containerId: string, container: ContainerPaths, rootfs: string, cause: unknown): Promise<void> {
    try {
      if (!isKtsError(cause, 'already_exists')) await this.runc.forceDelete(containerId);
      await unmountUnder(rootfs);
      await rm(container.dir, { recursive: true, force: true });
    } catch (error) {
      this.logger.error({ container_id: containerId, error: errorMessage(error) }, 'cleanup after a failed runc create failed');
    }
  }

  async startContainer(sandboxId: string, containerId: string): Promise<{ pid: number }> {
    const container = await this.existingContainer(sandboxId, containerId);
    // Run by the pod's init, as create is: a fork of a small C process, not of the daemon (spawn was the
    // daemon's largest self time in a 50-pod burst), and under TCG the guest agent's node is slower still.
    await this.runcInSandbox('runc.start', { 'container.id': containerId }, sandboxId, (log) => this.runc.startArgv(containerId, log), {}, async (result) => {
      if (result.status !== 0) throw this.runc.failure('start', containerId, failureReason(result));
    });
    const pid = await readPidFile(container.initPid);
    if (pid === undefined) throw internal(`container ${containerId} has no recorded init pid`);
    return { pid };
  }

  async killContainer(sandboxId: string, containerId: string, signal: number, all: boolean): Promise<void> {
    await this.existingContainer(sandboxId, containerId);
    await this.runc.kill(containerId, signal, all).catch((error: unknown) => {
      // A container that already exited has nothing left to signal (containerd stops such containers too).
      if (!isKtsError(error, 'failed_precondition')) throw error;
    });
  }

  /**
   * A container without a pid namespace of its own (the pod's, or the host's) leaves its children
   * running when its init exits, holding containerd's stdout FIFO open: kill them, as containerd's shim does.
   */
  async processExited(sandboxId: string, containerId: string, execId?: string): Promise<void> {
    if (execId !== undefined) return; // an exec's children die with the container, or are the container's
    const container = containerPaths(this.paths(sandboxId), validateId('container id', containerId));
    const bundleDir = await readFile(container.bundleRecord, 'utf8').catch(() => undefined);
    if (bundleDir === undefined) return;
    const config = await readJsonObject(join(bundleDir, 'config.json'));
    const namespaces = (config?.linux as { namespaces?: Array<{ type?: unknown; path?: unknown }> } | undefined)?.namespaces ?? [];
    const pidNamespace = namespaces.find((namespace) => namespace.type === 'pid');
    // Without a pid namespace of its own its children outlive its init (with its own, the kernel killed them).
    if (!pidNamespace || pidNamespace.path) await this.runc.kill(containerId, 9, true).catch(() => undefined);
    // Its exit is recorded once its log pump wrote the last lines (a container without one returns at once).
    await waitForLogPump(container.dir);
  }

  async deleteContainer(sandboxId: string, containerId: string): Promise<void> {
    const container = containerPaths(this.paths(sandboxId), validateId('container id', containerId));
    // No directory, no container of this sandbox: deleting is idempotent, and never touches another sandbox's id.
    if (!existsSync(container.dir)) return;
    await this.removeContainerState(containerId, container);
  }

  private async removeContainerState(containerId: string, container: ContainerPaths): Promise<void> {
    await this.runc.forceDelete(containerId);
    const bundleDir = await readFile(container.bundleRecord, 'utf8').catch(() => undefined);
    if (bundleDir !== undefined) await unmountUnder(join(bundleDir, 'rootfs'));
    await rm(container.dir, { recursive: true, force: true });
  }

  async containerStatus(sandboxId: string, containerId: string): Promise<ContainerStatus> {
    const paths = this.paths(sandboxId);
    const container = containerPaths(paths, validateId('container id', containerId));
    if (!existsSync(container.dir)) return { state: 'absent' };
    const state = await this.runc.state(containerId);
    if (state === undefined) return { state: 'absent' };
    // runc reports pid 0 once the container stopped; the pid file from create still names it.
    const pid = state.pid ?? (await readPidFile(container.initPid));
    const exit = pid === undefined ? undefined : await readExitFile(join(paths.exitsDir, String(pid)));
    return { state: state.status, ...(pid !== undefined && { pid }), ...(exit && { exit }) };
  }

  async execProcess(sandboxId: string, containerId: string, execId: string, process: OciProcess, stdio: StdioPaths): Promise<{ pid: number }> {
    const container = await this.existingContainer(sandboxId, containerId);
    const processFile = container.execProcess(validateId('exec id', execId));
    // 0600: the process spec carries the exec's env.
    await writeFile(processFile, JSON.stringify(process), { flag: 'wx', mode: 0o600 }).catch((error: NodeJS.ErrnoException) => {
      throw error.code === 'EEXIST' ? alreadyExists(`exec ${execId} already exists in container ${containerId}`) : error;
    });
    const pidFile = container.execPid(execId);
    if (process.terminal === true) return this.execWithTerminal(sandboxId, containerId, execId, container, processFile, stdio);
    const pid = await this.runcInSandbox('runc.exec', { 'container.id': containerId }, sandboxId,
      (log) => this.runc.execArgv(containerId, processFile, pidFile, log), stdio, (result) => this.commandPid(result, `${this.runc.name} exec ${containerId} (exec ${execId})`, pidFile));
    return { pid };
  }

  /**
   * An exec with a terminal: kts-console listens on a console socket of kts's own, runc sends it the
   * pty master, and it copies between the master and containerd's stdin/stdout FIFOs until the
   * terminal closes (see console.c).
   */
  private async execWithTerminal(sandboxId: string, containerId: string, execId: string, container: ContainerPaths, processFile: string, stdio: StdioPaths): Promise<{ pid: number }> {
    if (!stdio.stdout) throw invalidArgument(`exec ${execId}: a terminal needs a stdout to write to`);
    const consoleDir = join(this.options.rootDir, 'consoles');
    await mkdir(consoleDir, { recursive: true, mode: 0o700 });
    const socket = join(consoleDir, `${randomBytes(8).toString('hex')}.sock`);
    const resize = container.execResize(execId);
    const terminal = await startConsole(this.consoleBinary, { socket, resize, stdout: stdio.stdout, stdin: stdio.stdin });
    try {
      const pidFile = container.execPid(execId);
      const pid = await this.runcInSandbox('runc.exec', { 'container.id': containerId, 'process.terminal': true }, sandboxId,
        (log) => this.runc.execArgv(containerId, processFile, pidFile, log, socket), {}, (result) => this.commandPid(result, `${this.runc.name} exec --tty ${containerId} (exec ${execId})`, pidFile));
      return { pid };
    } catch (error) {
      terminal.stop(); // no process will hold the terminal: its console must not wait for one
      throw error;
    } finally {
      // Taken (kts-console unlinked it) or never used: either way it must not stay.
      await rm(socket, { force: true });
    }
  }

  async resizeTerminal(sandboxId: string, containerId: string, execId: string, width: number, height: number): Promise<void> {
    const container = await this.existingContainer(sandboxId, containerId);
    await resizeConsole(container.execResize(validateId('exec id', execId)), width, height);
  }

  /** runc exec writes the exec's pid file once its process runs. */
  async startedExecPid(sandboxId: string, containerId: string, execId: string): Promise<number | undefined> {
    const container = await this.existingContainer(sandboxId, containerId).catch(() => undefined);
    return container && readPidFile(container.execPid(validateId('exec id', execId)));
  }

  async waitProcessExit(sandboxId: string, pid: number): Promise<ProcessExit> {
    await this.existingSandbox(sandboxId);
    return this.watch(sandboxId).waitProcessExit(pid);
  }

  async pids(sandboxId: string, containerId: string): Promise<number[]> {
    await this.existingContainer(sandboxId, containerId);
    return this.runc.ps(containerId);
  }

  /**
   * runc's figures while the container runs (zeros once it stopped), and the OOM kills its memory
   * cgroup counted, which stay readable until the container is deleted.
   */
  async stats(sandboxId: string, containerId: string): Promise<ContainerStats> {
    const container = await this.existingContainer(sandboxId, containerId);
    const cgroupsPath = await this.cgroupsPathOf(container);
    const [figures, oomKills] = await Promise.all([
      this.runtimeStats(cgroupsPath, containerId).catch(async (error: unknown) => {
        if ((await this.runc.state(containerId))?.status !== 'stopped') throw error;
        return { cpuUsageNanos: 0, cpuUserNanos: 0, cpuKernelNanos: 0, memoryUsageBytes: 0, memoryLimitBytes: 0, pidsCurrent: 0, pidsLimit: 0 };
      }),
      // The `oom_kill` count of the container's memory cgroup (cgroup v1 memory.oom_control, v2 memory.events).
      memoryCgroupOomKills(cgroupsPath),
    ]);
    return { ...figures, ...(oomKills !== undefined && { oomKills }) };
  }

  /** runc's `events --stats`; crun has no such command, so its containers' figures come from their cgroup (v2). */
  private async runtimeStats(cgroupsPath: unknown, containerId: string): Promise<ContainerStats> {
    if (this.runc.name !== 'crun') return this.runc.stats(containerId);
    const figures = await cgroupV2Stats(cgroupsPath);
    if (!figures) throw failedPrecondition(`container ${containerId} has no cgroup to read its stats from`);
    return figures;
  }

  private async cgroupsPathOf(container: ContainerPaths): Promise<unknown> {
    const bundleDir = await readFile(container.bundleRecord, 'utf8').catch(() => undefined);
    const config = bundleDir === undefined ? undefined : await readJsonObject(join(bundleDir, 'config.json'));
    return (config?.linux as { cgroupsPath?: unknown } | undefined)?.cgroupsPath;
  }

  async close(): Promise<void> {
    for (const sandboxId of [...this.watches.keys()]) this.dropWatch(sandboxId);
  }

  // ------------------------------------------------------------------ helpers

  private paths(sandboxId: string): SandboxPaths {
    return sandboxPaths(this.options.rootDir, validateId('sandbox id', sandboxId));
  }

  private async existingSandbox(sandboxId: string): Promise<SandboxPaths> {
    const paths = this.paths(sandboxId);
    if (!existsSync(paths.dir)) throw notFound(`runc sandbox ${sandboxId} not found`);
    return paths;
  }

  private async existingContainer(sandboxId: string, containerId: string): Promise<ContainerPaths> {
    const container = containerPaths(await this.existingSandbox(sandboxId), validateId('container id', containerId));
    if (!existsSync(container.dir)) throw notFound(`container ${containerId} not found in sandbox ${sandboxId}`);
    return container;
  }

  private async containerIds(paths: SandboxPaths): Promise<string[]> {
    return readdir(paths.containersDir).catch(() => []);
  }

  private watch(sandboxId: string): SandboxWatch {
    let watch = this.watches.get(sandboxId);
    if (!watch) {
      watch = new SandboxWatch(this.paths(sandboxId));
      this.watches.set(sandboxId, watch);
    }
    return watch;
  }

  private dropWatch(sandboxId: string): void {
    this.watches.get(sandboxId)?.close();
    this.watches.delete(sandboxId);
  }

  /**
   * A runc command run by the pod's init, as one span (`runc.create`, `runc.start`, `runc.exec`) that fails
   * with runc's reason when `settle` throws on its result; what `settle` makes of it.
   */
  private runcInSandbox<T>(name: string, attributes: SpanAttributes, sandboxId: string, buildArgv: (logFile: string) => string[], stdio: StdioPaths, settle: (result: SandboxCommandResult) => Promise<T>): Promise<T> {
    return withSpan(name, { attributes }, async (span) => {
      const result = await this.runInSandbox(sandboxId, (log) => {
        const argv = buildArgv(log);
        span.setAttribute('process.command_args', argv);
        return argv;
      }, stdio);
      span.setAttribute('process.exit_code', result.status);
      return settle(result);
    });
  }

  private runInSandbox(sandboxId: string, buildArgv: (logFile: string) => string[], stdio: StdioPaths): Promise<SandboxCommandResult> {
    return runInSandbox(this.paths(sandboxId), this.watch(sandboxId), buildArgv, stdio);
  }

  /** The pid runc wrote, or the reason it failed in runc's own words. */
  private async commandPid(result: SandboxCommandResult, what: string, pidFile: string): Promise<number> {
    if (result.status !== 0) {
      const reason = failureReason(result);
      if (/container with id exists|already exists/i.test(reason)) throw alreadyExists(`${what}: ${reason}`);
      throw failedPrecondition(`${what} failed: ${reason}`);
    }
    const pid = await readPidFile(pidFile);
    if (pid === undefined) throw internal(`${what} succeeded but wrote no pid file`);
    return pid;
  }

  /**
   * The bundle runc runs: containerd's, or, when the pod has a resolver and the container mounts none, a
   * config.json of kts's own in the container's private directory with containerd's rootfs and the
   * pod's resolv.conf bind-mounted read-only (what containerd's own pods get from their sandbox).
   */
  private async bundleWithPodMounts(paths: SandboxPaths, container: ContainerPaths, bundleDir: string): Promise<string> {
    if (!existsSync(paths.resolvConf)) return bundleDir;
    const config = await readJsonObject(join(bundleDir, 'config.json'));
    if (!config) return bundleDir; // runc create reports a missing or broken config.json in its own words
    const mounts = Array.isArray(config.mounts) ? (config.mounts as Array<{ destination?: unknown }>) : [];
    if (mounts.some((mount) => mount.destination === '/etc/resolv.conf')) return bundleDir;
    const root = (config.root ?? {}) as { path?: unknown };
    const rootPath = typeof root.path === 'string' && root.path !== '' ? root.path : 'rootfs';
    const own = {
      ...config,
      root: { ...root, path: isAbsolute(rootPath) ? rootPath : join(bundleDir, rootPath) },
      mounts: [...mounts, { destination: '/etc/resolv.conf', type: 'bind', source: paths.resolvConf, options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'] }],
    };
    // 0600: config.json carries the container's env.
    await writeFile(container.config, JSON.stringify(own), { mode: 0o600 });
    return container.dir;
  }

  /** Remembers the parent of the container's cgroup so that removeSandbox can remove it. */
  private async recordCgroupParent(paths: SandboxPaths, bundleDir: string): Promise<void> {
    let cgroupsPath: unknown;
    try {
      const config = JSON.parse(await readFile(join(bundleDir, 'config.json'), 'utf8')) as { linux?: { cgroupsPath?: unknown } };
      cgroupsPath = config.linux?.cgroupsPath;
    } catch {
      return; // runc create reports a missing or broken config.json in its own words
    }
    // "slice:prefix:name" is the systemd driver's syntax; systemd cleans up its own units.
    if (typeof cgroupsPath !== 'string' || !cgroupsPath.startsWith('/') || cgroupsPath.includes(':')) return;
    const parent = dirname(cgroupsPath);
    if (parent !== '/') await appendFile(paths.cgroupParents, `${parent}\n`);
  }

  private async removeCgroupParents(paths: SandboxPaths): Promise<void> {
    const text = await readFile(paths.cgroupParents, 'utf8').catch(() => '');
    const parents = new Set(text.split('\n').filter((line) => line.length > 0));
    await Promise.all([...parents].map((parent) => removeCgroupDir(parent)));
  }
}

/** Why a command run by the sandbox init failed: runc's (or crun's) own words, else why it never started, else its status. */
function failureReason(result: SandboxCommandResult): string {
  return runcLogErrors(result.logText) || result.startError || `exit status ${result.status}`;
}
