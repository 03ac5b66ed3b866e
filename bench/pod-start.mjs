#!/usr/bin/env node
// Pod start latency through the CLI and the daemon's memory: starts a private daemon, runs
// `kts run` N times one after another (time from invoking the CLI until it returns with the
// container running), and reads the daemon's RSS and PSS with 0 pods and with N pods.
// Usage: node bench/pod-start.mjs [--pods 20]     (root; needs `npm run build` and runc)
// Prints a table and writes bench/results/pod-start.json.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const KTS = path.join(REPO, 'bin/kts.js');
const { values } = parseArgs({ options: { pods: { type: 'string', default: '20' } } });
const pods = Number(values.pods);

const root = mkdtempSync(path.join(tmpdir(), 'kts-bench-'));
const socket = path.join(root, 'kts.sock');
const imagesDir = path.join(REPO, '.kts/test-images');
execFileSync('bash', [path.join(REPO, 'scripts/build-images.sh'), imagesDir], { stdio: 'ignore' });
writeFileSync(path.join(root, 'config.toml'), `listen = "${socket}"\nroot = "${root}"\nlog_level = "warn"\n[runc]\nroot = "${root}/runc"\n[images]\ndir = "${imagesDir}"\n`);

const kts = (...args) => execFileSync(process.execPath, [KTS, ...args], { env: { ...process.env, KTS_SOCKET: socket }, encoding: 'utf8' });
const memory = (pid) => {
  const field = (text, name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  return { rssKb: field(rollup, 'Rss'), pssKb: field(rollup, 'Pss') };
};
const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const daemon = spawn(process.execPath, [KTS, 'daemon', '--config', path.join(root, 'config.toml')], { stdio: 'ignore' });
try {
  for (let i = 0; i < 100; i++) {
    try { execFileSync(process.execPath, [KTS, 'pods', '--socket', socket], { stdio: 'ignore' }); break; } catch { await sleep(100); }
  }
  kts('run', path.join(REPO, 'examples/pod.yaml'), path.join(REPO, 'examples/busybox.yaml')); // warm-up: image unpack, JIT
  kts('rm', 'busybox-pod');
  await sleep(1000);
  const idle = memory(daemon.pid);

  const samples = [];
  for (let i = 0; i < pods; i++) {
    const pod = path.join(root, `pod-${i}.yaml`);
    const container = path.join(root, `ctr-${i}.yaml`);
    writeFileSync(pod, `metadata:\n  name: bench-${i}\n  namespace: bench\n  uid: bench-${i}\n`);
    writeFileSync(container, 'metadata:\n  name: sleeper\nimage:\n  image: busybox:latest\ncommand: [sleep, "600"]\n');
    const started = process.hrtime.bigint();
    kts('run', pod, container);
    samples.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  await sleep(1000);
  const loaded = memory(daemon.pid);
  const running = JSON.parse(kts('ps', '--json')).filter((c) => c.state === 'running').length;
  for (let i = 0; i < pods; i++) kts('rm', `bench/bench-${i}`);

  const sorted = [...samples].sort((a, b) => a - b);
  const result = {
    pods, running,
    kts_run_ms: { p50: percentile(sorted, 50), p90: percentile(sorted, 90), min: sorted[0], max: sorted.at(-1), samples },
    daemon_rss_kb: { idle: idle.rssKb, [`with_${pods}_pods`]: loaded.rssKb },
    daemon_pss_kb: { idle: idle.pssKb, [`with_${pods}_pods`]: loaded.pssKb },
  };
  console.log(`kts run → container running (${pods} serial runs, CLI wall time incl. node start)`);
  console.log(`  p50 ${result.kts_run_ms.p50.toFixed(1)} ms   p90 ${result.kts_run_ms.p90.toFixed(1)} ms   min ${sorted[0].toFixed(1)} ms   max ${sorted.at(-1).toFixed(1)} ms`);
  console.log(`daemon memory        RSS            PSS`);
  console.log(`  0 pods         ${(idle.rssKb / 1024).toFixed(1).padStart(7)} MiB   ${(idle.pssKb / 1024).toFixed(1).padStart(7)} MiB`);
  console.log(`  ${String(pods).padEnd(2)} pods        ${(loaded.rssKb / 1024).toFixed(1).padStart(7)} MiB   ${(loaded.pssKb / 1024).toFixed(1).padStart(7)} MiB   (${running} containers running)`);
  mkdirSync(path.join(REPO, 'bench/results'), { recursive: true });
  writeFileSync(path.join(REPO, 'bench/results/pod-start.json'), JSON.stringify(result, null, 2) + '\n');
  console.log('wrote bench/results/pod-start.json');
} finally {
  daemon.kill('SIGTERM');
  await new Promise((resolve) => daemon.once('exit', resolve));
  rmSync(root, { recursive: true, force: true });
}
