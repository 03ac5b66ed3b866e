import { describe, expect, it } from 'vitest';
import { guardedWasiImports, WASI_ERRNO, type ImportContext, type WasiNamespace } from './wasiImports.js';

/** A stand-in for Node's WASI namespace that records which functions were called with what. */
function recordingWasi(): { raw: WasiNamespace; calls: Array<[string, Array<number | bigint>]> } {
  const calls: Array<[string, Array<number | bigint>]> = [];
  const record = (name: string) => (...args: Array<number | bigint>) => (calls.push([name, args]), WASI_ERRNO.success);
  return { raw: { fd_write: record('fd_write'), fd_close: record('fd_close'), fd_renumber: record('fd_renumber'), poll_oneoff: record('poll_oneoff') }, calls };
}

function contextWith(memory: WebAssembly.Memory) {
  const slept: number[] = [];
  let afterCalls = 0;
  const context: ImportContext = { memory: () => memory, afterCall: () => void afterCalls++, sleep: (ms) => void slept.push(ms) };
  return { context, slept, afterCalls: () => afterCalls };
}

/** A relative clock subscription at `at` (WASI preview 1 layout, 48 bytes). */
function writeClockSubscription(view: DataView, at: number, userdata: bigint, timeoutNs: bigint, clockId = 1): void {
  view.setBigUint64(at, userdata, true);
  view.setUint8(at + 8, 0);
  view.setUint32(at + 16, clockId, true);
  view.setBigUint64(at + 24, timeoutNs, true);
  view.setUint16(at + 40, 0, true);
}

describe('guardedWasiImports', () => {
  it('given a poll that only waits for clocks, then it sleeps interruptibly for the shortest and reports that clock', () => {
    const memory = new WebAssembly.Memory({ initial: 1 });
    const view = new DataView(memory.buffer);
    writeClockSubscription(view, 0, 7n, 250_000_000n);
    writeClockSubscription(view, 48, 8n, 2_000_000_000n);
    const { raw, calls } = recordingWasi();
    const { context, slept } = contextWith(memory);
    const errno = guardedWasiImports(raw, context).poll_oneoff!(0, 1024, 2, 2048);
    expect(errno).toBe(WASI_ERRNO.success);
    expect(slept).toEqual([250]);
    expect(view.getUint32(2048, true)).toBe(1);
    expect(view.getBigUint64(1024, true)).toBe(7n);
    expect(view.getUint8(1024 + 10)).toBe(0); // eventtype clock
    expect(calls).toEqual([]);
  });

  it('given a poll that also waits for an fd, then uvwasi handles it', () => {
    const memory = new WebAssembly.Memory({ initial: 1 });
    const view = new DataView(memory.buffer);
    writeClockSubscription(view, 0, 1n, 1_000n);
    view.setUint8(48 + 8, 1); // fd_read
    const { raw, calls } = recordingWasi();
    guardedWasiImports(raw, contextWith(memory).context).poll_oneoff!(0, 1024, 2, 2048);
    expect(calls.map(([name]) => name)).toEqual(['poll_oneoff']);
  });

  it('given subscriptions outside the module\'s memory, then EFAULT, without sleeping', () => {
    const memory = new WebAssembly.Memory({ initial: 1 });
    const { raw } = recordingWasi();
    const { context, slept } = contextWith(memory);
    expect(guardedWasiImports(raw, context).poll_oneoff!(65_530, 0, 1, 4)).toBe(WASI_ERRNO.fault);
    expect(slept).toEqual([]);
  });

  it('refuses to close or renumber stdin, stdout and stderr (the daemon\'s fds), and passes other fds on', () => {
    const { raw, calls } = recordingWasi();
    const imports = guardedWasiImports(raw, contextWith(new WebAssembly.Memory({ initial: 1 })).context);
    expect(imports.fd_close!(1)).toBe(WASI_ERRNO.notsup);
    expect(imports.fd_renumber!(4, 2)).toBe(WASI_ERRNO.notsup);
    expect(imports.fd_close!(5)).toBe(WASI_ERRNO.success);
    expect(calls).toEqual([['fd_close', [5]]]);
  });

  it('runs afterCall after every call, also one that throws (proc_exit unwinds by throwing)', () => {
    const { context, afterCalls } = contextWith(new WebAssembly.Memory({ initial: 1 }));
    const imports = guardedWasiImports({ proc_exit: () => { throw new Error('exit'); }, fd_write: () => 0 }, context);
    imports.fd_write!(1, 0, 0, 0);
    expect(() => imports.proc_exit!(0)).toThrow('exit');
    expect(afterCalls()).toBe(2);
  });
});
