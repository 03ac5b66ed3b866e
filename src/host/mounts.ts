import { readFile, rm } from 'node:fs/promises';
import { resolve, sep } from 'node:path';
import { internal, invalidArgument } from '../core/errors.js';
import type { MountSpec } from '../core/sandboxer.js';
import { runCommand } from './command.js';

const MOUNT = '/bin/mount';
const UMOUNT = '/bin/umount';

/** Mounts a container's rootfs layers in order; on failure, undoes the ones already mounted. */
export async function mountRootfs(mounts: MountSpec[], rootfsDir: string): Promise<void> {
  try {
    for (const mount of mounts) {
      const target = mountTarget(rootfsDir, mount.target);
      const result = await runCommand(MOUNT, mountArgs(mount, target));
      if (result.code !== 0) throw internal(`mount ${mount.type} ${mount.source} on ${target}: ${result.stderr.trim()}`);
    }
  } catch (error) {
    await unmountUnder(rootfsDir);
    throw error;
  }
}

function mountTarget(rootfsDir: string, target: string | undefined): string {
  const path = resolve(rootfsDir, `.${sep}${target ?? ''}`);
  if (path !== rootfsDir && !path.startsWith(rootfsDir + sep)) throw invalidArgument(`mount target "${target}" leaves the rootfs`);
  return path;
}

/** containerd writes bind mounts as type "bind" with a bind/rbind option; mount(8) wants only the option. */
function mountArgs(mount: MountSpec, target: string): string[] {
  const isBind = mount.type === 'bind' || mount.options.includes('bind') || mount.options.includes('rbind');
  const options = isBind && !mount.options.some((option) => option === 'bind' || option === 'rbind') ? ['rbind', ...mount.options] : mount.options;
  const type = isBind ? [] : ['-t', mount.type];
  const optionArgs = options.length > 0 ? ['-o', options.join(',')] : [];
  return [...type, ...optionArgs, '--', mount.source, target];
}

export interface MountInfo {
  mountPoint: string;
  fsType: string;
}

/** This process's mount table, in mount order (proc(5) mountinfo). */
export async function readMountInfo(): Promise<MountInfo[]> {
  const entries: MountInfo[] = [];
  for (const line of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    const [before, after] = line.split(' - ');
    const mountPoint = before?.split(' ')[4];
    const fsType = after?.split(' ')[0];
    if (mountPoint !== undefined && fsType !== undefined) entries.push({ mountPoint: unescapeMountPath(mountPoint), fsType });
  }
  return entries;
}

/** Mount points at or below dir, deepest (and most recently stacked) first. */
export async function mountPointsUnder(dir: string): Promise<string[]> {
  const root = resolve(dir);
  const points = (await readMountInfo())
    .map((entry) => entry.mountPoint)
    .filter((point) => point === root || point.startsWith(root + sep));
  return points.reverse().sort((a, b) => b.length - a.length);
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Unmounts everything at or below dir; a busy mount is detached lazily rather than left behind. */
export async function unmountUnder(dir: string): Promise<void> {
  // Each pass removes the top of every stack; stacked mounts need as many passes as they are deep.
  for (let pass = 0; pass < 32; pass++) {
    const points = await mountPointsUnder(dir);
    if (points.length === 0) return;
    for (const point of points) {
      const result = await runCommand(UMOUNT, [point]);
      if (result.code !== 0) await runCommand(UMOUNT, ['-l', point]);
    }
  }
  const left = await mountPointsUnder(dir);
  if (left.length > 0) throw internal(`cannot unmount ${left.join(', ')}`);
}

/** Binds `source` (a file or directory) onto `target`, which must exist and be of the same kind. */
export async function bindMount(source: string, target: string, readonly = false): Promise<void> {
  const result = await runCommand(MOUNT, ['--bind', '--', source, target]);
  if (result.code !== 0) throw internal(`bind mount ${source} on ${target}: ${result.stderr.trim()}`);
  if (!readonly) return;
  const remount = await runCommand(MOUNT, ['-o', 'remount,bind,ro', '--', target]);
  if (remount.code !== 0) throw internal(`remount ${target} read-only: ${remount.stderr.trim()}`);
}

/**
 * Removes dir and everything in it once nothing is mounted beneath it (busy mounts are detached
 * lazily): a recursive removal that crossed into a mount would delete what that mount shows.
 */
export async function removeTree(dir: string): Promise<void> {
  await unmountUnder(dir);
  await rm(dir, { recursive: true, force: true });
}
