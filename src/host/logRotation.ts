import { constants } from 'node:fs';
import { lstat, open, rename, rm, type FileHandle } from 'node:fs/promises';

/**
 * Copy-truncate rotation for files that someone else keeps open for appending (a container's stdout
 * opened O_APPEND, QEMU's console): the writer never reopens, so the file is copied and then truncated
 * in place, and O_APPEND writes carry on at the new end. What is written between the last copy and
 * the truncate is lost (as with logrotate's copytruncate); the window is the copy of at most
 * `maxBytes`, a few milliseconds.
 */

const CHUNK_BYTES = 64 * 1024;
// Never follow a link at the last component, never block on a FIFO: the file's content is untrusted.
const OPEN_FLAGS = constants.O_RDWR | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** `<file>.1`: the one rotated copy kept beside a log. */
export const rotatedPath = (file: string) => `${file}.1`;

/**
 * If `file` (a regular file) is larger than `maxBytes`, puts its last `maxBytes` into `<file>.1`
 * (replacing the previous copy) and truncates it to 0. Resolves to whether it rotated; a missing
 * file is not an error (its container may just have been deleted).
 */
export async function rotateIfOver(file: string, maxBytes: number): Promise<boolean> {
  // A cheap look first: most passes find every log under the limit. The open below decides for real.
  const seen = await lstat(file).catch(() => undefined);
  if (!seen || seen.size <= maxBytes) return false;
  const handle = await open(file, OPEN_FLAGS).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (!handle) return false;
  try {
    const info = await handle.stat();
    if (!info.isFile() || info.size <= maxBytes) return false;
    await copyTail(handle, info.size, maxBytes, rotatedPath(file));
    await handle.truncate(0);
    return true;
  } finally {
    await handle.close();
  }
}

/** Copies the last `maxBytes` before `size` into a fresh `target` (replaced atomically, never followed if a link). */
async function copyTail(source: FileHandle, size: number, maxBytes: number, target: string): Promise<void> {
  const tmp = `${target}.tmp`;
  await rm(tmp, { force: true });
  const out = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    await copyRange(source, out, Buffer.alloc(CHUNK_BYTES), await lineStartFrom(source, size - maxBytes, size), size);
    await out.close();
  } catch (error) {
    await out.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw error;
  }
  await rename(tmp, target);
}

/**
 * The first line start at or after `from` (0 when `from` <= 0), so the copy never begins with half a
 * line (a CRI log's reader would find half a record); `from` itself when no newline follows within a chunk.
 */
async function lineStartFrom(source: FileHandle, from: number, size: number): Promise<number> {
  if (from <= 0) return 0;
  const buffer = Buffer.alloc(Math.min(CHUNK_BYTES, size - from + 1));
  const { bytesRead } = await source.read(buffer, 0, buffer.length, from - 1);
  const newline = buffer.subarray(0, bytesRead).indexOf(0x0a);
  return newline < 0 ? from : from - 1 + newline + 1;
}

async function copyRange(source: FileHandle, out: FileHandle, buffer: Buffer, from: number, to: number): Promise<number> {
  let position = from;
  while (position < to) {
    const { bytesRead } = await source.read(buffer, 0, Math.min(buffer.length, to - position), position);
    if (bytesRead === 0) break;
    await out.write(buffer, 0, bytesRead);
    position += bytesRead;
  }
  return position;
}

export interface LogRotation {
  stop(): void;
}

/**
 * Every `intervalMs`, rotates each file `files()` names that grew past `maxBytes`. One pass at a time;
 * a failure is reported and the next pass tries again. The returned handle owns the timer.
 */
export function startLogRotation(options: {
  intervalMs: number;
  maxBytes: number;
  files: () => string[];
  onError: (file: string, error: unknown) => void;
}): LogRotation {
  let running = false;
  const pass = async () => {
    if (running) return;
    running = true;
    try {
      for (const file of options.files()) await rotateIfOver(file, options.maxBytes).catch((error: unknown) => options.onError(file, error));
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void pass(), options.intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
