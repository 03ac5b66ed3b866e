#!/usr/bin/env node
// The cost of each layer kts puts between the caller and the processes that run the pod:
// - runc pod start (API, serial, tracing on at 100%): from the daemon's own spans, per pod, the gRPC
//   client + transport (client wall time - server spans), the store's durable commits (engine.* spans),
//   the sandbox init (sandboxer.start), runc create (runc.create), overlay mount + bundle
//   (sandboxer.create_container - runc.create), runc start (sandboxer.start_container), and the rest of
//   the daemon (API, engine, image lookup, spec). Means over the pods, so the parts add up.
// - VM pod Start: QEMU + guest boot until the agent answers, the pod start inside the guest, and our own
//   code, as bench/vm-start.mjs defines them (compare.mjs passes the split of its own VM runs in).
// - event store: durable commits per second and commit latency (one appendToStream = one event and its
//   read-model row in one SQLite transaction, WAL, synchronous=FULL), one writer, on the root filesystem.
// - recovery: daemon spawn → serving at 1k and 10k sandboxes (bench/recovery.mjs).
// Usage: node bench/layer-costs.mjs [--pods 20] [--store-seconds 3] [--vm-runs 3] [--recovery 1000,10000]
//        [--accelerator auto|kvm|tcg]   (root; after npm run build)
// Prints a table and writes bench/results/layer-costs.json.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { apiPodStart, buildTestImages, dist, isMain, SLEEPER, startDaemon, writeResult } from './lib/daemon.mjs';
import { waitForQuietMachine } from './lib/procfs.mjs';
import { elapsedMs, formatTable, startTimer, summarize } from './lib/stats.mjs';
import { startSpanReceiver } from './lib/traces.mjs';
import { measureRecovery } from './recovery.mjs';
import { measureVmStart } from './vm-start.mjs';

const { openSqliteStore } = await dist('src/store/sqliteStore.js');

const SERVER_SPANS = new Set(['containerd.services.sandbox.v1.Controller/Create', 'containerd.services.sandbox.v1.Controller/Start', 'kts.admin.v1.Admin/RunContainer']);

/** The sandbox a trace is about, from the attributes its spans carry. */
function sandboxOfTrace(spans) {
  const traces = new Map();
  for (const span of spans) {
    const sandboxId = span.attributes['sandbox.id'] ?? /^sandbox-(.+)$/.exec(span.attributes['kts.stream_id'] ?? '')?.[1];
    if (sandboxId) traces.set(span.traceId, sandboxId);
  }
  return traces;
}

/** One pod's start, split by its spans; every part in ms. */
function splitPod(clientMs, spans) {
  const total = (match) => spans.filter((s) => match(s.name)).reduce((sum, s) => sum + s.durationMs, 0);
  const server = total((name) => SERVER_SPANS.has(name));
  const sandboxInit = total((name) => name === 'sandboxer.start');
  const createContainer = total((name) => name === 'sandboxer.create_container');
  const startContainer = total((name) => name === 'sandboxer.start_container');
  const runcCreate = total((name) => name === 'runc.create');
  const store = total((name) => name.startsWith('engine.'));
  return {
    client_ms: clientMs,
    grpc_client_and_transport_ms: clientMs - server,
    store_commits_ms: store,
    store_commits: spans.filter((s) => s.name.startsWith('engine.')).length,
    sandbox_init_ms: sandboxInit,
    runc_create_ms: runcCreate,
    overlay_mount_and_bundle_ms: createContainer - runcCreate,
    runc_start_ms: startContainer,
    rest_of_daemon_ms: server - sandboxInit - createContainer - startContainer - store,
  };
}

export async function runcPodSplit({ pods = 20 } = {}) {
  const receiver = await startSpanReceiver();
  const clientMs = new Map();
  try {
    const daemon = await startDaemon({ name: 'kts-bench-spans', env: receiver.env });
    try {
      await waitForQuietMachine();
      for (let i = -1; i < pods; i++) {
        const sandboxId = i < 0 ? 'spans-warmup' : `spans-${i}`;
        const started = startTimer();
        await apiPodStart(daemon.client, sandboxId, 'runc', SLEEPER);
        if (i >= 0) clientMs.set(sandboxId, elapsedMs(started));
      }
    } finally {
      await daemon.stop(); // the daemon flushes its spans as it stops
    }
  } finally {
    receiver.stop();
  }
  // Only the traces of the three start calls: the Shutdowns at the end trace the same sandboxes.
  const startTraces = new Set(receiver.spans.filter((s) => SERVER_SPANS.has(s.name)).map((s) => s.traceId));
  const sandboxOf = sandboxOfTrace(receiver.spans);
  const perPod = [...clientMs].map(([sandboxId, ms]) => splitPod(ms, receiver.spans.filter((s) => startTraces.has(s.traceId) && sandboxOf.get(s.traceId) === sandboxId)));
  const mean = (key) => perPod.reduce((sum, pod) => sum + pod[key], 0) / perPod.length;
  const parts = Object.fromEntries(Object.keys(perPod[0]).map((key) => [key, Math.round(mean(key) * 100) / 100]));
  return { pods, tracing: 'on, 100% sampled, OTLP/gRPC to the bench process', mean: parts, per_pod: perPod };
}

/** Durable commits, one writer, for `seconds`: one event + its sandboxes row per transaction. */
export function storeCommits({ seconds = 3, streams = 50 } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'kts-bench-store-'));
  try {
    const store = openSqliteStore(path.join(dir, 'kts.db'), { synchronous: 'FULL' });
    const versions = new Array(streams).fill(0);
    const samples = [];
    const began = startTimer();
    while (elapsedMs(began) < seconds * 1000) {
      const k = samples.length % streams;
      const id = `bench-${k}`;
      const now = new Date().toISOString();
      const row = { id, name: id, namespace: 'bench', kind: 'runc', state: 'ready', pid: 4242, taskAddress: null, createdAt: now, updatedAt: now, version: versions[k] + 1, metadata: { labels: { app: 'bench', round: String(samples.length) } } };
      const event = { type: 'SandboxUpdated', payload: { labels: row.metadata.labels }, stateBefore: 'ready', stateAfter: 'ready', traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', caller: 'bench' };
      const started = startTimer();
      store.appendToStream(`sandbox-${id}`, [event], { expectedVersion: versions[k], projection: { table: 'sandboxes', row } });
      samples.push(elapsedMs(started));
      versions[k] += 1;
    }
    const wallMs = elapsedMs(began);
    store.close();
    const { samples: _, ...latency } = summarize(samples);
    return { synchronous: 'FULL', journal_mode: 'WAL', commits: samples.length, commits_per_s: Math.round(samples.length / (wallMs / 1000)), commit_ms: latency };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function measureLayerCosts({ pods = 20, storeSeconds = 3, vmRuns = 3, vmSplit, recoverySizes = [1000, 10000], accelerator = 'auto' } = {}) {
  buildTestImages();
  process.stdout.write('layer costs: runc pod split');
  const runc_pod_start = await runcPodSplit({ pods });
  process.stdout.write(', store');
  await waitForQuietMachine();
  const store = storeCommits({ seconds: storeSeconds });
  process.stdout.write(', recovery');
  const recovery = [];
  for (const sandboxes of recoverySizes) recovery.push(await measureRecovery({ sandboxes, events: 100_000 }));
  const vm = vmSplit ?? (process.stdout.write(', VM start'), await measureVmStart({ runs: vmRuns, accelerator }));
  console.log(' done');
  return { runc_pod_start, vm_start: vm, store, recovery };
}

export function printLayerCosts(result) {
  const pod = result.runc_pod_start.mean;
  const share = (ms) => `${((ms / pod.client_ms) * 100).toFixed(1)}%`;
  console.log(`\nrunc pod start at the API, where the time goes (mean of ${result.runc_pod_start.pods} serial pods, from the daemon's spans; tracing on):`);
  console.log(formatTable(['part', 'ms', 'share'], [
    ['runc create (process)', pod.runc_create_ms.toFixed(1), share(pod.runc_create_ms)],
    ['runc start (process)', pod.runc_start_ms.toFixed(1), share(pod.runc_start_ms)],
    ['sandbox init (kts-sandbox-init: namespaces, holder)', pod.sandbox_init_ms.toFixed(1), share(pod.sandbox_init_ms)],
    ['overlay mount + bundle files', pod.overlay_mount_and_bundle_ms.toFixed(1), share(pod.overlay_mount_and_bundle_ms)],
    [`event store: ${pod.store_commits} durable commits`, pod.store_commits_ms.toFixed(1), share(pod.store_commits_ms)],
    ['rest of the daemon (API, engine, image, spec)', pod.rest_of_daemon_ms.toFixed(1), share(pod.rest_of_daemon_ms)],
    ['gRPC client + transport (3 calls)', pod.grpc_client_and_transport_ms.toFixed(1), share(pod.grpc_client_and_transport_ms)],
    ['total (client wall time)', pod.client_ms.toFixed(1), '100%'],
  ]));
  const vm = result.vm_start;
  console.log(`\nVM pod Start (${vm.accelerator}, median): ${vm.start_ms_median.toFixed(0)} ms = QEMU + guest boot → agent ${vm.boot_to_agent_ready_ms_median.toFixed(0)} ms + pod start in the guest ${vm.pod_start_in_guest_ms_median.toFixed(0)} ms + our code ${vm.own_code_ms_median.toFixed(0)} ms (${(vm.own_code_share * 100).toFixed(2)}%)`);
  const { store } = result;
  console.log(`event store (WAL, synchronous=FULL, one writer): ${store.commits_per_s} durable commits/s; commit p50 ${store.commit_ms.p50.toFixed(2)} ms, p99 ${store.commit_ms.p99.toFixed(2)} ms (${store.commits} commits)`);
  for (const r of result.recovery) console.log(`recovery: ${r.sandboxes} sandboxes / ${r.events} events (${(r.db_bytes / 1048576).toFixed(1)} MiB) → serving in ${r.start_to_serving_ms} ms`);
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      pods: { type: 'string', default: '20' }, 'store-seconds': { type: 'string', default: '3' }, 'vm-runs': { type: 'string', default: '3' },
      recovery: { type: 'string', default: '1000,10000' }, accelerator: { type: 'string', default: 'auto' },
    },
  });
  const result = await measureLayerCosts({
    pods: Number(values.pods), storeSeconds: Number(values['store-seconds']), vmRuns: Number(values['vm-runs']),
    recoverySizes: values.recovery.split(',').filter(Boolean).map(Number), accelerator: values.accelerator,
  });
  printLayerCosts(result);
  writeResult('layer-costs', result);
}
