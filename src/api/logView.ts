import { parseCriRecord, type LogStream } from '../host/criLog.js';

/** What `kts logs` asks to see of a container's log. */
export interface LogViewOptions {
  /** Each line prefixed with its RFC3339Nano time and a space. */
  timestamps: boolean;
  /** Only records written at or after this time (nanoseconds since the epoch). */
  sinceUnixNanos?: bigint;
}

/** A record is at most ~16 KiB; a longer "line" is no record (raw output, a damaged file): it passes through as it is. */
const MAX_LINE_BYTES = 1024 * 1024;
const NEWLINE = 0x0a;
const NEWLINE_BUFFER = Buffer.from('\n');

/**
 * Turns a CRI-format log (host/criLog.ts), read in chunks, into the container's output: each
 * record's text, a newline after F records, the time before each line when asked. Memory is bounded
 * by MAX_LINE_BYTES, whatever the file holds. A line that is not a record (the start of a file a
 * rotation cut, or damage) is shown as it is, and left out when only recent lines are wanted.
 */
export class CriLogView {
  private carry: Buffer[] = [];
  private carryBytes = 0;
  private readonly atLineStart: Record<LogStream, boolean> = { stdout: true, stderr: true };

  constructor(private readonly options: LogViewOptions) {}

  /** What the complete lines of `chunk` (after what came before) show. */
  push(chunk: Buffer): Buffer {
    const out: Buffer[] = [];
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf(NEWLINE, start);
      if (newline < 0) break;
      const line = this.carryBytes > 0 ? Buffer.concat([...this.carry, chunk.subarray(start, newline)]) : chunk.subarray(start, newline);
      this.carry = [];
      this.carryBytes = 0;
      this.render(line, out);
      start = newline + 1;
    }
    if (start < chunk.length) {
      // Copied: the caller's buffer is reused for its next read.
      this.carry.push(Buffer.from(chunk.subarray(start)));
      this.carryBytes += chunk.length - start;
      if (this.carryBytes > MAX_LINE_BYTES) this.render(this.takeCarry(), out, false);
    }
    return Buffer.concat(out);
  }

  /** The file ended without a newline (a record still being written, or cut): what there is of it. */
  end(): Buffer {
    if (this.carryBytes === 0) return Buffer.alloc(0);
    const out: Buffer[] = [];
    this.render(this.takeCarry(), out, false);
    return Buffer.concat(out);
  }

  private takeCarry(): Buffer {
    const rest = Buffer.concat(this.carry, this.carryBytes);
    this.carry = [];
    this.carryBytes = 0;
    return rest;
  }

  /** `complete`: the line ended with a newline (else a record still being written shows its text so far, as a P record would). */
  private render(line: Buffer, out: Buffer[], complete = true): void {
    const parsed = parseCriRecord(line);
    const record = parsed && !complete ? { ...parsed, partial: true } : parsed;
    if (!record) {
      // Not a record: its time is unknown, so it is no recent line; otherwise it is shown as it is.
      if (this.options.sinceUnixNanos === undefined) out.push(line, ...(complete ? [NEWLINE_BUFFER] : []));
      return;
    }
    if (this.options.sinceUnixNanos !== undefined && record.unixNanos < this.options.sinceUnixNanos) return;
    if (this.options.timestamps && this.atLineStart[record.stream]) out.push(Buffer.from(`${record.time} `));
    out.push(record.text);
    if (!record.partial) out.push(NEWLINE_BUFFER);
    this.atLineStart[record.stream] = !record.partial;
  }
}

/** Raw bytes (logs written before kts kept times): shown as they are. */
export class RawLogView {
  push(chunk: Buffer): Buffer {
    return chunk;
  }

  end(): Buffer {
    return Buffer.alloc(0);
  }
}

export type LogView = CriLogView | RawLogView;
