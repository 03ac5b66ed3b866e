#!/usr/bin/env node
// Start latency of one pod + one container, side by side, serially N times and P at once:
//   raw runc      `runc run -d` of a plain busybox bundle: the floor (no pod, no manager)
//   raw runc c+s  `runc create` then `runc start` of the same bundle: the floor of CRI's create/start split
//   containerd    containerd 1.6 + containerd-shim-runc-v2: `ctr run -d` (a CLI process per start)
//   kts runc API  Controller.Create + Start, admin RunContainer over one connected gRPC client
//   kts runc CLI  `kts run pod.yaml ctr.yaml` (a node process per start: CLI wall time)
//   kts wasm API  the same calls with sandboxer wasm and image wasm-hello
//   kts VM API    the same calls with sandboxer vmm (QEMU; TCG here, so fewer runs)
//   spawn floor   spawning /bin/true from this node process: what any CLI-driven row pays for the harness
// Serial: each start timed alone, pods left running until the series ends. Parallel: all P issued
// at once, each sample = its completion - the moment the burst was issued. One warm-up start each,
// not counted. Also the daemon's and the machine's CPU time during each burst.
// Usage: node bench/start-latency.mjs [--serial 100] [--parallel 50] [--vm-serial 5] [--vm-parallel 3]
//        [--only raw-runc,raw-runc-split,containerd,kts-runc-api,kts-runc-cli,kts-wasm-api,kts-vm-api] [--accelerator auto|kvm|tcg]
//        [--cpu-prof] [--max-concurrent-starts N]   (root; after npm run build; containerd, runc, qemu installed)
// --max-concurrent-starts sets the daemon's [runc] max_concurrent_starts (default: the daemon's, 2 × CPUs; 0: no limit).
// Prints tables, writes bench/results/start-latency.json and bench/results/start-latency-cdf.svg.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startContainerd } from './lib/containerd.mjs';
import { summarizeCpuProfile } from './lib/cpuProfile.mjs';
import { apiPodStart, buildTestImages, IMAGES_DIR, isMain, REPO, RESULTS_DIR, shutdownAll, SLEEPER, startDaemon, writeResult } from './lib/daemon.mjs';
import { cpuMeter, machineCpuMs, pidsOf, pidsWithArgv, waitForQuietMachine } from './lib/procfs.mjs';
import { prepareRawRunc } from './lib/rawRunc.mjs';
import { runChecked } from './lib/spawn.mjs';
import { elapsedMs, formatTable, loadAverage, median, percentile, startTimer, summarize } from './lib/stats.mjs';
import { cdfPanel, svgDocument } from './lib/svg.mjs';
import { hypervisorConfig, vmStartSplit } from './lib/vm.mjs';

const SANDBOX_INIT = path.join(REPO, 'dist/native/kts-sandbox-init');
const QEMU = '/usr/bin/qemu-system-x86_64';

export const SUBJECTS = ['raw-runc', 'raw-runc-split', 'containerd', 'kts-runc-api', 'kts-runc-cli', 'kts-wasm-api', 'kts-vm-api', 'spawn-floor'];

/** The kts subjects, sharing one daemon; `prepare` runs untimed before a series. */
function ktsSubjects(daemon, yamlDir) {
  const { client } = daemon;
  const removeAll = () => shutdownAll(client);
  const processes = () => ({
    'kts daemon': [daemon.pid],
    'kts sandbox inits': pidsOf(SANDBOX_INIT, `--dir ${daemon.root}/`),
    qemu: pidsOf(QEMU, daemon.root),
  });
  return {
    'kts-runc-api': { label: 'kts runc (API)', level: 'API', start: (id) => apiPodStart(client, id, 'runc', SLEEPER), removeAll, processes },
    'kts-runc-cli': {
      label: 'kts runc (CLI: kts run)', level: 'CLI', removeAll, processes,
      prepare(ids) {
        writeFileSync(path.join(yamlDir, 'ctr.yaml'), 'metadata:\n  name: main\nimage:\n  image: busybox:latest\ncommand: [sleep, "600"]\n');
        for (const id of ids) writeFileSync(path.join(yamlDir, `${id}.yaml`), `metadata:\n  name: ${id}\n  namespace: bench\n  uid: ${id}\n`);
      },
      start: (id) => daemon.ktsTimed('run', path.join(yamlDir, `${id}.yaml`), path.join(yamlDir, 'ctr.yaml')),
    },
    'kts-wasm-api': { label: 'kts wasm (API)', level: 'API', start: (id) => apiPodStart(client, id, 'wasm', { image: 'wasm-hello:latest' }), removeAll, processes },
    'kts-vm-api': {
      label: 'kts VM, TCG (API)', level: 'API', removeAll, processes, splits: [],
      /** Times the Start call on its own too, for the split of its time (bench/vm-start.mjs's definition). */
      async start(id) {
        await client.controller.Create({ sandboxId: id, sandboxer: 'vmm' });
        const started = startTimer();
        await client.controller.Start({ sandboxId: id });
        const startMs = elapsedMs(started);
        await client.admin.RunContainer({ sandboxId: id, name: 'main', start: true, ...SLEEPER });
        return { id, startMs };
      },
      async afterSerial(results) {
        for (const { id, startMs } of results) this.splits.push(await vmStartSplit(client, id, startMs));
      },
    },
  };
}

/** Serial: each start timed alone. Parallel: all at once, each timed from the moment the burst began. */
async function series(subject, ids, parallel) {
  subject.prepare?.(ids);
  const quietWaitMs = await waitForQuietMachine();
  const machineBefore = machineCpuMs();
  const processesCpu = cpuMeter(() => ({
    'bench harness': [process.pid],
    ...subject.processes?.(),
    // A container's process runs `runc init` (namespaces, mounts, cgroups) before it execs sleep.
    'containers (runc init → sleep)': pidsWithArgv(SLEEPER.command.join(' ')),
  }));
  const burst = startTimer();
  let results;
  if (parallel) {
    results = await Promise.all(ids.map((id) => subject.start(id).then((result) => ({ result, ms: elapsedMs(burst) }))));
  } else {
    results = [];
    for (const id of ids) {
      const started = startTimer();
      const result = await subject.start(id);
      results.push({ result, ms: elapsedMs(started) });
    }
  }
  const samples = results.map((r) => r.ms);
  const wallMs = elapsedMs(burst);
  const byProcess = processesCpu();
  const machine = machineCpuMs();
  const cpu = {
    wall_ms: Math.round(wallMs),
    machine_busy_ms: machine.busy - machineBefore.busy,
    machine_busy_share: Math.round(((machine.busy - machineBefore.busy) / (machine.total - machineBefore.total)) * 1000) / 1000,
    // CPU ms of each group of processes, { self, children they waited for }; the rest of machine_busy_ms is the kernel's own threads and anything else running.
    by_process_ms: byProcess,
  };
  return { summary: { ...summarize(samples), cpu, load_average_1m: loadAverage(), waited_for_quiet_machine_ms: quietWaitMs }, results: results.map((r) => r.result) };
}

async function measureSubject(key, subject, { serial, parallel }) {
  const ids = (tag, n) => Array.from({ length: n }, (_, i) => `${key}-${tag}-${i}`);
  process.stdout.write(`${subject.label}: warm-up`);
  await series(subject, ids('warmup', 1), false);
  await subject.removeAll();
  process.stdout.write(`, ${serial} serial`);
  const { summary: serialResult, results } = await series(subject, ids('s', serial), false);
  await subject.afterSerial?.(results);
  await subject.removeAll();
  process.stdout.write(`, ${parallel} parallel`);
  const { summary: parallelResult, results: parallelResults } = await series(subject, ids('p', parallel), true);
  await subject.removeAll();
  const phases = callPhases(parallelResults);
  if (phases) parallelResult.call_returned_ms = phases;
  console.log(` done (p50 ${serialResult.p50.toFixed(1)} / ${parallelResult.p50.toFixed(1)} ms)`);
  return { label: subject.label, level: subject.level, serial: serialResult, parallel: parallelResult };
}

/**
 * For API pods started at once: when their Create, Start and RunContainer calls returned (ms since
 * the burst began), as p10/p50/p90: shows whether pods finish one by one or all together.
 */
function callPhases(results) {
  if (!results.every((r) => r?.createdMs !== undefined)) return undefined;
  const spread = (key) => Object.fromEntries([10, 50, 90].map((p) => [`p${p}`, Math.round(percentile(results.map((r) => r[key]), p))]));
  return { create: spread('createdMs'), start: spread('startedMs'), run_container: spread('containerRunningMs') };
}

/** One more parallel burst of the kts runc API on a daemon under `node --cpu-prof`: where its CPU time goes. */
async function profileParallelBurst(parallel, vmConfig) {
  const profileDir = mkdtempSync(path.join(tmpdir(), 'kts-bench-prof-'));
  const daemon = await startDaemon({ name: 'kts-bench-prof', config: vmConfig, nodeArgs: ['--cpu-prof', '--cpu-prof-dir', profileDir] });
  try {
    const subject = ktsSubjects(daemon, profileDir)['kts-runc-api'];
    await series(subject, ['prof-warmup'], false);
    await subject.removeAll();
    const fromUs = Number(process.hrtime.bigint() / 1000n);
    const { summary: burst } = await series(subject, Array.from({ length: parallel }, (_, i) => `prof-${i}`), true);
    const toUs = Number(process.hrtime.bigint() / 1000n);
    await daemon.stop();
    const file = path.join(profileDir, readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile')));
    return { burst_p50_ms: burst.p50, burst_wall_ms: burst.cpu.wall_ms, daemon_cpu_ms: burst.cpu.by_process_ms['kts daemon'].self, ...summarizeCpuProfile(file, { window: { fromUs, toUs } }) };
  } finally {
    rmSync(profileDir, { recursive: true, force: true });
  }
}

export async function measureStartLatency({ serial = 100, parallel = 50, vmSerial = 5, vmParallel = 3, only = SUBJECTS, accelerator = 'auto', cpuProf = false, maxConcurrentStarts } = {}) {
  const runc = maxConcurrentStarts === undefined ? '' : `max_concurrent_starts = ${maxConcurrentStarts}`;
  buildTestImages({ wasm: true });
  const yamlDir = mkdtempSync(path.join(tmpdir(), 'kts-bench-yaml-'));
  const vmConfig = hypervisorConfig({ accelerator });
  const results = {};
  const owned = [];
  try {
    const floor = (only.includes('raw-runc') || only.includes('raw-runc-split')) && (await prepareRawRunc());
    if (floor) owned.push(floor);
    const peer = only.includes('containerd') && (await startContainerd({ imageLayout: path.join(IMAGES_DIR, 'busybox') }));
    if (peer) owned.push(peer);
    const daemon = only.some((key) => key.startsWith('kts-')) && (await startDaemon({ config: vmConfig, runc }));
    if (daemon) owned.push(daemon);
    const subjects = {
      'raw-runc': floor && { label: 'raw runc run -d (floor)', level: 'command', start: (id) => floor.run(id), removeAll: () => floor.removeAll() },
      'raw-runc-split': floor && { label: 'raw runc create + start (CRI floor)', level: 'command', start: (id) => floor.createStart(id), removeAll: () => floor.removeAll() },
      containerd: peer && {
        label: `containerd ${peer.version} + shim (ctr run -d)`, level: 'CLI', start: (id) => peer.run(id), removeAll: () => peer.removeAll(),
        processes: () => ({ containerd: [peer.pid], shims: peer.shimPids() }),
      },
      ...(daemon && ktsSubjects(daemon, yamlDir)),
      'spawn-floor': { label: 'spawn /bin/true (harness)', level: 'command', start: () => runChecked('/bin/true', []), removeAll: async () => undefined },
    };
    for (const key of SUBJECTS.filter((k) => only.includes(k))) {
      const vm = key === 'kts-vm-api';
      results[key] = await measureSubject(key, subjects[key], { serial: vm ? vmSerial : serial, parallel: vm ? vmParallel : parallel });
      if (vm) results[key].start_split = summarizeVmSplits(subjects[key].splits);
    }
    for (const resource of owned.reverse()) await resource.stop();
    owned.length = 0;
    const profile = cpuProf && (await profileParallelBurst(parallel, vmConfig));
    return { serial, parallel, vm_serial: vmSerial, vm_parallel: vmParallel, subjects: results, ...(profile && { cpu_profile_kts_runc_api_parallel: profile }) };
  } finally {
    for (const resource of owned.reverse()) await resource.stop().catch((error) => console.error(`cleanup: ${error.message}`));
    rmSync(yamlDir, { recursive: true, force: true });
  }
}

/** Medians of the VM Start split over the serial runs, as bench/vm-start.mjs reports them. */
function summarizeVmSplits(splits) {
  const m = (key) => median(splits.map((s) => s[key]));
  return {
    accelerator: splits[0]?.accelerator, accelerator_reason: splits[0]?.acceleratorReason,
    start_ms_median: m('startMs'), boot_to_agent_ready_ms_median: m('bootMs'), pod_start_in_guest_ms_median: m('podStartMs'), own_code_ms_median: m('ownMs'),
    own_code_share: m('ownMs') / m('startMs'), samples: splits,
  };
}

export function printStartLatency(result) {
  const rows = Object.values(result.subjects).map((s) => [
    s.label, s.level, s.serial.n, s.serial.p50.toFixed(1), s.serial.p90.toFixed(1), s.serial.p99.toFixed(1),
    s.parallel.n, s.parallel.p50.toFixed(1), s.parallel.p90.toFixed(1), s.parallel.p99.toFixed(1), s.parallel.cpu.wall_ms,
  ]);
  console.log('\nStart latency, one pod + one container (ms). Serial: one at a time; ∥: all issued at once, each timed from the moment the burst began.');
  console.log(formatTable(['', 'level', 'n', 'p50', 'p90', 'p99', 'n∥', 'p50∥', 'p90∥', 'p99∥', 'last∥'], rows));
  console.log('\nCPU per pod in the parallel burst (ms). "+ n" = the children a process waited for (the bench harness: ctr, runc or kts CLI');
  console.log('processes; the daemon: mount; a sandbox init: runc create and start; containerd: shim start; a shim: runc). "other" = the rest of');
  console.log('the machine: kernel threads, and anything else running on it.');
  const cpuRows = Object.values(result.subjects).filter((s) => s.parallel.n > 0).map((s) => {
    const { by_process_ms: byProcess, machine_busy_ms: busy, machine_busy_share: share } = s.parallel.cpu;
    const perPod = (ms) => (ms / s.parallel.n).toFixed(1);
    const used = Object.entries(byProcess).filter(([, ms]) => ms.self + ms.children > 0);
    const named = used.map(([name, ms]) => `${name} ${perPod(ms.self)}${ms.children ? ` + ${perPod(ms.children)}` : ''}`).join(', ');
    const other = busy - used.reduce((sum, [, ms]) => sum + ms.self + ms.children, 0);
    return [s.label, perPod(busy), `${Math.round(share * 100)}%`, `${named}, other ${perPod(other)}`];
  });
  console.log(formatTable(['', 'machine', 'busy', 'by process'], cpuRows));
  const phased = Object.values(result.subjects).filter((s) => s.parallel.call_returned_ms);
  if (phased.length > 0) {
    console.log('\nAPI pods started at once: when each call returned (ms since the burst began, p10 / p50 / p90 over the pods):');
    const cell = ({ p10, p50, p90 }) => `${p10} / ${p50} / ${p90}`;
    console.log(formatTable(['', 'Create', 'Start', 'RunContainer'], phased.map((s) => [s.label, cell(s.parallel.call_returned_ms.create), cell(s.parallel.call_returned_ms.start), cell(s.parallel.call_returned_ms.run_container)])));
  }
  const split = result.subjects['kts-vm-api']?.start_split;
  if (split) {
    console.log(`\nVM sandbox Start (${split.samples.length} serial runs, ${split.accelerator}), medians: Start ${split.start_ms_median.toFixed(0)} ms = QEMU + guest boot → agent ready ${split.boot_to_agent_ready_ms_median.toFixed(0)} ms`);
    console.log(`  + pod start inside the guest ${split.pod_start_in_guest_ms_median.toFixed(0)} ms + our own code ${split.own_code_ms_median.toFixed(0)} ms (${(split.own_code_share * 100).toFixed(2)}% of Start)`);
  }
  const profile = result.cpu_profile_kts_runc_api_parallel;
  if (profile) {
    console.log(`\nkts daemon under --cpu-prof, ${result.parallel} runc pods in parallel (API): burst ${profile.burst_wall_ms} ms wall, daemon CPU ${profile.daemon_cpu_ms} ms; self time by part:`);
    console.log(formatTable(['part', 'ms', 'share'], profile.parts.slice(0, 12).map((p) => [p.name, p.ms, `${(p.share * 100).toFixed(1)}%`])));
    console.log(formatTable(['function (self time)', 'ms', 'share'], profile.functions.slice(0, 10).map((p) => [p.name, p.ms, `${(p.share * 100).toFixed(1)}%`])));
  }
}

/** The CDF of serial and parallel start latencies, one panel each (the spawn floor is left out). */
export function startLatencyChart(result) {
  const shown = Object.entries(result.subjects).filter(([key]) => key !== 'spawn-floor').map(([, s]) => s);
  return svgDocument([
    cdfPanel({ title: `Pod start latency, serial (${result.serial} runs; VM ${result.vm_serial})`, series: shown.map((s) => ({ label: s.label, samples: s.serial.samples })) }),
    cdfPanel({ title: `Pod start latency, ${result.parallel} at once (VM ${result.vm_parallel})`, series: shown.map((s) => ({ label: s.label, samples: s.parallel.samples })) }),
  ]);
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      serial: { type: 'string', default: '100' }, parallel: { type: 'string', default: '50' },
      'vm-serial': { type: 'string', default: '5' }, 'vm-parallel': { type: 'string', default: '3' },
      only: { type: 'string', default: SUBJECTS.join(',') }, accelerator: { type: 'string', default: 'auto' }, 'cpu-prof': { type: 'boolean', default: false },
      'max-concurrent-starts': { type: 'string' },
    },
  });
  const result = await measureStartLatency({
    serial: Number(values.serial), parallel: Number(values.parallel), vmSerial: Number(values['vm-serial']), vmParallel: Number(values['vm-parallel']),
    only: values.only.split(','), accelerator: values.accelerator, cpuProf: values['cpu-prof'],
    ...(values['max-concurrent-starts'] !== undefined && { maxConcurrentStarts: Number(values['max-concurrent-starts']) }),
  });
  printStartLatency(result);
  writeResult('start-latency', result);
  writeFileSync(path.join(RESULTS_DIR, 'start-latency-cdf.svg'), startLatencyChart(result));
  console.log('wrote bench/results/start-latency-cdf.svg');
}
