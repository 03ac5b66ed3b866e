import { containerMachine, type ContainerContext, type ContainerEvent } from '../../machines/containerMachine.js';
import { nodeMachine, type NodeEvent } from '../../machines/nodeMachine.js';
import { sandboxMachine, type SandboxContext, type SandboxEvent } from '../../machines/sandboxMachine.js';
import { errorMessage } from '../core/errors.js';
import type { KnownResources } from '../core/sandboxer.js';
import { SweepIncomplete, type SweepFailure } from '../core/sweep.js';
import { Engine, exitFields, type CommandMeta, type ContainerEntity, type SandboxEntity } from './engine.js';
import { Entity } from './entity.js';
import { containerProjection, sandboxProjection } from './projections.js';
import { withSpan } from '../telemetry/tracing.js';

export interface RecoveryReport {
  sandboxes: number;
  containers: number;
  /** Events recovery itself recorded (finished or rolled-back intents, reattaches, exits seen late). */
  eventsRecorded: number;
  failures: string[];
}

const RECOVERY: CommandMeta = { caller: 'recovery' };
export const NODE_STREAM = 'node';

/** Every event recovery records says what it decided and why; `kts history` shows it as the cause. */
const recovered = (decision: string, why: string): CommandMeta => ({ caller: `recovery: ${decision}: ${why}` });

/**
 * The engine as the daemon runs it: on start, every entity is rebuilt from snapshot + log, and
 * each one whose last event is an intent without an outcome is finished or rolled back after
 * asking its backend what really runs. Everything recovery concludes is recorded as events.
 */
export class DaemonEngine extends Engine {
  /** One trace, `daemon.recover`: a span per sandbox reconciled and one for the orphan sweep, each holding the events they record. */
  recover(): Promise<RecoveryReport> {
    return withSpan('daemon.recover', {}, async (span) => {
      const before = this.store.headSequence();
      this.loadEntities();
      const failures: string[] = [];
      for (const sandbox of [...this.sandboxes.values()]) {
        const sandboxId = sandbox.context.sandboxId;
        await withSpan('recovery.reconcile_sandbox', { attributes: { 'sandbox.id': sandboxId, 'sandbox.state': sandbox.state } }, () =>
          this.serial(sandboxId, () => this.reconcileSandbox(sandbox))).catch((error) => {
          failures.push(`sandbox ${sandboxId}: ${errorMessage(error)}`);
          this.logger.error({ sandbox_id: sandboxId, err: error }, 'recovery could not reconcile sandbox');
        });
      }
      failures.push(...(await withSpan('recovery.sweep_orphans', {}, () => this.sweepOrphans())));
      const report = { sandboxes: this.sandboxes.size, containers: this.containers.size, eventsRecorded: this.store.headSequence() - before, failures };
      span.setAttributes({ 'kts.recovery.sandboxes': report.sandboxes, 'kts.recovery.containers': report.containers, 'kts.recovery.events_recorded': report.eventsRecorded, 'kts.recovery.failures': failures.length });
      return report;
    });
  }

  /** A sweep of resources the engine's own sandboxers and networks do not know (e.g. `kts run`'s bundles); runs with theirs. */
  addSweep(kind: string, sweep: (known: KnownResources) => Promise<string[]>): void {
    this.extraSweeps.push({ kind, sweep });
  }

  /**
   * Sweeps again every `intervalMs` after recovery's: a process that was still starting when recovery
   * looked, or a resource that could not be removed then, is found later. Returns a stop function.
   */
  sweepEvery(intervalMs: number): () => Promise<void> {
    let running: Promise<unknown> = Promise.resolve();
    const timer = setInterval(() => {
      running = running.then(() => this.sweepOrphans());
    }, intervalMs);
    timer.unref();
    return async () => {
      clearInterval(timer);
      await running;
    };
  }

  private readonly extraSweeps: Array<{ kind: string; sweep: (known: KnownResources) => Promise<string[]> }> = [];
  /** What is recorded as not removable, and why: recorded again only when the reason changes, so a retry does not grow the log. */
  private readonly cleanupFailures = new Map<string, string>();

  /**
   * Host resources of no live sandbox or container are removed, each recorded on the node stream;
   * what cannot be removed is recorded (CleanupFailed) and left for the next sweep. Never throws:
   * the host's state must not stop the daemon. Returns the failures, one line each.
   */
  async sweepOrphans(): Promise<string[]> {
    // Asked at each decision (see KnownIds): a pod made while this sweep runs is never taken for an orphan.
    const known: KnownResources = { sandboxIds: { has: (id) => this.sandboxes.has(id) }, containerIds: { has: (id) => this.containers.has(id) } };
    const sweeps = Object.values(this.options.sandboxers).map((sandboxer) => ({ kind: sandboxer.kind, sweep: () => sandboxer.sweepOrphans(known) }));
    // Pod networks go after the backends: a VM's taps live in the netns until its QEMU and directory are gone.
    const networks = this.options.networks;
    if (networks) sweeps.push({ kind: 'network', sweep: () => networks.sweepOrphans(known.sandboxIds) });
    sweeps.push({ kind: 'exec-spec', sweep: () => this.execSpecs.sweepOrphans(known.containerIds) });
    sweeps.push(...this.extraSweeps.map(({ kind, sweep }) => ({ kind, sweep: () => sweep(known) })));
    const failures: string[] = [];
    for (const { kind, sweep } of sweeps) {
      const outcome = await sweep().then(
        (removed) => ({ removed, failed: [] as SweepFailure[] }),
        (error: unknown) => error instanceof SweepIncomplete ? { removed: error.removed, failed: error.failures }
          : { removed: [], failed: [{ resource: `the ${kind} sweep`, reason: errorMessage(error) }] },
      );
      for (const resource of outcome.removed) {
        this.cleanupFailures.delete(resource);
        this.logger.warn({ kind, resource }, 'removed a resource no sandbox owns');
        this.node().record({ type: 'OrphanRemoved', kind, resource, reason: 'no live sandbox or container in the event log owns it' }, RECOVERY);
      }
      for (const { resource, reason } of outcome.failed) {
        failures.push(`${kind}: ${resource}: ${reason}`);
        this.logger.error({ kind, resource, reason }, 'could not remove a resource no sandbox owns; the next sweep tries again');
        if (this.cleanupFailures.get(resource) === reason) continue;
        this.cleanupFailures.set(resource, reason);
        this.node().record({ type: 'CleanupFailed', kind, resource, reason }, RECOVERY);
      }
    }
    return failures;
  }

  private nodeEntity: Entity<Record<string, never>, NodeEvent> | undefined;

  private node(): Entity<Record<string, never>, NodeEvent> {
    this.nodeEntity ??= Entity.load<Record<string, never>, NodeEvent>(NODE_STREAM, nodeMachine, this.store, () => undefined);
    return this.nodeEntity;
  }

  private loadEntities(): void {
    for (const streamId of this.store.listStreams('sandbox-')) {
      const sandbox = Entity.load<SandboxContext, SandboxEvent>(streamId, sandboxMachine, this.store, sandboxProjection);
      if (sandbox.state === 'removed' || sandbox.state === 'absent') sandbox.stop();
      else this.sandboxes.set(sandbox.context.sandboxId, sandbox);
    }
    for (const streamId of this.store.listStreams('container-')) {
      const container = Entity.load<ContainerContext, ContainerEvent>(streamId, containerMachine, this.store, containerProjection);
      if (container.state === 'deleted' || container.state === 'absent' || !this.sandboxes.has(container.context.sandboxId)) container.stop();
      else this.containers.set(container.context.containerId, container);
    }
  }

  private async reconcileSandbox(sandbox: SandboxEntity): Promise<void> {
    const sandboxId = sandbox.context.sandboxId;
    const status = await this.sandboxerFor(sandbox).sandboxStatus(sandboxId);
    for (const container of this.containersOf(sandboxId)) await this.reconcileContainer(sandbox, container);
    switch (sandbox.state) {
      case 'starting':
        if (status.alive && status.pid) {
          this.recordSandbox(sandbox, { type: 'SandboxStarted', pid: status.pid, taskAddress: this.options.taskAddress, startedAt: new Date().toISOString() }, recovered('completed the start', `the sandbox process ${status.pid} is running`));
          this.watchSandbox(sandbox);
        } else {
          // Whatever the interrupted start left (a booting VM, a half-made init, its netns and CNI attachment) goes before the outcome is recorded.
          await this.sandboxerFor(sandbox).removeSandbox(sandboxId);
          await this.releaseNetwork(sandbox);
          this.recordSandbox(sandbox, { type: 'SandboxStartFailed', reason: 'the daemon stopped during start and the sandbox was not serving' }, recovered('rolled back the start', 'the sandbox was not serving; what the start left was removed'));
        }
        return;
      case 'ready':
      case 'unhealthy':
        if (status.alive && status.pid) {
          this.recordSandbox(sandbox, { type: 'SandboxReattached', pid: status.pid }, recovered('reattached', `the sandbox process ${status.pid} still runs`));
          this.watchSandbox(sandbox);
        } else {
          this.recordSandbox(sandbox, { type: 'SandboxExited', exitStatus: 255, exitedAt: new Date().toISOString() }, recovered('recorded an exit', 'the sandbox process ended while no daemon watched'));
        }
        return;
      case 'stopping':
        return this.stopSandboxNow(sandbox, this.options.defaultStopTimeoutMs, recovered('completed the stop', 'a stop was decided before the daemon stopped'));
      case 'shuttingDown':
        await this.sandboxerFor(sandbox).removeSandbox(sandboxId);
        await this.releaseNetwork(sandbox);
        this.recordSandbox(sandbox, { type: 'SandboxRemoved' }, recovered('completed the removal', 'a shutdown was decided before the daemon stopped'));
        this.sandboxes.delete(sandboxId);
        sandbox.stop();
        return;
      default:
        return;
    }
  }

  private async reconcileContainer(sandbox: SandboxEntity, container: ContainerEntity): Promise<void> {
    const { sandboxId, containerId } = container.context;
    const status = await this.sandboxerFor(sandbox).containerStatus(sandboxId, containerId);
    const exited = () => {
      const exit = status.exit ?? { exitStatus: 255, exitedAt: new Date() };
      this.recordContainer(container, { type: 'ContainerExited', ...exitFields(exit) }, recovered('recorded an exit', status.exit ? `its exit status ${status.exit.exitStatus} was recorded on the host` : `the runtime reports it ${status.state}`));
    };
    const live = status.state === 'created' || status.state === 'running';
    switch (container.state) {
      case 'creating':
        if (live && status.pid) {
          this.recordContainer(container, { type: 'ContainerCreated', pid: status.pid }, recovered('completed the create', `the runtime has it ${status.state} with pid ${status.pid}`));
          this.watchContainer(sandbox, container, status.pid);
        } else {
          await this.sandboxerFor(sandbox).deleteContainer(sandboxId, containerId);
          this.recordContainer(container, { type: 'ContainerCreateFailed', reason: 'the daemon stopped during create and runc has no such container' }, recovered('rolled back the create', `the runtime reports it ${status.state}; its mounts and state were removed`));
        }
        break;
      case 'created':
        if (live && container.context.pid !== null) this.watchContainer(sandbox, container, container.context.pid);
        else exited();
        break;
      case 'starting':
        if (status.state === 'absent') {
          this.recordContainer(container, { type: 'ContainerStartFailed', reason: 'the daemon stopped during start and runc has no such container' }, recovered('rolled back the start', 'the runtime has no such container'));
          break;
        }
        // The start may or may not have reached runc: finish it if not, then record what is true.
        if (status.state === 'created') await this.sandboxerFor(sandbox).startContainer(sandboxId, containerId);
        this.recordContainer(container, { type: 'ContainerStarted', pid: status.pid ?? container.context.pid ?? 0, startedAt: new Date().toISOString() }, recovered('completed the start', `the runtime reports it ${status.state}`));
        if (status.exit || status.state === 'stopped') exited();
        else if (status.pid) this.watchContainer(sandbox, container, status.pid);
        break;
      case 'running':
        if (status.state === 'running' && status.pid) {
          this.recordContainer(container, { type: 'ContainerReattached', pid: status.pid }, recovered('reattached', `its process ${status.pid} still runs`));
          this.watchContainer(sandbox, container, status.pid);
        } else {
          exited();
        }
        break;
      case 'deleting':
        await this.deleteContainerNow(container, recovered('completed the delete', 'a delete was decided before the daemon stopped'));
        return;
      default:
        break;
    }
    await this.reconcileExecs(sandbox, container);
  }

  /** Running execs are watched again; a start the daemon did not live to record is completed or rolled back. */
  private async reconcileExecs(sandbox: SandboxEntity, container: ContainerEntity): Promise<void> {
    const { sandboxId, containerId } = container.context;
    for (const [execId, exec] of Object.entries(container.context.execs)) {
      if (exec.pid !== null && exec.exitedAt === null) this.watchExec(sandbox, container, execId, exec.pid);
      if (!exec.startRequested || exec.pid !== null || exec.lastError !== null) continue;
      const pid = await this.sandboxerFor(sandbox).startedExecPid?.(sandboxId, containerId, execId);
      if (pid !== undefined && container.state === 'running') {
        this.recordContainer(container, { type: 'ExecStarted', execId, pid }, recovered('completed the exec start', `its process ${pid} was started`));
        this.watchExec(sandbox, container, execId, pid);
      } else {
        const why = pid !== undefined ? `its process ${pid} ended with the container` : 'no process of it was started';
        this.recordContainer(container, { type: 'ExecStartFailed', execId, reason: `the daemon stopped during the exec start; ${why}` }, recovered('rolled back the exec start', why));
      }
    }
  }
}
