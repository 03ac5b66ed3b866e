import { closeSync } from 'node:fs';
import { readdir, readlink } from 'node:fs/promises';
import path from 'node:path';

/**
 * Closes this process's fds that point at or below any of `dirs`. Node's WASI (uvwasi) leaves the
 * host fds of preopened directories, and of files a module left open, behind when its worker ends,
 * and a kept fd on a container's rootfs would make it impossible to unmount. Safe only once no
 * module of the container runs: then nothing else in the daemon holds fds below its directories.
 */
export async function closeFdsUnder(dirs: readonly string[]): Promise<number> {
  const roots = dirs.map((dir) => path.resolve(dir));
  const under = (target: string) => roots.some((root) => target === root || target.startsWith(root + path.sep));
  let closed = 0;
  for (const name of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${name}`).catch(() => undefined);
    if (target === undefined || !under(target)) continue;
    try {
      closeSync(Number(name));
      closed++;
    } catch {
      // Closed meanwhile by its owner: nothing left to do.
    }
  }
  return closed;
}
