import type { AppendOptions, AppendResult, EventStore, NewEvent } from '../core/store.js';
import { PassThroughEventStore } from './passThroughStore.js';
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

class TimedEventStore extends PassThroughEventStore {
  constructor(
    inner: EventStore,
    private readonly observe: CommitObserver,
  ) {
    super(inner);
  }

  override appendToStream(streamId: string, events: NewEvent[], options: AppendOptions): AppendResult {
    const started = process.hrtime.bigint();
    let result: CommitResult = 'internal';
    try {
      const appended = this.inner.appendToStream(streamId, events, options);
      result = 'ok';
      return appended;
    } catch (error) {
      result = isKtsError(error) ? error.kind : 'internal';
      throw error;
    } finally {
      this.observe(Number(process.hrtime.bigint() - started) / 1e9, result);
    }
  }
}
