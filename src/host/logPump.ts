// The daemon's side of kts-log-pump (log-pump.c): a container's stdout and stderr into its CRI-format log.
import { constants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { StdioPaths } from '../core/sandboxer.js';
import { CriLineSplitter } from './criLog.js';
import { startDetachedHelper } from './detachedHelper.js';

/** How long a container's exit may wait for its pump to write the last records (it needs microseconds unless the host stalls). */
const DRAIN_WAIT_MS = 2_000;

/** kts-log-pump sits beside the other native helpers in dist/native. */
export function defaultLogPumpBinary(nativeBinary: string): string {
  return join(dirname(nativeBinary), 'kts-log-pump');
}

/** The FIFOs a container's pump makes in `dir` (a private directory of the daemon's, never one a container can reach). */
export function logPumpFifos(dir: string): Required<Pick<StdioPaths, 'stdout' | 'stderr'>> {
  return { stdout: join(dir, 'log-stdout.fifo'), stderr: join(dir, 'log-stderr.fifo') };
}

/** A started pump, for the caller whose create failed before any writer came. */
export interface RunningLogPump {
  /** What the container's stdout and stderr are to open. */
  stdio: Required<Pick<StdioPaths, 'stdout' | 'stderr'>>;
  /** SIGTERM: it writes what its FIFOs hold and exits; idempotent. */
  stop(): void;
}

/**
 * Starts kts-log-pump in a session of its own, resolving once its FIFOs exist and are open for
 * reading. It outlives this daemon (a runc container's output is recorded while no daemon runs)
 * and exits when every writer of its FIFOs is gone, unlinking them; this daemon reaps it while it lives.
 */
export async function startLogPump(binary: string, options: { logPath: string; dir: string }): Promise<RunningLogPump> {
  const stdio = logPumpFifos(options.dir);
  const args = ['--log', options.logPath, '--stdout', stdio.stdout, '--stderr', stdio.stderr];
  const helper = await startDetachedHelper(binary, args, ' (run scripts/build-native.sh)');
  return { stdio, stop: () => helper.signal('SIGTERM') };
}

/**
 * Waits (at most DRAIN_WAIT_MS) until the pump whose FIFOs are in `dir` has written everything and
 * exited: it unlinks its FIFOs last. Called once the container's processes are gone, before its exit
 * is recorded, so that `kts logs -f` ending at the exit has every line.
 */
export async function waitForLogPump(dir: string): Promise<void> {
  const fifos = Object.values(logPumpFifos(dir));
  const deadline = Date.now() + DRAIN_WAIT_MS;
  while (Date.now() < deadline) {
    const present = await Promise.all(fifos.map((fifo) => lstat(fifo).then(() => true, () => false)));
    if (!present.includes(true)) return;
    await sleep(20);
  }
}

/** Best effort: a line of the daemon's own (why a wasm module ended) as stderr records of a CRI log, in one write. */
export async function appendLogNotice(logPath: string, text: string): Promise<void> {
  const splitter = new CriLineSplitter('stderr');
  const records = Buffer.concat([...splitter.push(Buffer.from(text)), ...splitter.flush()]);
  try {
    const log = await open(logPath, constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    await log.write(records).finally(() => log.close());
  } catch {
    // A removed log: the reason is in the exit record and the event anyway.
  }
}
