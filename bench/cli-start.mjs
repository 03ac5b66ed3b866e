#!/usr/bin/env node
// What a `kts` command costs the operator, hyperfine-style: each command's wall time (spawn → exit) from
// a fresh node process, next to `node -e 0` (the floor: node starting and exiting, measured in the same
// run). Rounds are interleaved, each round running every command once in a rotated order, so drift in
// the machine's load hits every command alike. Against a private daemon holding one running pod:
//   node -e 0, kts --version, kts --help (no daemon), kts version, kts pods, kts ps (one call each),
//   kts run examples/pod.yaml examples/busybox.yaml, and the same three API calls (Create, Start,
//   RunContainer) over the bench's connected client; every pod `kts run` or the API started is removed
//   (untimed) before the next command.
// With --baseline DIR, the same kts commands of another built checkout (DIR/bin/kts.js, e.g. the commit
// before a change) run in the same rounds, against the same daemon.
// Usage: node bench/cli-start.mjs [--runs 20] [--warmup 3] [--baseline DIR] [--tag NAME]   (root; after npm run build)
// Writes bench/results/cli-start.json (cli-start-<tag>.json with --tag) and, untagged, merges
// cli_ps_vs_node and cli_run_overhead_vs_node into bench/results/latest.json.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { apiPodStart, buildTestImages, dist, KTS, mergeLatest, REPO, SLEEPER, startDaemon, writeResult } from './lib/daemon.mjs';
import { runChecked } from './lib/spawn.mjs';
import { elapsedMs, formatTable, loadAverage, startTimer, summarize } from './lib/stats.mjs';

const POD_YAML = path.join(REPO, 'examples/pod.yaml');
const CONTAINER_YAML = path.join(REPO, 'examples/busybox.yaml');

const { values: options } = parseArgs({
  options: { runs: { type: 'string', default: '20' }, warmup: { type: 'string', default: '3' }, baseline: { type: 'string' }, tag: { type: 'string' } },
});

/** The same calls `kts run` makes (src/cli/main.ts, its run action), from the bench's connected client. */
async function apiRunner() {
  const [{ readContainerConfigFile, readPodSandboxConfigFile }, { encodePodSandboxConfig }] = await Promise.all([dist('src/oci/podConfig.js'), dist('src/grpc/protos.js')]);
  const pod = await readPodSandboxConfigFile(POD_YAML);
  const container = await readContainerConfigFile(CONTAINER_YAML);
  return async (client) => {
    const sandboxId = randomBytes(16).toString('hex');
    await client.controller.Create({ sandboxId, options: encodePodSandboxConfig(pod), sandboxer: '', annotations: {} });
    await client.controller.Start({ sandboxId });
    await client.admin.RunContainer({
      sandboxId, name: container.metadata.name, image: container.image.image, command: container.command, args: container.args,
      env: Object.fromEntries(container.envs.map((kv) => [kv.key, kv.value])), workingDir: container.workingDir ?? '', labels: container.labels, start: true,
      resources: container.linux.resources, mounts: container.mounts, annotations: container.annotations,
    });
    return sandboxId;
  };
}

/** The kts commands timed, run with the kts at `bin`: keyed by command, `baseline_<command>` for a baseline (labels start with `prefix`). */
function ktsSubjects(daemon, bin, prefix) {
  const env = { ...process.env, KTS_SOCKET: daemon.socket };
  const kts = (...args) => ({ label: `${prefix}kts ${args.join(' ')}`, time: async () => (await runChecked(process.execPath, [bin, ...args], { env })).ms });
  return Object.fromEntries(Object.entries({
    version_flag: kts('--version'),
    help: kts('--help'),
    version: kts('version'),
    pods: kts('pods'),
    ps: kts('ps'),
    run: {
      label: `${prefix}kts run pod.yaml busybox.yaml`,
      time: async () => {
        const result = await runChecked(process.execPath, [bin, 'run', '--json', POD_YAML, CONTAINER_YAML], { env });
        await daemon.client.controller.Shutdown({ sandboxId: JSON.parse(result.stdout).podId });
        return result.ms;
      },
    },
  }).map(([name, subject]) => [`${prefix ? 'baseline_' : ''}${name}`, subject]));
}

/** The timed subjects: each `time()` resolves with its wall ms and leaves the daemon as it found it. */
function subjects(daemon, apiRun, baseline) {
  const shutdown = (sandboxId) => daemon.client.controller.Shutdown({ sandboxId });
  return {
    node: { label: 'node -e 0 (floor)', time: async () => (await runChecked(process.execPath, ['-e', '0'])).ms },
    ...ktsSubjects(daemon, KTS, ''),
    ...(baseline && ktsSubjects(daemon, path.join(path.resolve(baseline), 'bin/kts.js'), 'baseline: ')),
    api_run: {
      label: 'its API calls (Create, Start, RunContainer)',
      time: async () => {
        const started = startTimer();
        const sandboxId = await apiRun(daemon.client);
        const ms = elapsedMs(started);
        await shutdown(sandboxId);
        return ms;
      },
    },
  };
}

/** `rounds` rounds of every subject once, the order rotated by one each round. */
async function interleaved(bySubject, rounds) {
  const names = Object.keys(bySubject);
  const samples = Object.fromEntries(names.map((name) => [name, []]));
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < names.length; i++) {
      const name = names[(round + i) % names.length];
      samples[name].push(await bySubject[name].time());
    }
  }
  return samples;
}

async function main() {
  const runs = Number(options.runs);
  const warmup = Number(options.warmup);
  buildTestImages();
  const loadAtStart = loadAverage();
  const daemon = await startDaemon({ name: 'kts-cli-bench' });
  try {
    // One running pod, so that `kts pods` and `kts ps` print a row each.
    await apiPodStart(daemon.client, `cli-bench-${randomBytes(4).toString('hex')}`, 'runc', SLEEPER);
    const bySubject = subjects(daemon, await apiRunner(), options.baseline);
    await interleaved(bySubject, warmup);
    const samples = await interleaved(bySubject, runs);
    report(bySubject, samples, { runs, warmup, loadAtStart });
  } finally {
    await daemon.stop();
  }
}

function report(bySubject, samples, { runs, warmup, loadAtStart }) {
  const stats = Object.fromEntries(Object.entries(samples).map(([name, ms]) => [name, { label: bySubject[name].label, ...summarize(ms) }]));
  const floor = stats.node.p50;
  const round3 = (x) => Math.round(x * 1000) / 1000;
  console.log(`CLI start-up: wall time from spawn to exit (ms), ${runs} interleaved runs each after ${warmup} warm-up rounds; × node = median / node -e 0's median`);
  console.log(formatTable(['command', 'median', 'p90', 'min', 'max', '× node'],
    Object.values(stats).map((s) => [s.label, s.p50.toFixed(1), s.p90.toFixed(1), s.min.toFixed(1), s.max.toFixed(1), (s.p50 / floor).toFixed(2)])));
  /** The two numbers of the goal for the kts whose subjects are `<prefix>ps` and `<prefix>run`. */
  const headlineOf = (prefix) => ({
    cli_ps_vs_node: round3(stats[`${prefix}ps`].p50 / floor),
    // What kts run costs above its own API calls, in node start-ups.
    cli_run_overhead_vs_node: round3((stats[`${prefix}run`].p50 - stats.api_run.p50) / floor),
  });
  const describe = (headline) => `kts ps ${headline.cli_ps_vs_node}× node -e 0 (goal ≤ 1.6); kts run − its API calls ${headline.cli_run_overhead_vs_node} node start-ups (goal ≤ 1)`;
  const keys = headlineOf('');
  const baseline = options.baseline && { dir: path.resolve(options.baseline), ...headlineOf('baseline_') };
  console.log(`\n${describe(keys)}${baseline ? `\nbaseline: ${describe(baseline)}` : ''}`);
  console.log(`load average (1 min): ${loadAtStart} at the start, ${loadAverage()} at the end`);
  const goals = {
    cli_ps_vs_node: { goal: '≤ 1.6', met: keys.cli_ps_vs_node <= 1.6 },
    cli_run_overhead_vs_node: { goal: '≤ 1', met: keys.cli_run_overhead_vs_node <= 1 },
  };
  const result = {
    ...keys, goals, date: new Date().toISOString(), node: process.version, load_average_1m_at_start: loadAtStart, load_average_1m_at_end: loadAverage(),
    runs, warmup, ...(baseline && { baseline }), subjects: stats,
  };
  if (options.tag) return writeResult(`cli-start-${options.tag}`, result);
  writeResult('cli-start', result);
  mergeLatest(keys, goals);
}

await main();
