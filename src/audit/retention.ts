import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { createGzip } from 'node:zlib';
import type { Logger } from 'pino';
import { isFinalState, sandboxMachine } from '../../machines/index.js';
import type { ArchivedPod, EventStore, PruneRecord, StoredEvent } from '../core/store.js';
import { eventLine, pruneSigningText } from './records.js';

/** `[audit] retain_days` / `retain_events`: 0 is no limit. */
export interface RetentionPolicy {
  /** Pods removed longer ago than this many days (and the node's own events as old) leave the log. */
  retainDays: number;
  /** Once the log holds more events than this, every removed pod (and the node's events) may leave it. */
  retainEvents: number;
}

/** Signs a prune record: the audit key's id and an Ed25519 signature of the text. */
export interface RecordSigner {
  keyId: string;
  sign(text: string): string;
}

const NODE_STREAM = 'node';
const READ_BATCH = 1000;

/**
 * Moves the oldest events out of the log when the policy says so: the longest run from the log's start in
 * which every event is a prunable pod's (removed before the horizon, or any removed pod once the log is
 * over its cap) or the node's own, so a pod is never split and nothing recovery replays goes. The events
 * are written to `<archiveDir>/events-<from>-<to>.jsonl.gz` (their lines, then the signed prune record)
 * and synced before the store drops them in one transaction; a crash between leaves an archive of events
 * the log still holds (no record names it), and the next prune writes its own. Returns the prune, or
 * undefined when nothing may go.
 */
export async function pruneOnce(store: EventStore, policy: RetentionPolicy, options: { archiveDir: string; signer: RecordSigner; now?: Date }): Promise<PruneRecord | undefined> {
  const now = options.now ?? new Date();
  const start = store.listPrunes().at(-1)?.upToSequence ?? 0;
  const overCap = policy.retainEvents > 0 && store.headSequence() - start > policy.retainEvents;
  const horizon = policy.retainDays > 0 ? now.getTime() - policy.retainDays * 86_400_000 : undefined;
  if (!overCap && horizon === undefined) return undefined;
  const oldEnough = (time: string) => overCap || (horizon !== undefined && Date.parse(time) < horizon);
  const pods = store.listSandboxes().filter((row) => isFinalState(sandboxMachine, row.state) && oldEnough(row.updatedAt));
  const podOfStream = new Map<string, string>();
  for (const pod of pods) {
    podOfStream.set(`sandbox-${pod.id}`, pod.id);
    for (const container of store.listContainers(pod.id)) podOfStream.set(`container-${container.id}`, pod.id);
  }
  const prunable = (event: StoredEvent) => podOfStream.has(event.streamId) || (event.streamId === NODE_STREAM && oldEnough(event.time));

  const events = wholePods(store, takePrefix(store, start, prunable), podOfStream);
  const last = events.at(-1);
  if (!last) return undefined;
  const streamVersions: Record<string, number> = {};
  for (const event of events) if (!podOfStream.has(event.streamId)) streamVersions[event.streamId] = event.streamVersion;
  const archive = path.join(options.archiveDir, `events-${start + 1}-${last.sequence}.jsonl.gz`);
  const unsigned = { upToSequence: last.sequence, hash: last.hash, eventCount: events.length, streamVersions, archive, time: now.toISOString(), keyId: options.signer.keyId };
  const record: PruneRecord = { ...unsigned, signature: options.signer.sign(pruneSigningText(unsigned)) };
  await writeArchive(archive, events, record);
  const archivedIds = new Set(events.map((event) => podOfStream.get(event.streamId)).filter((id) => id !== undefined));
  const archived: ArchivedPod[] = pods.filter((pod) => archivedIds.has(pod.id))
    .map((pod) => ({ sandboxId: pod.id, name: pod.name, namespace: pod.namespace, archive, upToSequence: last.sequence }));
  store.prune(record, archived);
  return record;
}

/**
 * The prefix cut back so that no pod is split: a removed pod's events can lie on both sides of the first
 * live event, and one that goes on past the prefix's end keeps all of its events (and everything after its
 * first one) in the log. Repeated until no pod in what is left goes past its end.
 */
function wholePods(store: EventStore, prefix: StoredEvent[], podOfStream: Map<string, string>): StoredEvent[] {
  const lastOfStream = new Map<string, number>();
  const lastSequence = (streamId: string) => {
    if (!lastOfStream.has(streamId)) lastOfStream.set(streamId, store.readStream(streamId).at(-1)?.sequence ?? 0);
    return lastOfStream.get(streamId)!;
  };
  let events = prefix;
  for (;;) {
    const end = events.at(-1)?.sequence ?? 0;
    const cut = events.find((event) => podOfStream.has(event.streamId) && lastSequence(event.streamId) > end);
    if (!cut) return events;
    const pod = podOfStream.get(cut.streamId);
    const first = events.find((event) => podOfStream.get(event.streamId) === pod)!.sequence;
    events = events.filter((event) => event.sequence < first);
  }
}

/** The events after `start` up to (not including) the first one `prunable` refuses. */
function takePrefix(store: EventStore, start: number, prunable: (event: StoredEvent) => boolean): StoredEvent[] {
  const taken: StoredEvent[] = [];
  for (let after = start; ;) {
    const batch = store.readAll({ afterSequence: after, limit: READ_BATCH });
    for (const event of batch) {
      if (!prunable(event)) return taken;
      taken.push(event);
    }
    if (batch.length < READ_BATCH) return taken;
    after = batch.at(-1)!.sequence;
  }
}

/** Writes the archive beside its final name, syncs it and renames it into place (0600: it holds what the log held). */
async function writeArchive(file: string, events: StoredEvent[], record: PruneRecord): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const temp = `${file}.tmp`;
  try {
    const gzip = createGzip();
    const out = createWriteStream(temp, { mode: 0o600 });
    const closed = once(out, 'close');
    gzip.pipe(out);
    for (const event of events) {
      if (!gzip.write(`${eventLine(event)}\n`)) await once(gzip, 'drain');
    }
    gzip.end(`${JSON.stringify({ prune: record })}\n`);
    await closed;
    const handle = await open(temp, 'r');
    await handle.sync().finally(() => handle.close());
    await rename(temp, file);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

/**
 * Runs `pruneOnce` every `intervalMs`, one at a time, logging each prune (`audit prune`: what went where)
 * and each failure (retried at the next round); nothing when the policy keeps everything. Returns a stop
 * function that waits for a prune in progress.
 */
export function startRetention(store: EventStore, policy: RetentionPolicy, options: { archiveDir: string; signer: RecordSigner; intervalMs: number; logger: Logger }): () => Promise<void> {
  if (policy.retainDays <= 0 && policy.retainEvents <= 0) return async () => undefined;
  let running: Promise<void> | undefined;
  const round = () => {
    // A round still running when the next is due: that one is skipped.
    if (running) return;
    running = pruneOnce(store, policy, options).then(
      (prune) => { if (prune) options.logger.info({ up_to_sequence: prune.upToSequence, events: prune.eventCount, archive: prune.archive, signature: prune.signature }, 'audit prune'); },
      (error: unknown) => options.logger.error({ err: error }, 'audit prune failed; the next round tries again'),
    ).finally(() => { running = undefined; });
  };
  const timer = setInterval(round, options.intervalMs);
  round();
  return async () => {
    clearInterval(timer);
    await running;
  };
}
