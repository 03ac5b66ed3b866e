import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, rename, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { regularFileBeneath } from '../host/beneath.js';
import { CriLineSplitter, type LogStream } from '../host/criLog.js';

const POLL_MS = 100;
const CHUNK_BYTES = 64 * 1024;
/** How long a stopping pump may take to forward the rest: a guest can have written much, a reader can stall. */
const STOP_DRAIN_MS = 10_000;

/**
 * What a host pump records, so a restarted daemon resumes it. `out`: the share file, the FIFO it feeds
 * and how far it got (after each chunk). `in`: the FIFO it reads and the share file it appends to.
 * Kept outside the share: the guest writes the share and must never be able to point a pump at
 * another host file.
 */
interface PumpState {
  direction: 'out' | 'in';
  /** Host pumps: relative to the share, opened beneath it (never followed out of it, even after a restart). */
  source: string;
  /** With `log`: the CRI log file (kts's own, a regular file) the pump appends records to. */
  fifo: string;
  offset: number;
  /** `out` only: the output is this stream's CRI records in the log file `fifo`, not bytes into a FIFO. */
  log?: LogStream;
  /** `in` only: created in the share when the FIFO's writer is gone, so the guest ends the stream. */
  endMarker?: string;
}

/** Written aside and renamed, so a crash leaves the old state or the new one, never half of one. Its directory must exist. */
async function saveState(file: string, state: PumpState): Promise<void> {
  await writeFile(`${file}.tmp`, JSON.stringify(state));
  await rename(`${file}.tmp`, file);
}

/** Opens a file the guest may have tampered with; the default follows no symlink in the last component only. */
export type SourceOpener = (source: string, flags: number) => Promise<FileHandle>;

const openNoFollow: SourceOpener = (source, flags) => open(source, flags | constants.O_NOFOLLOW);

export interface FileToFifoOptions {
  /** How `source` is opened: on the host, beneath the share (openBeneath), since the guest owns every component of it. */
  openSource?: SourceOpener;
  /**
   * After at least this many bytes were forwarded since the last time, `release(offset)` is called to free
   * the disk space of what is already forwarded (host: punch a hole), so a chatty container cannot fill the disk.
   */
  releaseEveryBytes?: number;
  release?: (offset: number) => Promise<void>;
  /** Where to record progress (host side); none in the guest, whose agent lives as long as the VM. */
  stateFile?: string;
  offset?: number;
  /** Once this file exists and everything before it is forwarded, the FIFO is closed: its reader sees end of file. */
  endMarker?: string;
  /** How long stop() may take to forward the rest (default STOP_DRAIN_MS). */
  stopDrainMs?: number;
  /**
   * The target is a CRI log file (a regular file of kts's own), not a FIFO: each line becomes a record
   * of this stream, timed when the host read it (a line written while no daemon ran is timed when the
   * next one forwards it). A line still unfinished when the file has nothing more is written as a P record.
   */
  log?: LogStream;
}

/**
 * Copies what is appended to a file into a FIFO, by polling the file: the guest's output in the share
 * into containerd's host FIFO, and (in the guest) the host's stdin in the share into the container's
 * FIFO. Guarantee: bytes are forwarded in order; after a daemon crash the next daemon resumes from the
 * last offset it recorded, so a chunk forwarded just before the crash may be forwarded twice, and
 * nothing is lost (at least once).
 */
export class FileToFifoPump {
  private stopped = false;
  private stopDeadline = Infinity;
  private offset: number;
  private readonly splitter?: CriLineSplitter;
  readonly done: Promise<void>;

  constructor(readonly source: string, private readonly fifo: string, private readonly options: FileToFifoOptions = {}) {
    this.offset = options.offset ?? 0;
    if (options.log) this.splitter = new CriLineSplitter(options.log);
    this.done = this.run();
  }

  private async saveState(): Promise<void> {
    // Bytes held for an unfinished line are not forwarded yet: a restarted daemon reads them again.
    const offset = this.offset - (this.splitter?.heldBytes ?? 0);
    if (this.options.stateFile) await saveState(this.options.stateFile, { direction: 'out', source: this.source, fifo: this.fifo, offset, ...(this.options.log && { log: this.options.log }) });
  }

  /** The bytes to write for what was read: themselves, or the CRI records they complete. */
  private output(chunk: Buffer): Buffer {
    return this.splitter ? Buffer.concat(this.splitter.push(chunk)) : chunk;
  }

  /** An unfinished line, once the file has no more for now, as a P record. */
  private async flushLine(output: FileHandle, expired: () => boolean): Promise<void> {
    const records = this.splitter?.flush() ?? [];
    if (records.length === 0) return;
    await writeAll(output, Buffer.concat(records), expired);
    await this.saveState();
  }

  /**
   * Forwards what the file holds now (not what the guest appends afterwards), at most for STOP_DRAIN_MS,
   * and closes the FIFO: its reader sees end of file.
   */
  stop(): Promise<void> {
    if (!this.stopped) this.stopDeadline = Date.now() + (this.options.stopDrainMs ?? STOP_DRAIN_MS);
    this.stopped = true;
    return this.done;
  }

  private async run(): Promise<void> {
    let output: FileHandle | undefined;
    let input: FileHandle | undefined;
    const expired = () => Date.now() > this.stopDeadline;
    try {
      if (this.options.stateFile) await mkdir(path.dirname(this.options.stateFile), { recursive: true });
      await this.saveState();
      output = await this.openFifo();
      if (!output) return;
      // The guest owns the share: a symlink it put there must not make the daemon read a host file.
      input = await (this.options.openSource ?? openNoFollow)(this.source, constants.O_RDONLY);
      const buffer = Buffer.alloc(CHUNK_BYTES);
      let ending = false;
      let limit = Infinity;
      for (;;) {
        const stopping = this.stopped;
        if (stopping && limit === Infinity) limit = (await input.stat()).size;
        if (this.offset >= limit || expired()) return await this.flushLine(output, expired);
        const { bytesRead } = await input.read(buffer, 0, Math.min(CHUNK_BYTES, limit - this.offset), this.offset);
        if (bytesRead > 0) {
          await writeAll(output, this.output(buffer.subarray(0, bytesRead)), expired);
          this.offset += bytesRead;
          await this.saveState();
          await this.releaseForwarded();
          continue;
        }
        await this.flushLine(output, expired);
        // The marker is written after the last byte: one more empty read after seeing it, and all is forwarded.
        if (stopping || ending) return;
        if (this.options.endMarker && (await lstat(this.options.endMarker).catch(() => undefined))) {
          ending = true;
          continue;
        }
        await sleep(POLL_MS);
      }
    } catch {
      // The reader went away (EPIPE) or the share was removed: nothing left to forward to.
    } finally {
      await closeQuietly(input, output);
    }
  }

  private released = 0;

  private async releaseForwarded(): Promise<void> {
    const { release, releaseEveryBytes } = this.options;
    // Bytes held for an unfinished line are not forwarded: they stay until a record has them.
    const forwarded = this.offset - (this.splitter?.heldBytes ?? 0);
    if (!release || !releaseEveryBytes || forwarded - this.released < releaseEveryBytes) return;
    await release(forwarded);
    this.released = forwarded;
  }

  /** Non-blocking, so a FIFO without a reader never ties up a libuv thread; retried until a reader comes. */
  private async openFifo(): Promise<FileHandle | undefined> {
    // A log of kts's own: appended to, never followed if a link.
    if (this.options.log) return open(this.fifo, constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW | constants.O_NONBLOCK);
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
    const valid = (state.direction === 'out' || state.direction === 'in') && typeof state.source === 'string' && typeof state.fifo === 'string'
      && Number.isSafeInteger(state.offset) && state.offset! >= 0 && (state.endMarker === undefined || typeof state.endMarker === 'string')
      && (state.log === undefined || state.log === 'stdout' || state.log === 'stderr');
    return valid ? (state as PumpState) : undefined;
  } catch {
    return undefined;
  }
}

async function closeQuietly(...handles: Array<FileHandle | undefined>): Promise<void> {
  for (const handle of handles) await handle?.close().catch(() => undefined);
}

/** Into a non-blocking FIFO; gives up once `expired()` says so while the reader takes nothing. */
async function writeAll(output: FileHandle, data: Buffer, expired = () => false): Promise<void> {
  let written = 0;
  while (written < data.length) {
    try {
      written += (await output.write(data, written)).bytesWritten;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN' || expired()) throw error;
      await sleep(10);
    }
  }
}

/**
 * Appends what is written into a host FIFO (containerd's stdin) to a file in the share, for the guest's
 * pump to feed the container. When the FIFO's writer closes it, or on `end()` (Task CloseIO), the
 * end marker is created. A FIFO nobody opened yet reads as empty too: only after a writer was seen
 * (data, or EAGAIN: open but silent) does an empty read mean the end.
 */
export class FifoToFilePump {
  private stopped = false;
  private ended = false;
  readonly done: Promise<void>;

  constructor(readonly fifo: string, readonly source: string, private readonly endMarker: string, private readonly stateFile: string, private readonly openShare: SourceOpener = openNoFollow) {
    this.done = this.run();
  }

  stop(): Promise<void> {
    this.stopped = true;
    return this.done;
  }

  /** The writer is done (Task CloseIO): what is already in the FIFO is forwarded, then the stream ends. */
  async end(): Promise<void> {
    this.ended = true;
    await this.done;
  }

  private async run(): Promise<void> {
    let input: FileHandle | undefined;
    let output: FileHandle | undefined;
    try {
      await mkdir(path.dirname(this.stateFile), { recursive: true });
      await saveState(this.stateFile, { direction: 'in', source: this.source, fifo: this.fifo, offset: 0, endMarker: this.endMarker });
      input = await open(this.fifo, constants.O_RDONLY | constants.O_NONBLOCK);
      output = await this.openShare(this.source, constants.O_WRONLY | constants.O_APPEND);
      const buffer = Buffer.alloc(CHUNK_BYTES);
      let writerSeen = false;
      while (!this.stopped) {
        const ending = this.ended;
        const bytesRead = await input.read(buffer, 0, CHUNK_BYTES, null).then((r) => r.bytesRead, (error: NodeJS.ErrnoException) => {
          if (error.code !== 'EAGAIN') throw error;
          return -1;
        });
        if (bytesRead > 0) {
          writerSeen = true;
          await writeAll(output, buffer.subarray(0, bytesRead));
          continue;
        }
        if (bytesRead < 0) writerSeen = true;
        if (ending || (bytesRead === 0 && writerSeen)) {
          await (await this.openShare(this.endMarker, constants.O_WRONLY | constants.O_CREAT)).close();
          return;
        }
        await sleep(POLL_MS);
      }
    } catch {
      // The share or the FIFO was removed: the container is going away.
    } finally {
      await closeQuietly(input, output);
    }
  }
}

type HostPump = FileToFifoPump | FifoToFilePump;

/** Where a VM's host pumps find the share: every share file is opened beneath `shareDir`, by its path relative to it. */
export interface ShareAccess {
  shareDir: string;
  open: SourceOpener;
  /** Frees the blocks of a share file below `offset`; called every `releaseEveryBytes` forwarded. */
  release: (source: string, offset: number) => Promise<void>;
  releaseEveryBytes: number;
}

/**
 * The host pumps of one VM, their state under `stateDir` (outside the share); stopping drains what is
 * already in the file first. Sources are paths relative to the share, opened only beneath it.
 */
export class FifoPumps {
  private readonly pumps = new Set<HostPump>();

  constructor(private readonly stateDir: string, private readonly share: ShareAccess) {}

  /**
   * `source` is relative to the share, e.g. `c/<container>/stdout`, and names the pump too. With `log`,
   * `fifo` is a CRI log file of kts's own that gets this stream's records.
   */
  start(source: string, fifo: string, offset = 0, log?: LogStream): void {
    const { open: openSource, release, releaseEveryBytes } = this.share;
    const options = { stateFile: this.stateFile(source), offset, openSource, releaseEveryBytes, release: (at: number) => release(source, at), ...(log && { log }) };
    this.track(new FileToFifoPump(source, fifo, options));
  }

  /** Host FIFO `fifo` (stdin) into `source` in the share; `endMarker` (in the share too) says the guest that the stream ended. */
  startInput(fifo: string, source: string, endMarker: string): void {
    this.track(new FifoToFilePump(fifo, source, endMarker, this.stateFile(source), this.share.open));
  }

  /** Task CloseIO: the input pump whose share file is `source` forwards what is left and ends the stream. */
  async endInput(source: string): Promise<void> {
    const pump = [...this.pumps].find((candidate): candidate is FifoToFilePump => candidate instanceof FifoToFilePump && candidate.source === source);
    await pump?.end();
  }

  private stateFile(source: string): string {
    return path.join(this.stateDir, `${source}.json`);
  }

  private track(pump: HostPump): void {
    this.pumps.add(pump);
    void pump.done.finally(() => this.pumps.delete(pump));
  }

  /**
   * After a daemon restart: restarts every recorded pump whose FIFO still exists, from the offset it
   * recorded; the number resumed. Only the daemon's own records say which share file a pump reads,
   * and it is opened beneath the share: a directory the guest swapped meanwhile leads nowhere else.
   */
  async resume(): Promise<number> {
    let resumed = 0;
    const files = await readdir(this.stateDir, { recursive: true }).catch(() => [] as string[]);
    for (const file of files.filter((name) => name.endsWith('.json'))) {
      const state = parseState(await readFile(path.join(this.stateDir, file), 'utf8').catch(() => ''));
      const source = file.slice(0, -'.json'.length);
      if (!state || [...this.pumps].some((pump) => pump.source === source)) continue;
      const target = await lstat(state.fifo).catch(() => undefined);
      if (!(state.log ? target?.isFile() : target?.isFIFO())) continue;
      if (state.direction === 'out') this.start(source, state.fifo, state.offset, state.log);
      else if (state.endMarker && !(await regularFileBeneath(this.share.shareDir, state.endMarker))) this.startInput(state.fifo, source, state.endMarker);
      else continue;
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
