#!/usr/bin/env node
// Management memory: what it costs to manage N running pods, 1:N versus 1:1.
//   kts: PSS of the one daemon process (/proc/<pid>/smaps_rollup), and apart from it the PSS of the
//        per-pod kts-sandbox-init processes (init + namespace holder, the runc sandbox's own process).
//        The daemon runs from a private copy of the node binary, so that no other node process (this
//        harness, or anything else on the machine) shares its pages: its PSS is what it costs as the
//        only node process on a node, and does not change with what else runs. Beside the PSS, to see
//        where it goes: the PSS by mapping (executable, libraries, files, malloc heap, other anonymous:
//        V8), and the JS heap after a full GC (forced through bench/lib/gcOnSignal.mjs, preloaded into
//        the bench's daemon only), i.e. what the daemon's JS keeps per pod without garbage.
//   containerd 1.6: the sum of the PSS of every containerd-shim-runc-v2 (one per `ctr run -d`);
//        containerd's own PSS is reported beside it, as it would run in front of kts too.
// At 1, 5, 10, 20, 30 and 50 running pods (busybox `sleep 600`), each level reached by starting
// more pods and read after a 2 s settle; three rounds, each with a fresh daemon and no leftover shims.
// Usage: node bench/management-memory.mjs [--levels 1,5,10,20,30,50] [--rounds 3] [--settle-ms 2000]
//        [--daemon-node-args="--max-semi-space-size=2"]   (extra node flags for the daemon: experiments only)
//        (root; after npm run build; containerd and runc installed)
// Prints a table, writes bench/results/management-memory.json and bench/results/management-memory.svg.
import { chmodSync, copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startContainerd } from './lib/containerd.mjs';
import { apiPodStart, buildTestImages, IMAGES_DIR, isMain, REPO, RESULTS_DIR, SLEEPER, startDaemon, writeResult } from './lib/daemon.mjs';
import { GC_HOOK, usageAfterFullGc } from './lib/gcMarker.mjs';
import { memoryKb, pidsOf, pssByMapping, totalMemoryKb, waitForQuietMachine } from './lib/procfs.mjs';
import { formatTable, median, sleep } from './lib/stats.mjs';
import { linePanel, svgDocument } from './lib/svg.mjs';

const SANDBOX_INIT = path.join(REPO, 'dist/native/kts-sandbox-init');

/** Asks the daemon for a full GC (SIGUSR2 → gcOnSignal.mjs); resolves with its memoryUsage() after it, in kB. */
async function jsMemoryAfterGc(pid, marker) {
  const usage = await usageAfterFullGc(pid, marker);
  const kb = (bytes) => Math.round(bytes / 1024);
  return {
    heap_used: kb(usage.heapUsed), heap_total: kb(usage.heapTotal), external: kb(usage.external), array_buffers: kb(usage.arrayBuffers),
    heap_spaces: Object.fromEntries(Object.entries(usage.spaces).map(([name, space]) => [name, { size: kb(space.size), used: kb(space.used) }])),
  };
}

/** Starts pods until `running` of them run, reading memory at each level. */
async function climb(levels, settleMs, startPod, read) {
  const readings = [];
  let running = 0;
  for (const level of levels) {
    while (running < level) await startPod(running++);
    await sleep(settleMs);
    readings.push({ pods: level, ...(await read()) });
  }
  return readings;
}

async function ktsRound(levels, settleMs, nodeBinary, workDir, daemonNodeArgs) {
  const marker = path.join(workDir, 'gc-marker');
  writeFileSync(marker, '');
  const daemon = await startDaemon({ name: 'kts-bench-mem', nodeBinary, nodeArgs: ['--expose-gc', '--import', GC_HOOK, ...daemonNodeArgs], env: { KTS_BENCH_GC_MARKER: marker } });
  // PSS first: the forced GC that follows must not change what is reported as found.
  const read = async () => ({
    daemon: memoryKb(daemon.pid), daemon_by_mapping: pssByMapping(daemon.pid),
    sandbox_inits: totalMemoryKb(pidsOf(SANDBOX_INIT, `--dir ${daemon.root}/`)),
    js_after_gc: await jsMemoryAfterGc(daemon.pid, marker),
  });
  try {
    await sleep(settleMs);
    const idle = await read();
    const readings = await climb(levels, settleMs, (i) => apiPodStart(daemon.client, `mem-${i}`, 'runc', SLEEPER), read);
    return { idle, readings };
  } finally {
    await daemon.stop();
  }
}

async function containerdRound(peer, levels, settleMs) {
  try {
    return await climb(levels, settleMs, (i) => peer.run(`mem-${i}`), async () => ({ shims: totalMemoryKb(peer.shimPids()), containerd: memoryKb(peer.pid) }));
  } finally {
    await peer.removeAll();
  }
}

/** Where the daemon's PSS line crosses below the shims' (linear between levels), or null. */
function crossover(levels, ours, theirs) {
  for (let i = 0; i < levels.length; i++) {
    if (ours[i] >= theirs[i]) continue;
    if (i === 0) return levels[0];
    const before = ours[i - 1] - theirs[i - 1];
    const after = ours[i] - theirs[i];
    return Math.round((levels[i - 1] + ((levels[i] - levels[i - 1]) * before) / (before - after)) * 10) / 10;
  }
  return null;
}

/** Least-squares slope of y over x (kB per pod), over every reading of every round. */
function slope(points) {
  const mx = points.reduce((sum, p) => sum + p.x, 0) / points.length;
  const my = points.reduce((sum, p) => sum + p.y, 0) / points.length;
  return points.reduce((sum, p) => sum + (p.x - mx) * (p.y - my), 0) / points.reduce((sum, p) => sum + (p.x - mx) ** 2, 0);
}

/** Per level: the medians over rounds (kB) and the min/max of the daemon's PSS; per-pod growth; crossover. */
function summarizeMemory(levels, ktsRounds, containerdRounds) {
  const ktsReadings = ktsRounds.map((r) => r.readings);
  const at = (rounds, i, pick) => median(rounds.map((round) => pick(round[i])));
  const mappingParts = Object.keys(ktsReadings[0][0].daemon_by_mapping);
  const perLevel = levels.map((pods, i) => {
    const asFound = ktsReadings.map((readings) => readings[i].daemon.pss);
    return {
      pods,
      kts_daemon_pss_kb: median(asFound), kts_daemon_pss_min_kb: Math.min(...asFound), kts_daemon_pss_max_kb: Math.max(...asFound),
      kts_daemon_rss_kb: at(ktsReadings, i, (r) => r.daemon.rss),
      kts_daemon_pss_by_mapping_kb: Object.fromEntries(mappingParts.map((part) => [part, at(ktsReadings, i, (r) => r.daemon_by_mapping[part])])),
      kts_daemon_js_heap_used_after_gc_kb: at(ktsReadings, i, (r) => r.js_after_gc.heap_used),
      kts_sandbox_inits_pss_kb: at(ktsReadings, i, (r) => r.sandbox_inits.pss),
      shims_pss_kb: at(containerdRounds, i, (r) => r.shims.pss),
      shims_count: at(containerdRounds, i, (r) => r.shims.processes),
      containerd_pss_kb: at(containerdRounds, i, (r) => r.containerd.pss),
    };
  });
  const first = perLevel[0];
  const last = perLevel.at(-1);
  const span = last.pods - first.pods;
  const growth = ktsReadings.map((readings) => Math.round((readings.at(-1).daemon.pss - readings[0].daemon.pss) / span));
  return {
    per_level: perLevel,
    kts_daemon_idle_pss_kb: median(ktsRounds.map((r) => r.idle.daemon.pss)),
    // (PSS at the last level - PSS at the first) / pods added, median over rounds; and a fit over all readings.
    kts_pss_per_extra_pod_kb: median(growth),
    kts_pss_per_extra_pod_kb_by_round: growth,
    kts_pss_per_extra_pod_kb_fit: Math.round(slope(ktsReadings.flat().map((r) => ({ x: r.pods, y: r.daemon.pss })))),
    kts_js_heap_per_extra_pod_kb: Math.round((last.kts_daemon_js_heap_used_after_gc_kb - first.kts_daemon_js_heap_used_after_gc_kb) / span),
    // How V8's committed heap spaces grew from the first level to the last (kB, medians over rounds), live objects or not.
    kts_heap_space_growth_kb: Object.fromEntries(Object.keys(ktsReadings[0][0].js_after_gc.heap_spaces).map((name) => {
      const size = (index) => median(ktsReadings.map((readings) => readings.at(index).js_after_gc.heap_spaces[name].size));
      return [name, size(-1) - size(0)];
    }).filter(([, kb]) => kb !== 0)),
    kts_pss_growth_by_mapping_kb: Object.fromEntries(mappingParts.map((part) => [part, last.kts_daemon_pss_by_mapping_kb[part] - first.kts_daemon_pss_by_mapping_kb[part]])),
    kts_sandbox_init_pss_per_pod_kb: Math.round(last.kts_sandbox_inits_pss_kb / last.pods),
    shim_pss_per_pod_kb: Math.round(last.shims_pss_kb / last.pods),
    reduction_vs_shims_at_max: 1 - last.kts_daemon_pss_kb / last.shims_pss_kb,
    reduction_vs_shims_at_max_with_sandbox_inits: 1 - (last.kts_daemon_pss_kb + last.kts_sandbox_inits_pss_kb) / last.shims_pss_kb,
    crossover_pods: crossover(levels, perLevel.map((l) => l.kts_daemon_pss_kb), perLevel.map((l) => l.shims_pss_kb)),
    crossover_pods_with_sandbox_inits: crossover(levels, perLevel.map((l) => l.kts_daemon_pss_kb + l.kts_sandbox_inits_pss_kb), perLevel.map((l) => l.shims_pss_kb)),
  };
}

export async function measureManagementMemory({ levels = [1, 5, 10, 20, 30, 50], rounds = 3, settleMs = 2000, daemonNodeArgs = [] } = {}) {
  buildTestImages();
  const workDir = mkdtempSync(path.join(tmpdir(), 'kts-bench-mem-'));
  const nodeBinary = path.join(workDir, 'node');
  copyFileSync(process.execPath, nodeBinary);
  chmodSync(nodeBinary, 0o755);
  const peer = await startContainerd({ imageLayout: path.join(IMAGES_DIR, 'busybox') });
  const ktsRounds = [];
  const containerdRounds = [];
  try {
    for (let round = 1; round <= rounds; round++) {
      await waitForQuietMachine();
      process.stdout.write(`memory round ${round}/${rounds}: kts`);
      ktsRounds.push(await ktsRound(levels, settleMs, nodeBinary, workDir, daemonNodeArgs));
      await waitForQuietMachine();
      process.stdout.write(', containerd');
      containerdRounds.push(await containerdRound(peer, levels, settleMs));
      console.log(' done');
    }
  } finally {
    await peer.stop();
    rmSync(workDir, { recursive: true, force: true });
  }
  return { levels, rounds, settle_ms: settleMs, daemon_node_args: daemonNodeArgs, containerd_version: peer.version, ...summarizeMemory(levels, ktsRounds, containerdRounds), raw: { kts: ktsRounds, containerd: containerdRounds } };
}

const mib = (kb) => (kb / 1024).toFixed(1);

export function printManagementMemory(result) {
  console.log(`\nManagement memory (PSS, MiB; median of ${result.rounds} rounds). kts daemon idle: ${mib(result.kts_daemon_idle_pss_kb)} MiB`);
  console.log(formatTable(
    ['pods', 'kts daemon', '(min–max)', 'of it: node exe', 'libs', 'files', 'malloc', 'anon (V8)', 'JS heap after GC', 'kts sandbox inits', 'shims (containerd-shim-runc-v2)', 'containerd itself'],
    result.per_level.map((l) => {
      const by = l.kts_daemon_pss_by_mapping_kb;
      return [
        l.pods, mib(l.kts_daemon_pss_kb), `${mib(l.kts_daemon_pss_min_kb)}–${mib(l.kts_daemon_pss_max_kb)}`,
        mib(by.executable), mib(by.shared_libraries), mib(by.other_files), mib(by.malloc_heap), mib(by.anonymous), mib(l.kts_daemon_js_heap_used_after_gc_kb),
        mib(l.kts_sandbox_inits_pss_kb), `${mib(l.shims_pss_kb)} (${l.shims_count})`, mib(l.containerd_pss_kb),
      ];
    }),
  ));
  const last = result.per_level.at(-1);
  const growth = Object.entries(result.kts_pss_growth_by_mapping_kb).map(([part, kb]) => `${part} ${kb >= 0 ? '+' : ''}${kb}`).join(', ');
  console.log(`per extra pod (${result.per_level[0].pods}→${last.pods}): kts daemon PSS ${result.kts_pss_per_extra_pod_kb} kB (median of rounds ${result.kts_pss_per_extra_pod_kb_by_round.join(', ')}; least-squares fit ${result.kts_pss_per_extra_pod_kb_fit}), of which live JS heap ${result.kts_js_heap_per_extra_pod_kb} kB`);
  console.log(`  daemon PSS growth ${result.per_level[0].pods}→${last.pods} by mapping (kB, medians): ${growth}`);
  console.log(`  V8 heap spaces' committed size, growth ${result.per_level[0].pods}→${last.pods} (kB, after a full GC): ${Object.entries(result.kts_heap_space_growth_kb).map(([name, kb]) => `${name} ${kb >= 0 ? '+' : ''}${kb}`).join(', ')}`);
  console.log(`  kts sandbox init (init + holder) ${result.kts_sandbox_init_pss_per_pod_kb} kB; containerd-shim-runc-v2 ${result.shim_pss_per_pod_kb} kB`);
  const versus = (reduction) => (reduction >= 0 ? `${(reduction * 100).toFixed(1)}% below` : `${(-reduction * 100).toFixed(1)}% above`);
  console.log(`at ${last.pods} pods: the kts daemon's PSS is ${versus(result.reduction_vs_shims_at_max)} the shims' total (${versus(result.reduction_vs_shims_at_max_with_sandbox_inits)} counting the sandbox inits)`);
  console.log(`crossover: the daemon's PSS falls below the shims' total at ${result.crossover_pods ?? `more than ${last.pods}`} pods (${result.crossover_pods_with_sandbox_inits ?? `more than ${last.pods}`} counting the sandbox inits)`);
}

export function managementMemoryChart(result) {
  const line = (pick, range) => result.per_level.map((l) => ({ x: l.pods, y: pick(l) / 1024, ...(range && { lo: range[0](l) / 1024, hi: range[1](l) / 1024 }) }));
  return svgDocument([linePanel({
    title: `Management memory: PSS at N running pods (median of ${result.rounds})`, xLabel: 'running pods', yLabel: 'PSS (MiB)',
    series: [
      { label: 'kts daemon (min–max bars)', points: line((l) => l.kts_daemon_pss_kb, [(l) => l.kts_daemon_pss_min_kb, (l) => l.kts_daemon_pss_max_kb]) },
      { label: 'containerd-shim-runc-v2, all', points: line((l) => l.shims_pss_kb) },
      { label: 'kts daemon + sandbox inits', points: line((l) => l.kts_daemon_pss_kb + l.kts_sandbox_inits_pss_kb) },
    ],
    markers: result.crossover_pods ? [{ x: result.crossover_pods, label: `crossover ≈ ${result.crossover_pods} pods` }] : [],
  })]);
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({
    options: { levels: { type: 'string', default: '1,5,10,20,30,50' }, rounds: { type: 'string', default: '3' }, 'settle-ms': { type: 'string', default: '2000' }, 'daemon-node-args': { type: 'string', default: '' } },
  });
  const result = await measureManagementMemory({
    levels: values.levels.split(',').map(Number), rounds: Number(values.rounds), settleMs: Number(values['settle-ms']), daemonNodeArgs: values['daemon-node-args'].split(' ').filter(Boolean),
  });
  printManagementMemory(result);
  writeResult('management-memory', result);
  writeFileSync(path.join(RESULTS_DIR, 'management-memory.svg'), managementMemoryChart(result));
  console.log('wrote bench/results/management-memory.svg');
}
