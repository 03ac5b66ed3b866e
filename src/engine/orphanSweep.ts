import { nodeMachine, type NodeEvent } from '../../machines/nodeMachine.js';
import { errorMessage } from '../core/errors.js';
import type { KnownResources } from '../core/sandboxer.js';
import { SweepIncomplete, type SweepFailure } from '../core/sweep.js';
import type { EngineCore } from './engineCore.js';
import { Entity, type CommandMeta } from './entity.js';

const RECOVERY: CommandMeta = { caller: 'recovery' };
export const NODE_STREAM = 'node';

/**
 * Host resources of no live sandbox or container: every backend's, the pod networks', the exec
 * specs' and any sweep added. What is removed or cannot be is recorded on the node stream.
 */
export class OrphanSweep {
  constructor(private readonly core: EngineCore) {}

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
    const known: KnownResources = { sandboxIds: { has: (id) => this.core.sandboxes.has(id) }, containerIds: { has: (id) => this.core.containers.has(id) } };
    const sweeps = Object.values(this.core.options.sandboxers).map((sandboxer) => ({ kind: sandboxer.kind, sweep: () => sandboxer.sweepOrphans(known) }));
    // Pod networks go after the backends: a VM's taps live in the netns until its QEMU and directory are gone.
    const networks = this.core.options.networks;
    if (networks) sweeps.push({ kind: 'network', sweep: () => networks.sweepOrphans(known.sandboxIds) });
    sweeps.push({ kind: 'exec-spec', sweep: () => this.core.execSpecs.sweepOrphans(known.containerIds) });
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
        this.core.logger.warn({ kind, resource }, 'removed a resource no sandbox owns');
        this.node().record({ type: 'OrphanRemoved', kind, resource, reason: 'no live sandbox or container in the event log owns it' }, RECOVERY);
      }
      for (const { resource, reason } of outcome.failed) {
        failures.push(`${kind}: ${resource}: ${reason}`);
        this.core.logger.error({ kind, resource, reason }, 'could not remove a resource no sandbox owns; the next sweep tries again');
        if (this.cleanupFailures.get(resource) === reason) continue;
        this.cleanupFailures.set(resource, reason);
        this.node().record({ type: 'CleanupFailed', kind, resource, reason }, RECOVERY);
      }
    }
    return failures;
  }

  private nodeEntity: Entity<Record<string, never>, NodeEvent> | undefined;

  private node(): Entity<Record<string, never>, NodeEvent> {
    this.nodeEntity ??= Entity.load<Record<string, never>, NodeEvent>(NODE_STREAM, nodeMachine, this.core.store, () => undefined);
    return this.nodeEntity;
  }
}
