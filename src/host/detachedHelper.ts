import { spawn } from 'node:child_process';
import { internal } from '../core/errors.js';

const READY_TIMEOUT_MS = 5_000;

/** A started helper (kts-console, kts-log-pump) that outlives this daemon; the daemon reaps it while it lives. */
export interface DetachedHelper {
  /** Signals it if it still runs; idempotent. */
  signal(signal: NodeJS.Signals): void;
}

/**
 * Starts one of kts's small C helpers in a session of its own and resolves once it prints "ready\n"
 * on stdout; one that fails, exits first or stays silent for 5 s is killed and rejected with the
 * last of its stderr. `hint` ends the message when the binary cannot be started.
 */
export function startDetachedHelper(binary: string, args: string[], hint = ''): Promise<DetachedHelper> {
  const name = binary.split('/').pop() ?? binary;
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let settled = false;
    const timer = setTimeout(() => finish(internal(`${name} was not ready within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
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
        resolve({ signal: (signal) => { if (child.exitCode === null && child.signalCode === null) child.kill(signal); } });
      }
    };
    child.once('error', (error) => finish(internal(`cannot start ${name} (${binary}): ${error.message}${hint}`)));
    child.stderr?.on('data', (chunk: Buffer) => { stderr = (stderr + chunk.toString('utf8')).slice(-1000); });
    child.stdout?.on('data', (chunk: Buffer) => {
      if (chunk.toString('utf8').includes('ready\n')) finish();
    });
    child.once('exit', (code) => finish(internal(`${name} exited (${code}) before it was ready: ${stderr.trim()}`)));
  });
}
