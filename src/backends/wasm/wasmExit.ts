import { pagesText } from './moduleMemory.js';

/**
 * How a module's end becomes an exit status, chosen to read like a process's:
 * - proc_exit(n) or returning from _start: n (0-255, as a process's status is);
 * - a trap: 134 (128 + SIGABRT, what wasmtime reports for a trap);
 * - a trap while the memory is at the container's cap: 137 (128 + SIGKILL, what the kernel's OOM
 *   killer leaves behind);
 * - killed by signal n: 128 + n;
 * - lost because the daemon stopped while the module ran, or the runner failed: 255.
 */

export const TRAP_EXIT_STATUS = 134;
export const OUT_OF_MEMORY_EXIT_STATUS = 137;
export const LOST_EXIT_STATUS = 255;

/** What the runner of one module reported (or what happened to it). */
export type ModuleOutcome =
  | { kind: 'exited'; code: number }
  | { kind: 'trapped'; message: string; memoryPages: number }
  | { kind: 'killed'; signal: number }
  | { kind: 'crashed'; message: string }
  | { kind: 'lost'; why: string };

export interface ModuleExit {
  exitStatus: number;
  /** Why, in words, for anything but a plain proc_exit. */
  reason?: string;
}

export function moduleExit(outcome: ModuleOutcome, memoryLimitPages: number): ModuleExit {
  switch (outcome.kind) {
    case 'exited':
      return { exitStatus: (outcome.code >>> 0) % 256 };
    case 'trapped':
      return trapExit(outcome.message, outcome.memoryPages, memoryLimitPages);
    case 'killed':
      return { exitStatus: 128 + outcome.signal, reason: `killed by signal ${outcome.signal}` };
    case 'crashed':
      return { exitStatus: LOST_EXIT_STATUS, reason: `the runner of the module failed: ${outcome.message}` };
    case 'lost':
      return { exitStatus: LOST_EXIT_STATUS, reason: outcome.why };
  }
}

function trapExit(message: string, memoryPages: number, memoryLimitPages: number): ModuleExit {
  // A failed memory.grow returns -1 to the module; the trap that follows at the cap is its way of dying of it.
  if (memoryPages >= memoryLimitPages) {
    return {
      exitStatus: OUT_OF_MEMORY_EXIT_STATUS,
      reason: `out of memory: the module's memory is at the container's limit of ${pagesText(memoryLimitPages)} and it trapped (${message})`,
    };
  }
  return { exitStatus: TRAP_EXIT_STATUS, reason: `wasm trap: ${message} (memory ${pagesText(memoryPages)} of ${pagesText(memoryLimitPages)} allowed)` };
}

// A module has no signal handlers: it gets each signal's default action. Stopping a module is not
// offered (its runner is only ever SIGKILLed), so SIGSTOP and friends do nothing, as do the signals
// whose default is to be ignored.
const SIGNALS_WITHOUT_EFFECT = new Set([
  17, // SIGCHLD
  18, // SIGCONT
  19, // SIGSTOP
  20, // SIGTSTP
  21, // SIGTTIN
  22, // SIGTTOU
  23, // SIGURG
  28, // SIGWINCH
]);

export function signalEndsModule(signal: number): boolean {
  return !SIGNALS_WITHOUT_EFFECT.has(signal);
}
