import { constants as fsConstants } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import type { ServerWritableStream } from '@grpc/grpc-js';
import { failedPrecondition, invalidArgument, notFound } from '../core/errors.js';
import { validateId } from '../core/ids.js';
import type { ContainerRow, EventStore } from '../core/store.js';
import { isActive } from '../engine/queries.js';
import { streamEnded } from '../grpc/rpc.js';
import { parseRfc3339Nanos } from '../host/criLog.js';
import { rotatedPath } from '../host/logRotation.js';
import { CriLogView, RawLogView, type LogView } from './logView.js';

/** `kts logs`: a container's log file streamed as it is shown (`--follow` polls it at this pace). */
const LOG_POLL_MS = 200;

export interface LogsRequest { containerId: string; follow: boolean; tail: boolean; tailLines: number; timestamps: boolean; since: string }

export async function streamLogs(store: EventStore, call: ServerWritableStream<LogsRequest, object>, closing?: AbortSignal): Promise<void> {
  const row = store.getContainer(validateId('container id', call.request.containerId));
  if (!row) throw notFound(`container ${call.request.containerId} not found`);
  const logPath = row.metadata.logPath;
  if (typeof logPath !== 'string' || !logPath) throw failedPrecondition(`container ${row.id} writes to its creator's FIFOs, not a log file kts keeps`);
  const { request } = call;
  const view = logView(row, request);
  let ended = false;
  if (request.follow) void streamEnded(call, closing).then(() => { ended = true; });
  // What rotation kept of older output comes first; container.log then starts where it ends.
  // (A CRI log has one record a line, so --tail counts records: a line longer than a record counts as several.)
  const tail = request.tail ? await tailStart(logPath, request.tailLines) : { offset: 0, missing: undefined };
  if (tail.missing !== 0) {
    await sendRange(call, view, rotatedPath(logPath), tail.missing === undefined ? 0 : (await tailStart(rotatedPath(logPath), tail.missing)).offset);
    sendShown(call, view.end());
  }
  let offset = tail.offset;
  for (;;) {
    const size = (await stat(logPath).catch(() => ({ size: offset }))).size;
    // Smaller than what was sent: rotated (copied to .1 and truncated) meanwhile; the new content starts at 0.
    if (size < offset) {
      offset = 0;
      sendShown(call, view.end());
    }
    if (size > offset) offset = await sendRange(call, view, logPath, offset, size);
    const live = store.getContainer(row.id);
    if (!request.follow || ended || !live || !isActive(live)) return sendShown(call, view.end());
    await new Promise((resolve) => setTimeout(resolve, LOG_POLL_MS));
  }
}

/**
 * How a container's log is shown: a CRI log (containers made since kts keeps times) as its lines,
 * optionally timed and only the recent ones; an older log's raw bytes as they are, which have no times.
 */
function logView(row: ContainerRow, request: LogsRequest): LogView {
  const sinceUnixNanos = request.since ? parseRfc3339Nanos(request.since) : undefined;
  if (request.since && sinceUnixNanos === undefined) throw invalidArgument(`since ${JSON.stringify(request.since)} is not an RFC3339 time`);
  if (row.metadata.logFormat === 'cri') return new CriLogView({ timestamps: request.timestamps, ...(sinceUnixNanos !== undefined && { sinceUnixNanos }) });
  if (request.timestamps || sinceUnixNanos !== undefined) {
    throw failedPrecondition(`container ${row.id} was made before kts kept times in its log (raw bytes): --timestamps and --since need a newer container`);
  }
  return new RawLogView();
}

function sendShown(call: ServerWritableStream<LogsRequest, object>, shown: Buffer): void {
  if (shown.length > 0) call.write({ data: shown });
}

const TAIL_BLOCK_BYTES = 64 * 1024;

/**
 * Where the last `lines` lines of `file` start, read backwards in blocks (a last line's own newline
 * ends it); `missing`: how many lines short the file is (wanted from the one rotation kept before it).
 */
export async function tailStart(file: string, lines: number): Promise<{ offset: number; missing: number }> {
  const handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK).catch(() => undefined);
  if (!handle) return { offset: 0, missing: lines };
  try {
    const { size } = await handle.stat();
    if (lines === 0) return { offset: size, missing: 0 };
    const block = Buffer.alloc(TAIL_BLOCK_BYTES);
    let newlines = 0;
    let end = size;
    while (end > 0) {
      const start = Math.max(0, end - TAIL_BLOCK_BYTES);
      const { bytesRead } = await handle.read(block, 0, end - start, start);
      for (let i = bytesRead - 1; i >= 0; i--) {
        const newline = block[i] === 0x0a && start + i !== size - 1;
        if (newline && ++newlines === lines) return { offset: start + i + 1, missing: 0 };
      }
      end = start;
    }
    return { offset: 0, missing: lines - (size > 0 ? newlines + 1 : 0) };
  } finally {
    await handle.close();
  }
}

/** Sends what `view` shows of `file` from `start` to `end` (its current end if not given); returns where it stopped. */
async function sendRange(call: ServerWritableStream<LogsRequest, object>, view: LogView, file: string, start: number, end?: number): Promise<number> {
  const last = end ?? (await stat(file).catch(() => ({ size: 0 }))).size;
  if (last <= start) return start;
  const handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK).catch(() => undefined);
  if (!handle) return start;
  let position = start;
  // The stream owns the handle and closes it when it ends.
  for await (const chunk of handle.createReadStream({ start, end: last - 1 })) {
    sendShown(call, view.push(chunk as Buffer));
    position += (chunk as Buffer).length;
  }
  return position;
}
