import { rename, writeFile } from 'node:fs/promises';

/** Writes through a temporary file and a rename, so a reader (or a daemon after a crash) never sees half of it. */
export async function writeFileAtomic(path: string, content: string): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeFile(tmp, content);
  await rename(tmp, path);
}
