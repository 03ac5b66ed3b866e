import { containerMachine, type ContainerEvent } from '../../machines/containerMachine.js';
import { alreadyExists, failedPrecondition, invalidArgument } from '../core/errors.js';
import { validateId } from '../core/ids.js';
import type { ContainerStats, MountSpec, StdioPaths } from '../core/sandboxer.js';
import { bracket, type EffectBracket } from './bracket.js';
import { containerStream, isLive, type ContainerEntity, type EngineCore } from './engineCore.js';
import { Entity, type CommandMeta } from './entity.js';
import { watchContainer } from './exitWatchers.js';
import { containerProjection } from './projections.js';

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

/** The bracket over one container's stream. */
export const containerBracket = <TResult>(core: EngineCore, container: ContainerEntity, meta: CommandMeta, step: EffectBracket<ContainerEvent, TResult>) =>
  bracket((event: ContainerEvent) => core.recordContainer(container, event, meta), step);

export async function createContainer(core: EngineCore, input: CreateContainerInput, meta: CommandMeta): Promise<{ pid: number }> {
  validateId('container id', input.containerId);
  return core.serial(input.sandboxId, async () => {
    const sandbox = core.sandbox(input.sandboxId);
    if (sandbox.state !== 'ready') throw failedPrecondition(`sandbox ${input.sandboxId} is ${sandbox.state}; containers need a ready sandbox`);
    const streamId = containerStream(input.containerId);
    if (core.containers.has(input.containerId) || core.store.readStream(streamId, { limit: 1 }).length > 0) {
      throw alreadyExists(`container ${input.containerId} already exists`);
    }
    const container: ContainerEntity = new Entity(streamId, containerMachine, core.store, containerProjection);
    const { rootfsMounts: _mounts, ...recorded } = input;
    // A log kts keeps is written in CRI's format from now on; containers made before say nothing (raw bytes).
    const logFormat = input.logPath ? { logFormat: 'cri' as const } : {};
    core.recordContainer(container, { type: 'ContainerCreateRequested', ...recorded, ...logFormat, createdAt: new Date().toISOString() }, meta);
    core.containers.set(input.containerId, container);
    return containerBracket(core, container, meta, {
      span: { name: 'sandboxer.create_container', attributes: { 'sandbox.id': input.sandboxId, 'container.id': input.containerId } },
      effect: () => core.sandboxerFor(sandbox).createContainer({
        sandboxId: input.sandboxId, containerId: input.containerId, bundleDir: input.bundleDir, rootfsMounts: input.rootfsMounts, stdio: input.stdio,
        ...(input.logPath && { logPath: input.logPath }),
      }),
      outcome: ({ pid }) => ({ type: 'ContainerCreated', pid }),
      afterOutcome: ({ pid }) => watchContainer(core, sandbox, container, pid),
      failure: (reason) => ({ type: 'ContainerCreateFailed', reason }),
    });
  });
}

export async function startContainer(core: EngineCore, containerId: string, meta: CommandMeta): Promise<{ pid: number }> {
  const sandboxId = core.container(containerId).context.sandboxId;
  return core.serial(sandboxId, async () => {
    const container = core.container(containerId);
    if (!container.can({ type: 'ContainerStartRequested' })) throw failedPrecondition(`container ${containerId} is ${container.state}; Start needs a created container`);
    const sandbox = core.sandbox(sandboxId);
    const { pid } = await containerBracket(core, container, meta, {
      intent: { type: 'ContainerStartRequested' },
      span: { name: 'sandboxer.start_container', attributes: { 'sandbox.id': sandboxId, 'container.id': containerId } },
      effect: () => core.sandboxerFor(sandbox).startContainer(sandboxId, containerId),
      outcome: ({ pid }) => ({ type: 'ContainerStarted', pid, startedAt: new Date().toISOString() }),
      failure: (reason) => ({ type: 'ContainerStartFailed', reason }),
    });
    return { pid };
  });
}

export async function killContainer(core: EngineCore, containerId: string, signal: number, all: boolean, meta: CommandMeta): Promise<void> {
  if (!Number.isInteger(signal) || signal < 1 || signal > 64) throw invalidArgument(`signal ${signal} is not a valid signal number (1-64)`);
  const sandboxId = core.container(containerId).context.sandboxId;
  await core.serial(sandboxId, async () => {
    const container = core.container(containerId);
    const wasLive = isLive(container);
    core.recordContainer(container, { type: 'ContainerKillRequested', signal, all }, meta);
    if (!wasLive) return;
    await core.sandboxerFor(core.sandbox(sandboxId)).killContainer(sandboxId, containerId, signal, all);
  });
}

/** Resolves when the container has exited. */
export function waitContainer(core: EngineCore, containerId: string): Promise<{ exitStatus: number; exitedAt: string }> {
  const container = core.container(containerId);
  return core.waiters.waitUntil(
    container.streamId,
    // Not active: it exited, or never ran (a failed create), or is gone.
    () => !container.hasTag('active'),
    () => ({ exitStatus: container.context.exitStatus ?? 255, exitedAt: container.context.exitedAt ?? new Date().toISOString() }),
  );
}

export async function deleteContainer(core: EngineCore, containerId: string, meta: CommandMeta): Promise<{ pid: number; exitStatus: number; exitedAt: string | null }> {
  const sandboxId = core.container(containerId).context.sandboxId;
  return core.serial(sandboxId, async () => {
    const container = core.container(containerId);
    if (container.state === 'running') throw failedPrecondition(`container ${containerId} is running; kill it before deleting it`);
    const result = { pid: container.context.pid ?? 0, exitStatus: container.context.exitStatus ?? 0, exitedAt: container.context.exitedAt };
    await deleteContainerNow(core, container, meta);
    return result;
  });
}

/** Delete without queueing; the caller holds the sandbox's turn. Deleting a deleted container is a no-op. */
export async function deleteContainerNow(core: EngineCore, container: ContainerEntity, meta: CommandMeta): Promise<void> {
  const { sandboxId, containerId } = container.context;
  if (container.ended) return;
  await containerBracket(core, container, meta, {
    ...(container.state !== 'deleting' && { intent: { type: 'ContainerDeleteRequested' } }),
    effect: async () => {
      const sandbox = core.sandboxes.get(sandboxId);
      if (sandbox) await core.sandboxerFor(sandbox).deleteContainer(sandboxId, containerId);
    },
    failure: (reason) => ({ type: 'ContainerDeleteFailed', reason }),
  });
  core.recordContainer(container, { type: 'ContainerDeleted' }, meta);
  core.containers.delete(containerId);
  container.stop();
  await core.execSpecs.removeContainer(containerId);
}

export async function containerPids(core: EngineCore, containerId: string): Promise<number[]> {
  const container = core.container(containerId);
  if (!isLive(container)) return [];
  return core.sandboxerFor(core.sandbox(container.context.sandboxId)).pids(container.context.sandboxId, containerId);
}

export async function containerStats(core: EngineCore, containerId: string): Promise<ContainerStats> {
  const container = core.container(containerId);
  // A stopped container still answers (its OOM kills: containerd asks when one ends with 137).
  if (container.state !== 'running' && container.state !== 'stopped') throw failedPrecondition(`container ${containerId} is ${container.state}; stats need a running or stopped container`);
  return core.sandboxerFor(core.sandbox(container.context.sandboxId)).stats(container.context.sandboxId, containerId);
}

export async function updateContainer(core: EngineCore, containerId: string, resources: Record<string, unknown>, meta: CommandMeta): Promise<void> {
  const sandboxId = core.container(containerId).context.sandboxId;
  await core.serial(sandboxId, async () => {
    core.recordContainer(core.container(containerId), { type: 'ContainerUpdated', resources }, meta);
  });
}
