import { rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { readMountInfo } from '../host/mounts.js';

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
