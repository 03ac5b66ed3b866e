import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { OutputHolds } from '../core/sandboxer.js';

// Non-blocking: opening a FIFO for reading then returns at once, whether or not a writer has it open.
const READ_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW;

/** OutputHolds with one read-only fd per FIFO, never read from: containerd still gets every byte. */
export class FifoReaderHolds implements OutputHolds {
  private readonly held = new Map<string, FileHandle[]>();

  async hold(containerId: string, paths: string[]): Promise<void> {
    if (this.held.has(containerId)) return;
    const handles: FileHandle[] = [];
    this.held.set(containerId, handles);
    for (const path of paths) {
      const handle = await open(path, READ_FLAGS).catch(() => undefined);
      if (!handle) continue;
      // Released meanwhile (the container already exited), or not a FIFO (a log file of ours): nothing to hold.
      if (this.held.get(containerId) !== handles || !(await handle.stat()).isFIFO()) await handle.close();
      else handles.push(handle);
    }
  }

  release(containerId: string): void {
    const handles = this.held.get(containerId);
    this.held.delete(containerId);
    for (const handle of handles ?? []) void handle.close().catch(() => undefined);
  }

  releaseAll(): void {
    for (const containerId of [...this.held.keys()]) this.release(containerId);
  }
}
