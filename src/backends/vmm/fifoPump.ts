import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, rename, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';

const POLL_MS = 100;
const CHUNK_BYTES = 64 * 1024;

/**
 * What a pump records after each chunk, so a restarted daemon resumes it: the share file, the FIFO it
 * feeds and how far it got. Kept outside the share: the guest writes the share and must never be able
 * to point a pump at another host file.
 */
interface PumpState {
  source: string;
  fifo: string;
  offset: number;
}

/**
 * Copies what the guest appends to a file in the share into a host FIFO (containerd's stdio), by
 * polling the file. Guarantee: bytes are forwarded in order; after a daemon crash the next daemon
 * resumes from the last offset it recorded, so a chunk forwarded just before the crash may be
 * forwarded twice, and nothing is lost (at least once).
 */
class FifoPump {
  private stopped = false;
  readonly done: Promise<void>;

  constructor(readonly source: string, private readonly fifo: string, private readonly stateFile: string, private offset = 0) {
    this.done = this.run();
  }

  /** Written aside and renamed, so a crash leaves the old offset or the new one, never half of one. */
  private async saveState(): Promise<void> {
    const state: PumpState = { source: this.source, fifo: this.fifo, offset: this.offset };
    await writeFile(`${this.stateFile}.tmp`, JSON.stringify(state));
    await rename(`${this.stateFile}.tmp`, this.stateFile);
  }

  stop(): Promise<void> {
    this.stopped = true;
    return this.done;
  }

  private async run(): Promise<void> {
    let output: FileHandle | undefined;
    let input: FileHandle | undefined;
    try {
      await mkdir(path.dirname(this.stateFile), { recursive: true });
      await this.saveState();
      output = await this.openFifo();
      if (!output) return;
      // The guest owns the share: a symlink it put there must not make the daemon read a host file.
      input = await open(this.source, constants.O_RDONLY | constants.O_NOFOLLOW);
      const buffer = Buffer.alloc(CHUNK_BYTES);
      for (;;) {
        const stopping = this.stopped;
        const { bytesRead } = await input.read(buffer, 0, CHUNK_BYTES, this.offset);
        if (bytesRead > 0) {
          await writeAll(output, buffer.subarray(0, bytesRead));
          this.offset += bytesRead;
          await this.saveState();
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

function parseState(text: string): PumpState | undefined {
  try {
    const state = JSON.parse(text) as Partial<PumpState>;
    const valid = typeof state.source === 'string' && typeof state.fifo === 'string' && Number.isSafeInteger(state.offset) && state.offset! >= 0;
    return valid ? { source: state.source!, fifo: state.fifo!, offset: state.offset! } : undefined;
  } catch {
    return undefined;
  }
}

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

/** The pumps of one VM, their state under `stateDir`; stopping drains what is already in the file first. */
export class FifoPumps {
  private readonly pumps = new Set<FifoPump>();

  constructor(private readonly stateDir: string) {}

  /** `name` identifies the stream among this VM's pumps, e.g. `c/<container>/stdout`. */
  start(name: string, source: string, fifo: string, offset = 0): void {
    const pump = new FifoPump(source, fifo, path.join(this.stateDir, `${name}.json`), offset);
    this.pumps.add(pump);
    void pump.done.finally(() => this.pumps.delete(pump));
  }

  /**
   * After a daemon restart: restarts every recorded pump whose share file is under `shareDir` and whose
   * FIFO still exists, from the offset it recorded; the number resumed.
   */
  async resume(shareDir: string): Promise<number> {
    let resumed = 0;
    const files = await readdir(this.stateDir, { recursive: true }).catch(() => [] as string[]);
    for (const file of files.filter((name) => name.endsWith('.json'))) {
      const state = parseState(await readFile(path.join(this.stateDir, file), 'utf8').catch(() => ''));
      if (!state || !state.source.startsWith(shareDir + path.sep) || [...this.pumps].some((pump) => pump.source === state.source)) continue;
      if (!(await lstat(state.fifo).catch(() => undefined))?.isFIFO()) continue;
      this.start(file.slice(0, -'.json'.length), state.source, state.fifo, state.offset);
      resumed += 1;
    }
    return resumed;
  }

  async stopUnder(dir: string): Promise<void> {
    await Promise.all([...this.pumps].filter((pump) => pump.source.startsWith(dir + path.sep)).map((pump) => pump.stop()));
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.pumps].map((pump) => pump.stop()));
  }
}
