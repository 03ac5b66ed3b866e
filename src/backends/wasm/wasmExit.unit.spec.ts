import { describe, expect, it } from 'vitest';
import { LOST_EXIT_STATUS, moduleExit, OUT_OF_MEMORY_EXIT_STATUS, signalEndsModule, TRAP_EXIT_STATUS } from './wasmExit.js';

describe('moduleExit', () => {
  it('given proc_exit(n), then the status is n, kept to 0-255 as a process status is', () => {
    expect(moduleExit({ kind: 'exited', code: 7 }, 16)).toEqual({ exitStatus: 7 });
    expect(moduleExit({ kind: 'exited', code: 256 + 3 }, 16)).toEqual({ exitStatus: 3 });
  });

  it('given a trap below the memory limit, then 134 with the trap and the memory in the reason', () => {
    const exit = moduleExit({ kind: 'trapped', message: 'unreachable', memoryPages: 1 }, 16);
    expect(exit.exitStatus).toBe(TRAP_EXIT_STATUS);
    expect(exit.reason).toBe('wasm trap: unreachable (memory 1 page (0.06 MiB) of 16 pages (1 MiB) allowed)');
  });

  it('given a trap with the memory at the container\'s limit, then 137 and "out of memory"', () => {
    const exit = moduleExit({ kind: 'trapped', message: 'unreachable', memoryPages: 16 }, 16);
    expect(exit.exitStatus).toBe(OUT_OF_MEMORY_EXIT_STATUS);
    expect(exit.reason).toMatch(/^out of memory: the module's memory is at the container's limit of 16 pages \(1 MiB\) and it trapped \(unreachable\)$/);
  });

  it('given a kill by signal n, then 128 + n', () => {
    expect(moduleExit({ kind: 'killed', signal: 9 }, 16)).toEqual({ exitStatus: 137, reason: 'killed by signal 9' });
    expect(moduleExit({ kind: 'killed', signal: 15 }, 16).exitStatus).toBe(143);
  });

  it('given a runner that failed or a lost module, then 255 with why', () => {
    expect(moduleExit({ kind: 'crashed', message: 'boom' }, 16)).toEqual({ exitStatus: LOST_EXIT_STATUS, reason: 'the runner of the module failed: boom' });
    expect(moduleExit({ kind: 'lost', why: 'the daemon stopped' }, 16)).toEqual({ exitStatus: LOST_EXIT_STATUS, reason: 'the daemon stopped' });
  });
});

describe('signalEndsModule', () => {
  it('ends the module for signals whose default action ends a process, and not for ignore or stop signals', () => {
    for (const signal of [1, 2, 9, 15]) expect(signalEndsModule(signal)).toBe(true);
    for (const signal of [17, 18, 19, 28]) expect(signalEndsModule(signal)).toBe(false);
  });
});
