import { Worker, type ResourceLimits } from 'node:worker_threads';

/**
 * Worker threads spawned ahead of need: a Node worker takes ~30 ms to boot, most of a wasm
 * container's start, so `take()` hands out one that already booted (or boots one if none is
 * left) and spawns its replacement in the background. Idle workers cost ~8 MB each; the pool is
 * filled only while wasm sandboxes run and emptied when the last one stops.
 */
export class WorkerPool {
  private readonly idle = new Set<Worker>();
  private warm = false;

  constructor(
    private readonly workerScript: string,
    private readonly resourceLimits: ResourceLimits,
    private readonly size: number,
  ) {}

  take(): Worker {
    const [worker] = this.idle;
    if (worker) this.idle.delete(worker);
    this.refill();
    return worker ?? this.spawn();
  }

  /** Keeps `size` idle workers from now on. */
  fill(): void {
    this.warm = true;
    this.refill();
  }

  /** Ends the idle workers and keeps none until the next fill(). */
  async drain(): Promise<void> {
    this.warm = false;
    const idle = [...this.idle];
    this.idle.clear();
    await Promise.all(idle.map((worker) => worker.terminate()));
  }

  private refill(): void {
    while (this.warm && this.idle.size < this.size) {
      const worker = this.spawn();
      // An idle worker must not keep the daemon alive, and one that dies while idle is dropped.
      worker.unref();
      worker.once('exit', () => this.idle.delete(worker));
      this.idle.add(worker);
    }
  }

  private spawn(): Worker {
    // Node 20 prints an ExperimentalWarning for node:wasi in every worker; the daemon's log is no place for it.
    return new Worker(this.workerScript, { resourceLimits: this.resourceLimits, execArgv: ['--no-warnings'] });
  }
}
