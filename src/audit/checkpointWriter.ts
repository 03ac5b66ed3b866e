import type { Logger } from 'pino';
import type { AuditCheckpoint, EventStore } from '../core/store.js';
import type { AuditKey } from './auditKey.js';
import { readHeadFile, signCheckpoint, writeHeadFile } from './checkpoints.js';

export interface CheckpointWriterOptions {
  store: EventStore;
  key: AuditKey;
  /** A checkpoint after this many events. */
  every: number;
  headFile: string;
  logger: Logger;
  /** Told of every checkpoint written (and, at start, of the newest one): the metrics. */
  observe?: (checkpoint: AuditCheckpoint) => void;
}

export interface CheckpointWriter {
  /** Signs the log's head now, unless the newest checkpoint already vouches for it (the daemon's shutdown). */
  checkpointHead(): AuditCheckpoint | undefined;
  stop(): void;
}

/**
 * Signs the head every `every` events, counted from the appends (store.onAppended): the checkpoint goes to
 * the table, to the head file (atomically replaced), to the log ('audit checkpoint') and to `observe`, so
 * copies are held where the database's owner cannot rewrite them. Guarantee: the after-commit hook is lost
 * on a crash, so a crash can leave up to `every` events (and whatever followed) past the newest checkpoint;
 * a failed checkpoint is logged and retried on the next append.
 */
export function startCheckpointWriter(options: CheckpointWriterOptions): CheckpointWriter {
  const { store, key, every, headFile, logger } = options;
  const newest = store.listCheckpoints().at(-1);
  let signedUpTo = newest?.sequence ?? 0;
  let unsigned = Math.max(0, store.headSequence() - signedUpTo);
  if (newest) publishAtStart(newest, options);

  const record = (head: { sequence: number; hash: string }): AuditCheckpoint | undefined => {
    if (head.sequence <= signedUpTo) return undefined;
    const checkpoint = signCheckpoint(head, key);
    store.appendCheckpoint(checkpoint);
    signedUpTo = checkpoint.sequence;
    unsigned = 0;
    writeHeadFile(headFile, checkpoint);
    logger.info({ sequence: checkpoint.sequence, hash: checkpoint.hash, signature: checkpoint.signature, keyId: checkpoint.keyId, time: checkpoint.time }, 'audit checkpoint');
    options.observe?.(checkpoint);
    return checkpoint;
  };
  const unsubscribe = store.onAppended((events) => {
    unsigned += events.length;
    if (unsigned < every) return;
    try {
      record(events.at(-1)!);
    } catch (error) {
      logger.error({ err: error }, 'audit checkpoint failed; the next append retries');
    }
  });
  return {
    checkpointHead() {
      const sequence = store.headSequence();
      const [head] = sequence > 0 ? store.readAll({ afterSequence: sequence - 1, limit: 1 }) : [];
      return head && record(head);
    },
    stop: unsubscribe,
  };
}

/** The newest checkpoint to the metrics, and to the head file if that is missing or older (a crash between the two writes). */
function publishAtStart(newest: AuditCheckpoint, options: CheckpointWriterOptions): void {
  options.observe?.(newest);
  try {
    const held = readHeadFile(options.headFile, false);
    // A newer head file than the table is evidence (of a cut table), never overwritten here.
    if (!held || held.sequence < newest.sequence) writeHeadFile(options.headFile, newest);
  } catch (error) {
    options.logger.warn({ err: error, headFile: options.headFile }, 'audit head file unreadable; the next checkpoint replaces it');
  }
}
