import { readFile, rmdir } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { readMountInfo } from '../../host/mounts.js';
import type { ContainerStats } from '../../core/sandboxer.js';

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

/** An OCI linux.cgroupsPath of the cgroupfs driver (absolute, no systemd `slice:prefix:name`), normalized. */
function cgroupfsPath(cgroupsPath: unknown): string | undefined {
  if (typeof cgroupsPath !== 'string' || !cgroupsPath.startsWith('/') || cgroupsPath.includes(':')) return undefined;
  const relative = posix.normalize(cgroupsPath);
  return relative.split('/').includes('..') ? undefined : relative;
}

/**
 * How many processes the OOM killer ended in the memory cgroup at `cgroupsPath` (an OCI
 * linux.cgroupsPath: absolute, cgroupfs driver), or undefined when it cannot be read. cgroup v1
 * keeps the count in memory/<path>/memory.oom_control, v2 in <path>/memory.events.
 */
export async function memoryCgroupOomKills(cgroupsPath: unknown, root = CGROUP_ROOT): Promise<number | undefined> {
  const relative = cgroupfsPath(cgroupsPath);
  if (relative === undefined) return undefined;
  for (const file of [join(root, 'memory', relative, 'memory.oom_control'), join(root, relative, 'memory.events')]) {
    const text = await readFile(file, 'utf8').catch(() => undefined);
    const count = text?.match(/^oom_kill (\d+)$/m)?.[1];
    if (count !== undefined) return Number(count);
  }
  return undefined;
}

/**
 * A container's figures read from its cgroup v2 directory, for crun, whose CLI has no `events --stats`:
 * cpu.stat, memory.current/max, memory.swap.current, pids.current/max. undefined when `cgroupsPath`
 * is not an absolute cgroupfs path or the cgroup is gone; a file that is missing reads as 0.
 */
export async function cgroupV2Stats(cgroupsPath: unknown, root = CGROUP_ROOT): Promise<ContainerStats | undefined> {
  const relative = cgroupfsPath(cgroupsPath);
  if (relative === undefined) return undefined;
  const dir = join(root, relative);
  const read = (file: string) => readFile(join(dir, file), 'utf8').catch(() => undefined);
  const [cpuStat, memory, memoryMax, swap, pids, pidsMax] = await Promise.all(['cpu.stat', 'memory.current', 'memory.max', 'memory.swap.current', 'pids.current', 'pids.max'].map(read));
  if (cpuStat === undefined && memory === undefined && pids === undefined) return undefined;
  const stat = (key: string) => Number(cpuStat?.match(new RegExp(`^${key} (\\d+)$`, 'm'))?.[1] ?? 0);
  // "max" (no limit) reads as 0, as runc's stats leave an unset limit out.
  const count = (text: string | undefined) => (text !== undefined && /^\d+$/.test(text.trim()) ? Number(text.trim()) : 0);
  return {
    cpuUsageNanos: stat('usage_usec') * 1000, cpuUserNanos: stat('user_usec') * 1000, cpuKernelNanos: stat('system_usec') * 1000,
    cpuPeriods: stat('nr_periods'), cpuThrottledPeriods: stat('nr_throttled'), cpuThrottledNanos: stat('throttled_usec') * 1000,
    memoryUsageBytes: count(memory), memoryLimitBytes: count(memoryMax), memorySwapBytes: count(swap),
    pidsCurrent: count(pids), pidsLimit: count(pidsMax),
  };
}
