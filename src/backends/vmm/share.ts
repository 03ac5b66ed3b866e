import { existsSync } from 'node:fs';
import { lstat, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { invalidArgument } from '../../core/errors.js';
import type { ContainerSpec, StdioPaths } from '../../core/sandboxer.js';
import { BeneathBatch, openBeneath } from '../../host/beneath.js';
import { writeFileAtomic } from '../../host/files.js';
import { mountRootfs, unmountUnder } from '../../host/mounts.js';
import { FifoPumps } from '../../agentProtocol/fifoPump.js';
import { GUEST_SHARE_DIR, STDIN_END_MARKER, containerShareDir, execShareDir } from '../../agentProtocol/sharePaths.js';
import type { VmPaths } from './vmPaths.js';

const STREAMS = ['stdout', 'stderr'] as const;
const SHARE = 'share';

interface OciMount { destination: string; type?: string; source?: string; options?: string[] }

/** What the daemon decided for one container, kept in `containersDir` (never in the share, which the guest writes). */
interface ContainerRecord { bundleDir: string }

export interface VmShareOptions {
  /** A share stdout/stderr file keeps at most about this many bytes of forwarded output on disk. */
  stdioMaxBytes: number;
}

/** A host pump to start once the share files it reads or writes exist. */
type PumpStart = () => void;

/**
 * Makes host paths visible to the guest through the sandbox's 9p share: a container's rootfs and
 * bind-mount sources are bind-mounted into `share/c/<id>/`, its config.json is written there, and its
 * stdout/stderr become files in the share (a host log file is bound onto them; a host FIFO is fed by a
 * pump, since a FIFO cannot cross into a VM; the CRI log kts keeps is written by a pump too). The guest can write every byte of the share, so every
 * operation in it runs beneath it with no symlink followed (kts-beneath, openBeneath), and what the
 * daemon decided lives in `containersDir`. Owner of the pumps it starts.
 */
export class VmShare {
  private readonly pumps: FifoPumps;

  constructor(private readonly paths: VmPaths, options: VmShareOptions) {
    this.pumps = new FifoPumps(paths.pumpStateDir, {
      shareDir: paths.shareDir,
      open: (source, flags) => openBeneath(paths.shareDir, source, flags),
      release: (source, offset) => this.inShare().punch(source, offset).run(),
      releaseEveryBytes: options.stdioMaxBytes,
    });
  }

  private inShare(): BeneathBatch {
    return new BeneathBatch(this.paths.shareDir);
  }

  /** Before QEMU starts: the share becomes its own mount, nosuid and nodev, so a device node the guest makes opens nothing. */
  async prepare(): Promise<void> {
    await new BeneathBatch(this.paths.dir).pin(SHARE).run();
  }

  /** Returns the guest bundle directory and guest stdio paths. */
  async addContainer(spec: ContainerSpec): Promise<{ bundle: string; stdio: StdioPaths }> {
    const relative = containerShareDir(spec.containerId);
    // Recorded first: a removal after a crash half-way still knows which rootfs to unmount.
    await this.saveRecord(spec.containerId, { bundleDir: spec.bundleDir });
    const rootfs = path.join(spec.bundleDir, 'rootfs');
    await mkdir(rootfs, { recursive: true });
    if (spec.rootfsMounts.length > 0) await mountRootfs(spec.rootfsMounts, rootfs);
    // Pinned: a mount point cannot be renamed, so the guest cannot swap the container's directory.
    const batch = this.inShare().mkdir(relative).pin(relative).mkdir(path.join(relative, 'rootfs')).bind(rootfs, path.join(relative, 'rootfs'));
    const config = JSON.parse(await readFile(path.join(spec.bundleDir, 'config.json'), 'utf8')) as Record<string, unknown>;
    batch.write(path.join(relative, 'config.json'), JSON.stringify(await this.guestConfig(config, batch, relative)));
    const pumps: PumpStart[] = [];
    const stdio = await this.shareStdio(spec.stdio, batch, relative, pumps);
    if (spec.logPath) this.shareLog(spec.logPath, batch, relative, pumps, stdio);
    await batch.run();
    for (const start of pumps) start();
    return { bundle: path.posix.join(GUEST_SHARE_DIR, relative), stdio };
  }

  /** Stdio of an exec process, under `share/c/<container>/exec/<execId>/`. */
  async addExec(containerId: string, execId: string, stdio: StdioPaths): Promise<StdioPaths> {
    const relative = execShareDir(containerId, execId);
    const batch = this.inShare().mkdir(relative);
    const pumps: PumpStart[] = [];
    const guest = await this.shareStdio(stdio, batch, relative, pumps);
    await batch.run();
    for (const start of pumps) start();
    return guest;
  }

  /**
   * The process ended: its pumps forward what is in the share and close the host FIFOs (their readers
   * see end of file), and their records go, so a restarted daemon does not pump them again.
   */
  async finishOutput(containerId: string, execId?: string): Promise<void> {
    const relative = execId ? execShareDir(containerId, execId) : containerShareDir(containerId);
    await this.pumps.stopUnder(relative);
    await rm(path.join(this.paths.pumpStateDir, relative), { recursive: true, force: true });
  }

  /** Detaches and deletes the container's share directory and unmounts its host rootfs; idempotent. */
  async removeContainer(containerId: string): Promise<void> {
    const relative = containerShareDir(containerId);
    await this.pumps.stopUnder(relative);
    if (existsSync(this.paths.shareDir)) await this.inShare().detach(relative).rmtree(relative).run();
    const record = await this.loadRecord(containerId);
    if (record) await unmountUnder(path.join(record.bundleDir, 'rootfs'));
    await rm(this.recordFile(containerId), { force: true });
    await rm(path.join(this.paths.pumpStateDir, relative), { recursive: true, force: true });
  }

  /** Removes every container's share and the share itself; used when the sandbox goes away (its VM already ended). */
  async removeAll(): Promise<void> {
    await this.pumps.stopAll();
    if (!existsSync(this.paths.dir)) return;
    // One lazy detach takes the share and every bind beneath it; emptied without entering a mount that is somehow left.
    await new BeneathBatch(this.paths.dir).detach(SHARE).run();
    // A share from before the share was its own mount; safe here only because its VM is gone and writes nothing.
    await unmountUnder(this.paths.shareDir);
    for (const containerId of await this.recordedContainers()) {
      const record = await this.loadRecord(containerId);
      if (record) await unmountUnder(path.join(record.bundleDir, 'rootfs'));
      await rm(this.recordFile(containerId), { force: true });
    }
    await new BeneathBatch(this.paths.dir).rmtree(SHARE).run();
  }

  close(): void {
    void this.pumps.stopAll();
  }

  /** After a daemon restart: the FIFO pumps of every container and exec carry on where they stopped, from the daemon's records. */
  resumePumps(): Promise<number> {
    return this.pumps.resume();
  }

  private recordFile(containerId: string): string {
    return path.join(this.paths.containersDir, `${containerId}.json`);
  }

  private async saveRecord(containerId: string, record: ContainerRecord): Promise<void> {
    await mkdir(this.paths.containersDir, { recursive: true });
    await writeFileAtomic(this.recordFile(containerId), JSON.stringify(record));
  }

  private async loadRecord(containerId: string): Promise<ContainerRecord | undefined> {
    try {
      const record = JSON.parse(await readFile(this.recordFile(containerId), 'utf8')) as Partial<ContainerRecord>;
      return typeof record.bundleDir === 'string' ? { bundleDir: record.bundleDir } : undefined;
    } catch {
      return undefined;
    }
  }

  private async recordedContainers(): Promise<string[]> {
    const files = await readdir(this.paths.containersDir).catch(() => [] as string[]);
    return files.filter((file) => file.endsWith('.json')).map((file) => file.slice(0, -'.json'.length));
  }

  private async guestConfig(config: Record<string, unknown>, batch: BeneathBatch, relative: string): Promise<Record<string, unknown>> {
    const mounts = Array.isArray(config.mounts) ? (config.mounts as OciMount[]) : [];
    const guestMounts: OciMount[] = [];
    for (const [index, mount] of mounts.entries()) guestMounts.push(await this.guestMount(mount, index, batch, relative));
    const root = typeof config.root === 'object' && config.root !== null ? config.root : {};
    return { ...config, root: { ...root, path: 'rootfs' }, mounts: guestMounts };
  }

  /**
   * A bind mount of a host path is re-pointed at a bind of that path inside the share. A read-only one
   * is bound read-only on the host too: the guest's runc is no boundary.
   */
  private async guestMount(mount: OciMount, index: number, batch: BeneathBatch, relative: string): Promise<OciMount> {
    const options = mount.options ?? [];
    const isBind = mount.type === 'bind' || options.includes('bind') || options.includes('rbind');
    if (!isBind || !mount.source) return mount;
    if (!path.isAbsolute(mount.source) || mount.source.split('/').includes('..')) throw invalidArgument(`mount source "${mount.source}" must be an absolute path`);
    const source = await stat(mount.source).catch(() => undefined);
    if (!source) throw invalidArgument(`mount source ${mount.source} does not exist on the host`);
    const target = path.join(relative, 'm', String(index));
    batch.mkdir(path.join(relative, 'm'));
    if (source.isDirectory()) batch.mkdir(target);
    else batch.file(target);
    batch.bind(mount.source, target, options.includes('ro'));
    return { ...mount, source: path.posix.join(GUEST_SHARE_DIR, target) };
  }

  /**
   * Task CloseIO: the stdin of this container (or exec) ends once what was written is forwarded. A
   * stdin that is a file, or none, has nothing to close.
   */
  async closeStdin(containerId: string, execId?: string): Promise<void> {
    const relative = execId ? execShareDir(containerId, execId) : containerShareDir(containerId);
    await this.pumps.endInput(path.join(relative, 'stdin'));
  }

  /** Queues the share files of the process's stdio on `batch`; the pumps to start once it ran go to `pumps`. */
  private async shareStdio(stdio: StdioPaths, batch: BeneathBatch, relative: string, pumps: PumpStart[]): Promise<StdioPaths> {
    const guest: StdioPaths = {};
    if (stdio.stdin) guest.stdin = await this.shareStdin(stdio.stdin, batch, relative, pumps);
    for (const stream of STREAMS) {
      const target = stdio[stream];
      if (!target) continue;
      const shareFile = path.join(relative, stream);
      batch.file(shareFile);
      const kind = await lstat(target).catch(() => undefined);
      if (kind?.isFIFO()) pumps.push(() => this.pumps.start(shareFile, target));
      else {
        if (!kind) await writeFile(target, '', { flag: 'a' });
        batch.bind(target, shareFile);
      }
      guest[stream] = path.posix.join(GUEST_SHARE_DIR, shareFile);
    }
    return guest;
  }

  /**
   * A log kts keeps: stdout and stderr are files in the share, each read by a host pump that appends
   * its lines to the log as CRI records (the guest never writes the log itself, nor its times).
   */
  private shareLog(logPath: string, batch: BeneathBatch, relative: string, pumps: PumpStart[], guest: StdioPaths): void {
    for (const stream of STREAMS) {
      const shareFile = path.join(relative, stream);
      batch.file(shareFile);
      pumps.push(() => this.pumps.start(shareFile, logPath, 0, stream));
      guest[stream] = path.posix.join(GUEST_SHARE_DIR, shareFile);
    }
  }

  /**
   * stdin crosses into the VM as `stdin` in the share, which the agent follows into the container
   * (STDIN_END_MARKER beside it says it ended): a host FIFO is pumped into it; a file is bound onto it
   * read-only, ended at once.
   */
  private async shareStdin(target: string, batch: BeneathBatch, relative: string, pumps: PumpStart[]): Promise<string> {
    const shareFile = path.join(relative, 'stdin');
    const endMarker = path.join(relative, STDIN_END_MARKER);
    batch.file(shareFile);
    const kind = await lstat(target).catch(() => undefined);
    if (!kind) throw invalidArgument(`stdin ${target} does not exist on the host`);
    if (kind.isFIFO()) pumps.push(() => this.pumps.startInput(target, shareFile, endMarker));
    else batch.bind(target, shareFile, true).file(endMarker);
    return path.posix.join(GUEST_SHARE_DIR, shareFile);
  }
}
