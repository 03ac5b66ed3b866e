import { aroundMethods } from '../core/aroundMethods.js';
import type { Sandboxer } from '../core/sandboxer.js';

/**
 * At most `limit` holders at once; a waiter with a higher priority goes first, equal priorities in
 * arrival order.
 */
export class PriorityGate {
  private running = 0;
  private arrivals = 0;
  private readonly waiting: Array<{ priority: number; arrival: number; admit: () => void }> = [];

  constructor(readonly limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`a gate needs a limit of at least 1, not ${limit}`);
  }

  async run<T>(priority: number, work: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) {
      await new Promise<void>((admit) => {
        this.waiting.push({ priority, arrival: this.arrivals++, admit });
        this.waiting.sort((a, b) => b.priority - a.priority || a.arrival - b.arrival);
      });
    } else {
      this.running += 1;
    }
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      // The slot passes straight to the next waiter; only with none waiting is it freed.
      if (next) next.admit();
      else this.running -= 1;
    }
  }
}

/**
 * The host-heavy steps of a pod start, later steps first: a pod already started finishes before the
 * next one begins, so a burst of pods completes one after another instead of all at the end.
 */
const START_STEPS = { startContainer: 3, createContainer: 2, startSandbox: 1 } as const;

/**
 * The same sandboxer with its start steps admitted through `gate`: on a small machine a burst of 50
 * pods started all at once shares the CPU so evenly that every pod finishes at about the time of the
 * last one; a few at a time, the median pod is ready far sooner and the last no later.
 */
export function withStartAdmission(sandboxer: Sandboxer, gate: PriorityGate): Sandboxer {
  return aroundMethods(sandboxer, Object.keys(START_STEPS), (method, call) => gate.run(START_STEPS[method as keyof typeof START_STEPS], call));
}
