#!/usr/bin/env node
// Soak: many pod lifecycles (run, logs, exec, stop, rm) on one daemon, mixed over runc and wasm, and
// VM pods beside them; every --sample-every cycles, with no pod left, what the daemon holds: RSS/PSS,
// V8 heap after a full GC, open fds, threads, libuv handles, database and WAL size, event-log rows
// and bytes, mounts and netns under its root, processes it started, cgroups of its pods, files under
// its root, runc's state entries. Goal: after warm-up nothing grows but the event log.
// Usage: node bench/soak.mjs [--cycles 1000] [--vm 20] [--sample-every 100] [--warmup 200]
//        [--cli-every 20] [--wasm-share 0.3] [--concurrency 2] [--daemon-env KEY=VALUE]…   (root; after npm run build)
// Every --cli-every'th lifecycle goes through the `kts` CLI (five processes), the rest through the same
// gRPC calls the CLI makes. Prints a table, writes bench/results/soak.json and bench/results/soak.svg.
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { buildTestImages, dist, REPO, RESULTS_DIR, startDaemon, writeResult } from './lib/daemon.mjs';
import { GC_HOOK, usageAfterFullGc } from './lib/gcMarker.mjs';
import { cgroupsOf, entriesIn, fdsAndThreads, fileBytes, mountsUnder, processesOf, scrapeMetrics, treeSize } from './lib/hostResources.mjs';
import { memoryKb, pssByMapping } from './lib/procfs.mjs';
import { runChecked } from './lib/spawn.mjs';
import { formatTable, loadAverage, mapLimit, sleep } from './lib/stats.mjs';
import { linePanel, svgDocument } from './lib/svg.mjs';
import { hypervisorConfig } from './lib/vm.mjs';

const { values } = parseArgs({
  options: {
    cycles: { type: 'string', default: '1000' }, vm: { type: 'string', default: '20' }, 'sample-every': { type: 'string', default: '100' },
    warmup: { type: 'string', default: '200' }, 'cli-every': { type: 'string', default: '20' }, 'wasm-share': { type: 'string', default: '0.3' },
    concurrency: { type: 'string', default: '2' }, 'daemon-env': { type: 'string', multiple: true, default: [] }, 'guest-dir': { type: 'string', default: '/var/lib/kts/guest' }, out: { type: 'string', default: 'soak' },
  },
});
const CYCLES = Number(values.cycles);
const VM_PODS = Number(values.vm);
const SAMPLE_EVERY = Number(values['sample-every']);
const WARMUP = Number(values.warmup);
const CLI_EVERY = Number(values['cli-every']);
const WASM_SHARE = Number(values['wasm-share']);
const CONCURRENCY = Number(values.concurrency);

const { encodePodSandboxConfig } = await dist('src/cli/client.js');
const KTS = path.join(REPO, 'bin/kts.js');

// The containers: one line of output, then idle until SIGTERM (the trap ends it within 0.2 s, so Stop is graceful).
const RUNC_CONTAINER = { image: 'busybox:latest', command: ['sh', '-c', "trap 'exit 0' TERM; echo soak-hello; while true; do sleep 0.2; done"] };
const WASM_CONTAINER = { image: 'wasm-sleep:latest', args: ['600'] };
const EXEC = { runc: ['cat', '/etc/hostname'], vmm: ['cat', '/etc/hostname'], wasm: ['/sleep.wasm', '0'] };

/** A free TCP port on 127.0.0.1 for the daemon's /metrics. */
function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** One lifecycle through the gRPC API: the calls `kts run`, `kts logs`, `kts exec`, `kts stop`, `kts rm` make. */
async function apiLifecycle(client, kind, n) {
  const sandboxId = `soak-${kind}-${String(n).padStart(5, '0')}`;
  const pod = encodePodSandboxConfig({ metadata: { name: sandboxId, namespace: 'soak', uid: sandboxId }, hostname: sandboxId });
  await client.controller.Create({ sandboxId, sandboxer: kind, options: pod });
  await client.controller.Start({ sandboxId }, { deadlineMs: 300_000 });
  const container = kind === 'wasm' ? WASM_CONTAINER : RUNC_CONTAINER;
  const run = await client.admin.RunContainer({ sandboxId, name: 'main', start: true, ...container });
  const containerId = String(run.containerId);
  let output = '';
  for (let attempt = 0; attempt < 20 && output === ''; attempt++) {
    if (attempt > 0) await sleep(50);
    output = '';
    await client.adminStream('Logs', { containerId, follow: false, tail: false, tailLines: 0, timestamps: false, since: '' }, (chunk) => (output += Buffer.from(chunk.data).toString()));
  }
  const exec = await client.admin.Exec({ containerId, args: EXEC[kind], stdin: Buffer.alloc(0) });
  if (Number(exec.exitStatus) !== 0) throw new Error(`${sandboxId}: exec exited ${exec.exitStatus}: ${Buffer.from(exec.stderr).toString()}`);
  await client.controller.Stop({ sandboxId, timeoutSecs: 5 });
  await client.controller.Shutdown({ sandboxId });
  return { sandboxId, logBytes: output.length };
}

/** One lifecycle through the CLI: five `kts` processes, as an operator types them. */
async function cliLifecycle(daemon, kind, n) {
  const dir = daemon.root;
  const name = `soak-cli-${kind}-${String(n).padStart(5, '0')}`;
  const podFile = path.join(dir, `${name}.pod.yaml`);
  const containerFile = path.join(dir, `${name}.ctr.yaml`);
  writeFileSync(podFile, `metadata:\n  name: ${name}\n  namespace: soak\n  uid: ${name}\nhostname: ${name}\n`);
  const container = kind === 'wasm' ? WASM_CONTAINER : RUNC_CONTAINER;
  writeFileSync(containerFile, `metadata:\n  name: main\nimage:\n  image: ${container.image}\n${container.command ? `command: ${JSON.stringify(container.command)}\n` : ''}${container.args ? `args: ${JSON.stringify(container.args)}\n` : ''}`);
  const env = { ...process.env, KTS_SOCKET: daemon.socket };
  const kts = (...args) => runChecked(process.execPath, [KTS, ...args], { env });
  const { podId, containerId } = JSON.parse((await kts('run', '--runtime', kind, '--json', podFile, containerFile)).stdout);
  await kts('logs', containerId);
  await kts('exec', containerId, '--', ...EXEC[kind]);
  await kts('stop', '--timeout', '5', podId);
  await kts('rm', podId);
  rmSync(podFile);
  rmSync(containerFile);
  return { sandboxId: podId };
}

/** Asks the daemon for a full GC (SIGUSR2 → gcOnSignal.mjs) and reads its memoryUsage() after it, in kB. */
async function heapAfterGc(pid, marker) {
  const usage = await usageAfterFullGc(pid, marker);
  const kb = (bytes) => Math.round(bytes / 1024);
  const space = (name) => usage.spaces[name] ?? { size: 0, used: 0 };
  return {
    heapUsedKb: kb(usage.heapUsed), heapTotalKb: kb(usage.heapTotal), externalKb: kb(usage.external),
    newSpaceKb: kb(space('new_space').size), oldSpaceUsedKb: kb(space('old_space').used), oldSpaceKb: kb(space('old_space').size),
    codeSpaceUsedKb: kb(space('code_space').used), codeSpaceKb: kb(space('code_space').size),
  };
}

/** Rows and bytes of the event log and read models, read from the daemon's database (a WAL reader beside it). */
function eventLogSize(db) {
  const reader = new Database(db, { readonly: true, fileMustExist: true });
  try {
    const events = reader.prepare(`SELECT count(*) AS rows, coalesce(sum(length(stream_id) + length(type) + length(payload) + length(state_before) + length(state_after)
      + coalesce(length(trace_id), 0) + coalesce(length(span_id), 0) + coalesce(length(caller), 0) + length(time) + 2 * 64 + 16), 0) AS bytes FROM events`).get();
    const count = (table) => reader.prepare(`SELECT count(*) AS n FROM ${table}`).get().n;
    const pageBytes = reader.pragma('page_size', { simple: true }) * reader.pragma('page_count', { simple: true });
    return { eventRows: events.rows, eventBytes: events.bytes, sandboxRows: count('sandboxes'), containerRows: count('containers'), snapshotRows: count('snapshots'), dbPagesBytes: pageBytes };
  } finally {
    reader.close();
  }
}

/** Everything the daemon holds, with no pod of ours alive. */
async function sample(daemon, context) {
  const { pid, root } = daemon;
  const db = path.join(root, 'kts.db');
  const memory = memoryKb(pid);
  const heap = await heapAfterGc(pid, context.marker);
  const metrics = await scrapeMetrics(context.metricsAddress);
  const children = processesOf(pid, root);
  const mounts = mountsUnder(pid, root);
  const files = treeSize(root);
  return {
    cycles: context.cycles, vmPods: context.vmPods, at: new Date().toISOString(), load1: loadAverage(),
    rssKb: memory.rss, pssKb: memory.pss, pssAnonKb: memory.pssAnon, pssFileKb: memory.pssFile, ...heap,
    ...Object.fromEntries(Object.entries(pssByMapping(pid)).map(([part, kb]) => [`pss_${part}_kb`, kb])),
    heapUsedBeforeGcKb: Math.round((metrics.kts_nodejs_heap_size_used_bytes ?? 0) / 1024),
    activeHandles: metrics.kts_nodejs_active_handles_total, activeRequests: metrics.kts_nodejs_active_requests_total,
    ...fdsAndThreads(pid), dbBytes: fileBytes(db), walBytes: fileBytes(`${db}-wal`), shmBytes: fileBytes(`${db}-shm`), ...eventLogSize(db),
    mounts: mounts.mounts, nsfsMounts: mounts.nsfs, mountsInNamespace: mounts.all, childProcesses: children.processes, childrenByName: children.byName, childNetns: children.netns,
    cgroups: cgroupsOf(context.sandboxIds), filesUnderRoot: files.entries, bytesUnderRoot: files.bytes, runcStateEntries: entriesIn(path.join(root, 'runc')),
  };
}

/** The VM lane: `count` VM lifecycles one after another, pausing while the main lane samples. */
function vmLane(client, count, gate, progress) {
  return (async () => {
    for (let i = 0; i < count; i++) {
      while (gate.closed) await gate.open();
      gate.busy = true;
      try {
        const started = Date.now();
        await apiLifecycle(client, 'vmm', i);
        progress.vmPods += 1;
        progress.vmMs.push(Date.now() - started);
      } catch (error) {
        progress.errors.push({ kind: 'vmm', n: i, error: String(error.message ?? error) });
      } finally {
        gate.busy = false;
        gate.idle();
      }
    }
  })();
}

/** A gate the sampler closes: the VM lane finishes its lifecycle in flight and waits until it opens again. */
function makeGate() {
  let reopen;
  let opened = Promise.resolve();
  let onIdle = () => {};
  return {
    busy: false,
    open: () => opened,
    idle: () => onIdle(),
    closed: false,
    async close() {
      this.closed = true;
      opened = new Promise((resolve) => (reopen = resolve));
      if (this.busy) await new Promise((resolve) => (onIdle = resolve));
    },
    release() {
      this.closed = false;
      onIdle = () => {};
      reopen?.();
    },
  };
}

/** Least-squares slope of y over x, per 1000 x. */
function slopePer1000(points) {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  return sxx === 0 ? 0 : (points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0) / sxx) * 1000;
}

const COLUMNS = [
  ['cycles', 'cycles'], ['VM', 'vmPods'], ['RSS MiB', 'rssKb', 1024], ['PSS MiB', 'pssKb', 1024], ['heap MiB (GC)', 'heapUsedKb', 1024], ['code MiB', 'codeSpaceKb', 1024], ['malloc MiB', 'pss_malloc_heap_kb', 1024], ['anon MiB', 'pss_anonymous_kb', 1024],
  ['fds', 'fds'], ['thr', 'threads'], ['handles', 'activeHandles'], ['db MiB', 'dbBytes', 1048576], ['WAL MiB', 'walBytes', 1048576], ['events', 'eventRows'],
  ['mounts', 'mounts'], ['netns', 'childNetns'], ['procs', 'childProcesses'], ['cgroups', 'cgroups'], ['files', 'filesUnderRoot'], ['runc', 'runcStateEntries'], ['load', 'load1'],
];

function printSamples(samples) {
  const cell = (s, key, divisor) => (divisor ? (s[key] / divisor).toFixed(1) : String(s[key] ?? '-'));
  console.log(formatTable(COLUMNS.map(([label]) => label), samples.map((s) => COLUMNS.map(([, key, divisor]) => cell(s, key, divisor)))));
}

/** Growth per 1000 lifecycles after warm-up, for every numeric counter. */
function growthAfterWarmup(samples) {
  const after = samples.filter((s) => s.cycles >= WARMUP);
  const keys = Object.keys(samples[0]).filter((key) => typeof samples[0][key] === 'number' && !['cycles', 'vmPods', 'load1', 'activeRequests'].includes(key));
  return Object.fromEntries(keys.map((key) => [key, Math.round(slopePer1000(after.map((s) => ({ x: s.cycles + s.vmPods, y: s[key] }))) * 10) / 10]));
}

function writeChart(samples, file) {
  const series = (label, key, divisor = 1) => ({ label, points: samples.map((s) => ({ x: s.cycles + s.vmPods, y: s[key] / divisor })) });
  const panels = [
    linePanel({ title: 'daemon memory (MiB)', xLabel: 'pod lifecycles (runc, wasm and VM)', yLabel: 'MiB', series: [series('RSS', 'rssKb', 1024), series('PSS', 'pssKb', 1024), series('malloc heap (PSS)', 'pss_malloc_heap_kb', 1024), series('JS heap after GC', 'heapUsedKb', 1024)], markers: [{ x: WARMUP, label: 'warm-up' }] }),
    linePanel({ title: 'handles the daemon holds', xLabel: 'pod lifecycles (runc, wasm and VM)', yLabel: 'count', series: [series('open fds', 'fds'), series('threads', 'threads'), series('libuv handles', 'activeHandles'), series('mounts under root', 'mounts'), series('files under root', 'filesUnderRoot')] }),
    linePanel({ title: 'event log', xLabel: 'pod lifecycles (runc, wasm and VM)', yLabel: 'MiB / thousands', series: [series('db + WAL MiB', 'storeBytes', 1048576), series('event rows (thousands)', 'eventRows', 1000)] }),
  ];
  writeFileSync(file, svgDocument(panels));
  console.log(`wrote ${path.relative(REPO, file)}`);
}

buildTestImages({ wasm: true });
const nodeDir = mkdtempSync(path.join(tmpdir(), 'kts-bench-soak-node-'));
const privateNode = path.join(nodeDir, 'node');
copyFileSync(process.execPath, privateNode); // its PSS is then its own (see README: Memory, precisely)
const marker = path.join(nodeDir, 'gc.json');
writeFileSync(marker, '');
const metricsAddress = `127.0.0.1:${await freePort()}`;
const daemon = await startDaemon({
  name: 'kts-bench-soak', nodeBinary: privateNode, nodeArgs: ['--expose-gc', '--import', GC_HOOK],
  env: { KTS_BENCH_GC_MARKER: marker, ...Object.fromEntries(values['daemon-env'].map((pair) => pair.split(/=(.*)/s, 2))) },
  config: `[metrics]\nlisten = "${metricsAddress}"\n${VM_PODS > 0 ? hypervisorConfig({ guestDir: values['guest-dir'] }) : ''}`,
});
const client = daemon.client;
const context = { marker, metricsAddress, cycles: 0, vmPods: 0, sandboxIds: new Set() };
const progress = { vmPods: 0, vmMs: [], errors: [], cycleMs: { runc: [], wasm: [], cli: [] } };
const samples = [];
const began = Date.now();
const gate = makeGate();
let vmDone = Promise.resolve();
try {
  const takeSample = async () => {
    await gate.close();
    await sleep(1500); // exits, unmounts and cgroup removals the kernel finishes after rm returned
    context.cycles = Math.min(context.cycles, CYCLES);
    context.vmPods = progress.vmPods;
    const s = await sample(daemon, context);
    s.storeBytes = s.dbBytes + s.walBytes;
    samples.push(s);
    console.log(`[${Math.round((Date.now() - began) / 1000)} s] ${s.cycles} cycles, ${s.vmPods} VM pods: RSS ${(s.rssKb / 1024).toFixed(1)} MiB, heap ${(s.heapUsedKb / 1024).toFixed(1)} MiB, fds ${s.fds}, handles ${s.activeHandles}, events ${s.eventRows}, procs ${s.childProcesses}, mounts ${s.mounts}, errors ${progress.errors.length}`);
    gate.release();
  };
  await takeSample();
  for (let batch = 0; batch * SAMPLE_EVERY < CYCLES; batch++) {
    const first = batch * SAMPLE_EVERY;
    const count = Math.min(SAMPLE_EVERY, CYCLES - first);
    await mapLimit(count, CONCURRENCY, async (i) => {
      const n = first + i;
      const kind = Math.floor((n + 1) * WASM_SHARE) > Math.floor(n * WASM_SHARE) ? 'wasm' : 'runc'; // spread evenly
      const started = Date.now();
      try {
        const result = CLI_EVERY > 0 && n % CLI_EVERY === CLI_EVERY - 1 ? await cliLifecycle(daemon, kind, n) : await apiLifecycle(client, kind, n);
        context.sandboxIds.add(result.sandboxId);
        progress.cycleMs[CLI_EVERY > 0 && n % CLI_EVERY === CLI_EVERY - 1 ? 'cli' : kind].push(Date.now() - started);
      } catch (error) {
        progress.errors.push({ kind, n, error: String(error.message ?? error) });
        await client.controller.Shutdown({ sandboxId: `soak-${kind}-${String(n).padStart(5, '0')}` }).catch(() => {});
      }
      context.cycles += 1;
    });
    // The VM lane starts after the warm-up, so that its pods fall in the measured part.
    if (first + count >= WARMUP && VM_PODS > 0 && progress.vmPods === 0 && !gate.started) {
      gate.started = true;
      for (let i = 0; i < VM_PODS; i++) context.sandboxIds.add(`soak-vmm-${String(i).padStart(5, '0')}`);
      vmDone = vmLane(client, VM_PODS, gate, progress);
    }
    await takeSample();
  }
  if (VM_PODS > 0) {
    console.log(`waiting for the VM lane (${progress.vmPods}/${VM_PODS} done)`);
    await vmDone;
    await takeSample();
  }
} finally {
  gate.release();
  await vmDone.catch(() => {});
  await daemon.stop();
  rmSync(nodeDir, { recursive: true, force: true });
}

const measured = samples.filter((s) => s.cycles >= WARMUP);
const firstMeasured = measured[0];
const last = samples.at(-1);
const lifecycles = last.cycles + last.vmPods - (firstMeasured.cycles + firstMeasured.vmPods);
const perLifecycle = {
  events: Math.round(((last.eventRows - firstMeasured.eventRows) / lifecycles) * 10) / 10,
  event_bytes: Math.round((last.eventBytes - firstMeasured.eventBytes) / lifecycles),
  db_bytes: Math.round((last.dbBytes - firstMeasured.dbBytes) / lifecycles),
  db_pages_bytes: Math.round((last.dbPagesBytes - firstMeasured.dbPagesBytes) / lifecycles),
};
const growth = growthAfterWarmup(samples);
printSamples(samples);
console.log(`\nafter warm-up (${WARMUP} cycles), growth per 1000 lifecycles (least squares over ${measured.length} samples):`);
console.log(Object.entries(growth).filter(([, v]) => v !== 0).map(([k, v]) => `${k} ${v}`).join(', '));
console.log(`event log per lifecycle: ${perLifecycle.events} events, ${perLifecycle.event_bytes} bytes of event rows, ${perLifecycle.db_bytes} bytes of db file (${perLifecycle.db_pages_bytes} in pages)`);
const median = (xs) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] : null);
console.log(`lifecycle wall time, median ms: runc API ${median(progress.cycleMs.runc)}, wasm API ${median(progress.cycleMs.wasm)}, CLI ${median(progress.cycleMs.cli)}, VM ${median(progress.vmMs)}`);
console.log(`errors: ${progress.errors.length}`);
for (const error of progress.errors.slice(0, 10)) console.log(`  ${error.kind} #${error.n}: ${error.error}`);
const result = {
  cycles: last.cycles, vm_pods: last.vmPods, warmup: WARMUP, sample_every: SAMPLE_EVERY, cli_every: CLI_EVERY, wasm_share: WASM_SHARE, concurrency: CONCURRENCY,
  wall_s: Math.round((Date.now() - began) / 1000), lifecycles_by_path: { runc_api: progress.cycleMs.runc.length, wasm_api: progress.cycleMs.wasm.length, cli: progress.cycleMs.cli.length, vm_api: progress.vmMs.length },
  lifecycle_ms_median: { runc_api: median(progress.cycleMs.runc), wasm_api: median(progress.cycleMs.wasm), cli: median(progress.cycleMs.cli), vm_api: median(progress.vmMs) },
  growth_per_1000_after_warmup: growth, event_log_per_lifecycle: perLifecycle, errors: progress.errors, samples,
};
writeResult(values.out, result);
writeChart(samples, path.join(RESULTS_DIR, `${values.out}.svg`));
