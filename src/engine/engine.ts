import { ROOT_CONTEXT, context } from '@opentelemetry/api';
import { suppressTracing } from '@opentelemetry/core';
import type { Logger } from 'pino';
import { containerMachine, type ContainerContext, type ContainerEvent } from '../../machines/containerMachine.js';
import { sandboxMachine, type SandboxContext, type SandboxEvent } from '../../machines/sandboxMachine.js';
import { alreadyExists, errorMessage, failedPrecondition, invalidArgument, notFound } from '../core/errors.js';
import { validateId } from '../core/ids.js';
import type { PodNetworks } from '../core/podNetwork.js';
import type { ContainerStats, MountSpec, OciProcess, OutputHolds, PodLinuxOptions, ProcessExit, Sandboxer, StdioPaths } from '../core/sandboxer.js';
import type { EventStore } from '../core/store.js';
import { withSpan, withSpanSync } from '../telemetry/tracing.js';
import { crashPoint } from './crashPoints.js';
import { Entity, type CommandMeta } from './entity.js';
import { ExecSpecs } from './execSpecs.js';
import { KeyedQueue } from '../core/keyedQueue.js';
import { checkNetworkChoice, wantsPodNetwork } from './networkPolicy.js';
import { containerProjection, sandboxProjection } from './projections.js';
import { StateWaiters } from './waiters.js';

export type SandboxEntity = Entity<SandboxContext, SandboxEvent>;
export type ContainerEntity = Entity<ContainerContext, ContainerEvent>;
export type { CommandMeta };

export interface EngineOptions {
  store: EventStore;
  /** Sandbox kind → its backend. */
  sandboxers: Record<string, Sandboxer>;
  logger: Logger;
  /** What Start returns as the Task API address, e.g. `grpc+/run/kts/kts.sock`. */
  taskAddress: string;
  defaultStopTimeoutMs: number;
  /** Makes and removes the pod networks kts runs CNI for; without it no pod gets one. */
  networks?: PodNetworks;
  /** Pods created without a netns get one from `networks` (unless they opt out); else they get loopback only. */
  runCni?: boolean;
  /** Where exec specs wait between Task Exec and Task Start (ExecSpecs); in memory only without it. */
  execSpecDir?: string;
  /** Readers held on containers' stdout/stderr FIFOs (see OutputHolds); none without it. */
  outputHolds?: OutputHolds;
}

export interface CreateSandboxInput {
  sandboxId: string;
  kind: string;
  name: string;
  namespace: string;
  uid: string;
  attempt?: number;
  hostname: string;
  netnsPath?: string;
  annotations: Record<string, string>;
  labels: Record<string, string>;
  logDirectory?: string;
  linux?: PodLinuxOptions;
}

export interface CreateContainerInput {
  sandboxId: string;
  containerId: string;
  name: string;
  bundleDir: string;
  rootfsMounts: MountSpec[];
  stdio: StdioPaths;
  args: string[];
  image?: string;
  logPath?: string;
  labels?: Record<string, string>;
}

/** An intent is the write-ahead half of an effect: the event that says it was decided. */
export const isIntent = (eventType: string) => eventType.endsWith('Requested');

/** One span per transition, with the crash points around its commit; the event stores this span's ids. */
function withCommitCrashPoints<T>(eventType: string, streamId: string, commit: () => T): T {
  const phase = isIntent(eventType) ? 'intent' : 'outcome';
  return withSpanSync(`engine.${eventType}`, { 'kts.stream_id': streamId, 'kts.event': eventType, 'kts.event_phase': phase }, () => {
    crashPoint(`${phase}.before_commit`, eventType);
    const stored = commit();
    crashPoint(`${phase}.after_commit`, eventType);
    return stored;
  });
}

/** A backend's exit as event fields; the reason only when the backend gave one. */
export function exitFields(exit: ProcessExit): { exitStatus: number; exitedAt: string; reason?: string } {
  return { exitStatus: exit.exitStatus, exitedAt: exit.exitedAt.toISOString(), ...(exit.reason !== undefined && { reason: exit.reason }) };
}

export const sandboxStream = (sandboxId: string) => `sandbox-${sandboxId}`;
/** The sandbox's process runs, whether or not it passes its health check. */
export const isRunning = (sandbox: SandboxEntity) => sandbox.state === 'ready' || sandbox.state === 'unhealthy';
export const containerStream = (containerId: string) => `container-${containerId}`;

const EXIT_AFTER_STOP_DEADLINE_MS = 5000;
/** 128 + SIGKILL: how a process the kernel's OOM killer ended exits. */
const OOM_EXIT_STATUS = 137;
const OOM_CHECK_DEADLINE_MS = 2000;

/**
 * The control plane: one Entity (xstate actor + stream) per sandbox and container. Every effect
 * is bracketed by a write-ahead intent event and an outcome event; commands to one sandbox (and
 * its containers) run one at a time, different sandboxes concurrently.
 */
export class Engine {
  protected readonly sandboxes = new Map<string, SandboxEntity>();
  protected readonly containers = new Map<string, ContainerEntity>();
  protected readonly queue = new KeyedQueue();
  protected readonly waiters = new StateWaiters();
  protected closed = false;

  /** Exec process specs, kept from create until start, also across a daemon restart. */
  protected readonly execSpecs: ExecSpecs;

  constructor(protected readonly options: EngineOptions) {
    this.execSpecs = new ExecSpecs(options.execSpecDir);
  }

  get store(): EventStore {
    return this.options.store;
  }

  get logger(): Logger {
    return this.options.logger;
  }

  // ---- lookups -------------------------------------------------------------------------------

  sandbox(sandboxId: string): SandboxEntity {
    validateId('sandbox id', sandboxId);
    const entity = this.sandboxes.get(sandboxId);
    if (!entity) throw notFound(`sandbox ${sandboxId} not found`);
    return entity;
  }

  container(containerId: string): ContainerEntity {
    validateId('container id', containerId);
    const entity = this.containers.get(containerId);
    if (!entity) throw notFound(`container ${containerId} not found`);
    return entity;
  }

  containersOf(sandboxId: string): ContainerEntity[] {
    return [...this.containers.values()].filter((c) => c.context.sandboxId === sandboxId);
  }

  sandboxerFor(sandbox: SandboxEntity): Sandboxer {
    const sandboxer = this.options.sandboxers[sandbox.context.kind];
    if (!sandboxer) throw failedPrecondition(`sandbox ${sandbox.context.sandboxId} is of kind "${sandbox.context.kind}", which this daemon does not run`);
    return sandboxer;
  }

  get kinds(): string[] {
    return Object.keys(this.options.sandboxers);
  }

  /** Runs `task` after every earlier command to the same sandbox has finished. */
  protected serial<T>(sandboxId: string, task: () => Promise<T>): Promise<T> {
    return this.queue.run(sandboxId, task);
  }

  protected recordSandbox(sandbox: SandboxEntity, event: Parameters<SandboxEntity['record']>[0], meta: CommandMeta) {
    const stored = withCommitCrashPoints(event.type, sandbox.streamId, () => sandbox.record(event, meta, `sandbox ${sandbox.context.sandboxId || 'new'}`));
    this.waiters.notify(sandbox.streamId);
    return stored;
  }

  protected recordContainer(container: ContainerEntity, event: Parameters<ContainerEntity['record']>[0], meta: CommandMeta) {
    const stored = withCommitCrashPoints(event.type, container.streamId, () => container.record(event, meta, `container ${container.context.containerId || 'new'}`));
    this.waiters.notify(container.streamId);
    return stored;
  }

  // ---- sandboxes -----------------------------------------------------------------------------

  async createSandbox(input: CreateSandboxInput, meta: CommandMeta): Promise<void> {
    validateId('sandbox id', input.sandboxId);
    if (!this.options.sandboxers[input.kind]) {
      throw invalidArgument(`sandbox kind "${input.kind}" is not served by this daemon (known: ${this.kinds.join(', ')})`);
    }
    await this.serial(input.sandboxId, async () => {
      const streamId = sandboxStream(input.sandboxId);
      if (this.sandboxes.has(input.sandboxId) || this.store.readStream(streamId).length > 0) {
        throw alreadyExists(`sandbox ${input.sandboxId} already exists`);
      }
      checkNetworkChoice(input, this.options.sandboxers[input.kind]!, this.options.runCni === true && this.options.networks !== undefined);
      // As CRI: one live pod per (name, namespace, uid, attempt). No await between this check and the set below.
      const attempt = input.attempt ?? 0;
      const twin = [...this.sandboxes.values()].find((sandbox) => sandbox.state !== 'removed' && sandbox.context.name === input.name
        && sandbox.context.namespace === input.namespace && sandbox.context.uid === input.uid && (sandbox.context.attempt ?? 0) === attempt);
      if (twin) throw alreadyExists(`pod ${input.namespace}/${input.name} (uid "${input.uid}", attempt ${attempt}) already exists as pod ${twin.context.sandboxId}`);
      const entity: SandboxEntity = new Entity(streamId, sandboxMachine, this.store, sandboxProjection);
      this.recordSandbox(entity, { type: 'SandboxCreated', ...input, createdAt: new Date().toISOString() }, meta);
      this.sandboxes.set(input.sandboxId, entity);
    });
  }

  async startSandbox(sandboxId: string, meta: CommandMeta): Promise<{ pid: number; taskAddress: string; createdAt: string }> {
    return this.serial(sandboxId, async () => {
      const sandbox = this.sandbox(sandboxId);
      if (sandbox.state !== 'created') throw failedPrecondition(`sandbox ${sandboxId} is ${sandbox.state}; Start needs a created sandbox`);
      this.recordSandbox(sandbox, { type: 'SandboxStartRequested' }, meta);
      const c = sandbox.context;
      try {
        const netnsPath = c.netnsPath ?? (await this.attachNetwork(sandbox, meta));
        const { pid, details } = await withSpan('sandboxer.start', { attributes: { 'sandbox.id': sandboxId, 'sandbox.kind': c.kind } }, async (span) => {
          const started = await this.sandboxerFor(sandbox).startSandbox({
            sandboxId, name: c.name, namespace: c.namespace, hostname: c.hostname, netnsPath, annotations: c.annotations,
            ...(c.linux ? { linux: c.linux } : {}),
          });
          if (started.details) span.setAttributes(started.details);
          return started;
        });
        const backend = details ? { backend: details } : {};
        this.recordSandbox(sandbox, { type: 'SandboxStarted', pid, taskAddress: this.options.taskAddress, startedAt: new Date().toISOString(), ...backend }, meta);
        this.watchSandbox(sandbox);
        return { pid, taskAddress: this.options.taskAddress, createdAt: c.createdAt };
      } catch (error) {
        await this.releaseNetwork(sandbox).catch((cleanup: unknown) =>
          this.logger.error({ sandbox_id: sandboxId, err: cleanup }, 'tearing down the network of a failed start failed; removal retries it'));
        this.recordSandbox(sandbox, { type: 'SandboxStartFailed', reason: errorMessage(error) }, meta);
        throw error;
      }
    });
  }

  /** Intent (the netns it will be), effect (netns + CNI ADD), outcome (CNI's result); returns the netns, if any. */
  protected async attachNetwork(sandbox: SandboxEntity, meta: CommandMeta): Promise<string | undefined> {
    const networks = this.options.networks;
    if (!networks || !wantsPodNetwork(sandbox.context, this.sandboxerFor(sandbox), this.options.runCni === true)) return undefined;
    const sandboxId = sandbox.context.sandboxId;
    const plan = networks.plan(sandboxId);
    this.recordSandbox(sandbox, { type: 'SandboxNetworkRequested', ...plan }, meta);
    const status = await networks.setUp(sandboxId);
    this.recordSandbox(sandbox, { type: 'SandboxNetworkConfigured', status }, meta);
    return plan.netnsPath;
  }

  /** CNI DEL and netns removal of the network kts made for the pod, if it made one; idempotent. */
  protected async releaseNetwork(sandbox: SandboxEntity): Promise<void> {
    if (!sandbox.context.network || !this.options.networks) return;
    await this.options.networks.tearDown(sandbox.context.sandboxId);
  }

  /**
   * Waits in the background for an exit and records it. The wait makes no spans (it is no
   * request's work); the recording starts a trace of its own. A failure to record is logged,
   * never thrown: the next start's recovery records the exit instead.
   */
  protected observe<T>(wait: () => Promise<T>, onExit: (value: T) => Promise<void>, onError: (error: unknown) => void): void {
    context.with(ROOT_CONTEXT, () =>
      context.with(suppressTracing(ROOT_CONTEXT), wait).then(onExit, onError)
        .catch((error: unknown) => this.logger.error({ err: error }, 'recording an exit failed (the store refused it); a restart will record it')),
    );
  }

  /** Records the sandbox's exit when its holder process dies on its own. */
  protected watchSandbox(sandbox: SandboxEntity): void {
    const sandboxId = sandbox.context.sandboxId;
    this.observe(() => this.sandboxerFor(sandbox).waitSandboxExit(sandboxId),
      (exit) => this.serial(sandboxId, async () => {
        if (this.closed || !isRunning(sandbox)) return;
        this.logger.warn({ sandbox_id: sandboxId, exit_status: exit.exitStatus }, 'sandbox exited on its own');
        await this.recordContainerExitsAfterStop(sandbox, { caller: 'sandbox-exit-watch' });
        this.recordSandbox(sandbox, { type: 'SandboxExited', exitStatus: exit.exitStatus, exitedAt: exit.exitedAt.toISOString() }, { caller: 'sandbox-exit-watch' });
      }),
      (error) => this.logger.error({ sandbox_id: sandboxId, err: error }, 'watching sandbox exit failed'),
    );
  }

  async stopSandbox(sandboxId: string, timeoutMs: number | undefined, meta: CommandMeta): Promise<void> {
    await this.serial(sandboxId, () => this.stopSandboxNow(this.sandbox(sandboxId), timeoutMs ?? this.options.defaultStopTimeoutMs, meta));
  }

  /** Stop without queueing; the caller holds the sandbox's turn. Stopping a stopped sandbox is a no-op. */
  protected async stopSandboxNow(sandbox: SandboxEntity, timeoutMs: number, meta: CommandMeta): Promise<void> {
    if (sandbox.state === 'stopped') return;
    if (!['created', 'ready', 'unhealthy', 'failed', 'stopping'].includes(sandbox.state)) {
      throw failedPrecondition(`sandbox ${sandbox.context.sandboxId} is ${sandbox.state}; it cannot be stopped`);
    }
    if (sandbox.state !== 'stopping') this.recordSandbox(sandbox, { type: 'SandboxStopRequested', timeoutMs }, meta);
    try {
      const exit = await withSpan('sandboxer.stop', { attributes: { 'sandbox.id': sandbox.context.sandboxId } }, () =>
        this.sandboxerFor(sandbox).stopSandbox(sandbox.context.sandboxId, { timeoutMs }),
      );
      await this.recordContainerExitsAfterStop(sandbox, meta);
      this.recordSandbox(sandbox, { type: 'SandboxStopped', exitStatus: exit.exitStatus, exitedAt: exit.exitedAt.toISOString() }, meta);
    } catch (error) {
      this.recordSandbox(sandbox, { type: 'SandboxStopFailed', reason: errorMessage(error) }, meta);
      throw error;
    }
  }

  /** After the pod's processes are killed, every live container's exit is recorded before the sandbox's. */
  protected async recordContainerExitsAfterStop(sandbox: SandboxEntity, meta: CommandMeta): Promise<void> {
    const sandboxer = this.sandboxerFor(sandbox);
    for (const container of this.containersOf(sandbox.context.sandboxId)) {
      if (!['created', 'running'].includes(container.state) || container.context.pid === null) continue;
      const exit = await Promise.race([
        sandboxer.waitProcessExit(sandbox.context.sandboxId, container.context.pid),
        new Promise<ProcessExit>((resolve) => setTimeout(() => resolve({ exitStatus: 137, exitedAt: new Date() }), EXIT_AFTER_STOP_DEADLINE_MS).unref()),
      ]);
      this.recordContainer(container, { type: 'ContainerExited', ...exitFields(exit) }, meta);
    }
  }

  /** Resolves when the sandbox has stopped (or been removed), with its exit. */
  async waitSandbox(sandboxId: string): Promise<{ exitStatus: number; exitedAt: string | null }> {
    const sandbox = this.sandbox(sandboxId);
    return this.waiters.waitUntil(
      sandbox.streamId,
      () => ['stopped', 'removed', 'shuttingDown'].includes(sandbox.state),
      () => ({ exitStatus: sandbox.context.exitStatus ?? 0, exitedAt: sandbox.context.exitedAt }),
    );
  }

  async shutdownSandbox(sandboxId: string, meta: CommandMeta): Promise<void> {
    await this.serial(sandboxId, async () => {
      const sandbox = this.sandbox(sandboxId);
      if (isRunning(sandbox) || sandbox.state === 'stopping') await this.stopSandboxNow(sandbox, this.options.defaultStopTimeoutMs, meta);
      if (!['created', 'failed', 'stopped', 'shuttingDown'].includes(sandbox.state)) {
        throw failedPrecondition(`sandbox ${sandboxId} is ${sandbox.state}; it cannot be shut down`);
      }
      for (const container of this.containersOf(sandboxId)) await this.deleteContainerNow(container, meta);
      if (sandbox.state !== 'shuttingDown') this.recordSandbox(sandbox, { type: 'SandboxShutdownRequested' }, meta);
      try {
        await withSpan('sandboxer.remove', { attributes: { 'sandbox.id': sandboxId } }, () => this.sandboxerFor(sandbox).removeSandbox(sandboxId));
        await this.releaseNetwork(sandbox);
      } catch (error) {
        this.recordSandbox(sandbox, { type: 'SandboxShutdownFailed', reason: errorMessage(error) }, meta);
        throw error;
      }
      this.recordSandbox(sandbox, { type: 'SandboxRemoved' }, meta);
      this.sandboxes.delete(sandboxId);
      sandbox.stop();
    });
  }

  async updateSandbox(
    sandboxId: string,
    update: { annotations?: Record<string, string>; labels?: Record<string, string>; resources?: Record<string, unknown> },
    meta: CommandMeta,
  ): Promise<void> {
    await this.serial(sandboxId, async () => {
      this.recordSandbox(this.sandbox(sandboxId), { type: 'SandboxUpdated', ...update }, meta);
    });
  }

  /** Sum of the sandbox's live containers' cgroup stats. */
  async sandboxStats(sandboxId: string): Promise<ContainerStats> {
    const sandbox = this.sandbox(sandboxId);
    const total: ContainerStats = { cpuUsageNanos: 0, cpuUserNanos: 0, cpuKernelNanos: 0, memoryUsageBytes: 0, memoryLimitBytes: 0, pidsCurrent: 0, pidsLimit: 0 };
    for (const container of this.containersOf(sandboxId)) {
      if (container.state !== 'running') continue;
      const stats = await this.sandboxerFor(sandbox).stats(sandboxId, container.context.containerId).catch(() => undefined);
      if (!stats) continue;
      for (const key of Object.keys(stats) as (keyof ContainerStats)[]) total[key] = (total[key] ?? 0) + (stats[key] ?? 0);
    }
    return total;
  }

  /**
   * Runs the backends' health checks of running sandboxes and records a change either way:
   * `SandboxUnhealthy` (Status turns NOTREADY) with the reason, `SandboxHealthy` when it answers again.
   */
  async checkHealth(): Promise<void> {
    // Periodic checks are not requests: they make no traces (their events say what they found).
    await context.with(suppressTracing(context.active()), () => Promise.all([...this.sandboxes.values()].filter(isRunning).map((sandbox) => this.checkSandboxHealth(sandbox))));
  }

  private async checkSandboxHealth(sandbox: SandboxEntity): Promise<void> {
    const sandboxer = this.options.sandboxers[sandbox.context.kind];
    if (!sandboxer?.healthCheck) return;
    const sandboxId = sandbox.context.sandboxId;
    const problem = await sandboxer.healthCheck(sandboxId).catch((error: unknown) => errorMessage(error));
    await this.serial(sandboxId, async () => {
      if (this.closed) return;
      const meta = { caller: 'health-check' };
      if (problem && sandbox.state === 'ready') {
        this.logger.warn({ sandbox_id: sandboxId, reason: problem }, 'sandbox failed its health check');
        this.recordSandbox(sandbox, { type: 'SandboxUnhealthy', reason: problem }, meta);
      } else if (!problem && sandbox.state === 'unhealthy') {
        this.recordSandbox(sandbox, { type: 'SandboxHealthy' }, meta);
      }
    });
  }

  // ---- containers ----------------------------------------------------------------------------

  async createContainer(input: CreateContainerInput, meta: CommandMeta): Promise<{ pid: number }> {
    validateId('container id', input.containerId);
    return this.serial(input.sandboxId, async () => {
      const sandbox = this.sandbox(input.sandboxId);
      if (sandbox.state !== 'ready') throw failedPrecondition(`sandbox ${input.sandboxId} is ${sandbox.state}; containers need a ready sandbox`);
      const streamId = containerStream(input.containerId);
      if (this.containers.has(input.containerId) || this.store.readStream(streamId).length > 0) {
        throw alreadyExists(`container ${input.containerId} already exists`);
      }
      const container: ContainerEntity = new Entity(streamId, containerMachine, this.store, containerProjection);
      const { rootfsMounts: _mounts, ...recorded } = input;
      // A log kts keeps is written in CRI's format from now on; containers made before say nothing (raw bytes).
      const logFormat = input.logPath ? { logFormat: 'cri' as const } : {};
      this.recordContainer(container, { type: 'ContainerCreateRequested', ...recorded, ...logFormat, createdAt: new Date().toISOString() }, meta);
      this.containers.set(input.containerId, container);
      try {
        const { pid } = await withSpan('sandboxer.create_container', { attributes: { 'sandbox.id': input.sandboxId, 'container.id': input.containerId } }, () =>
          this.sandboxerFor(sandbox).createContainer({ sandboxId: input.sandboxId, containerId: input.containerId, bundleDir: input.bundleDir, rootfsMounts: input.rootfsMounts, stdio: input.stdio, ...(input.logPath && { logPath: input.logPath }) }),
        );
        this.recordContainer(container, { type: 'ContainerCreated', pid }, meta);
        this.watchContainer(sandbox, container, pid);
        return { pid };
      } catch (error) {
        this.recordContainer(container, { type: 'ContainerCreateFailed', reason: errorMessage(error) }, meta);
        throw error;
      }
    });
  }

  /** Records a container's exit when its init process ends, even one that ended while the daemon was down. */
  protected watchContainer(sandbox: SandboxEntity, container: ContainerEntity, pid: number): void {
    const { sandboxId, containerId, stdio } = container.context;
    if (this.sandboxerFor(sandbox).containersWriteStdio) this.holdOutput(containerId, [stdio.stdout, stdio.stderr]);
    this.observe(() => this.sandboxerFor(sandbox).waitProcessExit(sandboxId, pid),
      (exit) => this.serial(sandboxId, async () => {
        this.options.outputHolds?.release(containerId);
        if (this.closed || !['created', 'running'].includes(container.state) || container.context.pid !== pid) return;
        await this.sandboxerFor(sandbox).processExited?.(sandboxId, containerId).catch((error: unknown) =>
          this.logger.warn({ sandbox_id: sandboxId, container_id: containerId, err: error }, 'cleaning up after the container\'s exit failed'));
        const reason = exit.reason ?? (exit.exitStatus === OOM_EXIT_STATUS ? await this.oomKillReason(sandbox, containerId) : undefined);
        this.recordContainer(container, { type: 'ContainerExited', ...exitFields({ ...exit, ...(reason !== undefined && { reason }) }) }, { caller: 'container-exit-watch' });
      }),
      (error) => this.logger.error({ sandbox_id: sandboxId, container_id: containerId, err: error }, 'watching container exit failed'),
    );
  }

  /** "OOMKilled: …" when the memory cgroup of a container that ended with 137 counts an OOM kill (as containerd's CRI decides). */
  private async oomKillReason(sandbox: SandboxEntity, containerId: string): Promise<string | undefined> {
    // Bounded: the sandbox's queue waits on it, and a guest that no longer answers must not hold it.
    const stats = await Promise.race([
      this.sandboxerFor(sandbox).stats(sandbox.context.sandboxId, containerId).catch(() => undefined),
      new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), OOM_CHECK_DEADLINE_MS).unref()),
    ]);
    if (!stats?.oomKills) return undefined;
    return `OOMKilled: the kernel's OOM killer ended ${stats.oomKills} process(es) in the container's memory cgroup (its memory limit)`;
  }

  private holdOutput(containerId: string, paths: Array<string | undefined>): void {
    const fifos = paths.filter((path): path is string => path !== undefined);
    this.options.outputHolds?.hold(containerId, fifos).catch((error: unknown) =>
      this.logger.warn({ container_id: containerId, err: error }, 'holding the container\'s output FIFOs open failed; a containerd restart may end it with SIGPIPE'));
  }

  async startContainer(containerId: string, meta: CommandMeta): Promise<{ pid: number }> {
    const sandboxId = this.container(containerId).context.sandboxId;
    return this.serial(sandboxId, async () => {
      const container = this.container(containerId);
      if (container.state !== 'created') throw failedPrecondition(`container ${containerId} is ${container.state}; Start needs a created container`);
      const sandbox = this.sandbox(sandboxId);
      this.recordContainer(container, { type: 'ContainerStartRequested' }, meta);
      try {
        const { pid } = await withSpan('sandboxer.start_container', { attributes: { 'sandbox.id': sandboxId, 'container.id': containerId } }, () =>
          this.sandboxerFor(sandbox).startContainer(sandboxId, containerId),
        );
        this.recordContainer(container, { type: 'ContainerStarted', pid, startedAt: new Date().toISOString() }, meta);
        return { pid };
      } catch (error) {
        this.recordContainer(container, { type: 'ContainerStartFailed', reason: errorMessage(error) }, meta);
        throw error;
      }
    });
  }

  async killContainer(containerId: string, signal: number, all: boolean, meta: CommandMeta): Promise<void> {
    if (!Number.isInteger(signal) || signal < 1 || signal > 64) throw invalidArgument(`signal ${signal} is not a valid signal number (1-64)`);
    const sandboxId = this.container(containerId).context.sandboxId;
    await this.serial(sandboxId, async () => {
      const container = this.container(containerId);
      const wasLive = ['created', 'running'].includes(container.state);
      this.recordContainer(container, { type: 'ContainerKillRequested', signal, all }, meta);
      if (!wasLive) return;
      await this.sandboxerFor(this.sandbox(sandboxId)).killContainer(sandboxId, containerId, signal, all);
    });
  }

  /** Sets the size of an exec's terminal. */
  async resizeTerminal(containerId: string, execId: string, width: number, height: number): Promise<void> {
    const container = this.container(containerId);
    if (!execId) throw invalidArgument(`container ${containerId} has no terminal: only execs get one`);
    if (!container.context.execs[execId]) throw notFound(`exec ${execId} not found in container ${containerId}`);
    const sandboxId = container.context.sandboxId;
    const sandboxer = this.sandboxerFor(this.sandbox(sandboxId));
    if (!sandboxer.resizeTerminal) throw invalidArgument(`${this.sandbox(sandboxId).context.kind} sandboxes have no terminals to resize`);
    await sandboxer.resizeTerminal(sandboxId, containerId, execId, width, height);
  }

  /** Resolves when the container has exited. */
  async waitContainer(containerId: string): Promise<{ exitStatus: number; exitedAt: string }> {
    const container = this.container(containerId);
    return this.waiters.waitUntil(
      container.streamId,
      () => container.context.exitedAt !== null || ['failed', 'deleted'].includes(container.state),
      () => ({ exitStatus: container.context.exitStatus ?? 255, exitedAt: container.context.exitedAt ?? new Date().toISOString() }),
    );
  }

  async deleteContainer(containerId: string, meta: CommandMeta): Promise<{ pid: number; exitStatus: number; exitedAt: string | null }> {
    const sandboxId = this.container(containerId).context.sandboxId;
    return this.serial(sandboxId, async () => {
      const container = this.container(containerId);
      if (container.state === 'running') throw failedPrecondition(`container ${containerId} is running; kill it before deleting it`);
      const result = { pid: container.context.pid ?? 0, exitStatus: container.context.exitStatus ?? 0, exitedAt: container.context.exitedAt };
      await this.deleteContainerNow(container, meta);
      return result;
    });
  }

  protected async deleteContainerNow(container: ContainerEntity, meta: CommandMeta): Promise<void> {
    const { sandboxId, containerId } = container.context;
    if (container.state === 'deleted') return;
    if (container.state !== 'deleting') this.recordContainer(container, { type: 'ContainerDeleteRequested' }, meta);
    try {
      const sandbox = this.sandboxes.get(sandboxId);
      if (sandbox) await this.sandboxerFor(sandbox).deleteContainer(sandboxId, containerId);
    } catch (error) {
      this.recordContainer(container, { type: 'ContainerDeleteFailed', reason: errorMessage(error) }, meta);
      throw error;
    }
    this.recordContainer(container, { type: 'ContainerDeleted' }, meta);
    this.containers.delete(containerId);
    container.stop();
    await this.execSpecs.removeContainer(containerId);
  }

  async containerPids(containerId: string): Promise<number[]> {
    const container = this.container(containerId);
    if (container.state !== 'running' && container.state !== 'created') return [];
    return this.sandboxerFor(this.sandbox(container.context.sandboxId)).pids(container.context.sandboxId, containerId);
  }

  async containerStats(containerId: string): Promise<ContainerStats> {
    const container = this.container(containerId);
    // A stopped container still answers (its OOM kills: containerd asks when one ends with 137).
    if (container.state !== 'running' && container.state !== 'stopped') throw failedPrecondition(`container ${containerId} is ${container.state}; stats need a running or stopped container`);
    return this.sandboxerFor(this.sandbox(container.context.sandboxId)).stats(container.context.sandboxId, containerId);
  }

  async updateContainer(containerId: string, resources: Record<string, unknown>, meta: CommandMeta): Promise<void> {
    const sandboxId = this.container(containerId).context.sandboxId;
    await this.serial(sandboxId, async () => {
      this.recordContainer(this.container(containerId), { type: 'ContainerUpdated', resources }, meta);
    });
  }

  // ---- exec processes ------------------------------------------------------------------------

  async createExec(containerId: string, execId: string, process: OciProcess, stdio: StdioPaths, meta: CommandMeta): Promise<void> {
    validateId('exec id', execId);
    const args = process.args;
    if (!Array.isArray(args) || args.length === 0 || !args.every((a) => typeof a === 'string')) {
      throw invalidArgument('exec process: args must be a non-empty array of strings');
    }
    const sandboxId = this.container(containerId).context.sandboxId;
    if (process.terminal === true && !this.sandboxerFor(this.sandbox(sandboxId)).resizeTerminal) {
      throw invalidArgument(`exec ${execId}: ${this.sandbox(sandboxId).context.kind} sandboxes give execs no terminal (tty); run it without one`);
    }
    await this.serial(sandboxId, async () => {
      const container = this.container(containerId);
      if (container.state !== 'running') throw failedPrecondition(`container ${containerId} is ${container.state}; exec needs a running container`);
      if (container.context.execs[execId]) throw alreadyExists(`exec ${execId} already exists in container ${containerId}`);
      // The spec first: an ExecCreated whose spec was lost could never start.
      await this.execSpecs.put(containerId, execId, process);
      this.recordContainer(container, { type: 'ExecCreated', execId, args: args as string[], stdio }, meta);
    });
  }


  async startExec(containerId: string, execId: string, meta: CommandMeta): Promise<{ pid: number }> {
    const sandboxId = this.container(containerId).context.sandboxId;
    return this.serial(sandboxId, async () => {
      const container = this.container(containerId);
      const exec = container.context.execs[execId];
      if (!exec) throw notFound(`exec ${execId} not found in container ${containerId}`);
      if (exec.pid !== null) throw failedPrecondition(`exec ${execId} was already started`);
      const process = await this.execSpecs.get(containerId, execId);
      if (!process) throw failedPrecondition(`exec ${execId} has no process spec left; create it again`);
      const sandbox = this.sandbox(sandboxId);
      this.recordContainer(container, { type: 'ExecStartRequested', execId }, meta);
      try {
        const { pid } = await withSpan('sandboxer.exec', { attributes: { 'container.id': containerId, 'exec.id': execId } }, () =>
          this.sandboxerFor(sandbox).execProcess(sandboxId, containerId, execId, process, exec.stdio),
        );
        this.recordContainer(container, { type: 'ExecStarted', execId, pid }, meta);
        await this.execSpecs.remove(containerId, execId);
        this.watchExec(sandbox, container, execId, pid);
        return { pid };
      } catch (error) {
        this.recordContainer(container, { type: 'ExecStartFailed', execId, reason: errorMessage(error) }, meta);
        throw error;
      }
    });
  }

  protected watchExec(sandbox: SandboxEntity, container: ContainerEntity, execId: string, pid: number): void {
    const { sandboxId } = container.context;
    this.observe(() => this.sandboxerFor(sandbox).waitProcessExit(sandboxId, pid),
      (exit) => this.serial(sandboxId, async () => {
        const exec = container.context.execs[execId];
        if (this.closed || !exec || exec.pid !== pid || exec.exitedAt !== null || container.state === 'deleted') return;
        await this.sandboxerFor(sandbox).processExited?.(sandboxId, container.context.containerId, execId).catch((error: unknown) =>
          this.logger.warn({ sandbox_id: sandboxId, exec_id: execId, err: error }, 'cleaning up after the exec\'s exit failed'));
        this.recordContainer(container, { type: 'ExecExited', execId, ...exitFields(exit) }, { caller: 'exec-exit-watch' });
      }),
      (error) => this.logger.error({ sandbox_id: sandboxId, exec_id: execId, err: error }, 'watching exec exit failed'),
    );
  }

  async waitExec(containerId: string, execId: string): Promise<{ exitStatus: number; exitedAt: string }> {
    const container = this.container(containerId);
    if (!container.context.execs[execId]) throw notFound(`exec ${execId} not found in container ${containerId}`);
    return this.waiters.waitUntil(
      container.streamId,
      () => { const exec = container.context.execs[execId]; return !exec || exec.exitedAt !== null; },
      () => {
        const exec = container.context.execs[execId];
        return { exitStatus: exec?.exitStatus ?? 255, exitedAt: exec?.exitedAt ?? new Date().toISOString() };
      },
    );
  }

  /** Task CloseIO of stdin: no transition, the backend ends the stream (a no-op where the FIFO reaches the process itself). */
  async closeStdin(containerId: string, execId?: string): Promise<void> {
    const { sandboxId, execs } = this.container(containerId).context;
    if (execId && !execs[execId]) throw notFound(`exec ${execId} not found in container ${containerId}`);
    await this.sandboxerFor(this.sandbox(sandboxId)).closeStdin?.(sandboxId, containerId, execId || undefined);
  }

  async killExec(containerId: string, execId: string, signal: number): Promise<void> {
    const { sandboxId, execs } = this.container(containerId).context;
    const exec = execs[execId];
    if (!exec) throw notFound(`exec ${execId} not found in container ${containerId}`);
    if (exec.pid === null || exec.exitedAt !== null) return;
    const sandboxer = this.sandboxerFor(this.sandbox(sandboxId));
    if (sandboxer.killExec) return sandboxer.killExec(sandboxId, containerId, execId, signal, exec.pid);
    try {
      process.kill(exec.pid, signal);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
  }

  async deleteExec(containerId: string, execId: string, meta: CommandMeta): Promise<{ pid: number; exitStatus: number; exitedAt: string | null }> {
    const sandboxId = this.container(containerId).context.sandboxId;
    return this.serial(sandboxId, async () => {
      const container = this.container(containerId);
      const exec = container.context.execs[execId];
      if (!exec) throw notFound(`exec ${execId} not found in container ${containerId}`);
      if (exec.pid !== null && exec.exitedAt === null) throw failedPrecondition(`exec ${execId} is still running; kill it before deleting it`);
      this.recordContainer(container, { type: 'ExecDeleted', execId }, meta);
      await this.execSpecs.remove(containerId, execId);
      return { pid: exec.pid ?? 0, exitStatus: exec.exitStatus ?? 0, exitedAt: exec.exitedAt };
    });
  }

  /** Lets in-flight commands finish; sandboxes and containers keep running. */
  async close(): Promise<void> {
    await this.queue.drain();
    this.closed = true;
    this.options.outputHolds?.releaseAll();
    for (const entity of [...this.sandboxes.values(), ...this.containers.values()]) entity.stop();
  }
}
