#!/usr/bin/env node
// The CRI benchmark Kuasar publishes, through containerd 2.4: per pod `crictl runp` + `crictl create` +
// `crictl start` (a busybox `sleep` container), timed as the operator sees it (three crictl processes),
//   kts-runc: containerd's Sandbox API → the kts daemon (1:N: one daemon, a kts-sandbox-init per pod);
//   runc:     containerd's own path (1:1: podsandbox, a pause container and a containerd-shim-runc-v2 per pod),
// both on the same containerd in the same run:
//   - serial: --serial pods one after another (Kuasar: 1000; default 200, about 4 minutes here), in batches
//     of 50 per handler, alternating handlers batch by batch so drift in the machine's load hits both;
//     pods are removed (untimed) after each batch;
//   - parallel: --parallel pods (50) started at once, per-pod latency and the wall time of the whole wave;
//   - management memory at 1, 5, 10, 20, 30, 50 running pods: PSS of the kts daemon + its task relay +
//     the kts-sandbox-inits, against the shims + pause processes (containerd's own PSS beside, common to both).
// Usage: node bench/cri-start.mjs [--serial 200] [--parallel 50] [--levels 1,5,10,20,30,50] [--settle-ms 2000] [--max-starts N]
//        (root; after npm run build and bash scripts/build-peers.sh)
// Writes bench/results/cri-start.json and cri-start.svg, and merges cri_* keys into bench/results/latest.json.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { criNode, PEERS_BIN, peersMissing } from './lib/criNode.mjs';
import { mergeLatest, REPO, RESULTS_DIR, writeResult } from './lib/daemon.mjs';
import { memoryKb, pidsOf, totalMemoryKb } from './lib/procfs.mjs';
import { elapsedMs, formatTable, loadAverage, mapLimit, median, sleep, startTimer, summarize } from './lib/stats.mjs';
import { cdfPanel, linePanel, svgDocument } from './lib/svg.mjs';

const HANDLERS = ['kts-runc', 'runc'];
const LABEL = { 'kts-runc': 'kts-runc (containerd 2.4 → kts, 1:N)', runc: 'runc (containerd 2.4 podsandbox + shim per pod, 1:1)' };
const BATCH = 50;
const SANDBOX_INIT = path.join(REPO, 'dist/native/kts-sandbox-init');
const SHIM = path.join(PEERS_BIN, 'containerd-shim-runc-v2');

/** Writes the CRI configs of pod `name` and its container; returns their paths. */
function podFiles(node, name) {
  const pod = path.join(node.dir, 'bench', `${name}.pod.json`);
  const container = path.join(node.dir, 'bench', `${name}.ctr.json`);
  writeFileSync(pod, JSON.stringify({ metadata: { name, namespace: 'cri-bench', uid: name, attempt: 0 }, log_directory: path.join(node.dir, 'logs', name), linux: {} }));
  writeFileSync(container, JSON.stringify({ metadata: { name: 'sleeper' }, image: { image: 'docker.io/library/busybox:latest' }, command: ['sleep', '3600'], log_path: 'sleeper.log', linux: {} }));
  return { pod, container };
}

/** runp + create + start of one pod through `handler`; the three crictl calls' times (ms). */
async function startPod(node, handler, name) {
  const files = podFiles(node, name);
  const begun = startTimer();
  const runp = await node.crictl(['runp', '--runtime', handler, files.pod]);
  const podMs = elapsedMs(begun);
  const create = await node.crictl(['create', '--no-pull', runp.stdout.trim(), files.container, files.pod]);
  const createMs = elapsedMs(begun) - podMs;
  await node.crictl(['start', create.stdout.trim()]);
  const totalMs = elapsedMs(begun);
  return { total: totalMs, runp: podMs, create: createMs, start: totalMs - podMs - createMs };
}

const removeAllPods = (node) => node.crictl(['rmp', '--all', '--force']);

async function serial(node, count) {
  const samples = Object.fromEntries(HANDLERS.map((handler) => [handler, []]));
  for (let done = 0; done < count; done += BATCH) {
    for (const handler of HANDLERS) {
      for (let i = done; i < Math.min(count, done + BATCH); i++) samples[handler].push(await startPod(node, handler, `s-${handler}-${i}`));
      await removeAllPods(node);
    }
    process.stdout.write(`  serial: ${Math.min(count, done + BATCH)}/${count} per handler\r`);
  }
  process.stdout.write('\n');
  return samples;
}

async function parallel(node, count) {
  const result = {};
  for (const handler of HANDLERS) {
    const begun = startTimer();
    const pods = await mapLimit(count, count, (i) => startPod(node, handler, `p-${handler}-${i}`));
    result[handler] = { wallMs: elapsedMs(begun), pods };
    await removeAllPods(node);
  }
  return result;
}

/** Pids of live processes whose parent is one of `parents` and whose argv contains `argvIncludes`. */
function childrenOf(parents, argvIncludes) {
  const wanted = new Set(parents);
  return readdirSync('/proc').filter((entry) => /^\d+$/.test(entry)).map(Number).filter((pid) => {
    try {
      const parent = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[1]);
      return wanted.has(parent) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(argvIncludes);
    } catch {
      return false; // exited while we looked
    }
  });
}

/** The management processes of each path on this node, by role. */
function managementPids(node) {
  const pidFile = (file) => {
    try {
      return [Number(readFileSync(file, 'utf8'))];
    } catch {
      return [];
    }
  };
  const shims = pidsOf(SHIM, `-address ${node.socket}`);
  // The pause container's process is the shim's child (busybox `sleep` in kts-pause); the containers' are too,
  // but they run `sleep 3600`: only argv 2147483647 is a pause.
  const pauses = childrenOf(shims, '2147483647');
  return {
    ktsDaemon: pidFile(node.ktsPidFile), ktsTaskRelay: pidFile(path.join(node.dir, 'kts/task-relay.pid')),
    sandboxInits: pidsOf(SANDBOX_INIT, `--dir ${node.dir}/kts/`), shims, pauses, containerd: pidFile(node.containerdPidFile),
  };
}

function readMemory(node) {
  const pids = managementPids(node);
  const pss = (list) => totalMemoryKb(list).pss;
  const kts = { daemon: pss(pids.ktsDaemon), task_relay: pss(pids.ktsTaskRelay), sandbox_inits: pss(pids.sandboxInits), processes: pids.ktsDaemon.length + pids.ktsTaskRelay.length + pids.sandboxInits.length };
  const shims = { shims: pss(pids.shims), pauses: pss(pids.pauses), processes: pids.shims.length + pids.pauses.length };
  return {
    kts: { ...kts, total: kts.daemon + kts.task_relay + kts.sandbox_inits, total_without_task_relay: kts.daemon + kts.sandbox_inits },
    runc: { ...shims, total: shims.shims + shims.pauses },
    containerd: memoryKb(pids.containerd[0])?.pss ?? 0,
  };
}

/** Climbs to each level of running pods of `handler`, reading the memory of that handler's path. */
async function memory(node, levels, settleMs) {
  const readings = Object.fromEntries(HANDLERS.map((handler) => [handler, []]));
  for (const handler of HANDLERS) {
    let running = 0;
    for (const level of levels) {
      while (running < level) await startPod(node, handler, `m-${handler}-${running++}`);
      await sleep(settleMs);
      const read = readMemory(node);
      readings[handler].push({ pods: level, ...read[handler === 'runc' ? 'runc' : 'kts'], containerd: read.containerd });
    }
    await removeAllPods(node);
  }
  return readings;
}

const phaseMedians = (pods) => Object.fromEntries(['total', 'runp', 'create', 'start'].map((phase) => [phase, Math.round(median(pods.map((pod) => pod[phase])) * 10) / 10]));

async function crictlFloorMs(node) {
  const samples = [];
  for (let i = 0; i < 20; i++) {
    const begun = startTimer();
    await node.crictl(['version']);
    samples.push(elapsedMs(begun));
  }
  return Math.round(median(samples) * 10) / 10;
}

async function main() {
  const { values } = parseArgs({
    options: {
      serial: { type: 'string', default: '200' },
      parallel: { type: 'string', default: '50' },
      levels: { type: 'string', default: '1,5,10,20,30,50' },
      'settle-ms': { type: 'string', default: '2000' },
      dir: { type: 'string', default: '/var/lib/kts-cri-bench' },
      // kts's [runc] max_concurrent_starts for the node's daemon (default: kts's own, 2 × CPUs; 0: no limit).
      'max-starts': { type: 'string' },
    },
  });
  const missing = peersMissing();
  if (missing) throw new Error(`cri-start: cannot run: ${missing}`);
  const ktsConfig = values['max-starts'] === undefined ? undefined : `[runc]\nmax_concurrent_starts = ${Number(values['max-starts'])}`;
  const node = criNode({ dir: values.dir, bridge: 'ktscb1', subnet: '10.88.216.0/24', handlers: HANDLERS, ktsConfig });
  const levels = values.levels.split(',').map(Number);
  await node.down();
  const loadAtStart = loadAverage();
  let result;
  try {
    await node.up();
    await node.ctr(['version']);
    mkdirSync(path.join(node.dir, 'bench'), { recursive: true });
    // Warm both paths (image snapshots, CNI plugin binaries in the page cache, kts's first-pod work).
    for (const handler of HANDLERS) await startPod(node, handler, `warm-${handler}`);
    await removeAllPods(node);
    const crictlMs = await crictlFloorMs(node);
    console.log(`cri-start: serial ${values.serial} pods per handler`);
    const serialSamples = await serial(node, Number(values.serial));
    console.log(`cri-start: ${values.parallel} pods at once per handler`);
    const parallelRuns = await parallel(node, Number(values.parallel));
    console.log(`cri-start: management memory at ${levels.join(', ')} pods`);
    const memoryReadings = await memory(node, levels, Number(values['settle-ms']));
    result = { serialSamples, parallelRuns, memoryReadings, crictlMs };
  } finally {
    await node.down();
  }
  report(result, { ...values, levels, loadAtStart });
}

function report({ serialSamples, parallelRuns, memoryReadings, crictlMs }, options) {
  const subjects = Object.fromEntries(HANDLERS.map((handler) => [handler, {
    label: LABEL[handler],
    serial: summarize(serialSamples[handler].map((pod) => pod.total)),
    serial_phase_p50: phaseMedians(serialSamples[handler]),
    parallel: { wall_ms: Math.round(parallelRuns[handler].wallMs), ...summarize(parallelRuns[handler].pods.map((pod) => pod.total)) },
    parallel_phase_p50: phaseMedians(parallelRuns[handler].pods),
    memory: memoryReadings[handler],
  }]));
  const kts = subjects['kts-runc'];
  const runc = subjects.runc;
  const at50 = (readings) => readings.find((reading) => reading.pods === Math.max(...options.levels));
  const round3 = (x) => Math.round(x * 1000) / 1000;
  const keys = {
    cri_serial_p50_vs_runc_shim: round3(kts.serial.p50 / runc.serial.p50),
    cri_parallel50_speedup_vs_runc_shim: round3(runc.parallel.wall_ms / kts.parallel.wall_ms),
    cri_mem_reduction_vs_shims_at_50: round3(1 - at50(kts.memory).total / at50(runc.memory).total),
  };
  const goals = {
    cri_serial_p50_vs_runc_shim: { goal: '≤ 1.0', met: keys.cri_serial_p50_vs_runc_shim <= 1 },
    cri_parallel50_speedup_vs_runc_shim: { goal: '≥ 2', met: keys.cri_parallel50_speedup_vs_runc_shim >= 2 },
    cri_mem_reduction_vs_shims_at_50: { goal: '≥ 0.40', met: keys.cri_mem_reduction_vs_shims_at_50 >= 0.4 },
  };
  writeResult('cri-start', {
    ...keys, goals, date: new Date().toISOString(), load_average_1m_at_start: options.loadAtStart,
    containerd: 'v2.4.2', crictl: 'v1.37.0', serial: Number(options.serial), parallel: Number(options.parallel),
    kts_max_concurrent_starts: options['max-starts'] === undefined ? 'default (2 × CPUs)' : Number(options['max-starts']),
    crictl_version_call_ms_p50: crictlMs, subjects,
  });
  const series = (pick) => HANDLERS.map((handler) => ({ label: LABEL[handler], samples: pick(subjects[handler]) }));
  writeFileSync(path.join(RESULTS_DIR, 'cri-start.svg'), svgDocument([
    cdfPanel({ title: `crictl runp+create+start, ${options.serial} serial`, series: series((s) => s.serial.samples) }),
    cdfPanel({ title: `crictl runp+create+start, ${options.parallel} at once`, series: series((s) => s.parallel.samples) }),
    linePanel({
      title: 'management PSS', xLabel: 'running pods', yLabel: 'MB',
      series: HANDLERS.map((handler) => ({ label: LABEL[handler], points: subjects[handler].memory.map((reading) => ({ x: reading.pods, y: reading.total / 1024 })) })),
    }),
  ]));
  mergeLatest(keys, goals);
  console.log(formatTable(['handler', 'serial p50', 'p90', 'p99', `${options.parallel} at once: wall`, 'p50', 'p99', 'PSS @50 (MB)'], HANDLERS.map((handler) => {
    const s = subjects[handler];
    return [handler, s.serial.p50, s.serial.p90, s.serial.p99, s.parallel.wall_ms, s.parallel.p50, s.parallel.p99, (at50(s.memory).total / 1024).toFixed(1)];
  })));
  console.log(`\nphase p50 (ms), serial: ${HANDLERS.map((handler) => `${handler} ${JSON.stringify(subjects[handler].serial_phase_p50)}`).join('; ')}`);
  console.log(`crictl version round trip p50: ${crictlMs} ms`);
  console.log(JSON.stringify(keys));
}

await main();
