import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { crashPoint } from '../../core/crashPoints.js';
import { deadlineExceeded, internal, invalidArgument, unavailable } from '../../core/errors.js';
import type { PodLinuxOptions, StdioPaths } from '../../core/sandboxer.js';
import { sandboxInitArgs } from '../../oci/podLinux.js';
import type { SandboxWatch } from './exitWatcher.js';
import type { SandboxPaths } from './paths.js';
import { writeFileAtomic } from '../../host/files.js';
import { formatIdentity, readPidFile, readProcessIdentity, type ProcessIdentity } from '../../host/procfs.js';

/** Requests are written to the ctl FIFO in one write; up to PIPE_BUF bytes that write is atomic. */
const PIPE_BUF = 4096;
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface InitLaunch {
  initBinary: string;
  paths: SandboxPaths;
  hostname: string;
  netnsPath?: string;
  /** Host namespaces and sysctls of the pod (kts-sandbox-init's --host-* and --sysctl). */
  linux?: PodLinuxOptions;
  /** Called if the init exits while this daemon is its parent. */
  onExit?: () => void;
}

export interface LaunchedInit {
  identity: ProcessIdentity;
  /** Detached and unref'd: the init outlives the daemon; 'exit' only fires while this daemon lives. */
  child: ChildProcess;
}

export async function spawnSandboxInit(launch: InitLaunch): Promise<LaunchedInit> {
  const args = ['--dir', launch.paths.dir, '--hostname', launch.hostname];
  if (launch.netnsPath !== undefined) args.push('--netns', launch.netnsPath);
  args.push(...sandboxInitArgs(launch.linux));
  const log = await open(launch.paths.initLog, 'a');
  let child: ChildProcess;
  try {
    // Its own session and process group: a signal to the daemon's group must not end the pods.
    child = spawn(launch.initBinary, args, {
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
      env: { PATH: process.env['PATH'] ?? DEFAULT_PATH },
    });
    if (launch.onExit) child.once('exit', launch.onExit);
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (error) => reject(internal(`cannot start ${launch.initBinary}: ${error.message}`, error)));
    });
  } finally {
    await log.close();
  }
  child.unref();
  crashPoint('process.spawned', 'kts-sandbox-init runs; init.pid is not written');
  const identity = child.pid === undefined ? undefined : await readProcessIdentity(child.pid);
  if (identity === undefined) throw internal(`kts-sandbox-init exited at once: ${await initLogTail(launch.paths)}`);
  await writeFileAtomic(launch.paths.initPid, formatIdentity(identity));
  return { identity, child };
}

/** The init writes holder.pid last, once the pod's namespaces and the ctl FIFO exist. */
export async function waitForHolder(paths: SandboxPaths, initExited: Promise<void>, deadlineMs: number): Promise<number> {
  let initGone = false;
  void initExited.then(() => (initGone = true), () => undefined);
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const holderPid = await readPidFile(paths.holderPid);
    if (holderPid !== undefined) return holderPid;
    if (initGone) throw internal(`kts-sandbox-init exited before the sandbox was ready: ${await initLogTail(paths)}`);
    if (Date.now() > deadline) throw deadlineExceeded(`sandbox not ready after ${deadlineMs} ms: ${await initLogTail(paths)}`);
    await sleep(10);
  }
}

export async function initLogTail(paths: SandboxPaths, maxChars = 2000): Promise<string> {
  try {
    const text = (await readFile(paths.initLog, 'utf8')).trim();
    return text.length > 0 ? text.slice(-maxChars) : '(init.log is empty)';
  } catch {
    return '(no init.log)';
  }
}

export interface SandboxCommandResult {
  /** Exit code, or 128 + signal. */
  status: number;
  /** Why the init could not start the command (open of a stdio path or exec failed). */
  startError?: string;
  /** What the command wrote to the log file it was given. */
  logText: string;
}

/**
 * Runs a command as a child of the sandbox's init (so that whatever it leaves behind is reaped
 * there) and waits for its exit. buildArgv receives a private log file path for the command.
 */
export async function runInSandbox(
  paths: SandboxPaths,
  watch: SandboxWatch,
  buildArgv: (logFile: string) => string[],
  stdio: StdioPaths,
): Promise<SandboxCommandResult> {
  const reqId = `${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
  const logFile = join(paths.reqDir, `${reqId}.log`);
  const line = requestLine(reqId, stdio, buildArgv(logFile));
  const withdraw = new AbortController();
  const result = watch.requests.waitFor(`${reqId}.exit`, withdraw.signal);
  result.catch(() => undefined); // withdrawn if the write fails; the race below reports every other outcome
  let exitText: string | undefined;
  try {
    await writeRequest(paths, line);
    exitText = await Promise.race([result, watch.initExited().then(() => undefined)]);
  } finally {
    withdraw.abort(new Error('no longer waited for'));
  }
  return collectResult(paths, reqId, logFile, exitText);
}

function requestLine(reqId: string, stdio: StdioPaths, argv: string[]): string {
  const stdioFields = [stdio.stdin, stdio.stdout, stdio.stderr].map((path) => {
    if (path === undefined || path === '') return '-';
    if (!path.startsWith('/')) throw invalidArgument(`stdio path "${path}" must be absolute`);
    return path;
  });
  const fields = [reqId, ...stdioFields, ...argv];
  if (fields.some((field) => field.length === 0 || /[\t\n\0]/.test(field))) {
    throw invalidArgument('stdio paths and arguments must be non-empty and contain no tab, newline or NUL');
  }
  const line = `${fields.join('\t')}\n`;
  if (Buffer.byteLength(line) >= PIPE_BUF) throw invalidArgument(`request to the sandbox init exceeds ${PIPE_BUF} bytes`);
  return line;
}

async function writeRequest(paths: SandboxPaths, line: string): Promise<void> {
  let ctl;
  try {
    // Non-blocking: with no reader (the init is gone) open fails with ENXIO instead of hanging.
    ctl = await open(paths.ctl, constants.O_WRONLY | constants.O_NONBLOCK);
  } catch (error) {
    throw unavailable(`the sandbox init is not running (${(error as NodeJS.ErrnoException).code ?? 'open failed'})`);
  }
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await ctl.write(line);
        return;
      } catch (error) {
        // A full pipe: the init is busy forking; it drains the FIFO between requests.
        if ((error as NodeJS.ErrnoException).code !== 'EAGAIN' || attempt >= 500) throw error;
        await sleep(10);
      }
    }
  } finally {
    await ctl.close();
  }
}

async function collectResult(paths: SandboxPaths, reqId: string, logFile: string, exitSeen: string | undefined): Promise<SandboxCommandResult> {
  const base = join(paths.reqDir, reqId);
  const read = (path: string) => readFile(path, 'utf8').catch(() => undefined);
  // The init may have written the result just before it exited, after our last look.
  const [exitText, startError, logText] = await Promise.all([exitSeen ?? read(`${base}.exit`), read(`${base}.err`), read(logFile)]);
  await Promise.all([`${base}.exit`, `${base}.err`, logFile].map((path) => rm(path, { force: true })));
  if (exitText === undefined) throw unavailable('the sandbox init exited before the command finished');
  return { status: Number(exitText.trim()), startError: startError?.trim(), logText: logText ?? '' };
}

export { writeFileAtomic };
