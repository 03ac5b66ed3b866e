import { errorMessage } from './errors.js';

/**
 * The ids the event log holds live, asked at each decision rather than copied before a sweep: a pod
 * created while a later sweep runs is live, not an orphan.
 */
export type KnownIds = Pick<ReadonlySet<string>, 'has'>;

/** What a sweep could not remove, and why (the engine records it on the node stream and tries again later). */
export interface SweepFailure {
  resource: string;
  reason: string;
}

/** A sweep that removed some resources and failed on others: each is recorded, none is lost by the first failure. */
export class SweepIncomplete extends Error {
  constructor(readonly removed: string[], readonly failures: SweepFailure[]) {
    super(`could not remove ${failures.map((failure) => `${failure.resource} (${failure.reason})`).join('; ')}`);
  }
}

/**
 * One orphan sweep's outcome, resource by resource: a failure to remove one (a busy mount, an
 * immutable file) is kept beside what was removed instead of ending the sweep.
 */
export class Sweep {
  private readonly removed: string[] = [];
  private readonly failures: SweepFailure[] = [];

  /** Runs `remove`; `resource` is recorded as removed unless it returns false (there was nothing to remove). */
  async attempt(resource: string, remove: () => Promise<boolean | void>): Promise<void> {
    try {
      if ((await remove()) !== false) this.removed.push(resource);
    } catch (error) {
      this.failures.push({ resource, reason: errorMessage(error) });
    }
  }

  /** What was removed; throws SweepIncomplete (carrying both lists) if anything could not be. */
  finish(): string[] {
    if (this.failures.length > 0) throw new SweepIncomplete(this.removed, this.failures);
    return this.removed;
  }
}
