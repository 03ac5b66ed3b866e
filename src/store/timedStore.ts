import type { AppendOptions, AppendResult, EventStore, NewEvent, Snapshot } from '../core/store.js';
import { isKtsError, type ErrorKind } from '../core/errors.js';

/** `ok`, or the kind of the KtsError the append failed with (`internal` for anything else). */
export type CommitResult = 'ok' | ErrorKind;

/** Told of every append: how long it took and how it ended. Must not throw; it runs on the commit path. */
export type CommitObserver = (seconds: number, result: CommitResult) => void;

/**
 * An EventStore whose appends are timed: the whole call as the engine sees it (validation, the
 * IMMEDIATE transaction, fsync under WAL, and the in-process after-commit listeners). Everything
 * else passes straight through, so the store's own guarantees are unchanged.
 */
export function withCommitTiming(store: EventStore, observe: CommitObserver): EventStore {
  return new TimedEventStore(store, observe);
}

class TimedEventStore implements EventStore {
  constructor(
    private readonly store: EventStore,
    private readonly observe: CommitObserver,
  ) {}

  appendToStream(streamId: string, events: NewEvent[], options: AppendOptions): AppendResult {
    const started = process.hrtime.bigint();
    let result: CommitResult = 'internal';
    try {
      const appended = this.store.appendToStream(streamId, events, options);
      result = 'ok';
      return appended;
    } catch (error) {
      result = isKtsError(error) ? error.kind : 'internal';
      throw error;
    } finally {
      this.observe(Number(process.hrtime.bigint() - started) / 1e9, result);
    }
  }

  readStream(...args: Parameters<EventStore['readStream']>) { return this.store.readStream(...args); }
  readAll(...args: Parameters<EventStore['readAll']>) { return this.store.readAll(...args); }
  headSequence() { return this.store.headSequence(); }
  listStreams(prefix: string) { return this.store.listStreams(prefix); }
  saveSnapshot(snapshot: Snapshot) { this.store.saveSnapshot(snapshot); }
  loadSnapshot(streamId: string) { return this.store.loadSnapshot(streamId); }
  verifyChain(options?: { since?: 'checkpoint'; streams?: string[]; limit?: number }) { return this.store.verifyChain(options); }
  getSandbox(id: string) { return this.store.getSandbox(id); }
  listSandboxes() { return this.store.listSandboxes(); }
  getContainer(id: string) { return this.store.getContainer(id); }
  listContainers(sandboxId?: string) { return this.store.listContainers(sandboxId); }
  onAppended(...args: Parameters<EventStore['onAppended']>) { return this.store.onAppended(...args); }
  close() { this.store.close(); }
}
