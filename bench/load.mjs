#!/usr/bin/env node
// Load: 100 concurrent gRPC clients (each its own connection) against one daemon, then the same
// callers against a daemon recovering a store of 1,000 sandboxes / 100k events.
//  1. steady (--duration s): 10 clients hold admin WatchEvents streams; 20 start a runc pod each all
//     at once every --burst-every s (Create + Start + RunContainer) and remove it half a period later;
//     10 exec into running containers; 60 call Controller.Status, admin ListSandboxes and
//     ListContainers in a loop. Status/list latency is split by whether a burst of starts was in flight.
//  2. recovery: the 100 callers fire Status/ListSandboxes/ListContainers from the moment the daemon is
//     spawned on the fixture store (bench/recovery.mjs builds it), each call's outcome recorded: refused
//     (the socket is not there or not accepting), a gRPC status from the daemon (with its error kind and
//     retry hint, if any), or OK, and how long each took.
// Usage: node bench/load.mjs [--duration 300] [--clients 100] [--burst-every 30] [--recovery-sandboxes 1000]
//        [--recovery-events 100000] [--parts steady,recovery]   (root; after npm run build)
// Every call has a 30 s deadline: one that reaches it is reported as a hang. Writes bench/results/load.json.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildTestImages, dist, IMAGES_DIR, KTS, SLEEPER, startDaemon, writeResult } from './lib/daemon.mjs';
import { statusClient } from './lib/statusClient.mjs';
import { formatTable, loadAverage, percentile, sleep } from './lib/stats.mjs';
import { buildFixture } from './recovery.mjs';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '300' }, clients: { type: 'string', default: '100' }, 'burst-every': { type: 'string', default: '30' },
    'recovery-sandboxes': { type: 'string', default: '1000' }, 'recovery-events': { type: 'string', default: '100000' },
    'recovery-seconds': { type: 'string', default: '5' }, parts: { type: 'string', default: 'steady,recovery' }, out: { type: 'string', default: 'load' },
  },
});
const CLIENTS = Number(values.clients);
const DEADLINE_MS = 30_000;
const { encodePodSandboxConfig } = await dist('src/cli/client.js');

/** Latency summary (ms) of call records, with outcomes by status (and error kind). */
function summary(records) {
  const ms = records.filter((r) => r.ok).map((r) => r.ms);
  const outcomes = {};
  for (const r of records) {
    const key = r.ok ? 'OK' : `${r.status}${r.kind ? `/${r.kind}` : r.refused ? '/refused' : '/no daemon status'}`;
    outcomes[key] = (outcomes[key] ?? 0) + 1;
  }
  const round = (x) => (x === undefined ? null : Math.round(x * 10) / 10);
  return { n: records.length, ok: ms.length, p50: round(percentile(ms, 50)), p99: round(percentile(ms, 99)), max: round(ms.length ? Math.max(...ms) : undefined), outcomes, hangs: records.filter((r) => r.code === 4 && !r.kind).length };
}

const READS = [
  (call, ids) => call('controller', 'Status', { sandboxId: ids[Math.floor(Math.random() * ids.length)] ?? 'none' }),
  (call) => call('admin', 'ListSandboxes', {}),
  (call) => call('admin', 'ListContainers', { sandboxId: '' }),
];
const READ_NAMES = ['Status', 'ListSandboxes', 'ListContainers'];

/** Create + Start + RunContainer of one runc pod; the three call records. */
async function startPod(client, sandboxId) {
  const options = encodePodSandboxConfig({ metadata: { name: sandboxId, namespace: 'load', uid: sandboxId } });
  const create = await client.call('controller', 'Create', { sandboxId, sandboxer: 'runc', options }, { deadlineMs: DEADLINE_MS });
  const start = create.ok ? await client.call('controller', 'Start', { sandboxId }, { deadlineMs: DEADLINE_MS }) : undefined;
  const run = start?.ok ? await client.call('admin', 'RunContainer', { sandboxId, name: 'main', start: true, ...SLEEPER }, { deadlineMs: DEADLINE_MS }) : undefined;
  return { records: [create, start, run].filter(Boolean), ok: Boolean(run?.ok), containerId: run?.ok ? String(run.response.containerId) : undefined, ms: [create, start, run].reduce((s, r) => s + (r?.ms ?? 0), 0) };
}

/** Part 1: mixed load for `durationS` seconds. */
async function steady(durationS, burstEveryS) {
  const daemon = await startDaemon({ name: 'kts-bench-load', stdio: ['ignore', 'ignore', 'inherit'] });
  const clients = Array.from({ length: CLIENTS }, () => statusClient(daemon.socket));
  const tenth = Math.max(1, Math.round(CLIENTS / 10)); // of 100: 10 watchers, 20 starters, 10 execers, 60 readers
  const roles = { watchers: clients.slice(0, tenth), starters: clients.slice(tenth, 3 * tenth), execers: clients.slice(3 * tenth, 4 * tenth), readers: clients.slice(4 * tenth) };
  const reads = []; // { name, ms, ok, status, kind, inBurst }
  const starts = [];
  const removes = [];
  const execs = [];
  const watchers = [];
  const sandboxIds = [];
  const containers = [];
  const bursts = [];
  let burstsInFlight = 0;
  const endAt = Date.now() + durationS * 1000;
  const load = [];
  try {
    // Ten pods that stay: targets for Status and Exec from the first second.
    for (let i = 0; i < 10; i++) {
      const pod = await startPod(roles.execers[i % roles.execers.length], `load-base-${i}`);
      if (!pod.ok) throw new Error(`base pod ${i} did not start: ${JSON.stringify(pod.records.at(-1))}`);
      sandboxIds.push(`load-base-${i}`);
      containers.push(pod.containerId);
    }
    const watching = roles.watchers.map((client, i) => {
      const watcher = { events: 0, firstMs: undefined };
      watchers.push(watcher);
      return client.call('admin', 'WatchEvents', { afterSequence: 0 }, { deadlineMs: Infinity, onMessage: () => (watcher.events += 1) }).then((r) => (watcher.end = { status: r.status, kind: r.kind, details: r.details }));
    });
    const readerLoop = async (client) => {
      while (Date.now() < endAt) {
        const which = Math.floor(Math.random() * READS.length);
        const inBurst = burstsInFlight > 0;
        const r = await READS[which](client.call, sandboxIds);
        reads.push({ name: READ_NAMES[which], ms: r.ms, ok: r.ok, code: r.code, status: r.status, kind: r.kind, inBurst: inBurst || burstsInFlight > 0 });
        await sleep(50 + Math.random() * 100);
      }
    };
    const execLoop = async (client) => {
      while (Date.now() < endAt) {
        const r = await client.call('admin', 'Exec', { containerId: containers[Math.floor(Math.random() * containers.length)], args: ['true'], stdin: Buffer.alloc(0) }, { deadlineMs: DEADLINE_MS });
        execs.push({ ms: r.ms, ok: r.ok && Number(r.response.exitStatus) === 0, code: r.code, status: r.status, kind: r.kind, inBurst: burstsInFlight > 0 });
        await sleep(200 + Math.random() * 200);
      }
    };
    const burstLoop = async () => {
      for (let round = 0; Date.now() + 5000 < endAt; round++) {
        const began = Date.now();
        burstsInFlight += 1;
        const ids = roles.starters.map((_, i) => `load-b${round}-${i}`);
        const results = await Promise.all(roles.starters.map((client, i) => startPod(client, ids[i])));
        burstsInFlight -= 1;
        bursts.push({ round, wallMs: Date.now() - began, ok: results.filter((r) => r.ok).length });
        for (const r of results) starts.push({ ms: r.ms, ok: r.ok, code: r.records.at(-1).code, status: r.records.at(-1).status, kind: r.records.at(-1).kind });
        for (const id of ids) sandboxIds.push(id);
        await sleep(Math.max(0, Math.min(burstEveryS * 500 - (Date.now() - began), endAt - Date.now())));
        const removed = await Promise.all(roles.starters.map((client, i) => client.call('controller', 'Shutdown', { sandboxId: ids[i] }, { deadlineMs: DEADLINE_MS })));
        for (const r of removed) removes.push({ ms: r.ms, ok: r.ok, code: r.code, status: r.status, kind: r.kind });
        for (const id of ids) sandboxIds.splice(sandboxIds.indexOf(id), 1);
        await sleep(Math.max(0, Math.min(burstEveryS * 1000 - (Date.now() - began), endAt - Date.now())));
      }
    };
    const sampler = (async () => {
      while (Date.now() < endAt) {
        load.push(loadAverage());
        await sleep(10_000);
      }
    })();
    await Promise.all([...roles.readers.map(readerLoop), ...roles.execers.map(execLoop), burstLoop(), sampler]);
    const head = Number((await roles.readers[0].call('admin', 'Info', {})).response?.headSequence ?? 0);
    await sleep(500);
    for (const client of roles.watchers) client.close();
    await Promise.race([Promise.all(watching), sleep(5000)]);
    return {
      duration_s: durationS, clients: CLIENTS, starters: roles.starters.length, burst_every_s: burstEveryS, load_average: load,
      reads: {
        quiet: Object.fromEntries(READ_NAMES.map((name) => [name, summary(reads.filter((r) => r.name === name && !r.inBurst))])),
        during_bursts: Object.fromEntries(READ_NAMES.map((name) => [name, summary(reads.filter((r) => r.name === name && r.inBurst))])),
      },
      execs: { quiet: summary(execs.filter((r) => !r.inBurst)), during_bursts: summary(execs.filter((r) => r.inBurst)) },
      pod_starts: summary(starts), removes: summary(removes), bursts,
      watchers: { streams: watchers.length, events_each: watchers.map((w) => w.events), head_sequence: head, ended: watchers.map((w) => w.end ?? null) },
    };
  } finally {
    // Our own pods first, each with its outcome, so a refusal here is reported and not masked by stop().
    const left = await clients[clients.length - 1].call('admin', 'ListSandboxes', {});
    for (const sandbox of left.response?.sandboxes ?? []) {
      const removed = await clients[clients.length - 1].call('controller', 'Shutdown', { sandboxId: sandbox.id }, { deadlineMs: 60_000 });
      if (!removed.ok) console.error(`Shutdown ${sandbox.id} (${sandbox.state}): ${removed.status} ${removed.details}`);
    }
    for (const client of clients) client.close();
    await daemon.stop();
  }
}

/** True once something accepts connections on the unix socket. */
function accepts(socket) {
  return new Promise((resolve) => {
    const probe = connect(socket);
    probe.once('connect', () => (probe.destroy(), resolve(true)));
    probe.once('error', () => resolve(false));
  });
}

/** Part 2: the callers against a daemon spawned on a store of `sandboxes` sandboxes. */
async function recovery(sandboxes, events, afterServingS) {
  const dir = mkdtempSync(path.join(tmpdir(), 'kts-bench-load-recovery-'));
  const db = path.join(dir, 'kts.db');
  const socket = path.join(dir, 'kts.sock');
  try {
    // Sealed with the key the daemon finds at its root's default key_file.
    const written = buildFixture(db, sandboxes, events, path.join(dir, 'audit', 'ed25519.key'));
    const configPath = path.join(dir, 'config.toml');
    writeFileSync(configPath, `listen = "${socket}"\nroot = "${dir}"\ndb = "${db}"\nlog_level = "warn"\n[runc]\nroot = "${dir}/runc"\n[images]\ndir = "${IMAGES_DIR}"\n`);
    const ids = Array.from({ length: sandboxes }, (_, i) => `bench-${String(i).padStart(5, '0')}`);
    const records = [];
    const t0 = process.hrtime.bigint();
    const since = () => Number(process.hrtime.bigint() - t0) / 1e6;
    const marks = { socket_file_ms: undefined, first_accept_ms: undefined, first_ok_ms: undefined };
    const daemon = spawn(process.execPath, [KTS, 'daemon', '--config', configPath], { stdio: ['ignore', 'ignore', 'inherit'] });
    const exited = new Promise((resolve) => daemon.once('exit', resolve));
    let stopAt = Infinity;
    const watchSocket = (async () => {
      while (marks.first_accept_ms === undefined && since() < 300_000) {
        if (marks.socket_file_ms === undefined && existsSync(socket)) marks.socket_file_ms = since();
        if (await accepts(socket)) marks.first_accept_ms = since();
        else await sleep(1);
      }
    })();
    const caller = async (i) => {
      const client = statusClient(socket);
      for (let n = 0; since() < stopAt && since() < 300_000; n++) {
        const which = (i + n) % READS.length;
        const issuedMs = since();
        const r = await READS[which](client.call, ids);
        const refused = !r.ok && r.code === 14 && !r.kind && /ENOENT|ECONNREFUSED/.test(r.details ?? '');
        records.push({ name: READ_NAMES[which], issuedMs, ms: r.ms, ok: r.ok, code: r.code, status: r.status, kind: r.kind, refused, retryPushbackMs: r.retryPushbackMs, details: r.ok ? undefined : r.details });
        if (r.ok && marks.first_ok_ms === undefined) {
          marks.first_ok_ms = since();
          stopAt = marks.first_ok_ms + afterServingS * 1000;
        }
        // A well-behaved client: it waits as long as the daemon's retry hint says, else 5 ms.
        if (!r.ok) await sleep(r.retryPushbackMs ?? 5);
      }
      client.close();
    };
    await Promise.all([watchSocket, ...Array.from({ length: CLIENTS }, (_, i) => caller(i))]);
    daemon.kill('SIGTERM');
    await exited;
    const before = records.filter((r) => r.issuedMs < (marks.first_ok_ms ?? Infinity) && !r.ok);
    const waited = records.filter((r) => r.ok && r.issuedMs < marks.first_ok_ms);
    const after = records.filter((r) => r.issuedMs >= marks.first_ok_ms);
    const kindsBefore = {};
    for (const r of before) {
      const key = `${r.status}: ${r.kind ? `daemon said ${r.kind}` : (r.details ?? '').replace(/ \/\S+/g, ' <socket>').slice(0, 80)}${r.retryPushbackMs !== undefined ? ` (retry after ${r.retryPushbackMs} ms)` : ''}`;
      kindsBefore[key] = (kindsBefore[key] ?? 0) + 1;
    }
    return {
      sandboxes, events: written, clients: CLIENTS, ...Object.fromEntries(Object.entries(marks).map(([k, v]) => [k, v === undefined ? null : Math.round(v)])),
      before_serving: { calls: before.length, outcomes: kindsBefore, slowest_ms: Math.round(Math.max(0, ...before.map((r) => r.ms))) },
      accepted_while_recovering: { calls: waited.length, waited_ms: summary(waited) },
      after_serving: Object.fromEntries(READ_NAMES.map((name) => [name, summary(after.filter((r) => r.name === name))])),
      first_second_after_serving: summary(after.filter((r) => r.issuedMs < marks.first_ok_ms + 1000)),
      load_average: loadAverage(),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function printSteady(result) {
  const row = (label, s) => [label, s.n, s.ok, s.p50 ?? '-', s.p99 ?? '-', s.max ?? '-', s.hangs, Object.entries(s.outcomes).filter(([k]) => k !== 'OK').map(([k, v]) => `${k} ${v}`).join(', ') || '-'];
  const rows = [];
  for (const name of READ_NAMES) rows.push(row(`${name}, quiet`, result.reads.quiet[name]), row(`${name}, during start bursts`, result.reads.during_bursts[name]));
  rows.push(row('Exec, quiet', result.execs.quiet), row('Exec, during start bursts', result.execs.during_bursts));
  rows.push(row('pod start (Create+Start+RunContainer)', result.pod_starts), row('pod remove (Shutdown)', result.removes));
  console.log(`\nsteady: ${result.clients} clients for ${result.duration_s} s, a burst of ${result.starters} runc pod starts every ${result.burst_every_s} s; load average ${result.load_average.join(' ')}`);
  console.log(formatTable(['calls', 'n', 'ok', 'p50 ms', 'p99 ms', 'max ms', 'hangs', 'not OK'], rows));
  console.log(`bursts (wall ms of ${result.starters} starts): ${result.bursts.map((b) => `${b.wallMs}${b.ok < result.starters ? ` (${b.ok} ok)` : ''}`).join(', ')}`);
  console.log(`WatchEvents: ${result.watchers.streams} streams, events each ${[...new Set(result.watchers.events_each)].join('/')} (log head ${result.watchers.head_sequence}); ended: ${JSON.stringify([...new Set(result.watchers.ended.map((e) => JSON.stringify(e)))])}`);
}

function printRecovery(result) {
  console.log(`\nrecovery: ${result.clients} callers against a daemon spawned on ${result.sandboxes} sandboxes / ${result.events} events; load average ${result.load_average}`);
  console.log(`spawn → socket file ${result.socket_file_ms} ms, → first accept ${result.first_accept_ms} ms, → first OK ${result.first_ok_ms} ms`);
  console.log(`calls before serving: ${result.before_serving.calls} (each failed in ≤ ${result.before_serving.slowest_ms} ms): ${JSON.stringify(result.before_serving.outcomes)}`);
  console.log(`calls issued before the first OK that succeeded (in flight as recovery ended): ${result.accepted_while_recovering.calls} (took p50 ${result.accepted_while_recovering.waited_ms.p50} ms, max ${result.accepted_while_recovering.waited_ms.max} ms)`);
  const rows = READ_NAMES.map((name) => {
    const s = result.after_serving[name];
    return [name, s.n, s.ok, s.p50 ?? '-', s.p99 ?? '-', s.max ?? '-', s.hangs];
  });
  const first = result.first_second_after_serving;
  rows.push(['all, first second after serving', first.n, first.ok, first.p50 ?? '-', first.p99 ?? '-', first.max ?? '-', first.hangs]);
  console.log(formatTable(['calls after serving', 'n', 'ok', 'p50 ms', 'p99 ms', 'max ms', 'hangs'], rows));
}

buildTestImages();
const parts = values.parts.split(',');
const result = { machine_load_at_start: loadAverage() };
if (parts.includes('steady')) {
  result.steady = await steady(Number(values.duration), Number(values['burst-every']));
  printSteady(result.steady);
}
if (parts.includes('recovery')) {
  result.recovery = await recovery(Number(values['recovery-sandboxes']), Number(values['recovery-events']), Number(values['recovery-seconds']));
  printRecovery(result.recovery);
}
writeResult(values.out, result);
