import { ROOT_CONTEXT, context } from '@opentelemetry/api';
import { suppressTracing } from '@opentelemetry/core';
import type { Logger } from 'pino';
import type { ContainerContext, ContainerEvent } from '../../machines/containerMachine.js';
import type { SandboxContext, SandboxEvent } from '../../machines/sandboxMachine.js';
import { failedPrecondition, notFound } from '../core/errors.js';
import { validateId } from '../core/ids.js';
import { KeyedQueue } from '../core/keyedQueue.js';
import type { PodNetworks } from '../core/podNetwork.js';
import type { OutputHolds, ProcessExit, Sandboxer } from '../core/sandboxer.js';
import type { EventStore } from '../core/store.js';
import { withSpanSync } from '../telemetry/tracing.js';
import { crashPoint } from './crashPoints.js';
import type { CommandMeta, Entity } from './entity.js';
import { ExecSpecs } from './execSpecs.js';
import { StateWaiters } from './waiters.js';

export type SandboxEntity = Entity<SandboxContext, SandboxEvent>;
export type ContainerEntity = Entity<ContainerContext, ContainerEvent>;

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
export const containerStream = (containerId: string) => `container-${containerId}`;
/** The sandbox's process runs, whether or not it passes its health check. */
export const isRunning = (sandbox: SandboxEntity) => sandbox.hasTag('running');
/** The container's init process exists (created or running). */
export const isLive = (container: ContainerEntity) => container.hasTag('live');

/**
 * What the engine's operations share, and nothing else: the entities in memory, the per-sandbox
 * queue, the waiters, and the one way to record a transition. Internal to src/engine: the API
 * sees `Engine`, the daemon `Recovery`.
 */
export class EngineCore {
  readonly sandboxes = new Map<string, SandboxEntity>();
  readonly containers = new Map<string, ContainerEntity>();
  readonly waiters = new StateWaiters();
  /** Exec process specs, kept from create until start, also across a daemon restart. */
  readonly execSpecs: ExecSpecs;
  closed = false;
  private readonly queue = new KeyedQueue();

  constructor(readonly options: EngineOptions) {
    this.execSpecs = new ExecSpecs(options.execSpecDir);
  }

  get store(): EventStore {
    return this.options.store;
  }

  get logger(): Logger {
    return this.options.logger;
  }

  get kinds(): string[] {
    return Object.keys(this.options.sandboxers);
  }

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

  /** Runs `task` after every earlier command to the same sandbox has finished. */
  serial<T>(sandboxId: string, task: () => Promise<T>): Promise<T> {
    return this.queue.run(sandboxId, task);
  }

  /** Waits for every queued command (close). */
  drain(): Promise<void> {
    return this.queue.drain();
  }

  recordSandbox(sandbox: SandboxEntity, event: SandboxEvent, meta: CommandMeta) {
    const stored = withCommitCrashPoints(event.type, sandbox.streamId, () => sandbox.record(event, meta, `sandbox ${sandbox.context.sandboxId || 'new'}`));
    this.waiters.notify(sandbox.streamId);
    return stored;
  }

  recordContainer(container: ContainerEntity, event: ContainerEvent, meta: CommandMeta) {
    const stored = withCommitCrashPoints(event.type, container.streamId, () => container.record(event, meta, `container ${container.context.containerId || 'new'}`));
    this.waiters.notify(container.streamId);
    return stored;
  }

  /**
   * Waits in the background for an exit and records it. The wait makes no spans (it is no
   * request's work); the recording starts a trace of its own. A failure to record is logged,
   * never thrown: the next start's recovery records the exit instead.
   */
  observe<T>(wait: () => Promise<T>, onExit: (value: T) => Promise<void>, onError: (error: unknown) => void): void {
    context.with(ROOT_CONTEXT, () =>
      context.with(suppressTracing(ROOT_CONTEXT), wait).then(onExit, onError)
        .catch((error: unknown) => this.logger.error({ err: error }, 'recording an exit failed (the store refused it); a restart will record it')),
    );
  }
}
