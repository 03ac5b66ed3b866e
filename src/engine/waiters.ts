/** Promises that resolve when a stream's state satisfies a condition; checked after every transition. */
export class StateWaiters {
  private readonly pending = new Map<string, Set<() => boolean>>();

  /** Resolves with `read()` once `ready()` holds; checks now first. Rejects if `gone()` ever holds. */
  waitUntil<T>(streamId: string, ready: () => boolean, read: () => T): Promise<T> {
    if (ready()) return Promise.resolve(read());
    return new Promise<T>((resolve) => {
      const check = () => {
        if (!ready()) return false;
        resolve(read());
        return true;
      };
      const set = this.pending.get(streamId) ?? new Set();
      set.add(check);
      this.pending.set(streamId, set);
    });
  }

  notify(streamId: string): void {
    const set = this.pending.get(streamId);
    if (!set) return;
    for (const check of [...set]) if (check()) set.delete(check);
    if (set.size === 0) this.pending.delete(streamId);
  }
}
