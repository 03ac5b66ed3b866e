import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { unavailable } from '../../core/errors.js';
import type { ProcessExit } from '../../core/sandboxer.js';
import { FileArrivals } from './fileArrivals.js';
import type { SandboxPaths } from './paths.js';
import { isProcessAlive, parseIdentity, readPidFile, type ProcessIdentity } from '../../host/procfs.js';

/** containerd's value for "the process is gone but nobody recorded how it ended". */
export const UNKNOWN_EXIT_STATUS = 255;

const INIT_LIVENESS_INTERVAL_MS = 500;

/** Reads `exits/<pid>` as sandbox-init.c writes it: "<status>\n<unix ms>\n". */
export async function readExitFile(path: string): Promise<ProcessExit | undefined> {
  try {
    return parseExit(await readFile(path, 'utf8'));
  } catch {
    return undefined;
  }
}

function parseExit(text: string): ProcessExit | undefined {
  const [status, unixMs] = text.split('\n').map(Number);
  if (!Number.isInteger(status)) return undefined;
  return { exitStatus: status as number, exitedAt: new Date(Number.isFinite(unixMs) ? (unixMs as number) : Date.now()) };
}

export async function readInitIdentity(paths: SandboxPaths): Promise<ProcessIdentity | undefined> {
  try {
    return parseIdentity(await readFile(paths.initPid, 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * Everything the daemon waits for in one sandbox: exit files of its processes, results of ctl
 * requests, and the end of its init. Works the same for a sandbox this daemon started and for one
 * found after a restart, whose exits may already be on disk.
 */
export class SandboxWatch {
  readonly exits: FileArrivals;
  readonly requests: FileArrivals;
  private initGone: Promise<void> | undefined;
  private markInitGone: (() => void) | undefined;
  private abandonInitWait: ((error: Error) => void) | undefined;
  private livenessTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly paths: SandboxPaths) {
    this.exits = new FileArrivals(paths.exitsDir);
    this.requests = new FileArrivals(paths.reqDir, 250);
  }

  /** Resolves when kts-sandbox-init has exited; after that no exit or request result can appear. */
  initExited(): Promise<void> {
    this.initGone ??= new Promise<void>((resolve, reject) => {
      this.markInitGone = resolve;
      this.abandonInitWait = reject;
      this.livenessTimer = setInterval(() => void this.checkInit(), INIT_LIVENESS_INTERVAL_MS);
      void this.checkInit();
    });
    // Only close() rejects it, and then every caller that awaits it hears about it.
    this.initGone.catch(() => undefined);
    return this.initGone;
  }

  /** A faster path than polling, for the daemon that is the init's parent and sees its 'exit'. */
  notifyInitExited(): void {
    if (this.closed) return;
    void this.initExited();
    this.stopLiveness();
  }

  /** The exit recorded for pid, or UNKNOWN_EXIT_STATUS when the init ended without recording one. */
  async waitProcessExit(pid: number): Promise<ProcessExit> {
    const name = String(pid);
    const withdraw = new AbortController();
    let content: string | undefined;
    try {
      content = await Promise.race([this.exits.waitFor(name, withdraw.signal), this.initExited().then(() => undefined)]);
    } finally {
      withdraw.abort(new Error('no longer waited for'));
    }
    // The init may have written the file just before it exited, after our last look.
    const recorded = content !== undefined ? parseExit(content) : await readExitFile(join(this.paths.exitsDir, name));
    return recorded ?? { exitStatus: UNKNOWN_EXIT_STATUS, exitedAt: new Date() };
  }

  /** The holder's recorded exit once the init is gone: the sandbox's own exit. */
  async waitSandboxExit(): Promise<ProcessExit> {
    await this.initExited();
    const holderPid = await readPidFile(this.paths.holderPid);
    const recorded = holderPid === undefined ? undefined : await readExitFile(join(this.paths.exitsDir, String(holderPid)));
    return recorded ?? { exitStatus: UNKNOWN_EXIT_STATUS, exitedAt: new Date() };
  }

  /** The sandbox directory is about to be removed: settle every waiter with what is on disk. */
  async settle(): Promise<void> {
    await this.exits.settle('the sandbox was removed');
    await this.requests.settle('the sandbox was removed');
  }

  close(): void {
    this.closed = true;
    this.clearLivenessTimer();
    this.abandonInitWait?.(unavailable('the sandboxer was closed'));
    this.exits.close();
    this.requests.close();
  }

  private async checkInit(): Promise<void> {
    const init = await readInitIdentity(this.paths);
    if (init === undefined || !(await isProcessAlive(init))) this.stopLiveness();
  }

  private stopLiveness(): void {
    this.clearLivenessTimer();
    this.markInitGone?.();
  }

  private clearLivenessTimer(): void {
    if (this.livenessTimer) clearInterval(this.livenessTimer);
    this.livenessTimer = undefined;
  }
}
