import { rename, writeFile } from 'node:fs/promises';

/** Writes through a temporary file and a rename, so a reader (or a daemon after a crash) never sees half of it. */
export async function writeFileAtomic(path: string, content: string, mode = 0o600): Promise<void> {
  const tmp = `${path}.tmp`;
  // State files are private to root (SECURITY.md); the daemon's umask of 077 is the second guard.
  await writeFile(tmp, content, { mode });
  await rename(tmp, path);
}
