// The daemon's side of kts-log-pump (log-pump.c): a container's stdout and stderr into its CRI-format log.
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { internal } from '../../core/errors.js';
import type { StdioPaths } from '../../core/sandboxer.js';
import { CriLineSplitter } from './criLog.js';

const READY_TIMEOUT_MS = 5_000;
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
export function startLogPump(binary: string, options: { logPath: string; dir: string }): Promise<RunningLogPump> {
  const stdio = logPumpFifos(options.dir);
  const args = ['--log', options.logPath, '--stdout', stdio.stdout, '--stderr', stdio.stderr];
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let settled = false;
    const timer = setTimeout(() => finish(internal(`kts-log-pump did not start within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
    const finish = (error?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.stdout?.destroy();
      child.stderr?.destroy();
      child.unref();
      if (error) {
        child.kill('SIGKILL');
        reject(error);
      } else {
        resolve({ stdio, stop: () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM'); } });
      }
    };
    child.once('error', (error) => finish(internal(`cannot start kts-log-pump (${binary}): ${error.message} (run scripts/build-native.sh)`)));
    child.stderr?.on('data', (chunk: Buffer) => { stderr = (stderr + chunk.toString('utf8')).slice(-1000); });
    child.stdout?.on('data', (chunk: Buffer) => {
      if (chunk.toString('utf8').includes('ready\n')) finish();
    });
    child.once('exit', (code) => finish(internal(`kts-log-pump exited (${code}) before it was ready: ${stderr.trim()}`)));
  });
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
