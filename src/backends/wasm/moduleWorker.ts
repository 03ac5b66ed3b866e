import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { failedPrecondition } from '../../core/errors.js';
import type { ModuleOutcome } from './wasmExit.js';
import { STATUS_CELLS, STATUS_MEMORY_PAGES, type DaemonMessage, type WorkerMessage, type WorkerSetup } from './workerProtocol.js';

export interface ModuleWorkerOptions {
  /** A fresh worker running wasmWorker.js (from the WorkerPool), not yet set up. */
  worker: Worker;
  setup: Omit<WorkerSetup, 'status'>;
  /** How long instantiation (including the module's start function) may take. */
  readyTimeoutMs: number;
}

/** The compiled worker entry beside this file in dist/, also when this file runs from src/ (tests). */
export function defaultWorkerScript(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const sibling = join(here, 'wasmWorker.js');
  if (existsSync(sibling)) return sibling;
  let dir = here;
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return join(dir, 'dist', 'src', 'backends', 'wasm', 'wasmWorker.js');
}

/**
 * The daemon's handle on one worker thread running one module. `outcome` settles once the thread
 * has ended, however it ended; a kill is Worker.terminate(), which stops even a module that never
 * calls out of its loop.
 */
export class ModuleWorker {
  readonly outcome: Promise<ModuleOutcome>;
  private readonly statusBuffer = new SharedArrayBuffer(STATUS_CELLS * Int32Array.BYTES_PER_ELEMENT);
  private readonly status = new Int32Array(this.statusBuffer);
  private readonly worker: Worker;
  private report?: WorkerMessage;
  private failure?: Error & { code?: string };
  private killSignal?: number;
  private lostWhy?: string;
  private ended = false;
  private startRequested = false;

  private constructor(options: ModuleWorkerOptions) {
    this.worker = options.worker;
    this.worker.ref();
    this.worker.on('message', (message: WorkerMessage) => {
      if (message.type === 'exited' || message.type === 'trapped') this.report ??= message;
    });
    this.worker.on('error', (error: Error & { code?: string }) => (this.failure ??= error));
    this.outcome = new Promise((resolve) => this.worker.once('exit', () => {
      this.ended = true;
      resolve(this.describeEnd());
    }));
    const setup: WorkerSetup = { ...options.setup, status: this.statusBuffer };
    this.worker.postMessage({ type: 'setup', setup } satisfies DaemonMessage);
  }

  /** Resolves once the module is instantiated and waits for start; rejects with why it cannot run. */
  static async launch(options: ModuleWorkerOptions): Promise<ModuleWorker> {
    const handle = new ModuleWorker(options);
    await handle.whenReady(options.readyTimeoutMs);
    return handle;
  }

  private async whenReady(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const ready = new Promise<string | undefined>((resolve) => {
      this.worker.on('message', (message: WorkerMessage) => {
        if (message.type === 'ready') resolve(undefined);
        if (message.type === 'instantiateFailed') resolve(`the module cannot be instantiated: ${message.reason}`);
      });
      void this.outcome.then(() => resolve(`the worker ended before the module was ready${this.failure ? `: ${this.failure.message}` : ''}`));
      timer = setTimeout(() => resolve(`the module was not instantiated within ${timeoutMs} ms (does its start function loop?)`), timeoutMs);
    });
    const problem = await ready.finally(() => clearTimeout(timer));
    if (problem === undefined) return;
    await this.worker.terminate();
    throw failedPrecondition(problem);
  }

  get running(): boolean {
    return !this.ended;
  }

  get started(): boolean {
    return this.startRequested;
  }

  /** The module's memory as of its last WASI call, in pages. */
  get memoryPages(): number {
    return Atomics.load(this.status, STATUS_MEMORY_PAGES);
  }

  start(): void {
    if (this.ended) throw failedPrecondition('the module already ended');
    if (this.startRequested) return;
    this.startRequested = true;
    this.worker.postMessage({ type: 'start' } satisfies DaemonMessage);
  }

  /** Ends the module as `signal` would end a process; a module that already reported its end keeps that end. */
  async kill(signal: number): Promise<void> {
    if (this.ended || this.report) return;
    this.killSignal ??= signal;
    await this.worker.terminate();
  }

  /** Ends the module because the daemon itself is going away. */
  async abandon(why: string): Promise<void> {
    if (this.ended || this.report) return;
    this.lostWhy ??= why;
    await this.worker.terminate();
  }

  private describeEnd(): ModuleOutcome {
    if (this.report?.type === 'exited') return { kind: 'exited', code: this.report.code };
    if (this.report?.type === 'trapped') return { kind: 'trapped', message: this.report.message, memoryPages: this.report.memoryPages };
    if (this.lostWhy !== undefined) return { kind: 'lost', why: this.lostWhy };
    if (this.killSignal !== undefined) return { kind: 'killed', signal: this.killSignal };
    if (this.failure) return { kind: 'crashed', message: this.failure.message, outOfMemory: this.failure.code === 'ERR_WORKER_OUT_OF_MEMORY' };
    return { kind: 'lost', why: this.startRequested ? 'the worker running the module ended without reporting how' : 'the module was never started' };
  }
}
