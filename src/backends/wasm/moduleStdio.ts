import { constants } from 'node:fs';
import { appendFile, open, stat, type FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { deadlineExceeded } from '../../core/errors.js';
import type { StdioPaths } from '../../core/sandboxer.js';

const FIFO_READER_POLL_MS = 20;

/** The fds a module's WASI stdio uses, owned here; its runner gets copies of them when spawned. */
export interface ModuleStdio {
  fds: { stdin: number; stdout: number; stderr: number };
  close(): Promise<void>;
}

/**
 * Opens a module's stdout and stderr: a regular file is appended to, a FIFO (containerd's) is opened
 * blocking once it has a reader. stdin is /dev/null here: a FIFO for stdin is opened by the module's
 * runner itself (its open blocks until containerd opens the writing end, which must not stall us).
 */
export async function openModuleStdio(stdio: StdioPaths, fifoReaderDeadlineMs: number): Promise<ModuleStdio> {
  const handles: FileHandle[] = [];
  const keep = (handle: FileHandle) => (handles.push(handle), handle.fd);
  const closeAll = async () => void (await Promise.all(handles.map((handle) => handle.close().catch(() => undefined))));
  try {
    const fds = {
      stdin: keep(await open('/dev/null', 'r')),
      stdout: keep(await openOutput(stdio.stdout, fifoReaderDeadlineMs)),
      stderr: keep(await openOutput(stdio.stderr, fifoReaderDeadlineMs)),
    };
    return { fds, close: closeAll };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

async function openOutput(path: string | undefined, fifoReaderDeadlineMs: number): Promise<FileHandle> {
  if (path === undefined) return open('/dev/null', 'w');
  const isFifo = await stat(path).then((stats) => stats.isFIFO(), () => false);
  return isFifo ? openFifoForWriting(path, fifoReaderDeadlineMs) : open(path, 'a');
}

/** A blocking open of a FIFO without a reader would hold a libuv thread; probe without blocking first. */
async function openFifoForWriting(path: string, deadlineMs: number): Promise<FileHandle> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    try {
      const probe = await open(path, constants.O_WRONLY | constants.O_NONBLOCK);
      try {
        // A reader exists now, so this blocking open returns at once; the module needs blocking writes.
        return await open(path, constants.O_WRONLY);
      } finally {
        await probe.close();
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENXIO') throw error;
    }
    if (Date.now() > deadline) throw deadlineExceeded(`no reader opened the FIFO ${path} within ${deadlineMs} ms`);
    await sleep(FIFO_READER_POLL_MS);
  }
}

/** Best effort, never blocking: why a module ended, appended to its stderr for `kts logs` to show. */
export async function appendNotice(path: string | undefined, text: string): Promise<void> {
  if (path === undefined) return;
  try {
    if (!(await stat(path)).isFIFO()) return await appendFile(path, text);
    const fifo = await open(path, constants.O_WRONLY | constants.O_NONBLOCK);
    await fifo.write(text).finally(() => fifo.close());
  } catch {
    // No reader, a full pipe or a removed file: the reason is in the exit record and the event anyway.
  }
}
