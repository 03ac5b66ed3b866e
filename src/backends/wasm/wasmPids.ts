import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { internal } from '../../core/errors.js';

/**
 * Synthetic pids for modules. Each module has a runner process, but kernel pids are reused (pid_max
 * is 32768 here) and a runner dies with the daemon, so a recorded kernel pid would soon name an
 * unrelated process. These start at Linux's PID_MAX_LIMIT (2^22), a number the kernel never hands
 * out, so a wasm pid can never name (or be signalled as) a real process; and they are reserved in
 * blocks recorded in a file, so a pid is never reused, not even across daemon restarts, and events
 * stay unambiguous.
 */
export const FIRST_WASM_PID = 1 << 22;
const LAST_WASM_PID = 0x7fff_ffff;
const BLOCK = 1024;

export class WasmPidAllocator {
  private next: number;
  private reservedUpTo: number;

  constructor(private readonly reservationFile: string) {
    this.next = Math.max(FIRST_WASM_PID, readReservation(reservationFile));
    this.reservedUpTo = this.next;
  }

  allocate(): number {
    if (this.next >= this.reservedUpTo) this.reserve();
    return this.next++;
  }

  /** Synchronous and rare (once per BLOCK pids): the next pid must be durable before it is used. */
  private reserve(): void {
    const upTo = this.next + BLOCK;
    if (upTo > LAST_WASM_PID) throw internal(`wasm pids are exhausted (the last is ${LAST_WASM_PID}); remove ${this.reservationFile} only when no wasm container is recorded`);
    mkdirSync(dirname(this.reservationFile), { recursive: true });
    const tmp = `${this.reservationFile}.tmp`;
    writeFileSync(tmp, `${upTo}\n`);
    renameSync(tmp, this.reservationFile);
    this.reservedUpTo = upTo;
  }
}

function readReservation(file: string): number {
  try {
    const value = Number(readFileSync(file, 'utf8').trim());
    return Number.isSafeInteger(value) ? value : FIRST_WASM_PID;
  } catch {
    return FIRST_WASM_PID;
  }
}
