#!/usr/bin/env node
// The event log's size per pod lifecycle, without retention and with it: the same N real lifecycles
// (a runc pod, its busybox container, then Shutdown) on two daemons, one keeping every event and one with
// `[audit] retain_events`; every --sample-every lifecycles the database's bytes in use (pages minus free
// pages, after a WAL checkpoint) and the archive's bytes; at the end `kts audit verify` on each.
// Usage: node bench/audit-retention.mjs [--cycles 1000] [--retain-events 2000] [--sample-every 100] [--concurrency 4]
//        (root; after npm run build). Prints a table and writes bench/results/audit-retention.json.
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { apiPodStart, buildTestImages, isMain, startDaemon, writeResult } from './lib/daemon.mjs';
import { formatTable, mapLimit } from './lib/stats.mjs';

const CONTAINER = { image: 'busybox:latest', command: ['true'] };

/** Bytes of the database in use: its pages less its free ones (SQLite reuses freed pages before it grows the file). */
function usedBytes(db) {
  const reader = new Database(db, { readonly: true });
  try {
    const pageSize = reader.pragma('page_size', { simple: true });
    return (reader.pragma('page_count', { simple: true }) - reader.pragma('freelist_count', { simple: true })) * pageSize;
  } finally {
    reader.close();
  }
}

const fileBytes = (file) => statSync(file, { throwIfNoEntry: false })?.size ?? 0;
const dirBytes = (dir) => readdirSync(dir, { withFileTypes: true, recursive: true }).filter((entry) => entry.isFile())
  .reduce((sum, entry) => sum + fileBytes(path.join(entry.parentPath, entry.name)), 0);

async function run({ cycles, sampleEvery, concurrency, retainEvents }) {
  // Retention runs with the daemon's sweep, here every 2 s.
  const daemon = await startDaemon({ name: 'kts-bench-retention', top: 'sweep_interval_seconds = 2', config: retainEvents > 0 ? `[audit]\nretain_events = ${retainEvents}\n` : '' });
  const db = path.join(daemon.root, 'kts.db');
  const archives = path.join(daemon.root, 'audit', 'archive');
  const samples = [];
  try {
    for (let done = 0; done < cycles;) {
      const batch = Math.min(sampleEvery, cycles - done);
      await mapLimit(batch, concurrency, async (i) => {
        const sandboxId = `retention-${retainEvents}-${done + i}`;
        await apiPodStart(daemon.client, sandboxId, 'runc', CONTAINER);
        await daemon.client.controller.Shutdown({ sandboxId });
      });
      done += batch;
      // Retention runs with the sweep: give it one round to catch up before the sample.
      if (retainEvents > 0) await new Promise((resolve) => setTimeout(resolve, 2500));
      daemon.kts('audit', 'verify');
      samples.push({ cycles: done, db_used_bytes: usedBytes(db), db_file_bytes: fileBytes(db) + fileBytes(`${db}-wal`), archive_bytes: existsSync(archives) ? dirBytes(archives) : 0 });
    }
    const verify = daemon.kts('audit', 'verify').trim();
    return { retain_events: retainEvents, samples, verify };
  } finally {
    await daemon.stop();
  }
}

export async function measureRetention({ cycles = 1000, retainEvents = 2000, sampleEvery = 100, concurrency = 4 } = {}) {
  buildTestImages();
  const kept = await run({ cycles, sampleEvery, concurrency, retainEvents: 0 });
  const pruned = await run({ cycles, sampleEvery, concurrency, retainEvents });
  const perThousand = (samples, key) => Math.round(((samples.at(-1)[key] - samples[0][key]) / (samples.at(-1).cycles - samples[0].cycles)) * 1000);
  return {
    cycles,
    without_retention: { ...kept, db_used_bytes_per_1000_lifecycles: perThousand(kept.samples, 'db_used_bytes') },
    with_retention: {
      ...pruned,
      db_used_bytes_per_1000_lifecycles: perThousand(pruned.samples, 'db_used_bytes'),
      db_used_bytes_max: Math.max(...pruned.samples.map((sample) => sample.db_used_bytes)),
      archive_bytes_per_1000_lifecycles: perThousand(pruned.samples, 'archive_bytes'),
    },
  };
}

export function printRetention(result) {
  const rows = result.without_retention.samples.map((sample, index) => {
    const other = result.with_retention.samples[index];
    return [sample.cycles, Math.round(sample.db_used_bytes / 1024), Math.round(other.db_used_bytes / 1024), Math.round(other.archive_bytes / 1024)];
  });
  console.log(`\nEvent log after N pod lifecycles (KiB in use in the database; retain_events = ${result.with_retention.retain_events}):`);
  console.log(formatTable(['lifecycles', 'kept all', 'with retention', 'its archives'], rows));
  console.log(`per 1,000 lifecycles: ${Math.round(result.without_retention.db_used_bytes_per_1000_lifecycles / 1024)} KiB kept all; `
    + `${Math.round(result.with_retention.db_used_bytes_per_1000_lifecycles / 1024)} KiB with retention (at most ${Math.round(result.with_retention.db_used_bytes_max / 1024)} KiB), `
    + `${Math.round(result.with_retention.archive_bytes_per_1000_lifecycles / 1024)} KiB of gzipped archive`);
  console.log(`audit verify: ${result.without_retention.verify} | ${result.with_retention.verify}`);
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { cycles: { type: 'string', default: '1000' }, 'retain-events': { type: 'string', default: '2000' }, 'sample-every': { type: 'string', default: '100' }, concurrency: { type: 'string', default: '4' } } });
  const result = await measureRetention({ cycles: Number(values.cycles), retainEvents: Number(values['retain-events']), sampleEvery: Number(values['sample-every']), concurrency: Number(values.concurrency) });
  printRetention(result);
  writeResult('audit-retention', result);
}
