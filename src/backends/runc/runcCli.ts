import { failedPrecondition, internal, notFound, type KtsError } from '../../core/errors.js';
import type { ContainerRuntimeState, ContainerStats } from '../../core/sandboxer.js';
import { SpanStatusCode } from '@opentelemetry/api';
import { withSpan } from '../../telemetry/tracing.js';
import { runCommand, type CommandResult } from '../../host/command.js';
import { ociRuntimeName, type OciRuntimeName } from './ociRuntime.js';

export interface RuncState {
  status: ContainerRuntimeState;
  pid?: number;
}

/** runc's own wording for a container id it has no state for, and crun's (its state file is not there). */
const NOT_EXIST = /does not exist|error opening file `[^`]*\/status`: No such file or directory/i;
/** runc's and crun's wording for a container in the wrong state: it is not running, or (start) its init already died or runs. */
const NOT_RUNNING = /not running|process already finished|cannot start a container that has stopped|cannot start an already running container|is not in `created`/i;

/**
 * runc subcommands. create and exec are only built here (they run as children of the sandbox
 * init, which reaps what they leave); the rest run from the daemon directly.
 */
export class RuncCli {
  /** runc or crun: the same CLI, except that crun has no `events`. */
  readonly name: OciRuntimeName;

  constructor(
    private readonly binary: string,
    /** runc --root: our containers only, never another runtime's. */
    private readonly root: string,
  ) {
    this.name = ociRuntimeName(binary);
  }

  /** The full argv, program first, for the sandbox init to execute. */
  createArgv(containerId: string, bundleDir: string, pidFile: string, logFile: string): string[] {
    return [this.binary, ...this.global(logFile), 'create', '--bundle', bundleDir, '--pid-file', pidFile, containerId];
  }

  startArgv(containerId: string, logFile: string): string[] {
    return [this.binary, ...this.global(logFile), 'start', containerId];
  }

  /** With `consoleSocket`, runc makes the process a terminal and sends its master there (kts-console). */
  execArgv(containerId: string, processFile: string, pidFile: string, logFile: string, consoleSocket?: string): string[] {
    const tty = consoleSocket === undefined ? [] : ['--tty', '--console-socket', consoleSocket];
    return [this.binary, ...this.global(logFile), 'exec', '--detach', ...tty, '--pid-file', pidFile, '--process', processFile, containerId];
  }

  /** undefined when runc has no such container. */
  async state(containerId: string): Promise<RuncState | undefined> {
    const result = await this.run(['state', containerId]);
    if (result.code !== 0 && NOT_EXIST.test(result.stderr)) return undefined;
    const state = parseJson(this.check(result, 'state', containerId).stdout, 'runc state') as { status?: unknown; pid?: unknown };
    const pid = typeof state.pid === 'number' && state.pid > 0 ? state.pid : undefined;
    return { status: runtimeState(state.status), pid };
  }

  async kill(containerId: string, signal: number, all: boolean): Promise<void> {
    const args = ['kill', ...(all ? ['--all'] : []), containerId, String(signal)];
    this.check(await this.run(args), 'kill', containerId);
  }

  /** Forced, and quiet about a container runc does not know: delete is idempotent. */
  /** Every container in our runc root, with its bundle directory. */
  async list(): Promise<Array<{ id: string; bundle: string }>> {
    const result = this.check(await this.run(['list', '--format', 'json']), 'list', '');
    const parsed = JSON.parse(result.stdout.trim() || '[]') as Array<{ id?: unknown; bundle?: unknown }> | null;
    return (parsed ?? []).map((c) => ({ id: String(c.id), bundle: String(c.bundle ?? '') }));
  }

  async forceDelete(containerId: string): Promise<void> {
    const result = await this.run(['delete', '--force', containerId]);
    if (result.code !== 0 && NOT_EXIST.test(result.stderr)) return;
    this.check(result, 'delete', containerId);
  }

  async ps(containerId: string): Promise<number[]> {
    const result = this.check(await this.run(['ps', '--format', 'json', containerId]), 'ps', containerId);
    const pids = parseJson(result.stdout, 'runc ps');
    return Array.isArray(pids) ? pids.filter((pid): pid is number => Number.isInteger(pid)) : [];
  }

  async stats(containerId: string): Promise<ContainerStats> {
    const result = this.check(await this.run(['events', '--stats', containerId]), 'events --stats', containerId);
    return containerStats(parseJson(result.stdout, 'runc events --stats'));
  }

  private global(logFile?: string): string[] {
    const log = logFile === undefined ? [] : ['--log', logFile, '--log-format', 'json'];
    return ['--root', this.root, ...log];
  }

  /** One span per runc command (`runc.start`, `runc.kill`, …), on the host and inside a VM alike. */
  private run(args: string[]): Promise<CommandResult> {
    const argv = [...this.global(), ...args];
    return withSpan(`runc.${args[0]}`, { attributes: { 'process.command_args': [this.binary, ...argv] } }, async (span) => {
      const result = await runCommand(this.binary, argv);
      span.setAttribute('process.exit_code', result.code);
      // A container runc does not know (state, delete) is an answer, not a failure: the caller decides.
      if (result.code !== 0 && !NOT_EXIST.test(result.stderr)) span.setStatus({ code: SpanStatusCode.ERROR, message: result.stderr.trim().slice(0, 500) || `exit status ${result.code}` });
      return result;
    });
  }

  private check(result: CommandResult, command: string, containerId: string): CommandResult {
    if (result.code === 0) return result;
    throw this.failure(command, containerId, result.stderr.trim() || `exit status ${result.code}`);
  }

  /** The error of a failed command, by runc's (or crun's) `reason`: NOT_FOUND, FAILED_PRECONDITION or INTERNAL. */
  failure(command: string, containerId: string, reason: string): KtsError {
    const message = `${this.name} ${command} ${containerId}: ${reason}`;
    if (NOT_EXIST.test(reason)) return notFound(message);
    if (NOT_RUNNING.test(reason)) return failedPrecondition(message);
    return internal(message);
  }
}

/** The error lines of a `--log-format json` log: what runc says went wrong. */
export function runcLogErrors(logText: string): string {
  const messages: string[] = [];
  for (const line of logText.split('\n')) {
    try {
      const entry = JSON.parse(line) as { level?: unknown; msg?: unknown };
      if ((entry.level === 'error' || entry.level === 'fatal') && typeof entry.msg === 'string') messages.push(entry.msg);
    } catch {
      // A partial or non-JSON line: not an error report.
    }
  }
  return messages.join('; ');
}

function runtimeState(status: unknown): ContainerRuntimeState {
  switch (status) {
    case 'creating':
    case 'created':
      return 'created';
    case 'running':
    case 'paused':
      return 'running';
    default:
      return 'stopped';
  }
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw internal(`${what} printed something that is not JSON: ${text.slice(0, 200)}`, error);
  }
}

/** runc's libcontainer stats (omitempty: a zero is left out). */
function containerStats(event: unknown): ContainerStats {
  const data = field(event, 'data');
  const cpu = field(field(data, 'cpu'), 'usage');
  const memory = field(field(data, 'memory'), 'usage');
  const pids = field(data, 'pids');
  const throttling = field(field(data, 'cpu'), 'throttling');
  return {
    cpuPeriods: numberField(throttling, 'periods'),
    cpuThrottledPeriods: numberField(throttling, 'throttledPeriods'),
    cpuThrottledNanos: numberField(throttling, 'throttledTime'),
    memoryKernelBytes: numberField(field(field(data, 'memory'), 'kernel'), 'usage'),
    memorySwapBytes: numberField(field(field(data, 'memory'), 'swap'), 'usage'),
    cpuUsageNanos: numberField(cpu, 'total'),
    cpuUserNanos: numberField(cpu, 'user'),
    cpuKernelNanos: numberField(cpu, 'kernel'),
    memoryUsageBytes: numberField(memory, 'usage'),
    memoryLimitBytes: numberField(memory, 'limit'),
    pidsCurrent: numberField(pids, 'current'),
    pidsLimit: numberField(pids, 'limit'),
  };
}

function field(value: unknown, key: string): unknown {
  return typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[key] : undefined;
}

function numberField(value: unknown, key: string): number {
  const found = field(value, key);
  return typeof found === 'number' && Number.isFinite(found) ? found : 0;
}
