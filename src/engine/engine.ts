import type { ContainerStats, OciProcess, StdioPaths } from '../core/sandboxer.js';
import type { EventStore } from '../core/store.js';
import * as containers from './containerCommands.js';
import type { CreateContainerInput } from './containerCommands.js';
import type { ContainerEntity, EngineCore, SandboxEntity } from './engineCore.js';
import type { CommandMeta } from './entity.js';
import * as execs from './execCommands.js';
import * as sandboxes from './sandboxCommands.js';
import type { CreateSandboxInput, SandboxUpdate } from './sandboxCommands.js';

export type { CommandMeta, ContainerEntity, CreateContainerInput, CreateSandboxInput, SandboxEntity, SandboxUpdate };
export { containerStream, isLive, sandboxStream } from './engineCore.js';

/**
 * The control plane as the API sees it: one Entity (xstate actor + stream) per sandbox and
 * container. Every effect is bracketed by a write-ahead intent event and an outcome event
 * (bracket.ts); commands to one sandbox (and its containers) run one at a time, different
 * sandboxes concurrently. The operations live by concern in sandboxCommands.ts,
 * containerCommands.ts, execCommands.ts and exitWatchers.ts; recovery.ts makes one.
 */
export class Engine {
  constructor(private readonly core: EngineCore) {}

  get store(): EventStore {
    return this.core.store;
  }

  get kinds(): string[] {
    return this.core.kinds;
  }

  sandbox(sandboxId: string): SandboxEntity {
    return this.core.sandbox(sandboxId);
  }

  container(containerId: string): ContainerEntity {
    return this.core.container(containerId);
  }

  containersOf(sandboxId: string): ContainerEntity[] {
    return this.core.containersOf(sandboxId);
  }

  // ---- sandboxes -----------------------------------------------------------------------------

  createSandbox(input: CreateSandboxInput, meta: CommandMeta): Promise<void> {
    return sandboxes.createSandbox(this.core, input, meta);
  }

  startSandbox(sandboxId: string, meta: CommandMeta): Promise<{ pid: number; taskAddress: string; createdAt: string }> {
    return sandboxes.startSandbox(this.core, sandboxId, meta);
  }

  async stopSandbox(sandboxId: string, timeoutMs: number | undefined, meta: CommandMeta): Promise<void> {
    const { core } = this;
    await core.serial(sandboxId, () => sandboxes.stopSandboxNow(core, core.sandbox(sandboxId), timeoutMs ?? core.options.defaultStopTimeoutMs, meta));
  }

  waitSandbox(sandboxId: string): Promise<{ exitStatus: number; exitedAt: string | null }> {
    return sandboxes.waitSandbox(this.core, sandboxId);
  }

  shutdownSandbox(sandboxId: string, meta: CommandMeta): Promise<void> {
    return sandboxes.shutdownSandbox(this.core, sandboxId, meta);
  }

  updateSandbox(sandboxId: string, update: SandboxUpdate, meta: CommandMeta): Promise<void> {
    return sandboxes.updateSandbox(this.core, sandboxId, update, meta);
  }

  sandboxStats(sandboxId: string): Promise<ContainerStats> {
    return sandboxes.sandboxStats(this.core, sandboxId);
  }

  checkHealth(): Promise<void> {
    return sandboxes.checkHealth(this.core);
  }

  // ---- containers ----------------------------------------------------------------------------

  createContainer(input: CreateContainerInput, meta: CommandMeta): Promise<{ pid: number }> {
    return containers.createContainer(this.core, input, meta);
  }

  startContainer(containerId: string, meta: CommandMeta): Promise<{ pid: number }> {
    return containers.startContainer(this.core, containerId, meta);
  }

  killContainer(containerId: string, signal: number, all: boolean, meta: CommandMeta): Promise<void> {
    return containers.killContainer(this.core, containerId, signal, all, meta);
  }

  waitContainer(containerId: string): Promise<{ exitStatus: number; exitedAt: string }> {
    return containers.waitContainer(this.core, containerId);
  }

  deleteContainer(containerId: string, meta: CommandMeta): Promise<{ pid: number; exitStatus: number; exitedAt: string | null }> {
    return containers.deleteContainer(this.core, containerId, meta);
  }

  containerPids(containerId: string): Promise<number[]> {
    return containers.containerPids(this.core, containerId);
  }

  containerStats(containerId: string): Promise<ContainerStats> {
    return containers.containerStats(this.core, containerId);
  }

  updateContainer(containerId: string, resources: Record<string, unknown>, meta: CommandMeta): Promise<void> {
    return containers.updateContainer(this.core, containerId, resources, meta);
  }

  // ---- exec processes ------------------------------------------------------------------------

  createExec(containerId: string, execId: string, process: OciProcess, stdio: StdioPaths, meta: CommandMeta): Promise<void> {
    return execs.createExec(this.core, containerId, execId, process, stdio, meta);
  }

  startExec(containerId: string, execId: string, meta: CommandMeta): Promise<{ pid: number }> {
    return execs.startExec(this.core, containerId, execId, meta);
  }

  waitExec(containerId: string, execId: string): Promise<{ exitStatus: number; exitedAt: string }> {
    return execs.waitExec(this.core, containerId, execId);
  }

  resizeTerminal(containerId: string, execId: string, width: number, height: number): Promise<void> {
    return execs.resizeTerminal(this.core, containerId, execId, width, height);
  }

  closeStdin(containerId: string, execId?: string): Promise<void> {
    return execs.closeStdin(this.core, containerId, execId);
  }

  killExec(containerId: string, execId: string, signal: number): Promise<void> {
    return execs.killExec(this.core, containerId, execId, signal);
  }

  deleteExec(containerId: string, execId: string, meta: CommandMeta): Promise<{ pid: number; exitStatus: number; exitedAt: string | null }> {
    return execs.deleteExec(this.core, containerId, execId, meta);
  }

  /** Lets in-flight commands finish; sandboxes and containers keep running. */
  async close(): Promise<void> {
    const { core } = this;
    await core.drain();
    core.closed = true;
    core.options.outputHolds?.releaseAll();
    for (const entity of [...core.sandboxes.values(), ...core.containers.values()]) entity.stop();
  }
}
