import { containerMachine, type ContainerContext, type ContainerEvent } from '../../machines/containerMachine.js';
import { sandboxMachine, type SandboxContext, type SandboxEvent } from '../../machines/sandboxMachine.js';
import { errorMessage } from '../core/errors.js';
import type { KnownResources } from '../core/sandboxer.js';
import type { ContainerRow, Projection, SandboxRow } from '../core/store.js';
import { withSpan } from '../telemetry/tracing.js';
import { deleteContainerNow } from './containerCommands.js';
import { Engine } from './engine.js';
import { EngineCore, exitFields, type ContainerEntity, type EngineOptions, type SandboxEntity } from './engineCore.js';
import { rowMismatch } from './derivedState.js';
import { Entity, type CommandMeta } from './entity.js';
import { watchContainer, watchExec, watchSandbox } from './exitWatchers.js';
import { OrphanSweep } from './orphanSweep.js';
import { containerProjection, sandboxProjection } from './projections.js';
import { releaseNetwork, stopSandboxNow } from './sandboxCommands.js';

export interface RecoveryReport {
  sandboxes: number;
  containers: number;
  /** Events recovery itself recorded (finished or rolled-back intents, reattaches, exits seen late). */
  eventsRecorded: number;
  failures: string[];
  /** Read-model rows of live entities that do not match their events (edited?): reported; kts goes by the events. */
  mismatches: string[];
}

/** Every event recovery records says what it decided and why; `kts history` shows it as the cause. */
const recovered = (decision: string, why: string): CommandMeta => ({ caller: `recovery: ${decision}: ${why}` });

/** The engine as the daemon runs it: the API's Engine and the Recovery that fills it, over one core. */
export function openDaemonEngine(options: EngineOptions): { engine: Engine; recovery: Recovery } {
  const core = new EngineCore(options);
  return { engine: new Engine(core), recovery: new Recovery(core) };
}

/**
 * On start, every entity is rebuilt from snapshot + log, and each one whose last event is an
 * intent without an outcome is finished or rolled back after asking its backend what really
 * runs; afterwards, host resources no entity owns are swept. Everything it concludes is recorded as events.
 */
export class Recovery {
  private readonly orphans: OrphanSweep;

  constructor(private readonly core: EngineCore) {
    this.orphans = new OrphanSweep(core);
  }

  /** One trace, `daemon.recover`: a span per sandbox reconciled and one for the orphan sweep, each holding the events they record. */
  recover(): Promise<RecoveryReport> {
    return withSpan('daemon.recover', {}, async (span) => {
      const before = this.core.store.headSequence();
      const mismatches = this.loadEntities();
      const failures: string[] = [];
      for (const sandbox of [...this.core.sandboxes.values()]) {
        const sandboxId = sandbox.context.sandboxId;
        await withSpan('recovery.reconcile_sandbox', { attributes: { 'sandbox.id': sandboxId, 'sandbox.state': sandbox.state } }, () =>
          this.core.serial(sandboxId, () => this.reconcileSandbox(sandbox))).catch((error) => {
          failures.push(`sandbox ${sandboxId}: ${errorMessage(error)}`);
          this.core.logger.error({ sandbox_id: sandboxId, err: error }, 'recovery could not reconcile sandbox');
        });
      }
      failures.push(...(await withSpan('recovery.sweep_orphans', {}, () => this.orphans.sweepOrphans())));
      const report = { sandboxes: this.core.sandboxes.size, containers: this.core.containers.size, eventsRecorded: this.core.store.headSequence() - before, failures, mismatches };
      span.setAttributes({ 'kts.recovery.sandboxes': report.sandboxes, 'kts.recovery.containers': report.containers, 'kts.recovery.events_recorded': report.eventsRecorded, 'kts.recovery.failures': failures.length });
      return report;
    });
  }

  /** A sweep of resources the engine's own sandboxers and networks do not know (e.g. `kts run`'s bundles); runs with theirs. */
  addSweep(kind: string, sweep: (known: KnownResources) => Promise<string[]>): void {
    this.orphans.addSweep(kind, sweep);
  }

  /** Sweeps again every `intervalMs` after recovery's (see OrphanSweep.sweepEvery); returns a stop function. */
  sweepEvery(intervalMs: number): () => Promise<void> {
    return this.orphans.sweepEvery(intervalMs);
  }

  /** Every live entity rebuilt from the log; a read-model row that says otherwise is reported, not believed. */
  private loadEntities(): string[] {
    const { store, logger } = this.core;
    const mismatches: string[] = [];
    const mismatch = (streamId: string, what: string, reason: string) => {
      mismatches.push(`${streamId}: ${what}: ${reason}`);
      logger.error({ stream_id: streamId, reason }, `the ${what} does not match the stream's events (edited?); kts goes by the events`);
    };
    const checkRow = (streamId: string, expected: Projection, row: SandboxRow | ContainerRow | undefined) => {
      const reason = row ? rowMismatch(expected.row, row) : 'missing';
      if (reason) mismatch(streamId, 'read-model row', reason);
    };
    for (const streamId of store.listStreams('sandbox-')) {
      const sandbox = Entity.load<SandboxContext, SandboxEvent>(streamId, sandboxMachine, store, sandboxProjection);
      if (sandbox.ended || sandbox.streamVersion === 0) {
        sandbox.stop();
        continue;
      }
      this.core.sandboxes.set(sandbox.context.sandboxId, sandbox);
      checkRow(streamId, sandboxProjection(sandbox.snapshot, sandbox.streamVersion), store.getSandbox(sandbox.context.sandboxId));
    }
    for (const streamId of store.listStreams('container-')) {
      const container = Entity.load<ContainerContext, ContainerEvent>(streamId, containerMachine, store, containerProjection);
      if (container.ended || container.streamVersion === 0 || !this.core.sandboxes.has(container.context.sandboxId)) {
        container.stop();
        continue;
      }
      this.core.containers.set(container.context.containerId, container);
      checkRow(streamId, containerProjection(container.snapshot, container.streamVersion), store.getContainer(container.context.containerId));
    }
    return mismatches;
  }

  private async reconcileSandbox(sandbox: SandboxEntity): Promise<void> {
    const sandboxId = sandbox.context.sandboxId;
    const status = await this.core.sandboxerFor(sandbox).sandboxStatus(sandboxId);
    for (const container of this.core.containersOf(sandboxId)) await this.reconcileContainer(sandbox, container);
    switch (sandbox.state) {
      case 'starting':
        if (status.alive && status.pid) {
          this.core.recordSandbox(sandbox, { type: 'SandboxStarted', pid: status.pid, taskAddress: this.core.options.taskAddress, startedAt: new Date().toISOString() }, recovered('completed the start', `the sandbox process ${status.pid} is running`));
          watchSandbox(this.core, sandbox);
        } else {
          // Whatever the interrupted start left (a booting VM, a half-made init, its netns and CNI attachment) goes before the outcome is recorded.
          await this.core.sandboxerFor(sandbox).removeSandbox(sandboxId);
          await releaseNetwork(this.core, sandbox);
          this.core.recordSandbox(sandbox, { type: 'SandboxStartFailed', reason: 'the daemon stopped during start and the sandbox was not serving' }, recovered('rolled back the start', 'the sandbox was not serving; what the start left was removed'));
        }
        return;
      case 'ready':
      case 'unhealthy':
        if (status.alive && status.pid) {
          this.core.recordSandbox(sandbox, { type: 'SandboxReattached', pid: status.pid }, recovered('reattached', `the sandbox process ${status.pid} still runs`));
          watchSandbox(this.core, sandbox);
        } else {
          this.core.recordSandbox(sandbox, { type: 'SandboxExited', exitStatus: 255, exitedAt: new Date().toISOString() }, recovered('recorded an exit', 'the sandbox process ended while no daemon watched'));
        }
        return;
      case 'stopping':
        return stopSandboxNow(this.core, sandbox, this.core.options.defaultStopTimeoutMs, recovered('completed the stop', 'a stop was decided before the daemon stopped'));
      case 'shuttingDown':
        await this.core.sandboxerFor(sandbox).removeSandbox(sandboxId);
        await releaseNetwork(this.core, sandbox);
        this.core.recordSandbox(sandbox, { type: 'SandboxRemoved' }, recovered('completed the removal', 'a shutdown was decided before the daemon stopped'));
        this.core.sandboxes.delete(sandboxId);
        sandbox.stop();
        return;
      default:
        return;
    }
  }

  private async reconcileContainer(sandbox: SandboxEntity, container: ContainerEntity): Promise<void> {
    const { sandboxId, containerId } = container.context;
    const status = await this.core.sandboxerFor(sandbox).containerStatus(sandboxId, containerId);
    const exited = () => {
      const exit = status.exit ?? { exitStatus: 255, exitedAt: new Date() };
      this.core.recordContainer(container, { type: 'ContainerExited', ...exitFields(exit) }, recovered('recorded an exit', status.exit ? `its exit status ${status.exit.exitStatus} was recorded on the host` : `the runtime reports it ${status.state}`));
    };
    const live = status.state === 'created' || status.state === 'running';
    switch (container.state) {
      case 'creating':
        if (live && status.pid) {
          this.core.recordContainer(container, { type: 'ContainerCreated', pid: status.pid }, recovered('completed the create', `the runtime has it ${status.state} with pid ${status.pid}`));
          watchContainer(this.core, sandbox, container, status.pid);
        } else {
          await this.core.sandboxerFor(sandbox).deleteContainer(sandboxId, containerId);
          this.core.recordContainer(container, { type: 'ContainerCreateFailed', reason: 'the daemon stopped during create and runc has no such container' }, recovered('rolled back the create', `the runtime reports it ${status.state}; its mounts and state were removed`));
        }
        break;
      case 'created':
        if (live && container.context.pid !== null) watchContainer(this.core, sandbox, container, container.context.pid);
        else exited();
        break;
      case 'starting':
        if (status.state === 'absent') {
          this.core.recordContainer(container, { type: 'ContainerStartFailed', reason: 'the daemon stopped during start and runc has no such container' }, recovered('rolled back the start', 'the runtime has no such container'));
          break;
        }
        // The start may or may not have reached runc: finish it if not, then record what is true.
        if (status.state === 'created') await this.core.sandboxerFor(sandbox).startContainer(sandboxId, containerId);
        this.core.recordContainer(container, { type: 'ContainerStarted', pid: status.pid ?? container.context.pid ?? 0, startedAt: new Date().toISOString() }, recovered('completed the start', `the runtime reports it ${status.state}`));
        if (status.exit || status.state === 'stopped') exited();
        else if (status.pid) watchContainer(this.core, sandbox, container, status.pid);
        break;
      case 'running':
        if (status.state === 'running' && status.pid) {
          this.core.recordContainer(container, { type: 'ContainerReattached', pid: status.pid }, recovered('reattached', `its process ${status.pid} still runs`));
          watchContainer(this.core, sandbox, container, status.pid);
        } else {
          exited();
        }
        break;
      case 'deleting':
        await deleteContainerNow(this.core, container, recovered('completed the delete', 'a delete was decided before the daemon stopped'));
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
      if (exec.pid !== null && exec.exitedAt === null) watchExec(this.core, sandbox, container, execId, exec.pid);
      if (!exec.startRequested || exec.pid !== null || exec.lastError !== null) continue;
      const pid = await this.core.sandboxerFor(sandbox).startedExecPid?.(sandboxId, containerId, execId);
      if (pid !== undefined && container.can({ type: 'ExecStarted', execId, pid })) {
        this.core.recordContainer(container, { type: 'ExecStarted', execId, pid }, recovered('completed the exec start', `its process ${pid} was started`));
        watchExec(this.core, sandbox, container, execId, pid);
      } else {
        const why = pid !== undefined ? `its process ${pid} ended with the container` : 'no process of it was started';
        this.core.recordContainer(container, { type: 'ExecStartFailed', execId, reason: `the daemon stopped during the exec start; ${why}` }, recovered('rolled back the exec start', why));
      }
    }
  }
}
