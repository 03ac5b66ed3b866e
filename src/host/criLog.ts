/**
 * CRI's container log format, as kubelet and containerd write it and crictl reads it, one record a line:
 *   <RFC3339Nano time> <stdout|stderr> <F|P> <text>\n
 * F: the text ends a line of the container's output; P: part of a line, its rest in later records.
 * kts-log-pump (log-pump.c) writes it for runc and wasm containers; CriLineSplitter below for the
 * vmm pumps and the daemon's own notices. Why this format and not raw bytes plus a time index: one
 * file, each record written whole by one write (O_APPEND), so times can never drift from the bytes
 * across a crash, a restart or a copy-truncate rotation, and every CRI tool reads it.
 */

export type LogStream = 'stdout' | 'stderr';

/** containerd's default max_container_log_line_size: a longer line becomes several P records. */
export const MAX_RECORD_TEXT_BYTES = 16 * 1024;

export interface CriRecord {
  /** As written, e.g. 2026-12-03T10:04:05.123456789Z. */
  time: string;
  /** Nanoseconds since the epoch. */
  unixNanos: bigint;
  stream: LogStream;
  /** P: the line goes on in the next record of this stream. */
  partial: boolean;
  text: Buffer;
}

/** RFC3339 with nine fraction digits, UTC: `nanos` (0-999999) are added below `date`'s millisecond. */
export function formatCriTime(date: Date, subMillisecondNanos = 0): string {
  const nanos = String(date.getUTCMilliseconds() * 1_000_000 + subMillisecondNanos).padStart(9, '0');
  return `${date.toISOString().slice(0, 19)}.${nanos}Z`;
}

/** One record, its text free of newlines (the caller splits). */
export function formatCriRecord(stream: LogStream, partial: boolean, text: Buffer, time: string): Buffer {
  return Buffer.concat([Buffer.from(`${time} ${stream} ${partial ? 'P' : 'F'} `), text, NEWLINE]);
}

const NEWLINE = Buffer.from('\n');
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/** RFC3339 (any fraction up to nanoseconds, Z or an offset) as nanoseconds since the epoch; undefined if it is not one. */
export function parseRfc3339Nanos(text: string): bigint | undefined {
  const match = RFC3339.exec(text);
  if (!match) return undefined;
  const [, year, month, day, hour, minute, second, fraction, , sign, offsetHours, offsetMinutes] = match;
  const millis = Date.UTC(Number(year), Number(month) - 1, Number(day), Number(hour), Number(minute), Number(second));
  const check = new Date(millis);
  // Date.UTC rolls 2026-02-31 over into March: such a date is no date.
  if (Number.isNaN(millis) || check.getUTCDate() !== Number(day) || check.getUTCHours() !== Number(hour) || Number(minute) > 59 || Number(second) > 59) return undefined;
  const offsetSeconds = sign ? (sign === '-' ? -1 : 1) * (Number(offsetHours) * 3600 + Number(offsetMinutes) * 60) : 0;
  const nanos = BigInt((fraction ?? '').padEnd(9, '0'));
  return (BigInt(millis / 1000) - BigInt(offsetSeconds)) * 1_000_000_000n + nanos;
}

const SPACE = 0x20;

/** One line of a CRI log (without its newline); undefined when it is not a record (raw output, a line cut by rotation). */
export function parseCriRecord(line: Buffer): CriRecord | undefined {
  const timeEnd = line.indexOf(SPACE);
  if (timeEnd < 20 || timeEnd > 40) return undefined;
  const time = line.toString('latin1', 0, timeEnd);
  const streamEnd = line.indexOf(SPACE, timeEnd + 1);
  const stream = line.toString('latin1', timeEnd + 1, streamEnd);
  if (streamEnd < 0 || (stream !== 'stdout' && stream !== 'stderr')) return undefined;
  const tag = line[streamEnd + 1];
  // The tag ends the line when the text is empty (a kubelet-written empty line has no space after it).
  if ((tag !== 0x46 && tag !== 0x50) || (line.length > streamEnd + 2 && line[streamEnd + 2] !== SPACE)) return undefined;
  const unixNanos = parseRfc3339Nanos(time);
  if (unixNanos === undefined) return undefined;
  return { time, unixNanos, stream, partial: tag === 0x50, text: line.subarray(Math.min(line.length, streamEnd + 3)) };
}

/**
 * Turns one stream's output, chunk by chunk, into CRI records: complete lines as F, a line reaching
 * MAX_RECORD_TEXT_BYTES as P, the unfinished rest held (bounded) until more comes or `flush()`.
 */
export class CriLineSplitter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private pendingTime = '';

  constructor(private readonly stream: LogStream, private readonly clock: () => string = () => formatCriTime(new Date())) {}

  /** Bytes received but not yet in a record (a crash before `flush` loses them: forward them again). */
  get heldBytes(): number {
    return this.pendingBytes;
  }

  /** The records `chunk` completes. */
  push(chunk: Buffer): Buffer[] {
    const records: Buffer[] = [];
    const now = this.clock();
    let start = 0;
    while (start < chunk.length) {
      if (this.pendingBytes === 0) this.pendingTime = now;
      const newline = chunk.indexOf(0x0a, start);
      const room = MAX_RECORD_TEXT_BYTES - this.pendingBytes;
      const end = newline < 0 ? chunk.length : newline;
      if (end - start >= room) {
        this.hold(chunk.subarray(start, start + room));
        records.push(this.take(true));
        start += room;
        continue;
      }
      this.hold(chunk.subarray(start, end));
      if (newline < 0) break;
      records.push(this.take(false));
      start = newline + 1;
    }
    return records;
  }

  /** The unfinished rest as a P record (the output ended, or paused), if there is one. */
  flush(): Buffer[] {
    return this.pendingBytes > 0 ? [this.take(true)] : [];
  }

  private hold(part: Buffer): void {
    if (part.length === 0) return;
    // Copied: the caller's buffer is reused for its next read.
    this.pending.push(Buffer.from(part));
    this.pendingBytes += part.length;
  }

  private take(partial: boolean): Buffer {
    const record = formatCriRecord(this.stream, partial, Buffer.concat(this.pending, this.pendingBytes), this.pendingTime);
    this.pending = [];
    this.pendingBytes = 0;
    return record;
  }
}
