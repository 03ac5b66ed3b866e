import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { unavailable } from '../../core/errors.js';

interface Waiter {
  resolve(content: string): void;
  reject(error: Error): void;
}

/**
 * Resolves waiters when a named file appears in one directory (its writer renames it into place).
 * inotify (fs.watch) makes that prompt; a slow poll covers what inotify can miss (a watch that
 * failed to start, an overflowed queue). The watcher and timer exist only while someone waits.
 */
export class FileArrivals {
  private readonly waiters = new Map<string, Waiter[]>();
  private watcher: FSWatcher | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly dir: string,
    private readonly pollIntervalMs = 1000,
  ) {}

  /**
   * Resolves with the content of `<dir>/<name>` once it exists, at once if it already does; read
   * here, so a caller never races the file's removal. An abort withdraws the wait.
   */
  waitFor(name: string, signal?: AbortSignal): Promise<string> {
    if (this.closed) return Promise.reject(unavailable(`watcher of ${this.dir} is closed`));
    const arrival = new Promise<string>((resolve, reject) => {
      const waiter = { resolve, reject };
      const list = this.waiters.get(name) ?? [];
      list.push(waiter);
      this.waiters.set(name, list);
      signal?.addEventListener('abort', () => this.withdraw(name, waiter, signal.reason), { once: true });
    });
    // Watch first, then look: a file renamed in between is seen by one or the other.
    this.startWatching();
    void this.check(name);
    return arrival;
  }

  /** Resolves the waiters whose file exists and rejects the rest: the directory is about to go. */
  async settle(reason: string): Promise<void> {
    await Promise.all([...this.waiters.keys()].map((name) => this.check(name)));
    this.rejectAll(unavailable(reason));
  }

  close(): void {
    this.closed = true;
    this.rejectAll(unavailable(`watcher of ${this.dir} was closed`));
  }

  private withdraw(name: string, waiter: Waiter, reason: unknown): void {
    const list = this.waiters.get(name)?.filter((other) => other !== waiter) ?? [];
    if (list.length > 0) this.waiters.set(name, list);
    else this.waiters.delete(name);
    if (this.waiters.size === 0) this.stopWatching();
    waiter.reject(reason instanceof Error ? reason : new Error(String(reason)));
  }

  private rejectAll(error: Error): void {
    const waiters = [...this.waiters.values()].flat();
    this.waiters.clear();
    this.stopWatching();
    for (const waiter of waiters) waiter.reject(error);
  }

  private async check(name: string): Promise<void> {
    let content: string;
    try {
      content = await readFile(join(this.dir, name), 'utf8');
    } catch {
      return;
    }
    const list = this.waiters.get(name);
    if (!list) return;
    this.waiters.delete(name);
    if (this.waiters.size === 0) this.stopWatching();
    for (const waiter of list) waiter.resolve(content);
  }

  private startWatching(): void {
    if (!this.watcher) {
      try {
        this.watcher = watch(this.dir, { persistent: false }, (_event, filename) => {
          if (filename && this.waiters.has(filename)) void this.check(filename);
        });
        this.watcher.on('error', () => this.dropWatcher());
      } catch {
        // No inotify (e.g. the directory is not there yet): the poll still finds the file.
      }
    }
    this.pollTimer ??= setInterval(() => {
      for (const name of this.waiters.keys()) void this.check(name);
    }, this.pollIntervalMs);
  }

  private dropWatcher(): void {
    this.watcher?.close();
    this.watcher = undefined;
  }

  private stopWatching(): void {
    this.dropWatcher();
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = undefined;
  }
}
