import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FIRST_WASM_PID, WasmPidAllocator } from './wasmPids.js';

describe('WasmPidAllocator', () => {
  const dirs: string[] = [];
  const reservationFile = () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kts-wasm-pids-'));
    dirs.push(dir);
    return path.join(dir, 'wasm', 'pids-reserved');
  };
  afterEach(() => dirs.splice(0).forEach((dir) => rmSync(dir, { recursive: true, force: true })));

  it('given no reservation yet, when pids are allocated, then they count up from 2^22, above every real pid', () => {
    const pids = new WasmPidAllocator(reservationFile());
    expect([pids.allocate(), pids.allocate(), pids.allocate()]).toEqual([FIRST_WASM_PID, FIRST_WASM_PID + 1, FIRST_WASM_PID + 2]);
  });

  it('given a daemon restart, when pids are allocated again, then none of the earlier ones comes back', () => {
    const file = reservationFile();
    const before = new WasmPidAllocator(file);
    const used = Array.from({ length: 1500 }, () => before.allocate());
    const after = new WasmPidAllocator(file).allocate();
    expect(after).toBeGreaterThan(Math.max(...used));
  });

  it('given an unreadable reservation, then it starts at 2^22 again', () => {
    const file = reservationFile();
    const pids = new WasmPidAllocator(file);
    pids.allocate();
    writeFileSync(file, 'garbage');
    expect(new WasmPidAllocator(file).allocate()).toBe(FIRST_WASM_PID);
  });
});
