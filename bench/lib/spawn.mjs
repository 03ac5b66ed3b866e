// Running a program and timing it, for the benches that compare command-line tools.
import { spawn } from 'node:child_process';

/**
 * Runs `file args` (an argument array, never a shell) and resolves with its exit code, the time from
 * spawn to exit in ms, and its output. `capture: false` gives it /dev/null for stdio and resolves at
 * exit: for programs whose detached children inherit stdio (`runc run -d`), whose pipes never close.
 */
export function runTimed(file, args, { capture = true, env } = {}) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(file, args, { stdio: capture ? ['ignore', 'pipe', 'pipe'] : 'ignore', ...(env && { env }) });
    const stdout = [];
    const stderr = [];
    child.stdout?.on('data', (chunk) => stdout.push(chunk));
    child.stderr?.on('data', (chunk) => stderr.push(chunk));
    let result;
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      result = { code: code ?? 128, signal, ms: Number(process.hrtime.bigint() - started) / 1e6 };
      if (!capture) resolve({ ...result, stdout: '', stderr: '' });
    });
    if (capture) child.once('close', () => resolve({ ...result, stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString() }));
  });
}

/** runTimed that throws with the program's own words when it exits non-zero. */
export async function runChecked(file, args, options) {
  const result = await runTimed(file, args, options);
  if (result.code !== 0) throw new Error(`${file} ${args.join(' ')} exited ${result.code}${result.signal ? ` (${result.signal})` : ''}: ${result.stderr.trim().slice(-500)}`);
  return result;
}
