// The bench's side of gcOnSignal.mjs: ask a daemon started with it for a full GC and read what it wrote.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { sleep } from './stats.mjs';

/** Preload it into a bench's daemon: `node --expose-gc --import GC_HOOK`, with KTS_BENCH_GC_MARKER set. */
export const GC_HOOK = fileURLToPath(new URL('./gcOnSignal.mjs', import.meta.url));

/**
 * Sends SIGUSR2 to `pid` and waits (5 s at most) for gcOnSignal.mjs to rewrite `marker` (which must
 * exist); resolves with what it wrote after the full GC: process.memoryUsage() and `spaces`, in bytes.
 */
export async function usageAfterFullGc(pid, marker) {
  const before = readFileSync(marker, 'utf8');
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; readFileSync(marker, 'utf8') === before; i++) {
    if (i > 250) throw new Error(`the daemon did not answer SIGUSR2 (${GC_HOOK}) within 5 s`);
    await sleep(20);
  }
  return JSON.parse(readFileSync(marker, 'utf8'));
}
