#!/usr/bin/env node
// kts (one resident daemon, 1:N) side by side with containerd 1.6 + containerd-shim-runc-v2 (1:1), on
// this machine, in one run: start latency (bench/start-latency.mjs), management memory
// (bench/management-memory.mjs) and the cost of each layer (bench/layer-costs.mjs). Prints every
// table and the headline numbers against the goals.
// Usage: node bench/compare.mjs [--parts latency,memory,layers] [--serial 100] [--parallel 50]
//        [--vm-serial 5] [--vm-parallel 3] [--rounds 3] [--levels 1,5,10,20,30,50] [--pods 20]
//        [--store-seconds 3] [--recovery 1000,10000] [--accelerator auto|kvm|tcg] [--skip-profile]
//        (root; after npm run build and scripts/build-guest.sh; containerd, runc, qemu installed)
// A full run writes bench/results/latest.json (committed) and the charts start-latency-cdf.svg and
// management-memory.svg; a run of some parts writes bench/results/compare-partial.json instead.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { isMain, mergeLatest, RESULTS_DIR, writeResult } from './lib/daemon.mjs';
import { elapsedMs, formatTable, loadAverage, startTimer } from './lib/stats.mjs';
import { measureLayerCosts, printLayerCosts } from './layer-costs.mjs';
import { managementMemoryChart, measureManagementMemory, printManagementMemory } from './management-memory.mjs';
import { measureStartLatency, printStartLatency, startLatencyChart } from './start-latency.mjs';

const PARTS = ['latency', 'memory', 'layers'];

const firstLine = (file, args) => {
  try {
    return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0].trim();
  } catch {
    return 'not installed';
  }
};

function machine() {
  return {
    cpu: cpus()[0]?.model, cores: cpus().length, memory_gib: Math.round(totalmem() / 2 ** 30),
    kernel: firstLine('uname', ['-r']), node: process.version, runc: firstLine('runc', ['--version']),
    // `containerd --version` prints its Go module path first; the version words are what matter.
    containerd: firstLine('containerd', ['--version']).split(' ').slice(2).join(' '), qemu: firstLine('qemu-system-x86_64', ['--version']),
  };
}

/** The headline numbers, with the goals of issue 18 (the first five: issue 11's, two of them raised). */
export function headline({ latency, memory, layers }) {
  const subjects = latency.subjects;
  const ours = subjects['kts-runc-api'];
  const values = {
    parallel50_speedup_vs_containerd: subjects.containerd.parallel.p50 / ours.parallel.p50,
    mem_reduction_vs_shims_at_50: memory.reduction_vs_shims_at_max,
    serial_p50_vs_raw_runc: ours.serial.p50 / subjects['raw-runc'].serial.p50,
    mem_per_extra_pod_kb: memory.kts_pss_per_extra_pod_kb,
    own_code_share_of_vm_start: layers.vm_start.own_code_share,
    daemon_idle_pss_mb: memory.kts_daemon_idle_pss_kb / 1024,
  };
  const goals = {
    parallel50_speedup_vs_containerd: { goal: '≥ 2.5', met: values.parallel50_speedup_vs_containerd >= 2.5 },
    mem_reduction_vs_shims_at_50: { goal: '≥ 0.40', met: values.mem_reduction_vs_shims_at_50 >= 0.4 },
    serial_p50_vs_raw_runc: { goal: '≤ 1.3', met: values.serial_p50_vs_raw_runc <= 1.3 },
    mem_per_extra_pod_kb: { goal: '≤ 200', met: values.mem_per_extra_pod_kb <= 200 },
    own_code_share_of_vm_start: { goal: '< 0.05', met: values.own_code_share_of_vm_start < 0.05 },
    daemon_idle_pss_mb: { goal: '≤ 60', met: values.daemon_idle_pss_mb <= 60 },
  };
  const rounded = Object.fromEntries(Object.entries(values).map(([key, value]) => [key, Math.round(value * 1000) / 1000]));
  return { values: rounded, goals, floors: floors(subjects) };
}

/**
 * What the two start-latency goals meet before kts does anything: `runc create` + `runc start` of the same
 * bundle from a shell (CRI makes two steps of a start; the goal's baseline, `runc run -d`, is one).
 */
function floors(subjects) {
  const split = subjects['raw-runc-split'];
  if (!split) return undefined;
  const round = (value) => Math.round(value * 1000) / 1000;
  return {
    serial_create_start_vs_raw_run: round(split.serial.p50 / subjects['raw-runc'].serial.p50),
    parallel50_create_start_p50_ms: round(split.parallel.p50),
    // The p50 kts would need for 2.5× containerd's: below the split's own it cannot be, whatever kts does.
    parallel50_p50_ms_for_goal: round(subjects.containerd.parallel.p50 / 2.5),
  };
}

function printHeadline({ values, goals, floors }, memory) {
  console.log('\nHeadline (kts runc at the API vs containerd 1.6 + shims):');
  console.log(formatTable(['', 'value', 'goal', 'met'], Object.entries(values).map(([key, value]) => [key, value, goals[key].goal, goals[key].met ? 'yes' : 'NO'])));
  if (floors) {
    console.log(`floors: runc create + start is ${floors.serial_create_start_vs_raw_run}× runc run -d serially; 50 at once its p50 is ${floors.parallel50_create_start_p50_ms} ms, ` +
      `against the ${floors.parallel50_p50_ms_for_goal} ms kts would need for 2.5× containerd`);
  }
  console.log(`crossover: the daemon's PSS falls below the shims' total at ${memory.crossover_pods ?? 'more than the largest level of'} pods`);
}

export async function compare(options) {
  const began = startTimer();
  const result = { date: new Date().toISOString(), machine: machine(), load_average_1m_at_start: loadAverage() };
  if (options.parts.includes('latency')) {
    result.latency = await measureStartLatency(options.latency);
    printStartLatency(result.latency);
    writeFileSync(path.join(RESULTS_DIR, 'start-latency-cdf.svg'), startLatencyChart(result.latency));
  }
  if (options.parts.includes('memory')) {
    result.memory = await measureManagementMemory(options.memory);
    printManagementMemory(result.memory);
    writeFileSync(path.join(RESULTS_DIR, 'management-memory.svg'), managementMemoryChart(result.memory));
  }
  if (options.parts.includes('layers')) {
    result.layers = await measureLayerCosts({ ...options.layers, vmSplit: result.latency?.subjects['kts-vm-api']?.start_split });
    printLayerCosts(result.layers);
  }
  result.load_average_1m_at_end = loadAverage();
  result.duration_s = Math.round(elapsedMs(began) / 1000);
  const complete = PARTS.every((part) => result[part]) && result.latency.subjects['kts-runc-api'] && result.latency.subjects.containerd && result.latency.subjects['raw-runc'];
  if (!complete) return { result, name: 'compare-partial' };
  const { values, goals, floors } = headline(result);
  printHeadline({ values, goals, floors }, result.memory);
  return { result: { ...values, goals, floors, crossover_pods: result.memory.crossover_pods, ...result }, name: 'latest', merge: true };
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      parts: { type: 'string', default: PARTS.join(',') },
      serial: { type: 'string', default: '100' }, parallel: { type: 'string', default: '50' },
      'vm-serial': { type: 'string', default: '5' }, 'vm-parallel': { type: 'string', default: '3' },
      rounds: { type: 'string', default: '3' }, levels: { type: 'string', default: '1,5,10,20,30,50' },
      pods: { type: 'string', default: '20' }, 'store-seconds': { type: 'string', default: '3' }, recovery: { type: 'string', default: '1000,10000' },
      accelerator: { type: 'string', default: 'auto' }, 'skip-profile': { type: 'boolean', default: false },
    },
  });
  const { result, name, merge } = await compare({
    parts: values.parts.split(','),
    latency: {
      serial: Number(values.serial), parallel: Number(values.parallel), vmSerial: Number(values['vm-serial']), vmParallel: Number(values['vm-parallel']),
      accelerator: values.accelerator, cpuProf: !values['skip-profile'],
    },
    memory: { levels: values.levels.split(',').map(Number), rounds: Number(values.rounds) },
    layers: { pods: Number(values.pods), storeSeconds: Number(values['store-seconds']), recoverySizes: values.recovery.split(',').filter(Boolean).map(Number), accelerator: values.accelerator },
  });
  console.log(`\ncompare: ${result.duration_s} s in all`);
  // latest.json also holds cri-start.mjs's cri_* keys: merge, never overwrite them.
  if (merge) mergeLatest(result, result.goals);
  else writeResult(name, result);
}
