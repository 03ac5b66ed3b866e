import { invalidArgument } from '../../core/errors.js';

/**
 * What the daemon and one kts-wasm-runner say on the runner's control socket (fd 3); the runner's
 * side is documented in runner/src/main.rs. Lines come from a process that runs a hostile module,
 * so they are size-capped and parsed, never trusted to be well formed.
 */

/** Longer lines are cut; a runner has nothing longer to say (a trap message, a refusal). */
export const MAX_REPORT_LINE_BYTES = 4096;

export type RunnerReport =
  | { type: 'ready' }
  | { type: 'refused'; reason: string }
  /** The module's memory needs this many pages at start, more than the container's limit. */
  | { type: 'memory'; initialPages: number }
  | { type: 'exited'; code: number }
  | { type: 'trapped'; memoryPages: number; message: string }
  | { type: 'failed'; message: string };

export function parseReport(line: string): RunnerReport | undefined {
  const space = line.indexOf(' ');
  const word = space < 0 ? line : line.slice(0, space);
  const rest = space < 0 ? '' : line.slice(space + 1);
  switch (word) {
    case 'ready':
      return { type: 'ready' };
    case 'refused':
      return { type: 'refused', reason: rest };
    case 'failed':
      return { type: 'failed', message: rest };
    case 'memory':
      return wholeNumber(rest) === undefined ? undefined : { type: 'memory', initialPages: wholeNumber(rest)! };
    case 'exited': {
      const code = /^-?\d{1,11}$/.test(rest) ? Number(rest) : undefined;
      return code === undefined ? undefined : { type: 'exited', code };
    }
    case 'trapped': {
      const [pages, ...message] = rest.split(' ');
      const memoryPages = wholeNumber(pages ?? '');
      return memoryPages === undefined ? undefined : { type: 'trapped', memoryPages, message: message.join(' ') };
    }
    default:
      return undefined;
  }
}

function wholeNumber(text: string): number | undefined {
  return /^\d{1,15}$/.test(text) ? Number(text) : undefined;
}

/** The module's environment as the runner reads it: `KEY=value\0` entries, then an empty one. */
export function encodeEnv(env: Record<string, string>): Buffer {
  const entries = Object.entries(env).map(([key, value]) => {
    if (key.includes('\0') || value.includes('\0') || key.includes('=')) throw invalidArgument(`process.env entry ${JSON.stringify(key)} cannot be passed to a WASI module (NUL byte or "=" in its name)`);
    return `${key}=${value}\0`;
  });
  return Buffer.from(`${entries.join('')}\0`, 'utf8');
}

/** Splits the control socket's bytes into lines, holding at most MAX_REPORT_LINE_BYTES of a partial one. */
export class ReportLines {
  private pending = '';

  push(chunk: Buffer): string[] {
    const text = this.pending + chunk.toString('utf8');
    const lines = text.split('\n');
    this.pending = lines.pop()!.slice(0, MAX_REPORT_LINE_BYTES);
    return lines.map((line) => line.slice(0, MAX_REPORT_LINE_BYTES));
  }
}
