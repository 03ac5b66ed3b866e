/** What the daemon and the worker thread running one module say to each other. Types only. */

export interface WorkerSetup {
  /** Compiled (and memory-capped) by the daemon; a structured clone shares the compiled code. */
  module: WebAssembly.Module;
  args: string[];
  env: Record<string, string>;
  /** Guest directory → host directory; WASI numbers them 3, 4, … in this order. */
  preopens: Record<string, string>;
  /** Host fds the daemon opened and owns; the worker must never close them. */
  stdio: { stdin: number; stdout: number; stderr: number };
  /** Int32 cells the worker writes and the daemon reads without a message round trip (see STATUS_*). */
  status: SharedArrayBuffer;
}

/** The module's memory size in pages, as of its last WASI call. */
export const STATUS_MEMORY_PAGES = 0;
export const STATUS_CELLS = 1;

/** `setup` first (a pooled worker boots before it knows its module), then `start`. */
export type DaemonMessage = { type: 'setup'; setup: WorkerSetup } | { type: 'start' };

export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'instantiateFailed'; reason: string }
  | { type: 'exited'; code: number }
  | { type: 'trapped'; message: string; memoryPages: number };
