#!/usr/bin/env node
// WebAssembly containers: start latency, memory per idle container and Kill latency, against a
// private daemon. Each module runs in a kts-wasm-runner process of its own (wasmtime), so memory is
// the daemon's and the runners' together.
// - start, API: admin RunContainer (create + start of the wasm-hello image in a ready sandbox)
//   over a gRPC client connected once beforehand; request sent → reply (the module running).
// - start, CLI: `kts run --runtime wasm pod.yaml wasm-hello.yaml`, wall time of the whole command:
//   node starting the CLI, a new sandbox created and started, then the same RunContainer.
// - idle memory: the PSS (/proc/<pid>/smaps_rollup) of the daemon plus every kts-wasm-runner, before
//   and after N containers whose modules sleep in poll_oneoff (wasm-sleep), divided by N. PSS splits
//   the runner binary's shared pages among the runners, so the per-container figure falls with N.
// - kill: Task Kill (SIGKILL) of a spinning module (wasm-spin) → Task Wait returns.
// Usage: node bench/wasm-start.mjs [--runs 50] [--idle 20] [--kills 10]   (root; needs `npm run build`)
// Prints a table and writes bench/results/wasm-start.json.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildTestImages, REPO, startDaemon, writeResult } from './lib/daemon.mjs';
import { memoryKb, pidsOf, totalMemoryKb } from './lib/procfs.mjs';
import { elapsedMs as ms, sleep, startTimer, summarize } from './lib/stats.mjs';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '50' }, idle: { type: 'string', default: '20' }, kills: { type: 'string', default: '10' } } });
const runs = Number(values.runs);
const idleCount = Number(values.idle);
const kills = Number(values.kills);
const RUNNER = path.join(REPO, 'dist/native/kts-wasm-runner');
/** What the worker-thread backend (node:wasi inside the daemon) measured here before the runner replaced it. */
const WORKER_THREAD_BASELINE = { start_api_p50_ms: 84, kill_p50_ms: 40, pss_per_container_mib: 7.64 };

async function startPod(client, sandboxId) {
  await client.controller.Create({ sandboxId, sandboxer: 'wasm' });
  await client.controller.Start({ sandboxId });
}

async function apiStartLatency(client) {
  await startPod(client, 'bench-api');
  for (let i = 0; i < 3; i++) await client.admin.RunContainer({ sandboxId: 'bench-api', name: `warmup-${i}`, image: 'wasm-hello:latest', start: true });
  const samples = [];
  for (let i = 0; i < runs; i++) {
    const started = startTimer();
    await client.admin.RunContainer({ sandboxId: 'bench-api', name: `hello-${i}`, image: 'wasm-hello:latest', start: true });
    samples.push(ms(started));
  }
  return summarize(samples);
}

function cliStartLatency(daemon) {
  const samples = [];
  for (let i = 0; i < runs; i++) {
    const pod = path.join(daemon.root, `pod-${i}.yaml`);
    writeFileSync(pod, `metadata:\n  name: cli-${i}\n  namespace: bench\n  uid: cli-${i}\n`);
    const started = startTimer();
    daemon.kts('run', '--runtime', 'wasm', pod, path.join(REPO, 'examples/wasm-hello.yaml'));
    samples.push(ms(started));
  }
  return summarize(samples);
}

/** The daemon's memory plus that of every runner it started (runners of other daemons are not ours). */
function backendMemoryKb(daemonPid) {
  const runners = pidsOf(RUNNER).filter((pid) => readFileSync(`/proc/${pid}/status`, 'utf8').includes(`PPid:\t${daemonPid}\n`));
  return { ...totalMemoryKb([daemonPid, ...runners]), runners: runners.length, daemon: memoryKb(daemonPid) };
}

async function idleMemory(client, daemonPid) {
  await startPod(client, 'bench-idle');
  await sleep(2000);
  const before = backendMemoryKb(daemonPid);
  const logs = [];
  for (let i = 0; i < idleCount; i++) {
    const run = await client.admin.RunContainer({ sandboxId: 'bench-idle', name: `sleeper-${i}`, image: 'wasm-sleep:latest', start: true });
    logs.push(String(run.logPath));
  }
  while (!logs.every((log) => readFileSync(log, 'utf8').includes('sleeping'))) await sleep(50);
  await sleep(2000);
  const after = backendMemoryKb(daemonPid);
  if (after.runners !== idleCount) throw new Error(`${after.runners} runners for ${idleCount} idle containers`);
  return {
    containers: idleCount, before_kb: before, after_kb: after,
    pss_per_container_kb: (after.pss - before.pss) / idleCount, rss_per_container_kb: (after.rss - before.rss) / idleCount,
    daemon_pss_per_container_kb: (after.daemon.pss - before.daemon.pss) / idleCount,
  };
}

async function killLatency(client) {
  await startPod(client, 'bench-kill');
  const samples = [];
  for (let i = 0; i < kills; i++) {
    const run = await client.admin.RunContainer({ sandboxId: 'bench-kill', name: `spin-${i}`, image: 'wasm-spin:latest', start: true });
    while (!readFileSync(String(run.logPath), 'utf8').includes('spinning')) await sleep(20);
    const started = startTimer();
    await client.task.Kill({ id: run.containerId, signal: 9 });
    const exit = await client.task.Wait({ id: run.containerId });
    samples.push(ms(started));
    if (exit.exitStatus !== 137) throw new Error(`spin-${i} exited ${exit.exitStatus}, not 137`);
  }
  return summarize(samples);
}

buildTestImages({ wasm: true });
const daemon = await startDaemon({ name: 'kts-bench-wasm' });
const { client } = daemon;
try {
  const api = await apiStartLatency(client);
  const cli = cliStartLatency(daemon);
  const idle = await idleMemory(client, daemon.pid);
  const kill = await killLatency(client);
  const result = { node: process.version, runtime: 'kts-wasm-runner (wasmtime 48)', runs, start_api_ms: api, start_cli_ms: cli, idle_memory: idle, kill_spinning_ms: kill, worker_thread_baseline: WORKER_THREAD_BASELINE };

  const row = (label, s) => `  ${label.padEnd(44)} ${s.p50.toFixed(1).padStart(7)} ${s.p90.toFixed(1).padStart(7)} ${s.min.toFixed(1).padStart(7)} ${s.max.toFixed(1).padStart(7)}`;
  console.log(`wasm container start (${runs} serial runs each)        p50     p90     min     max  (ms)`);
  console.log(row('admin RunContainer, connected gRPC client', api));
  console.log(row('`kts run --runtime wasm` (CLI, new pod)', cli));
  console.log(row(`Task Kill → Wait of a spinning module (${kills})`, kill));
  console.log(`daemon + runners memory with ${idleCount} idle (sleeping) wasm containers`);
  console.log(`  PSS ${(idle.before_kb.pss / 1024).toFixed(1)} → ${(idle.after_kb.pss / 1024).toFixed(1)} MiB: ${(idle.pss_per_container_kb / 1024).toFixed(2)} MiB per container (the daemon's share: ${(idle.daemon_pss_per_container_kb / 1024).toFixed(2)} MiB)`);
  console.log(`  RSS ${(idle.before_kb.rss / 1024).toFixed(1)} → ${(idle.after_kb.rss / 1024).toFixed(1)} MiB: ${(idle.rss_per_container_kb / 1024).toFixed(2)} MiB per container`);
  const base = WORKER_THREAD_BASELINE;
  console.log(`worker-thread backend before: start p50 ${base.start_api_p50_ms} ms, kill p50 ${base.kill_p50_ms} ms, +${base.pss_per_container_mib} MiB PSS per container`);
  writeResult('wasm-start', result);
} finally {
  await daemon.stop();
}
