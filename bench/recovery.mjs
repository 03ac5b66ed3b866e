#!/usr/bin/env node
// Recovery time: builds an event store holding N sandboxes and about M events (each sandbox created,
// started, updated many times, stopped; the streams are real, written through the engine's entities
// and machines), then starts a daemon on it and times spawn → serving (the admin API lists all N).
// Usage: node bench/recovery.mjs [--sandboxes 1000] [--events 100000]   (after npm run build)
// Prints a table and writes bench/results/recovery.json.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { dist, isMain, startDaemon, writeResult } from './lib/daemon.mjs';
import { elapsedMs, startTimer } from './lib/stats.mjs';

const { openSqliteStore } = await dist('src/store/sqliteStore.js');
const { Entity } = await dist('src/engine/entity.js');
const { sandboxMachine } = await dist('machines/sandboxMachine.js');
const { sandboxProjection } = await dist('src/engine/projections.js');
const { openAuditKey } = await dist('src/audit/auditKey.js');
const { withSealedSnapshots } = await dist('src/audit/sealedSnapshots.js');

/**
 * Writes the fixture store: `sandboxes` stopped sandboxes with about `events` events in all, their snapshots
 * sealed with the audit key at `keyFile` as the daemon seals its own (the daemon is then given that key).
 */
export function buildFixture(db, sandboxes, events, keyFile) {
  const updatesEach = Math.max(0, Math.round(events / sandboxes) - 5);
  const raw = openSqliteStore(db, { synchronous: 'OFF' });
  const store = withSealedSnapshots(raw, openAuditKey(keyFile), () => undefined);
  const meta = { caller: 'bench fixture' };
  for (let i = 0; i < sandboxes; i++) {
    const sandboxId = `bench-${String(i).padStart(5, '0')}`;
    const entity = new Entity(`sandbox-${sandboxId}`, sandboxMachine, store, sandboxProjection);
    entity.record({ type: 'SandboxCreated', sandboxId, kind: 'runc', name: sandboxId, namespace: 'bench', uid: sandboxId, hostname: sandboxId, annotations: {}, labels: { app: 'bench' }, createdAt: new Date().toISOString() }, meta);
    entity.record({ type: 'SandboxStartRequested' }, meta);
    entity.record({ type: 'SandboxStarted', pid: 1_000_000 + i, taskAddress: 'grpc+/run/kts/kts.sock', startedAt: new Date().toISOString() }, meta);
    for (let u = 0; u < updatesEach; u++) entity.record({ type: 'SandboxUpdated', labels: { app: 'bench', round: String(u) } }, meta);
    entity.record({ type: 'SandboxStopRequested', timeoutMs: 1000 }, meta);
    entity.record({ type: 'SandboxStopped', exitStatus: 0, exitedAt: new Date().toISOString() }, meta);
    entity.stop();
  }
  const written = store.headSequence();
  store.close();
  return written;
}

export async function measureRecovery({ sandboxes = 1000, events = 100_000 } = {}) {
  const fixtureDir = mkdtempSync(path.join(tmpdir(), 'kts-bench-recovery-'));
  const db = path.join(fixtureDir, 'kts.db');
  try {
    const t0 = Date.now();
    const keyFile = path.join(fixtureDir, 'audit', 'ed25519.key');
    const written = buildFixture(db, sandboxes, events, keyFile);
    const buildMs = Date.now() - t0;
    const daemon = await startDaemon({ name: 'kts-bench-recovery', db, config: `[audit]\nkey_file = "${keyFile}"\n`, stdio: 'inherit', deadlineMs: 300_000 });
    // What one sandbox's history costs on a store this size: the first right at serving (it finishes the
    // start's chain check itself), then one more (only the pod's own events and anything new are re-hashed).
    const historyMs = [];
    for (const ref of ['bench-00000', 'bench-00001']) {
      const historyStarted = startTimer();
      await daemon.client.admin.History({ ref });
      historyMs.push(Math.round(elapsedMs(historyStarted)));
    }
    // The fixture's sandboxes are stopped records: nothing to shut down, and the store is the fixture's.
    await daemon.stop({ keepSandboxes: true });
    return {
      sandboxes, events: written, db_bytes: statSync(db).size, fixture_build_ms: buildMs, start_to_serving_ms: Math.round(daemon.readyMs), listed: daemon.listedAtReady,
      history_first_ms: historyMs[0], history_next_ms: historyMs[1],
    };
  } finally {
    rmSync(fixtureDir, { recursive: true, force: true });
  }
}

export const printRecovery = (result) => {
  console.log(`store: ${result.sandboxes} sandboxes, ${result.events} events, ${(result.db_bytes / 1048576).toFixed(1)} MiB (built in ${result.fixture_build_ms} ms)`);
  console.log(`daemon start → serving (ListSandboxes answers ${result.listed}): ${result.start_to_serving_ms} ms`);
  console.log(`History of one sandbox (admin API, with the chain check): ${result.history_first_ms} ms at serving, ${result.history_next_ms} ms after`);
};

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: { sandboxes: { type: 'string', default: '1000' }, events: { type: 'string', default: '100000' } } });
  const result = await measureRecovery({ sandboxes: Number(values.sandboxes), events: Number(values.events) });
  printRecovery(result);
  writeResult('recovery', result);
}
