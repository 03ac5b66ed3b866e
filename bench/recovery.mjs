#!/usr/bin/env node
// Recovery time: builds an event store holding N sandboxes and about M events (each sandbox created,
// started, updated many times, stopped; the streams are real, written through the engine's entities
// and machines), then starts a daemon on it and times spawn → serving (the admin API lists all N).
// Usage: node bench/recovery.mjs [--sandboxes 1000] [--events 100000]   (after npm run build)
// Prints a table and writes bench/results/recovery.json.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = (file) => import(path.join(REPO, 'dist', file));
const { openSqliteStore } = await dist('src/store/sqliteStore.js');
const { Entity } = await dist('src/engine/entity.js');
const { sandboxMachine } = await dist('machines/sandboxMachine.js');
const { sandboxProjection } = await dist('src/engine/projections.js');

const { values } = parseArgs({ options: { sandboxes: { type: 'string', default: '1000' }, events: { type: 'string', default: '100000' } } });
const sandboxes = Number(values.sandboxes);
const updatesEach = Math.max(0, Math.round(Number(values.events) / sandboxes) - 5);
const root = mkdtempSync(path.join(tmpdir(), 'kts-bench-recovery-'));
const db = path.join(root, 'kts.db');

const t0 = Date.now();
const store = openSqliteStore(db, { synchronous: 'OFF' });
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
const events = store.headSequence();
store.close();
const buildMs = Date.now() - t0;

const socket = path.join(root, 'kts.sock');
writeFileSync(path.join(root, 'config.toml'), `listen = "${socket}"\nroot = "${root}"\ndb = "${db}"\nlog_level = "warn"\n[runc]\nroot = "${root}/runc"\n`);
const Admin = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(REPO, 'proto/kts/admin/v1/admin.proto'), { keepCase: true, includeDirs: [path.join(REPO, 'proto')] })).kts.admin.v1.Admin;
const admin = new Admin(`unix://${socket}`, grpc.credentials.createInsecure());
const list = () => new Promise((resolve, reject) => admin.ListSandboxes({}, { deadline: Date.now() + 1000 }, (e, r) => (e ? reject(e) : resolve(r))));

const started = process.hrtime.bigint();
const daemon = spawn(process.execPath, [path.join(REPO, 'bin/kts.js'), 'daemon', '--config', path.join(root, 'config.toml')], { stdio: 'inherit' });
let listed = 0;
try {
  for (;;) {
    try {
      listed = (await list()).sandboxes.length;
      break;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
  const servingMs = Number(process.hrtime.bigint() - started) / 1e6;
  const result = { sandboxes, events, db_bytes: statSync(db).size, fixture_build_ms: buildMs, start_to_serving_ms: servingMs, listed };
  console.log(`store: ${sandboxes} sandboxes, ${events} events, ${(result.db_bytes / 1048576).toFixed(1)} MiB (built in ${buildMs} ms)`);
  console.log(`daemon start → serving (ListSandboxes answers ${listed}): ${servingMs.toFixed(0)} ms`);
  mkdirSync(path.join(REPO, 'bench/results'), { recursive: true });
  writeFileSync(path.join(REPO, 'bench/results/recovery.json'), JSON.stringify(result, null, 2) + '\n');
  console.log('wrote bench/results/recovery.json');
} finally {
  admin.close();
  daemon.kill('SIGTERM');
  await new Promise((resolve) => daemon.once('exit', resolve));
  rmSync(root, { recursive: true, force: true });
}
