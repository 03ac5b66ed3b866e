import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { crashPoint } from '../../core/crashPoints.js';
import type { HypervisorConfig } from './config.js';
import { KtsError, alreadyExists, errorMessage, failedPrecondition, internal, isKtsError, notFound } from '../../core/errors.js';
import { validateId } from '../../core/ids.js';
import { Sweep } from '../../core/sweep.js';
import type {
  ContainerSpec, ContainerStats, ContainerStatus, KnownResources, OciProcess, ProcessExit, SandboxSpec, Sandboxer, StartedSandbox, StdioPaths,
} from '../../core/sandboxer.js';
import { rotateIfOver } from '../../host/logRotation.js';
import { removeTree } from '../../host/mounts.js';
import { isProcessAlive, parseIdentity, type ProcessIdentity } from '../../host/procfs.js';
import { AgentClient, type AgentHealth } from './agentClient.js';
import type { Accelerator, Hypervisor } from './hypervisor.js';
import { consoleTail } from './qemu/qemuHypervisor.js';
import { VmShare, type VmShareOptions } from './share.js';
import { connectTaps, describePlan, disconnectTaps, guestNetworkOf, loadPlan, planVmNetwork, savePlan, vmNetworkOf, type VmNetworkPlan } from './tapMirror.js';
import { vmPaths, type VmPaths } from './vmPaths.js';
import { withSpan } from '../../telemetry/tracing.js';

export interface VmmLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

export interface VmmSandboxerOptions {
  /** VMs live in `<rootDir>/vms/<sandboxId>`. */
  rootDir: string;
  config: HypervisorConfig;
  hypervisor: Hypervisor;
  logger: VmmLogger;
}

/** A VM this daemon knows: launched by it, or found on disk after a restart. */
interface Vm {
  paths: VmPaths;
  identity: ProcessIdentity;
  agent: AgentClient;
  share: VmShare;
  exited: Promise<ProcessExit>;
  /** Set when kts itself ends the VM, so its exit counts as a clean stop. */
  quitByUs: boolean;
  /** Set when this daemon lets go of the VM (removed, or the daemon closes). */
  forgotten: boolean;
  /** The agent's first Check: the guest's OCI runtime ("crun 1.8.1") and whether its node runs without a JIT. */
  ready?: AgentHealth;
}

const EXIT_POLL_MS = 500;
/** The console's size is checked every this many exit polls. */
const CONSOLE_CHECK_POLLS = 4;
const QUIT_DEADLINE_MS = 5000;
/** A VM that died with no status kts could read (it is not the hypervisor's parent). */
const UNKNOWN_EXIT_STATUS = 255;

/**
 * microVM sandboxes: one QEMU per pod, its containers run by the task agent inside the guest. The
 * daemon stays the only kts process on the host (1:N); QEMU outlives it and is reattached from
 * the files under the VM's directory.
 */
export class VmmSandboxer implements Sandboxer {
  readonly kind = 'vmm';
  /** QEMU runs in the pod's netns when it has interfaces to mirror; else the guest has loopback only. */
  readonly podNetwork = true;
  private readonly vms = new Map<string, Vm>();
  /** The accelerator decided for this daemon's life; `auto` decides on the first boot. */
  private decided: { accelerator: Accelerator; reason: string } | undefined;
  private probing: Promise<void> | undefined;

  constructor(private readonly options: VmmSandboxerOptions) {}

  // ------------------------------------------------------------------ sandboxes

  async startSandbox(spec: SandboxSpec): Promise<StartedSandbox> {
    const paths = vmPaths(this.options.rootDir, validateId('sandbox id', spec.sandboxId));
    await this.requireGuestImage();
    await mkdir(paths.dir, { recursive: true }).then(() => mkdir(paths.shareDir)).catch((error: NodeJS.ErrnoException) => {
      throw error.code === 'EEXIST' ? alreadyExists(`VM of sandbox ${spec.sandboxId} already exists`) : error;
    });
    const launchedAt = Date.now();
    try {
      await new VmShare(paths, this.shareOptions).prepare();
      const network = spec.netnsPath ? await this.mirrorNetwork(paths, spec.netnsPath) : undefined;
      const { vm, accelerator, reason } = await this.boot(spec.sandboxId, paths, network);
      const bootMs = Date.now() - launchedAt;
      if (network) await vm.agent.configureNetwork(guestNetworkOf(network));
      const pod = await vm.agent.startPod({ sandboxId: spec.sandboxId, hostname: spec.hostname });
      const details = {
        'hypervisor.name': this.options.hypervisor.name, 'hypervisor.accelerator': accelerator, 'hypervisor.accelerator_reason': reason,
        'guest.boot_ms': bootMs, 'guest.pod_start_ms': Date.now() - launchedAt - bootMs, 'guest.pod_pid': pod.pid,
        ...(vm.ready?.ociRuntime && { 'guest.oci_runtime': vm.ready.ociRuntime }),
        'guest.agent_jit': vm.ready?.jitless ? 'off' : 'on',
        ...(network && { 'guest.interfaces': describePlan(network) }),
      };
      await writeFile(paths.launchFile, JSON.stringify(details));
      this.options.logger.info({ sandbox_id: spec.sandboxId, qemu_pid: vm.identity.pid, ...details }, 'VM sandbox started');
      return { pid: vm.identity.pid, details };
    } catch (error) {
      await this.discard(spec.sandboxId, paths);
      throw error;
    }
  }

  /** Taps beside the netns's interfaces, recorded first; undefined when the netns has nothing to mirror. */
  private async mirrorNetwork(paths: VmPaths, netnsPath: string): Promise<VmNetworkPlan | undefined> {
    return withSpan('vm.network', { attributes: { 'netns.path': netnsPath } }, async (span) => {
      const plan = await planVmNetwork(netnsPath);
      span.setAttribute('vm.nics', plan.interfaces.length);
      if (plan.interfaces.length === 0) return undefined;
      await savePlan(paths.networkFile, plan);
      await connectTaps(plan);
      return plan;
    });
  }

  private async requireGuestImage(): Promise<void> {
    for (const file of [this.options.config.kernel, this.options.config.initrd, this.options.config.image].filter(Boolean)) {
      if (!existsSync(file)) throw failedPrecondition(`guest image file ${file} is missing: build it with scripts/build-guest.sh (or set [hypervisor] kernel/initrd)`);
    }
  }

  /** Launches QEMU and waits for the agent; under `auto`, the first boot tries KVM once. */
  private async boot(sandboxId: string, paths: VmPaths, network?: VmNetworkPlan): Promise<{ vm: Vm; accelerator: Accelerator; reason: string }> {
    const configured = this.options.config.accelerator;
    if (configured !== 'auto') return { vm: await this.launch(sandboxId, paths, configured, this.options.config.bootDeadlineSeconds, network), accelerator: configured, reason: 'configured' };
    if (!this.decided && this.probing) await this.probing.catch(() => undefined);
    if (!this.decided) {
      let finish!: () => void;
      this.probing = new Promise((resolve) => (finish = resolve));
      try {
        return await this.probeKvm(sandboxId, paths, network);
      } finally {
        finish();
      }
    }
    const { accelerator, reason } = this.decided;
    return { vm: await this.launch(sandboxId, paths, accelerator, this.options.config.bootDeadlineSeconds, network), accelerator, reason };
  }

  private async probeKvm(sandboxId: string, paths: VmPaths, network?: VmNetworkPlan): Promise<{ vm: Vm; accelerator: Accelerator; reason: string }> {
    let reason = '/dev/kvm is not usable';
    if (await this.options.hypervisor.acceleratorAvailable('kvm')) {
      try {
        const vm = await this.launch(sandboxId, paths, 'kvm', this.options.config.kvmProbeDeadlineSeconds, network);
        this.decided = { accelerator: 'kvm', reason: 'a KVM guest booted' };
        return { vm, accelerator: 'kvm', reason: this.decided.reason };
      } catch (error) {
        reason = `a KVM guest did not come up: ${errorMessage(error).split('\n')[0]}`;
        this.options.logger.warn({ sandbox_id: sandboxId, reason }, 'falling back to TCG for this daemon\'s life');
        await this.forget(sandboxId);
        await rm(paths.consoleLog, { force: true });
      }
    }
    this.decided = { accelerator: 'tcg', reason };
    return { vm: await this.launch(sandboxId, paths, 'tcg', this.options.config.bootDeadlineSeconds, network), accelerator: 'tcg', reason };
  }

  private async launch(sandboxId: string, paths: VmPaths, accelerator: Accelerator, deadlineSeconds: number, network?: VmNetworkPlan): Promise<Vm> {
    const identity = await this.options.hypervisor.launch(paths, accelerator, `kts-${sandboxId}`, network && vmNetworkOf(network));
    crashPoint('process.spawned', 'QEMU runs; the daemon has not tracked it');
    const vm = this.track(sandboxId, paths, identity);
    const died = vm.exited.then(async () => {
      throw internal(`the VM exited while booting; console:\n${await consoleTail(paths)}`);
    });
    try {
      vm.ready = await withSpan('guest.wait_ready', { attributes: { 'hypervisor.accelerator': accelerator, 'guest.deadline_ms': deadlineSeconds * 1000 } }, () =>
        Promise.race([vm.agent.waitForReady(deadlineSeconds * 1000), died]));
    } catch (error) {
      await this.kill(vm);
      if (errorMessage(error).includes('console:')) throw error;
      throw new KtsError(isKtsError(error) ? error.kind : 'internal', `${errorMessage(error)}; console:\n${await consoleTail(paths)}`);
    }
    return vm;
  }

  private track(sandboxId: string, paths: VmPaths, identity: ProcessIdentity): Vm {
    const vm: Vm = {
      paths, identity, quitByUs: false, forgotten: false,
      agent: new AgentClient(paths.agentSocket, {
        callTimeoutMs: this.options.config.agentCallTimeoutSeconds * 1000,
        guestResource: { 'service.instance.id': sandboxId, 'host.name': `kts-vm-${sandboxId.slice(0, 12)}` },
      }),
      share: new VmShare(paths, this.shareOptions),
      exited: Promise.resolve({ exitStatus: 0, exitedAt: new Date() }),
    };
    vm.exited = this.watchExit(vm);
    this.vms.set(sandboxId, vm);
    return vm;
  }

  /**
   * Polls the hypervisor process: it is not our child once daemonized, so no exit event reaches
   * us. Stops polling (and never settles) once the VM is forgotten, e.g. when the daemon closes.
   */
  private async watchExit(vm: Vm): Promise<ProcessExit> {
    for (let polls = 1; await isProcessAlive(vm.identity); polls++) {
      await sleep(EXIT_POLL_MS);
      if (vm.forgotten) return new Promise<never>(() => undefined);
      if (polls % CONSOLE_CHECK_POLLS === 0) await this.boundConsole(vm);
    }
    return { exitStatus: vm.quitByUs ? 0 : UNKNOWN_EXIT_STATUS, exitedAt: new Date() };
  }

  /** The guest writes its console as fast as it likes: past the configured size it is rotated (QEMU appends, so it carries on at the start). */
  private async boundConsole(vm: Vm): Promise<void> {
    await rotateIfOver(vm.paths.consoleLog, this.options.config.consoleMaxBytes).catch((error: unknown) =>
      this.options.logger.warn({ file: vm.paths.consoleLog, err: error }, 'cannot rotate the VM console log'));
  }

  private get shareOptions(): VmShareOptions {
    return { stdioMaxBytes: this.options.config.shareStdioMaxBytes };
  }

  /** The VM of a sandbox, reattached from its files after a daemon restart (once, however many ask at the same time). */
  private async vm(sandboxId: string): Promise<Vm> {
    const known = this.vms.get(validateId('sandbox id', sandboxId));
    if (known) return known;
    let reattaching = this.reattaching.get(sandboxId);
    if (!reattaching) {
      reattaching = this.reattach(sandboxId).finally(() => this.reattaching.delete(sandboxId));
      this.reattaching.set(sandboxId, reattaching);
    }
    return reattaching;
  }

  private readonly reattaching = new Map<string, Promise<Vm>>();

  private async reattach(sandboxId: string): Promise<Vm> {
    const paths = vmPaths(this.options.rootDir, sandboxId);
    const identity = parseIdentity(await readFile(paths.identityFile, 'utf8').catch(() => ''));
    if (!identity) throw notFound(`no VM for sandbox ${sandboxId}`);
    const vm = this.track(sandboxId, paths, identity);
    if (await isProcessAlive(identity)) {
      const pumps = await vm.share.resumePumps();
      if (pumps > 0) this.options.logger.info({ sandbox_id: sandboxId, pumps }, 'resumed the FIFO pumps of the VM\'s containers');
    }
    return vm;
  }

  async stopSandbox(sandboxId: string, options: { timeoutMs: number }): Promise<ProcessExit> {
    const vm = await this.vm(sandboxId);
    if (await isProcessAlive(vm.identity)) {
      await vm.agent.stopPod(options.timeoutMs).catch((error: unknown) =>
        this.options.logger.warn({ sandbox_id: sandboxId, err: error }, 'the agent did not stop the pod; quitting the VM anyway'));
      await this.kill(vm);
    }
    return vm.exited;
  }

  /** QMP quit, then SIGKILL if QEMU is still there after the deadline. */
  private async kill(vm: Vm): Promise<void> {
    vm.quitByUs = true;
    vm.agent.close();
    if (!(await isProcessAlive(vm.identity))) return;
    await this.options.hypervisor.quit(vm.paths).catch(() => undefined);
    const gone = await Promise.race([vm.exited.then(() => true), sleep(QUIT_DEADLINE_MS, false)]);
    if (!gone && (await isProcessAlive(vm.identity))) process.kill(vm.identity.pid, 'SIGKILL');
    await vm.exited;
  }

  /** A VM counts as started only once its pod runs in the guest (launch.json is written last). */
  async sandboxStatus(sandboxId: string): Promise<{ alive: boolean; pid?: number }> {
    const vm = await this.vm(sandboxId).catch(() => undefined);
    if (!vm) return { alive: false };
    const started = existsSync(vm.paths.launchFile);
    return { alive: started && (await isProcessAlive(vm.identity)), pid: vm.identity.pid };
  }

  async waitSandboxExit(sandboxId: string): Promise<ProcessExit> {
    return (await this.vm(sandboxId)).exited;
  }

  async removeSandbox(sandboxId: string): Promise<void> {
    const paths = vmPaths(this.options.rootDir, validateId('sandbox id', sandboxId));
    if (!existsSync(paths.dir)) return void this.vms.delete(sandboxId);
    await this.discard(sandboxId, paths);
    this.options.logger.info({ sandbox_id: sandboxId }, 'VM sandbox removed');
  }

  /** Ends the VM if it runs, removes its taps, unbinds the share and deletes the VM's directory. */
  private async discard(sandboxId: string, paths: VmPaths): Promise<void> {
    const vm = await this.vm(sandboxId).catch(() => undefined);
    // A VM without a record is one a daemon killed during the launch: its QEMU is found by its command line.
    if (vm) await this.kill(vm);
    else await this.killUnrecorded(sandboxId, await this.options.hypervisor.processesUnder(this.vmsDir));
    const network = await loadPlan(paths.networkFile);
    if (network) await disconnectTaps(network);
    await new VmShare(paths, this.shareOptions).removeAll();
    await this.forget(sandboxId);
    await removeTree(paths.dir);
  }

  private async forget(sandboxId: string): Promise<void> {
    const vm = this.vms.get(sandboxId);
    if (!vm) return;
    this.vms.delete(sandboxId);
    vm.forgotten = true;
    vm.agent.close();
    vm.share.close();
  }

  /** SIGKILLs the hypervisor processes of this sandbox found in `running` (a scan of processesUnder); the pids it killed. */
  private async killUnrecorded(sandboxId: string, running: Map<string, ProcessIdentity[]>): Promise<number[]> {
    const strays = running.get(sandboxId) ?? [];
    for (const stray of strays) {
      if (await isProcessAlive(stray)) process.kill(stray.pid, 'SIGKILL');
    }
    for (const stray of strays) {
      while (await isProcessAlive(stray)) await sleep(20);
    }
    if (strays.length > 0) this.options.logger.warn({ sandbox_id: sandboxId, pids: strays.map((p) => p.pid) }, 'killed a VM process no record named');
    return strays.map((p) => p.pid);
  }

  private get vmsDir(): string {
    return join(this.options.rootDir, 'vms');
  }

  async sweepOrphans(known: KnownResources): Promise<string[]> {
    const sweep = new Sweep();
    for (const sandboxId of await readdir(this.vmsDir).catch(() => [] as string[])) {
      if (known.sandboxIds.has(sandboxId)) continue;
      await sweep.attempt(`VM directory ${join(this.vmsDir, sandboxId)} and its QEMU`, () => this.removeSandbox(sandboxId));
    }
    // QEMUs whose directory is already gone (a crash between removing the directory and the process).
    const running = await this.options.hypervisor.processesUnder(this.vmsDir);
    for (const [sandboxId, strays] of running) {
      if (known.sandboxIds.has(sandboxId)) continue;
      await sweep.attempt(`QEMU process ${strays.map((p) => p.pid).join(', ')} of VM ${sandboxId}, whose directory was gone`,
        async () => (await this.killUnrecorded(sandboxId, running)).length > 0);
    }
    return sweep.finish();
  }

  /** Not serving is not healthy: QEMU must run the guest and the agent must answer. */
  async healthCheck(sandboxId: string): Promise<string | undefined> {
    const vm = await this.vm(sandboxId);
    if (!(await isProcessAlive(vm.identity))) return 'the VM process is gone';
    const state = await this.options.hypervisor.runState(vm.paths).catch((error: unknown) => ({ running: false, status: `QMP unreachable: ${errorMessage(error)}` }));
    if (!state.running) return `the VM is not running (${state.status})`;
    return vm.agent.check().then(() => undefined, (error: unknown) => `the guest agent does not answer: ${errorMessage(error)}`);
  }

  // ------------------------------------------------------------------ containers

  async createContainer(spec: ContainerSpec): Promise<{ pid: number }> {
    const vm = await this.vm(spec.sandboxId);
    try {
      const guest = await vm.share.addContainer(spec);
      return await vm.agent.createContainer({ containerId: spec.containerId, bundle: guest.bundle, stdio: guest.stdio });
    } catch (error) {
      await vm.share.removeContainer(spec.containerId).catch(() => undefined);
      throw error;
    }
  }

  async startContainer(sandboxId: string, containerId: string): Promise<{ pid: number }> {
    return (await this.vm(sandboxId)).agent.startContainer(containerId);
  }

  async killContainer(sandboxId: string, containerId: string, signal: number, all: boolean): Promise<void> {
    await (await this.vm(sandboxId)).agent.killContainer(containerId, signal, all);
  }

  /** The exec's pid is a guest pid: only the agent may signal it. */
  async killExec(sandboxId: string, _containerId: string, _execId: string, signal: number, pid: number): Promise<void> {
    await (await this.vm(sandboxId)).agent.killProcess(pid, signal);
  }

  async deleteContainer(sandboxId: string, containerId: string): Promise<void> {
    const vm = await this.vm(sandboxId);
    if (await isProcessAlive(vm.identity)) await vm.agent.deleteContainer(containerId);
    await vm.share.removeContainer(containerId);
  }

  /** A container of a VM that is gone is stopped, killed with it. */
  async containerStatus(sandboxId: string, containerId: string): Promise<ContainerStatus> {
    const vm = await this.vm(sandboxId).catch(() => undefined);
    if (!vm || !(await isProcessAlive(vm.identity))) return { state: 'stopped', exit: { exitStatus: 137, exitedAt: new Date() } };
    return vm.agent.containerStatus(containerId);
  }

  async execProcess(sandboxId: string, containerId: string, execId: string, process: OciProcess, stdio: StdioPaths): Promise<{ pid: number }> {
    const vm = await this.vm(sandboxId);
    const guestStdio = await vm.share.addExec(containerId, validateId('exec id', execId), stdio);
    return vm.agent.execProcess({ containerId, execId, process, stdio: guestStdio });
  }

  /** The output pumps of the process forward what it wrote and close containerd's FIFOs, so it sees end of file. */
  async processExited(sandboxId: string, containerId: string, execId?: string): Promise<void> {
    await (await this.vm(sandboxId)).share.finishOutput(containerId, execId);
  }

  async closeStdin(sandboxId: string, containerId: string, execId?: string): Promise<void> {
    await (await this.vm(sandboxId)).share.closeStdin(containerId, execId);
  }

  /** Asked of the agent: the guest's runc pid file says whether the exec's process was started. */
  async startedExecPid(sandboxId: string, containerId: string, execId: string): Promise<number | undefined> {
    const vm = await this.vm(sandboxId);
    if (!(await isProcessAlive(vm.identity))) return undefined;
    return vm.agent.startedExecPid(containerId, execId);
  }

  /** A process in a VM that died has exited too: 137, as if SIGKILLed with it. */
  async waitProcessExit(sandboxId: string, pid: number): Promise<ProcessExit> {
    const vm = await this.vm(sandboxId);
    const vmGone = vm.exited.then(() => ({ exitStatus: 137, exitedAt: new Date() }));
    return Promise.race([vm.agent.waitProcess(pid), vmGone]);
  }

  async pids(sandboxId: string, containerId: string): Promise<number[]> {
    return (await this.vm(sandboxId)).agent.pids(containerId);
  }

  async stats(sandboxId: string, containerId: string): Promise<ContainerStats> {
    return (await this.vm(sandboxId)).agent.stats(containerId);
  }

  async close(): Promise<void> {
    for (const sandboxId of [...this.vms.keys()]) await this.forget(sandboxId);
  }
}
