import { lstat, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { invalidArgument } from '../../core/errors.js';
import type { ContainerSpec, StdioPaths } from '../../core/sandboxer.js';
import { bindMount, mountRootfs, unmountUnder } from '../host/mounts.js';
import { FifoPumps } from './fifoPump.js';
import { GUEST_SHARE_DIR, STDIN_END_MARKER, containerShareDir, execShareDir, type VmPaths } from './vmPaths.js';

const STREAMS = ['stdout', 'stderr'] as const;

interface OciMount { destination: string; type?: string; source?: string; options?: string[] }

/**
 * Makes host paths visible to the guest through the sandbox's 9p share: a container's rootfs and
 * bind-mount sources are bind-mounted into `share/c/<id>/`, its config.json is rewritten to point
 * there, and its stdout/stderr become files in the share (a host log file is bound onto them; a
 * host FIFO is fed by a pump, since a FIFO cannot cross into a VM). Owner of the pumps it starts.
 */
export class VmShare {
  private readonly pumps: FifoPumps;

  constructor(private readonly paths: VmPaths) {
    this.pumps = new FifoPumps(paths.pumpStateDir);
  }

  /** Returns the guest bundle directory and guest stdio paths. */
  async addContainer(spec: ContainerSpec): Promise<{ bundle: string; stdio: StdioPaths }> {
    const relative = containerShareDir(spec.containerId);
    const hostDir = path.join(this.paths.shareDir, relative);
    await mkdir(path.join(hostDir, 'rootfs'), { recursive: true });
    await writeFile(path.join(hostDir, 'host-bundle'), spec.bundleDir);
    const rootfs = path.join(spec.bundleDir, 'rootfs');
    await mkdir(rootfs, { recursive: true });
    if (spec.rootfsMounts.length > 0) await mountRootfs(spec.rootfsMounts, rootfs);
    await bindMount(rootfs, path.join(hostDir, 'rootfs'));
    const config = JSON.parse(await readFile(path.join(spec.bundleDir, 'config.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(path.join(hostDir, 'config.json'), JSON.stringify(await this.guestConfig(config, hostDir, relative)));
    const stdio = await this.shareStdio(spec.stdio, hostDir, relative);
    return { bundle: path.posix.join(GUEST_SHARE_DIR, relative), stdio };
  }

  /** Stdio of an exec process, under `share/c/<container>/exec/<execId>/`. */
  async addExec(containerId: string, execId: string, stdio: StdioPaths): Promise<StdioPaths> {
    const relative = execShareDir(containerId, execId);
    const hostDir = path.join(this.paths.shareDir, relative);
    await mkdir(hostDir, { recursive: true });
    return this.shareStdio(stdio, hostDir, relative);
  }

  /** Unbinds and deletes the container's share directory and unmounts its host rootfs; idempotent. */
  async removeContainer(containerId: string): Promise<void> {
    const hostDir = path.join(this.paths.shareDir, containerShareDir(containerId));
    await this.pumps.stopUnder(hostDir);
    const bundle = await readFile(path.join(hostDir, 'host-bundle'), 'utf8').catch(() => undefined);
    await unmountUnder(hostDir);
    if (bundle) await unmountUnder(path.join(bundle, 'rootfs'));
    await rm(hostDir, { recursive: true, force: true });
    await rm(path.join(this.paths.pumpStateDir, containerShareDir(containerId)), { recursive: true, force: true });
  }

  /** Removes every container's share; used when the sandbox goes away. */
  async removeAll(): Promise<void> {
    const bundles = await this.hostBundles();
    await this.pumps.stopAll();
    await unmountUnder(this.paths.shareDir);
    for (const bundle of bundles) await unmountUnder(path.join(bundle, 'rootfs'));
  }

  close(): void {
    void this.pumps.stopAll();
  }

  /** After a daemon restart: the FIFO pumps of every container and exec in the share carry on where they stopped. */
  resumePumps(): Promise<number> {
    return this.pumps.resume(this.paths.shareDir);
  }

  private async hostBundles(): Promise<string[]> {
    const containers = await readdir(path.join(this.paths.shareDir, 'c')).catch(() => [] as string[]);
    const bundles = await Promise.all(containers.map((id) => readFile(path.join(this.paths.shareDir, 'c', id, 'host-bundle'), 'utf8').catch(() => '')));
    return bundles.filter(Boolean);
  }

  private async guestConfig(config: Record<string, unknown>, hostDir: string, relative: string): Promise<Record<string, unknown>> {
    const mounts = Array.isArray(config.mounts) ? (config.mounts as OciMount[]) : [];
    const guestMounts: OciMount[] = [];
    for (const [index, mount] of mounts.entries()) guestMounts.push(await this.guestMount(mount, index, hostDir, relative));
    const root = typeof config.root === 'object' && config.root !== null ? config.root : {};
    return { ...config, root: { ...root, path: 'rootfs' }, mounts: guestMounts };
  }

  /** A bind mount of a host path is re-pointed at a bind of that path inside the share. */
  private async guestMount(mount: OciMount, index: number, hostDir: string, relative: string): Promise<OciMount> {
    const options = mount.options ?? [];
    const isBind = mount.type === 'bind' || options.includes('bind') || options.includes('rbind');
    if (!isBind || !mount.source) return mount;
    if (!path.isAbsolute(mount.source) || mount.source.split('/').includes('..')) throw invalidArgument(`mount source "${mount.source}" must be an absolute path`);
    const source = await stat(mount.source).catch(() => undefined);
    if (!source) throw invalidArgument(`mount source ${mount.source} does not exist on the host`);
    const hostTarget = path.join(hostDir, 'm', String(index));
    await mkdir(path.dirname(hostTarget), { recursive: true });
    if (source.isDirectory()) await mkdir(hostTarget, { recursive: true });
    else await writeFile(hostTarget, '');
    await bindMount(mount.source, hostTarget);
    return { ...mount, source: path.posix.join(GUEST_SHARE_DIR, relative, 'm', String(index)) };
  }

  /**
   * Task CloseIO: the stdin of this container (or exec) ends once what was written is forwarded. A
   * stdin that is a file, or none, has nothing to close.
   */
  async closeStdin(containerId: string, execId?: string): Promise<void> {
    const relative = execId ? execShareDir(containerId, execId) : containerShareDir(containerId);
    await this.pumps.endInput(path.join(this.paths.shareDir, relative, 'stdin'));
  }

  private async shareStdio(stdio: StdioPaths, hostDir: string, relative: string): Promise<StdioPaths> {
    const guest: StdioPaths = {};
    if (stdio.stdin) guest.stdin = await this.shareStdin(stdio.stdin, hostDir, relative);
    for (const stream of STREAMS) {
      const target = stdio[stream];
      if (!target) continue;
      const shareFile = path.join(hostDir, stream);
      await writeFile(shareFile, '');
      const kind = await lstat(target).catch(() => undefined);
      if (kind?.isFIFO()) this.pumps.start(path.join(relative, stream), shareFile, target);
      else {
        if (!kind) await writeFile(target, '', { flag: 'a' });
        await bindMount(target, shareFile);
      }
      guest[stream] = path.posix.join(GUEST_SHARE_DIR, relative, stream);
    }
    return guest;
  }

  /**
   * stdin crosses into the VM as `stdin` in the share, which the agent follows into the container
   * (STDIN_END_MARKER beside it says it ended): a host FIFO is pumped into it; a file is bound onto it,
   * ended at once.
   */
  private async shareStdin(target: string, hostDir: string, relative: string): Promise<string> {
    const shareFile = path.join(hostDir, 'stdin');
    const endMarker = path.join(hostDir, STDIN_END_MARKER);
    await writeFile(shareFile, '');
    const kind = await lstat(target).catch(() => undefined);
    if (!kind) throw invalidArgument(`stdin ${target} does not exist on the host`);
    if (kind.isFIFO()) {
      this.pumps.startInput(path.join(relative, 'stdin'), target, shareFile, endMarker);
    } else {
      await bindMount(target, shareFile);
      await writeFile(endMarker, '');
    }
    return path.posix.join(GUEST_SHARE_DIR, relative, 'stdin');
  }
}
