import { spawn } from 'node:child_process';
import { constants } from 'node:os';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CommandOptions {
  /** Written to the child's stdin, which is then closed; without it stdin is /dev/null. */
  input?: string | Buffer;
  /** The child's whole environment; default: the daemon's. */
  env?: NodeJS.ProcessEnv;
}

const OUTPUT_LIMIT_BYTES = 8 * 1024 * 1024;

/**
 * Runs a program with an argument array (never a shell) and collects its output; the child is
 * killed if it outlives timeoutMs. A non-zero exit is a result, not an exception.
 */
export function runCommand(file: string, args: string[], timeoutMs = 30_000, options: CommandOptions = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const spawnOptions = { timeout: timeoutMs, killSignal: 'SIGKILL' as const, env: options.env ?? process.env };
    const child = options.input === undefined
      ? spawn(file, args, { ...spawnOptions, stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(file, args, { ...spawnOptions, stdio: ['pipe', 'pipe', 'pipe'] });
    // A child that exits without reading its stdin makes the write fail with EPIPE: its exit status says what happened.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(options.input);
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let size = 0;
    const collect = (into: Buffer[]) => (chunk: Buffer) => {
      size += chunk.length;
      if (size <= OUTPUT_LIMIT_BYTES) into.push(chunk);
    };
    child.stdout.on('data', collect(stdout));
    child.stderr.on('data', collect(stderr));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      resolve({
        code: code ?? 128 + signalNumber(signal),
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8'),
      });
    });
  });
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal === null ? 127 : constants.signals[signal];
}
