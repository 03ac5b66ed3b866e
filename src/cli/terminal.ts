// `kts exec -t`: a command in a running container on a terminal of its own, as `crictl exec -it` gives
// one. The daemon's Task API runs it (Exec with a terminal, Start, ResizePty, Wait, Delete; kts-console
// holds the pty) and two FIFOs in a private directory of this process carry its input and output.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants, fstatSync, openSync, rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { Socket } from 'node:net';
import { constants as osConstants, tmpdir } from 'node:os';
import path from 'node:path';
import { jsonAny } from '../grpc/wire.js';
import { DEFAULT_PATH } from '../oci/containerSpec.js';
import { ClientError, type KtsClient } from './client.js';

const OCI_PROCESS_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';
/** What the end of the local stdin becomes: a terminal's end of file, as kts-console sends when its stdin closes. */
const END_OF_TRANSMISSION = Buffer.from([0x04]);
/** After the exit, output still coming is copied; this long a silence ends it (a background job may hold the terminal). */
const OUTPUT_QUIET_AFTER_EXIT_MS = 2_000;
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

export interface TerminalExec {
  containerId: string;
  args: string[];
  /** Copy the local stdin to the command (-i); without it the command's terminal gets no input. */
  stdin: boolean;
}

interface ExecIds { id: string; execId: string }
interface TerminalSize { width: number; height: number }
interface Fifos { dir: string; stdin?: string; stdout: string }

/** The local terminal's size, if stdout is one. */
function localSize(): TerminalSize | undefined {
  const { isTTY, columns, rows } = process.stdout;
  return isTTY && columns > 0 && rows > 0 ? { width: columns, height: rows } : undefined;
}

/** The command's process: as the non-tty `kts exec` runs it (root, `/`, PATH), plus TERM and a terminal of the local size. */
function terminalProcess(args: string[], size: TerminalSize | undefined) {
  return { args, cwd: '/', env: [DEFAULT_PATH, 'TERM=xterm'], user: { uid: 0, gid: 0 }, terminal: true, ...(size && { consoleSize: size }) };
}

/** The exec's FIFOs in a new directory of mode 0700: no other user reaches them. */
async function makeFifos(withStdin: boolean): Promise<Fifos> {
  const dir = await mkdtemp(path.join(tmpdir(), 'kts-tty-'));
  const fifos = { dir, stdout: path.join(dir, 'stdout'), ...(withStdin && { stdin: path.join(dir, 'stdin') }) };
  try {
    execFileSync('mkfifo', ['-m', '0600', fifos.stdout, ...(fifos.stdin ? [fifos.stdin] : [])], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw new ClientError(`cannot make the terminal's FIFOs in ${dir}: ${(error as { stderr?: Buffer }).stderr?.toString().trim() || String(error)}`);
  }
  return fifos;
}

/**
 * Our end of the output FIFO, read-only and non-blocking: opening never waits, reading before
 * kts-console opens its end just waits (Linux reports no hang-up to a reader until a writer has come
 * and gone), and the stream ends when kts-console closes it, so the output is then whole.
 */
function openOutput(file: string): Socket {
  return new Socket({ fd: openSync(file, constants.O_RDONLY | constants.O_NONBLOCK), readable: true, writable: false });
}

/**
 * Our end of the input FIFO, read-write so opening never waits and keys typed before kts-console
 * opens its end wait in the FIFO. It must not read, or it takes back its own writes.
 */
function openInput(file: string): Socket {
  const input = new Socket({ fd: openSync(file, constants.O_RDWR | constants.O_NONBLOCK), readable: false, writable: true });
  input.on('error', () => undefined); // the command has gone; what it did not read no longer matters
  return input;
}

/** Resolves when the output has ended, or once it has been quiet for OUTPUT_QUIET_AFTER_EXIT_MS. */
function outputDone(output: Socket): Promise<void> {
  return new Promise((resolve) => {
    if (output.readableEnded || output.destroyed) return resolve();
    let timer = setTimeout(done, OUTPUT_QUIET_AFTER_EXIT_MS);
    const quietAgain = () => { clearTimeout(timer); timer = setTimeout(done, OUTPUT_QUIET_AFTER_EXIT_MS); };
    function done() {
      clearTimeout(timer);
      output.off('data', quietAgain);
      resolve();
    }
    output.on('data', quietAgain);
    output.once('end', done);
    output.once('close', done);
  });
}

/**
 * Raw input, and output shown as the command's terminal wrote it: Node's raw mode keeps the \n → \r\n
 * translation, which would break full-screen programs (they move the cursor down with a bare \n).
 * setRawMode(false) undoes both: libuv puts back the whole terminal state it saved.
 */
function makeLocalTerminalRaw(): void {
  process.stdin.setRawMode(true);
  const output = process.stdout.isTTY ? fstatSync(1) : undefined;
  if (output?.rdev === fstatSync(0).rdev) execFileSync('stty', ['-opost'], { stdio: [0, 'ignore', 'ignore'] });
}

function restoreLocalTerminal(): void {
  if (!process.stdin.isTTY || !process.stdin.isRaw) return;
  const ignore = () => undefined; // a terminal that hung up can no longer be set, nor needs to be
  process.stdin.on('error', ignore).setRawMode(false).off('error', ignore);
}

/**
 * The local stdin from now until the returned undo: raw (when it is a terminal) and copied to the
 * command's input as it comes, its end sent as ^D. Raw from before Exec, so what the command writes
 * first is shown as it wrote it, and keys typed ahead wait in the FIFO.
 */
function attachStdin(input: Socket): () => void {
  const sendEnd = () => input.write(END_OF_TRANSMISSION);
  const readFailed = () => undefined; // a terminal that hung up: SIGHUP follows and ends the session
  if (process.stdin.isTTY) makeLocalTerminalRaw();
  process.stdin.pipe(input, { end: false });
  process.stdin.once('end', sendEnd).on('error', readFailed);
  return () => {
    process.stdin.off('end', sendEnd).off('error', readFailed);
    process.stdin.unpipe(input);
    restoreLocalTerminal();
    process.stdin.destroy();
  };
}

/** Resizes the command's terminal with the local one, from now until the returned undo. */
function followLocalSize(client: KtsClient, ids: ExecIds): () => void {
  const resize = () => {
    const size = localSize();
    if (size) client.task.ResizePty!({ ...ids, ...size }).catch(() => undefined); // the terminal may just have closed
  };
  resize();
  process.stdout.on('resize', resize);
  return () => process.stdout.off('resize', resize);
}

/**
 * What ends a session early, until released: SIGINT, SIGTERM or SIGHUP (status 128 + n; a second one
 * ends kts at once), or stdout closing under kts (status 0: every kts command then ends quietly, and
 * here the command must not outlive it). `stop` kills the command. However this process ends, the
 * local terminal is left as it was found and the FIFOs' directory goes.
 */
function guardSession(dir: string, stop: () => void): { stoppedStatus: () => number | undefined; release: () => void } {
  let stoppedStatus: number | undefined;
  const stopWith = (status: number) => {
    if (stoppedStatus !== undefined) return;
    stoppedStatus = status;
    stop();
  };
  const cleanUp = () => { restoreLocalTerminal(); rmSync(dir, { recursive: true, force: true }); };
  const onSignal = (signal: (typeof STOP_SIGNALS)[number]) => {
    if (stoppedStatus === undefined) return stopWith(128 + osConstants.signals[signal]);
    cleanUp();
    process.exit(128 + osConstants.signals[signal]);
  };
  const stdoutListeners = process.stdout.listeners('error') as Array<(error: Error) => void>;
  const onStdoutError = (error: NodeJS.ErrnoException) => (error.code === 'EPIPE' ? stopWith(0) : stdoutListeners.forEach((listener) => listener.call(process.stdout, error)));
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal);
  process.stdout.removeAllListeners('error').on('error', onStdoutError);
  process.once('exit', cleanUp);
  return {
    stoppedStatus: () => stoppedStatus,
    release: () => {
      for (const signal of STOP_SIGNALS) process.off(signal, onSignal);
      process.stdout.off('error', onStdoutError);
      for (const listener of stdoutListeners) process.stdout.on('error', listener);
      process.off('exit', cleanUp);
    },
  };
}

/** A started exec's exit status, once its output is copied; its terminal follows the local size meanwhile. */
async function waitForExit(client: KtsClient, ids: ExecIds, output: Socket): Promise<number> {
  const stopFollowing = followLocalSize(client, ids);
  try {
    const exit = await client.task.Wait!(ids, { deadlineMs: Infinity });
    await outputDone(output);
    return Number(exit.exitStatus);
  } finally {
    stopFollowing();
  }
}

/** Gone however the session ended: killed if it still runs (an error, a signal), then deleted. */
async function removeExec(client: KtsClient, ids: ExecIds, started: boolean): Promise<void> {
  if (started) {
    await client.task.Kill!({ ...ids, signal: osConstants.signals.SIGKILL });
    await client.task.Wait!(ids);
  }
  await client.task.Delete!(ids);
}

/** One `kts exec -t`: the exec's ids, its FIFOs, and whether it has started (then it is killed if kts must stop). */
class TerminalSession {
  private started = false;
  private readonly guard: ReturnType<typeof guardSession>;

  constructor(private readonly client: KtsClient, private readonly ids: ExecIds, private readonly fifos: Fifos) {
    this.guard = guardSession(fifos.dir, () => {
      if (this.started) client.task.Kill!({ ...ids, signal: osConstants.signals.SIGKILL }).catch(() => undefined);
    });
  }

  /** Copies the output to stdout, and stdin if asked to the input, while the exec runs. */
  async run(args: string[]): Promise<number> {
    const output = openOutput(this.fifos.stdout);
    let input: Socket | undefined;
    let detachStdin = () => undefined as void;
    try {
      output.pipe(process.stdout, { end: false });
      input = this.fifos.stdin === undefined ? undefined : openInput(this.fifos.stdin);
      if (input) detachStdin = attachStdin(input);
      return await this.execute(args, output);
    } finally {
      detachStdin();
      output.destroy();
      input?.destroy();
    }
  }

  /** Exec, Start, Wait, Delete: the exit status, or the status the guard stopped the session with. */
  private async execute(args: string[], output: Socket): Promise<number> {
    const { client, ids, fifos } = this;
    const spec = jsonAny(OCI_PROCESS_TYPE_URL, terminalProcess(args, localSize()));
    await client.task.Exec!({ ...ids, terminal: true, stdin: fifos.stdin ?? '', stdout: fifos.stdout, stderr: '', spec });
    try {
      await client.task.Start!(ids);
      this.started = true;
      // Stopped before it started: removeExec kills it now; stopped later: it was killed at once.
      const status = this.guard.stoppedStatus() ?? (await waitForExit(client, ids, output));
      return this.guard.stoppedStatus() ?? status;
    } finally {
      await removeExec(client, ids, this.started).catch(() => undefined); // the daemon may be what failed
    }
  }

  close(): void {
    this.guard.release();
    restoreLocalTerminal();
    rmSync(this.fifos.dir, { recursive: true, force: true });
  }
}

/**
 * Runs `exec.args` in the container on a terminal and copies it to and from this process's stdio;
 * resolves with the command's exit status (128 + n if signal n stopped kts). A sandbox kind without
 * terminals (vmm, wasm) refuses at Exec: the daemon's InvalidArgument is the error.
 */
export async function execInTerminal(client: KtsClient, exec: TerminalExec): Promise<number> {
  const session = new TerminalSession(client, { id: exec.containerId, execId: `kts-tty-${randomBytes(6).toString('hex')}` }, await makeFifos(exec.stdin));
  try {
    return await session.run(exec.args);
  } finally {
    session.close();
  }
}
