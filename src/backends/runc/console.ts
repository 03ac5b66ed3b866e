// The daemon's side of kts-console (console.c): start one per terminal, and resize it.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { failedPrecondition, invalidArgument } from '../../core/errors.js';
import { startDetachedHelper } from '../../host/detachedHelper.js';


/** kts-console sits beside kts-sandbox-init in dist/native. */
export function defaultConsoleBinary(initBinary: string): string {
  return join(dirname(initBinary), 'kts-console');
}

export interface ConsoleLaunch {
  /** The console socket runc sends the pty master to (a path of kts's own, in a 0700 directory). */
  socket: string;
  /** The FIFO kts-console makes and reads "<cols> <rows>" lines from. */
  resize: string;
  stdout: string;
  stdin?: string;
}

/** A started kts-console, for the caller whose runc exec failed. */
export interface RunningConsole {
  /** Kills it if it still runs (runc never connected, or the exec failed after); idempotent. */
  stop(): void;
}

/**
 * Starts kts-console in a session of its own, resolving once its socket listens. It outlives this
 * daemon (a restart must not cut a terminal) and exits when the terminal closes; this daemon reaps it.
 */
export async function startConsole(binary: string, launch: ConsoleLaunch): Promise<RunningConsole> {
  const args = ['--socket', launch.socket, '--stdout', launch.stdout, '--resize', launch.resize, ...(launch.stdin ? ['--stdin', launch.stdin] : [])];
  const helper = await startDetachedHelper(binary, args);
  return { stop: () => helper.signal('SIGKILL') };
}

/** Sets the terminal's size; failed_precondition once the terminal is gone. */
export async function resizeConsole(resizeFifo: string, width: number, height: number): Promise<void> {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0 || width > 0xffff || height > 0xffff) {
    throw invalidArgument(`terminal size ${width}x${height} is out of range (0-65535)`);
  }
  let fifo;
  try {
    // Non-blocking: with no reader (the terminal closed) open fails with ENXIO instead of hanging.
    fifo = await open(resizeFifo, constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENXIO') throw failedPrecondition('this process has no terminal (none was asked for, or it has closed)');
    throw error;
  }
  try {
    await fifo.write(`${width} ${height}\n`);
  } finally {
    await fifo.close();
  }
}
