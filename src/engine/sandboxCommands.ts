import { context } from '@opentelemetry/api';
import { suppressTracing } from '@opentelemetry/core';
import { sandboxMachine, type SandboxEvent } from '../../machines/sandboxMachine.js';
import { alreadyExists, errorMessage, failedPrecondition, invalidArgument } from '../core/errors.js';
import { validateId } from '../core/ids.js';
import type { ContainerStats } from '../core/sandboxer.js';
import { withSpan } from '../telemetry/tracing.js';
import { bracket, type EffectBracket } from './bracket.js';
import { deleteContainerNow } from './containerCommands.js';
import { isRunning, sandboxStream, type EngineCore, type SandboxEntity } from './engineCore.js';
import { Entity, type CommandMeta } from './entity.js';
import { recordContainerExitsAfterStop, watchSandbox } from './exitWatchers.js';
import { checkNetworkChoice, wantsPodNetwork } from './networkPolicy.js';
import { sandboxProjection } from './projections.js';

/** What a pod is created with: its SandboxCreated event but for the time, which the engine stamps. */
export type CreateSandboxInput = Omit<Extract<SandboxEvent, { type: 'SandboxCreated' }>, 'type' | 'createdAt'>;

export interface SandboxUpdate {
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  resources?: Record<string, unknown>;
}

/** The bracket over one sandbox's stream. */
const sandboxBracket = <TResult>(core: EngineCore, sandbox: SandboxEntity, meta: CommandMeta, step: EffectBracket<SandboxEvent, TResult>) =>
  bracket((event: SandboxEvent) => core.recordSandbox(sandbox, event, meta), step);

/**
 * The pod's hostname becomes an argument of its init and the kernel's hostname (sethostname takes 64
 * bytes): refused here, by name, rather than failing Start (fuzzing found a NUL reaching the init's argv).
 */
function checkHostname(hostname: string): void {
  if (Buffer.byteLength(hostname) > 64 || /[\x00-\x1f\x7f]/.test(hostname)) {
    throw invalidArgument(`hostname ${JSON.stringify(hostname.slice(0, 80))} must be at most 64 bytes without control characters`);
  }
}

export async function createSandbox(core: EngineCore, input: CreateSandboxInput, meta: CommandMeta): Promise<void> {
  validateId('sandbox id', input.sandboxId);
  if (!core.options.sandboxers[input.kind]) {
    throw invalidArgument(`sandbox kind "${input.kind}" is not served by this daemon (known: ${core.kinds.join(', ')})`);
  }
  checkHostname(input.hostname);
  await core.serial(input.sandboxId, async () => {
    const streamId = sandboxStream(input.sandboxId);
    if (core.sandboxes.has(input.sandboxId) || core.store.readStream(streamId, { limit: 1 }).length > 0) {
      throw alreadyExists(`sandbox ${input.sandboxId} already exists`);
    }
    checkNetworkChoice(input, core.options.sandboxers[input.kind]!, core.options.runCni === true && core.options.networks !== undefined);
    // As CRI: one live pod per (name, namespace, uid, attempt). No await between this check and the set below.
    const attempt = input.attempt ?? 0;
    const twin = [...core.sandboxes.values()].find((sandbox) => !sandbox.ended && sandbox.context.name === input.name
      && sandbox.context.namespace === input.namespace && sandbox.context.uid === input.uid && (sandbox.context.attempt ?? 0) === attempt);
    if (twin) throw alreadyExists(`pod ${input.namespace}/${input.name} (uid "${input.uid}", attempt ${attempt}) already exists as pod ${twin.context.sandboxId}`);
    const entity: SandboxEntity = new Entity(streamId, sandboxMachine, core.store, sandboxProjection);
    core.recordSandbox(entity, { type: 'SandboxCreated', ...input, createdAt: new Date().toISOString() }, meta);
    core.sandboxes.set(input.sandboxId, entity);
  });
}

export async function startSandbox(core: EngineCore, sandboxId: string, meta: CommandMeta): Promise<{ pid: number; taskAddress: string; createdAt: string }> {
  return core.serial(sandboxId, async () => {
    const sandbox = core.sandbox(sandboxId);
    if (!sandbox.can({ type: 'SandboxStartRequested' })) throw failedPrecondition(`sandbox ${sandboxId} is ${sandbox.state}; Start needs a created sandbox`);
    const c = sandbox.context;
    const { taskAddress } = core.options;
    const { pid } = await sandboxBracket(core, sandbox, meta, {
      intent: { type: 'SandboxStartRequested' },
      effect: async () => {
        const netnsPath = c.netnsPath ?? (await attachNetwork(core, sandbox, meta));
        return withSpan('sandboxer.start', { attributes: { 'sandbox.id': sandboxId, 'sandbox.kind': c.kind } }, async (span) => {
          const started = await core.sandboxerFor(sandbox).startSandbox({
            sandboxId, name: c.name, namespace: c.namespace, hostname: c.hostname, netnsPath, annotations: c.annotations,
            ...(c.linux ? { linux: c.linux } : {}),
          });
          if (started.details) span.setAttributes(started.details);
          return started;
        });
      },
      outcome: ({ pid, details }) => ({ type: 'SandboxStarted', pid, taskAddress, startedAt: new Date().toISOString(), ...(details ? { backend: details } : {}) }),
      afterOutcome: () => watchSandbox(core, sandbox),
      undo: () => releaseNetwork(core, sandbox).catch((cleanup: unknown) =>
        core.logger.error({ sandbox_id: sandboxId, err: cleanup }, 'tearing down the network of a failed start failed; removal retries it')),
      failure: (reason) => ({ type: 'SandboxStartFailed', reason }),
    });
    return { pid, taskAddress, createdAt: c.createdAt };
  });
}

/** Intent (the netns it will be), effect (netns + CNI ADD), outcome (CNI's result); returns the netns, if any. */
async function attachNetwork(core: EngineCore, sandbox: SandboxEntity, meta: CommandMeta): Promise<string | undefined> {
  const networks = core.options.networks;
  if (!networks || !wantsPodNetwork(sandbox.context, core.sandboxerFor(sandbox), core.options.runCni === true)) return undefined;
  const sandboxId = sandbox.context.sandboxId;
  const plan = networks.plan(sandboxId);
  core.recordSandbox(sandbox, { type: 'SandboxNetworkRequested', ...plan }, meta);
  const status = await networks.setUp(sandboxId);
  core.recordSandbox(sandbox, { type: 'SandboxNetworkConfigured', status }, meta);
  return plan.netnsPath;
}

/** CNI DEL and netns removal of the network kts made for the pod, if it made one; idempotent. */
export async function releaseNetwork(core: EngineCore, sandbox: SandboxEntity): Promise<void> {
  if (!sandbox.context.network || !core.options.networks) return;
  await core.options.networks.tearDown(sandbox.context.sandboxId);
}

/** Stop without queueing; the caller holds the sandbox's turn. Stopping a stopped sandbox is a no-op. */
export async function stopSandboxNow(core: EngineCore, sandbox: SandboxEntity, timeoutMs: number, meta: CommandMeta): Promise<void> {
  if (sandbox.state === 'stopped') return;
  const stopping = sandbox.state === 'stopping';
  if (!stopping && !sandbox.can({ type: 'SandboxStopRequested', timeoutMs })) {
    throw failedPrecondition(`sandbox ${sandbox.context.sandboxId} is ${sandbox.state}; it cannot be stopped`);
  }
  await sandboxBracket(core, sandbox, meta, {
    ...(!stopping && { intent: { type: 'SandboxStopRequested', timeoutMs } }),
    span: { name: 'sandboxer.stop', attributes: { 'sandbox.id': sandbox.context.sandboxId } },
    effect: () => core.sandboxerFor(sandbox).stopSandbox(sandbox.context.sandboxId, { timeoutMs }),
    finishEffect: () => recordContainerExitsAfterStop(core, sandbox, meta),
    outcome: (exit) => ({ type: 'SandboxStopped', exitStatus: exit.exitStatus, exitedAt: exit.exitedAt.toISOString() }),
    failure: (reason) => ({ type: 'SandboxStopFailed', reason }),
  });
}

/** Resolves when the sandbox has stopped (or been removed), with its exit. */
export function waitSandbox(core: EngineCore, sandboxId: string): Promise<{ exitStatus: number; exitedAt: string | null }> {
  const sandbox = core.sandbox(sandboxId);
  return core.waiters.waitUntil(
    sandbox.streamId,
    () => sandbox.hasTag('exited'),
    () => ({ exitStatus: sandbox.context.exitStatus ?? 0, exitedAt: sandbox.context.exitedAt }),
  );
}

export async function shutdownSandbox(core: EngineCore, sandboxId: string, meta: CommandMeta): Promise<void> {
  await core.serial(sandboxId, async () => {
    const sandbox = core.sandbox(sandboxId);
    if (isRunning(sandbox) || sandbox.state === 'stopping') await stopSandboxNow(core, sandbox, core.options.defaultStopTimeoutMs, meta);
    const shuttingDown = sandbox.state === 'shuttingDown';
    if (!shuttingDown && !sandbox.can({ type: 'SandboxShutdownRequested' })) {
      throw failedPrecondition(`sandbox ${sandboxId} is ${sandbox.state}; it cannot be shut down`);
    }
    for (const container of core.containersOf(sandboxId)) await deleteContainerNow(core, container, meta);
    await removeSandbox(core, sandbox, meta, shuttingDown ? undefined : { type: 'SandboxShutdownRequested' });
  });
}

/** Removes the sandbox's processes, files and network, and forgets it; `intent` is omitted when the log already holds it. */
export async function removeSandbox(core: EngineCore, sandbox: SandboxEntity, meta: CommandMeta, intent?: SandboxEvent): Promise<void> {
  const { sandboxId } = sandbox.context;
  await sandboxBracket(core, sandbox, meta, {
    ...(intent && { intent }),
    span: { name: 'sandboxer.remove', attributes: { 'sandbox.id': sandboxId } },
    effect: () => core.sandboxerFor(sandbox).removeSandbox(sandboxId),
    finishEffect: () => releaseNetwork(core, sandbox),
    failure: (reason) => ({ type: 'SandboxShutdownFailed', reason }),
  });
  core.recordSandbox(sandbox, { type: 'SandboxRemoved' }, meta);
  core.sandboxes.delete(sandboxId);
  sandbox.stop();
}

export async function updateSandbox(core: EngineCore, sandboxId: string, update: SandboxUpdate, meta: CommandMeta): Promise<void> {
  await core.serial(sandboxId, async () => {
    core.recordSandbox(core.sandbox(sandboxId), { type: 'SandboxUpdated', ...update }, meta);
  });
}

/** Sum of the sandbox's live containers' cgroup stats. */
export async function sandboxStats(core: EngineCore, sandboxId: string): Promise<ContainerStats> {
  const sandbox = core.sandbox(sandboxId);
  const total: ContainerStats = { cpuUsageNanos: 0, cpuUserNanos: 0, cpuKernelNanos: 0, memoryUsageBytes: 0, memoryLimitBytes: 0, pidsCurrent: 0, pidsLimit: 0 };
  for (const container of core.containersOf(sandboxId)) {
    if (container.state !== 'running') continue;
    const stats = await core.sandboxerFor(sandbox).stats(sandboxId, container.context.containerId).catch(() => undefined);
    if (!stats) continue;
    for (const key of Object.keys(stats) as (keyof ContainerStats)[]) total[key] = (total[key] ?? 0) + (stats[key] ?? 0);
  }
  return total;
}

/**
 * Runs the backends' health checks of running sandboxes and records a change either way:
 * `SandboxUnhealthy` (Status turns NOTREADY) with the reason, `SandboxHealthy` when it answers again.
 */
export async function checkHealth(core: EngineCore): Promise<void> {
  // Periodic checks are not requests: they make no traces (their events say what they found).
  await context.with(suppressTracing(context.active()), () => Promise.all([...core.sandboxes.values()].filter(isRunning).map((sandbox) => checkSandboxHealth(core, sandbox))));
}

async function checkSandboxHealth(core: EngineCore, sandbox: SandboxEntity): Promise<void> {
  const sandboxer = core.options.sandboxers[sandbox.context.kind];
  if (!sandboxer?.healthCheck) return;
  const sandboxId = sandbox.context.sandboxId;
  const problem = await sandboxer.healthCheck(sandboxId).catch((error: unknown) => errorMessage(error));
  await core.serial(sandboxId, async () => {
    if (core.closed) return;
    // Recorded only as a change: the machine takes SandboxUnhealthy only when ready, SandboxHealthy only when unhealthy.
    const change: SandboxEvent = problem ? { type: 'SandboxUnhealthy', reason: problem } : { type: 'SandboxHealthy' };
    if (!sandbox.can(change)) return;
    if (problem) core.logger.warn({ sandbox_id: sandboxId, reason: problem }, 'sandbox failed its health check');
    core.recordSandbox(sandbox, change, { caller: 'health-check' });
  });
}
