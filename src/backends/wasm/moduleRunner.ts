import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { failedPrecondition } from '../../core/errors.js';
import { pagesText } from './moduleMemory.js';
import { encodeEnv, parseReport, ReportLines, type RunnerReport } from './runnerProtocol.js';
import type { ModuleOutcome } from './wasmExit.js';

/** A directory the module sees at `guest`, opened by the runner before it chroots. */
export interface RunnerPreopen {
  guest: string;
  host: string;
  readOnly: boolean;
}

export interface ModuleRunnerOptions {
  runnerBinary: string;
  /** The container's rootfs on the host: the runner chroots into it and reads the module there. */
  rootfs: string;
  /** An empty directory the runner mounts its private tree on, in its own mount namespace. */
  scratchDir: string;
  /** The module's absolute path inside the rootfs. */
  modulePath: string;
  args: string[];
  env: Record<string, string>;
  /** In order: WASI numbers them 3, 4, … */
  preopens: RunnerPreopen[];
  memoryLimitPages: number;
  /** Host fds the caller owns; the runner gets copies as its 0, 1 and 2. */
  stdio: { stdin: number; stdout: number; stderr: number };
  /** containerd's stdin FIFO (or a file), which the runner opens as its fd 0 instead of `stdio.stdin`. */
  stdinPath?: string;
  /** How long loading, compiling and instantiating (with the module's start function) may take. */
  readyTimeoutMs: number;
}

/** Usage of one runner process, read from /proc. */
export interface RunnerUsage {
  residentBytes: number;
  cpuUserNanos: number;
  cpuKernelNanos: number;
}

const CLOCK_TICK_NANOS = 10_000_000; // USER_HZ is 100 on every Linux ABI
/** A runner says at most two things (ready, then how the module ended); more is noise to drop. */
const MAX_REPORTS = 4;
const PAGE_BYTES = 4096;

/** `<repo>/dist/native/kts-wasm-runner`, found from this module's location in src/ or dist/src/. */
export function defaultRunnerBinary(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return join(dir, 'dist', 'native', 'kts-wasm-runner');
}

/**
 * The daemon's handle on one kts-wasm-runner process running one module. `outcome` settles once the
 * process has ended, however it ended; a kill is SIGKILL, which ends it wherever the module is.
 */
export class ModuleRunner {
  readonly outcome: Promise<ModuleOutcome>;
  readonly hostPid: number;
  private readonly child: ChildProcess;
  private readonly control: Readable & Writable;
  private readonly reports: RunnerReport[] = [];
  private readonly listeners = new Set<(report: RunnerReport) => void>();
  private spawnError?: Error;
  private killSignal?: number;
  private lostWhy?: string;
  private ended = false;
  private startRequested = false;

  private constructor(options: ModuleRunnerOptions) {
    this.child = spawn(options.runnerBinary, runnerArgs(options), {
      stdio: [options.stdio.stdin, options.stdio.stdout, options.stdio.stderr, 'pipe'],
      env: {},
    });
    this.hostPid = this.child.pid ?? 0;
    this.control = this.child.stdio[3] as Readable & Writable;
    const lines = new ReportLines();
    this.control.on('data', (chunk: Buffer) => lines.push(chunk).map(parseReport).forEach((report) => report && this.received(report)));
    // A runner that already ended makes the write fail; its end is reported by `close`.
    this.control.on('error', () => undefined);
    this.child.on('error', (error) => (this.spawnError ??= error));
    this.outcome = new Promise((resolve) => this.child.once('close', (code, signal) => {
      this.ended = true;
      resolve(this.describeEnd(code, signal));
    }));
    if (this.hostPid !== 0) this.control.write(encodeEnv(options.env));
  }

  /** Resolves once the module is instantiated and waits for start; rejects with why it cannot run. */
  static async launch(options: ModuleRunnerOptions): Promise<ModuleRunner> {
    const runner = new ModuleRunner(options);
    const problem = await runner.whenReady(options);
    if (problem === undefined) return runner;
    if (runner.hostPid !== 0) {
      runner.child.kill('SIGKILL');
      await runner.outcome;
    }
    throw failedPrecondition(problem);
  }

  private async whenReady(options: ModuleRunnerOptions): Promise<string | undefined> {
    if (this.hostPid === 0) return `the wasm runner ${options.runnerBinary} cannot be started (run scripts/build-native.sh)`;
    let timer: NodeJS.Timeout | undefined;
    const first = new Promise<RunnerReport | 'timeout' | 'ended'>((resolve) => {
      this.listeners.add(resolve);
      void this.outcome.then(() => resolve('ended'));
      timer = setTimeout(() => resolve('timeout'), options.readyTimeoutMs);
    });
    const report = await first.finally(() => clearTimeout(timer));
    this.listeners.clear();
    if (report === 'timeout') return `the module was not ready within ${options.readyTimeoutMs} ms (does its start function loop, or did nobody open its stdin FIFO for writing?)`;
    if (report === 'ended') return `the wasm runner ended before the module was ready${this.spawnError ? `: ${this.spawnError.message}` : ''}`;
    switch (report.type) {
      case 'ready':
        return undefined;
      case 'refused':
        return `module ${options.modulePath}: ${report.reason}`;
      case 'memory':
        return `module ${options.modulePath}: the module needs ${pagesText(report.initialPages)} of memory at start, more than the container's memory limit of ${pagesText(options.memoryLimitPages)}`;
      default:
        return `the wasm runner said "${report.type}" before the module was ready`;
    }
  }

  private received(report: RunnerReport): void {
    if (this.reports.length >= MAX_REPORTS) return;
    this.reports.push(report);
    this.listeners.forEach((listener) => listener(report));
  }

  get running(): boolean {
    return !this.ended;
  }

  get started(): boolean {
    return this.startRequested;
  }

  start(): void {
    if (this.ended) throw failedPrecondition('the module already ended');
    if (this.startRequested) return;
    this.startRequested = true;
    this.control.write('s');
  }

  /** Ends the module as `signal` would end a process; a module that already reported its end keeps that end. */
  async kill(signal: number): Promise<void> {
    if (this.ended || this.finalReport()) return;
    this.killSignal ??= signal;
    this.child.kill('SIGKILL');
    await this.outcome;
  }

  /** Ends the module because the daemon itself is going away. */
  async abandon(why: string): Promise<void> {
    if (this.ended || this.finalReport()) return;
    this.lostWhy ??= why;
    this.child.kill('SIGKILL');
    await this.outcome;
  }

  /** Resident memory and CPU time of the runner (the module, its compiled code and wasmtime). */
  async usage(): Promise<RunnerUsage> {
    if (this.ended) return { residentBytes: 0, cpuUserNanos: 0, cpuKernelNanos: 0 };
    const [statm, stat] = await Promise.all([readFile(`/proc/${this.hostPid}/statm`, 'utf8'), readFile(`/proc/${this.hostPid}/stat`, 'utf8')]).catch(() => ['', '']);
    // stat's second field (comm) may hold spaces; the fields after its closing parenthesis do not.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return {
      residentBytes: Number(statm.split(' ')[1] ?? 0) * PAGE_BYTES || 0,
      cpuUserNanos: Number(fields[11] ?? 0) * CLOCK_TICK_NANOS || 0,
      cpuKernelNanos: Number(fields[12] ?? 0) * CLOCK_TICK_NANOS || 0,
    };
  }

  private finalReport(): RunnerReport | undefined {
    return this.reports.find((report) => report.type === 'exited' || report.type === 'trapped' || report.type === 'failed');
  }

  private describeEnd(code: number | null, signal: NodeJS.Signals | null): ModuleOutcome {
    const report = this.finalReport();
    if (report?.type === 'exited') return { kind: 'exited', code: report.code };
    if (report?.type === 'trapped') return { kind: 'trapped', message: report.message, memoryPages: report.memoryPages };
    if (report?.type === 'failed') return { kind: 'crashed', message: report.message };
    if (this.lostWhy !== undefined) return { kind: 'lost', why: this.lostWhy };
    if (this.killSignal !== undefined) return { kind: 'killed', signal: this.killSignal };
    if (this.spawnError) return { kind: 'crashed', message: this.spawnError.message };
    if (signal !== null) return { kind: 'crashed', message: `the runner was killed by ${signal}${signal === 'SIGKILL' ? ' (out of host memory?)' : ''}` };
    return { kind: 'lost', why: this.startRequested ? `the runner ended (status ${code}) without reporting how the module ended` : 'the module was never started' };
  }
}

function runnerArgs(options: ModuleRunnerOptions): string[] {
  const args = ['--parent-pid', String(process.pid), '--rootfs', options.rootfs, '--scratch', options.scratchDir, '--memory-limit-pages', String(options.memoryLimitPages), '--module', options.modulePath];
  for (const preopen of options.preopens) args.push('--preopen', preopen.guest, preopen.host, preopen.readOnly ? 'ro' : 'rw');
  if (options.stdinPath !== undefined) args.push('--stdin', options.stdinPath);
  return [...args, '--', ...options.args];
}
