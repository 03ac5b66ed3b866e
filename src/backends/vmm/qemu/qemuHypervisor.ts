import { constants } from 'node:fs';
import { access, open, readFile, writeFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { HypervisorConfig } from '../config.js';
import { internal, unavailable } from '../../../core/errors.js';
import { KeyedQueue } from '../../../core/keyedQueue.js';
import { runCommand } from '../../../host/command.js';
import { findProcesses, formatIdentity, readPidFile, readProcessIdentity, type ProcessIdentity } from '../../../host/procfs.js';
import type { Accelerator, Hypervisor, VmNetwork, VmRunState } from '../hypervisor.js';
import type { VmPaths } from '../vmPaths.js';
import { withSpan } from '../../../telemetry/tracing.js';
import { qemuArgs } from './qemuCommand.js';
import { QmpClient } from './qmpClient.js';

const LAUNCH_TIMEOUT_MS = 30_000;
const QMP_TIMEOUT_MS = 3000;

/** QEMU launched with -daemonize: the launch command exits once the VM runs (or failed to start). */
export class QemuHypervisor implements Hypervisor {
  readonly name = 'qemu';

  constructor(private readonly config: HypervisorConfig) {}

  launch(paths: VmPaths, accelerator: Accelerator, vmName: string, network?: VmNetwork): Promise<ProcessIdentity> {
    const attributes = { 'hypervisor.accelerator': accelerator, 'hypervisor.machine': this.config.machine, 'vm.nics': network?.nics.length ?? 0 };
    return withSpan('qemu.launch', { attributes }, async (span) => {
      const identity = await this.launchNow(paths, accelerator, vmName, network);
      span.setAttribute('process.pid', identity.pid);
      return identity;
    });
  }

  private async launchNow(paths: VmPaths, accelerator: Accelerator, vmName: string, network?: VmNetwork): Promise<ProcessIdentity> {
    const qemuArgv = qemuArgs(this.config, accelerator, paths, vmName, { tscKhz: await hostTscKhz() }, network?.nics);
    // Only the network namespace changes: QEMU's sockets are paths, its files the host's.
    const inNetns = network !== undefined && network.nics.length > 0;
    const file = inNetns ? 'nsenter' : this.config.path;
    const args = inNetns ? [`--net=${network.netnsPath}`, '--', this.config.path, ...qemuArgv] : qemuArgv;
    const result = await runCommand(file, args, LAUNCH_TIMEOUT_MS).catch((error: NodeJS.ErrnoException) => {
      throw unavailable(`cannot run ${file}: ${error.code === 'ENOENT' ? 'not found (apt-get install qemu-system-x86 util-linux)' : error.message}`);
    });
    await writeFile(paths.qemuLog, [`${file} ${args.join(' ')}`, result.stdout, result.stderr].join('\n'));
    if (result.code !== 0) throw internal(`qemu failed to launch (exit ${result.code}): ${result.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    const pid = await readPidFile(paths.pidFile);
    const identity = pid === undefined ? undefined : await readProcessIdentity(pid);
    if (!identity) throw internal(`qemu launched but its pid file ${paths.pidFile} names no live process`);
    await writeFile(paths.identityFile, formatIdentity(identity));
    return identity;
  }

  async runState(paths: VmPaths): Promise<VmRunState> {
    const answer = (await this.withQmp(paths, (qmp) => qmp.execute('query-status', undefined, QMP_TIMEOUT_MS))) as { running?: unknown; status?: unknown };
    return { running: answer.running === true, status: String(answer.status ?? 'unknown') };
  }

  async quit(paths: VmPaths): Promise<void> {
    await this.withQmp(paths, (qmp) => qmp.execute('quit', undefined, QMP_TIMEOUT_MS)).catch((error: unknown) => {
      // QEMU may close the socket before it answers `quit`: that is success.
      if (!(error instanceof Error && /closed/.test(error.message))) throw error;
    });
  }

  /** QEMU (or the nsenter about to become it) is known by its `-pidfile <vmsDir>/<sandbox id>/qemu.pid`. */
  async processesUnder(vmsDir: string): Promise<Map<string, ProcessIdentity[]>> {
    const pidFileOf = (argv: string[]) => argv[argv.indexOf('-pidfile') + 1];
    const found = await findProcesses((argv) => argv.includes('-pidfile') && dirname(dirname(pidFileOf(argv) ?? '')) === vmsDir);
    const bySandbox = new Map<string, ProcessIdentity[]>();
    for (const { identity, argv } of found) {
      const sandboxId = basename(dirname(pidFileOf(argv)!));
      bySandbox.set(sandboxId, [...(bySandbox.get(sandboxId) ?? []), identity]);
    }
    return bySandbox;
  }

  async acceleratorAvailable(accelerator: Accelerator): Promise<boolean> {
    if (accelerator === 'tcg') return true;
    return access('/dev/kvm', constants.R_OK | constants.W_OK).then(() => true, () => false);
  }

  /**
   * QEMU's QMP socket serves one client at a time: a second connection waits unanswered. So one
   * conversation per VM at a time, queued, else a health check racing a quit would time out and
   * report a healthy VM as unreachable.
   */
  private withQmp<T>(paths: VmPaths, work: (qmp: QmpClient) => Promise<T>): Promise<T> {
    return withSpan('qmp', {}, () => this.qmpQueue.run(paths.qmpSocket, () => this.withQmpNow(paths, work)));
  }

  private readonly qmpQueue = new KeyedQueue();

  private async withQmpNow<T>(paths: VmPaths, work: (qmp: QmpClient) => Promise<T>): Promise<T> {
    const qmp = await QmpClient.connect(paths.qmpSocket, QMP_TIMEOUT_MS);
    try {
      return await work(qmp);
    } finally {
      qmp.close();
    }
  }
}

/** The host CPU's clock from /proc/cpuinfo, in kHz; undefined when it does not say. */
async function hostTscKhz(): Promise<number | undefined> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const mhz = Number(/^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)?.[1]);
  return Number.isFinite(mhz) && mhz > 0 ? Math.round(mhz * 1000) : undefined;
}

/** The tail of the guest console (and QEMU's own log), for errors a person reads; only the last bytes are read. */
export async function consoleTail(paths: VmPaths, maxChars = 1500): Promise<string> {
  const [console, qemu] = await Promise.all([readTail(paths.consoleLog, maxChars * 4), readTail(paths.qemuLog, maxChars * 4)]);
  const tail = console.trim() ? console : qemu;
  return tail.trim().slice(-maxChars) || '(console is empty)';
}

/** The last `maxBytes` of a file the guest fills, opened without blocking or following a link; '' if it cannot be read. */
export async function readTail(file: string, maxBytes: number): Promise<string> {
  const handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => undefined);
  if (!handle) return '';
  try {
    const info = await handle.stat();
    if (!info.isFile()) return '';
    const length = Math.min(maxBytes, info.size);
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, info.size - length);
    return buffer.subarray(0, bytesRead).toString('utf8');
  } finally {
    await handle.close();
  }
}
