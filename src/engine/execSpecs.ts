import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { OciProcess } from '../core/sandboxer.js';
import { Sweep, type KnownIds } from '../core/sweep.js';

/**
 * Exec process specs between Task Exec and Task Start. Kept in a file (mode 0600) so a daemon restart
 * in between loses nothing, and never in the event log: their env may hold secrets, and the log is
 * append-only. Without a directory (unit tests) they live in memory only.
 */
export class ExecSpecs {
  private readonly memory = new Map<string, OciProcess>();

  constructor(private readonly dir?: string) {}

  async put(containerId: string, execId: string, process: OciProcess): Promise<void> {
    if (!this.dir) return void this.memory.set(`${containerId}/${execId}`, process);
    await mkdir(path.join(this.dir, containerId), { recursive: true, mode: 0o700 });
    await writeFile(this.file(containerId, execId), JSON.stringify(process), { mode: 0o600 });
  }

  async get(containerId: string, execId: string): Promise<OciProcess | undefined> {
    if (!this.dir) return this.memory.get(`${containerId}/${execId}`);
    const text = await readFile(this.file(containerId, execId), 'utf8').catch(() => undefined);
    return text === undefined ? undefined : (JSON.parse(text) as OciProcess);
  }

  async remove(containerId: string, execId: string): Promise<void> {
    if (!this.dir) return void this.memory.delete(`${containerId}/${execId}`);
    await rm(this.file(containerId, execId), { force: true });
  }

  /** Every spec of a container that is deleted. */
  async removeContainer(containerId: string): Promise<void> {
    if (this.dir) return rm(path.join(this.dir, containerId), { recursive: true, force: true });
    for (const key of [...this.memory.keys()]) if (key.startsWith(`${containerId}/`)) this.memory.delete(key);
  }

  /** Removes the specs of containers no record owns; what it removed, for the orphan report. */
  async sweepOrphans(knownContainerIds: KnownIds): Promise<string[]> {
    if (!this.dir) return [];
    const sweep = new Sweep();
    for (const containerId of await readdir(this.dir).catch(() => [] as string[])) {
      if (knownContainerIds.has(containerId)) continue;
      const dir = path.join(this.dir, containerId);
      await sweep.attempt(`exec specs of container ${containerId} in ${dir}`, () => rm(dir, { recursive: true, force: true }));
    }
    return sweep.finish();
  }

  private file(containerId: string, execId: string): string {
    return path.join(this.dir!, containerId, `${execId}.json`);
  }
}
