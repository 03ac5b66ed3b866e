import { readFile, rmdir } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { readMountInfo } from '../../host/mounts.js';

/**
 * runc deletes a container's own cgroup but not the parents it created on the way (e.g. the
 * sandbox level of `/kts/<sandbox>/<container>`). Removes such a directory from every cgroup
 * hierarchy; one still in use (a child or a process left) stays, and is not an error.
 */
export async function removeCgroupDir(cgroupPath: string): Promise<void> {
  if (!cgroupPath.startsWith('/') || cgroupPath === '/' || cgroupPath.includes('..')) return;
  const hierarchies = (await readMountInfo()).filter((entry) => entry.fsType === 'cgroup' || entry.fsType === 'cgroup2');
  await Promise.all(
    hierarchies.map((hierarchy) =>
      rmdir(join(hierarchy.mountPoint, cgroupPath)).catch(() => undefined),
    ),
  );
}

const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * How many processes the OOM killer ended in the memory cgroup at `cgroupsPath` (an OCI
 * linux.cgroupsPath: absolute, cgroupfs driver), or undefined when it cannot be read. cgroup v1
 * keeps the count in memory/<path>/memory.oom_control, v2 in <path>/memory.events.
 */
export async function memoryCgroupOomKills(cgroupsPath: unknown, root = CGROUP_ROOT): Promise<number | undefined> {
  if (typeof cgroupsPath !== 'string' || !cgroupsPath.startsWith('/') || cgroupsPath.includes(':')) return undefined;
  const relative = posix.normalize(cgroupsPath);
  if (relative.split('/').includes('..')) return undefined;
  for (const file of [join(root, 'memory', relative, 'memory.oom_control'), join(root, relative, 'memory.events')]) {
    const text = await readFile(file, 'utf8').catch(() => undefined);
    const count = text?.match(/^oom_kill (\d+)$/m)?.[1];
    if (count !== undefined) return Number(count);
  }
  return undefined;
}
