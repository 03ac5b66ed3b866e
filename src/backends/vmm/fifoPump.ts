import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';

const POLL_MS = 100;
const CHUNK_BYTES = 64 * 1024;

/**
 * Copies what the guest appends to a file in the share into a host FIFO (containerd's stdio), by
 * polling the file. Guarantee: bytes are forwarded in order while the daemon runs; output written
 * while no daemon runs is forwarded from where the pump stopped only if the same daemon resumes it.
 */
class FifoPump {
  private stopped = false;
  private offset = 0;
  readonly done: Promise<void>;

  constructor(readonly source: string, private readonly fifo: string) {
    this.done = this.run();
  }

  stop(): Promise<void> {
    this.stopped = true;
    return this.done;
  }

  private async run(): Promise<void> {
    let output: FileHandle | undefined;
    let input: FileHandle | undefined;
    try {
      output = await this.openFifo();
      if (!output) return;
      input = await open(this.source, 'r');
      const buffer = Buffer.alloc(CHUNK_BYTES);
      for (;;) {
        const stopping = this.stopped;
        const { bytesRead } = await input.read(buffer, 0, CHUNK_BYTES, this.offset);
        if (bytesRead > 0) {
          this.offset += bytesRead;
          await writeAll(output, buffer.subarray(0, bytesRead));
          continue;
        }
        if (stopping) return;
        await sleep(POLL_MS);
      }
    } catch {
      // The reader went away (EPIPE) or the share was removed: nothing left to forward to.
    } finally {
      await input?.close().catch(() => undefined);
      await output?.close().catch(() => undefined);
    }
  }

  /** Non-blocking, so a FIFO without a reader never ties up a libuv thread; retried until a reader comes. */
  private async openFifo(): Promise<FileHandle | undefined> {
    while (!this.stopped) {
      try {
        return await open(this.fifo, constants.O_WRONLY | constants.O_NONBLOCK);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENXIO') throw error;
        await sleep(POLL_MS);
      }
    }
    return undefined;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function writeAll(output: FileHandle, data: Buffer): Promise<void> {
  let written = 0;
  while (written < data.length) {
    try {
      written += (await output.write(data, written)).bytesWritten;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') throw error;
      await sleep(10);
    }
  }
}

/** The pumps of one VM; stopping drains what is already in the file first. */
export class FifoPumps {
  private readonly pumps = new Set<FifoPump>();

  start(source: string, fifo: string): void {
    const pump = new FifoPump(source, fifo);
    this.pumps.add(pump);
    void pump.done.finally(() => this.pumps.delete(pump));
  }

  async stopUnder(dir: string): Promise<void> {
    await Promise.all([...this.pumps].filter((pump) => pump.source.startsWith(dir + path.sep)).map((pump) => pump.stop()));
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.pumps].map((pump) => pump.stop()));
  }
}
