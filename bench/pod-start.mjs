#!/usr/bin/env node
// Pod start latency through the CLI and the daemon's memory: starts a private daemon, runs
// `kts run` N times one after another (time from invoking the CLI until it returns with the
// container running), and reads the daemon's RSS and PSS with 0 pods and with N pods.
// Usage: node bench/pod-start.mjs [--pods 20]     (root; needs `npm run build` and runc)
// Prints a table and writes bench/results/pod-start.json.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildTestImages, REPO, startDaemon, writeResult } from './lib/daemon.mjs';
import { memoryKb } from './lib/procfs.mjs';
import { elapsedMs, sleep, startTimer, summarize } from './lib/stats.mjs';

const { values } = parseArgs({ options: { pods: { type: 'string', default: '20' } } });
const pods = Number(values.pods);

buildTestImages();
const daemon = await startDaemon();
try {
  daemon.kts('run', path.join(REPO, 'examples/pod.yaml'), path.join(REPO, 'examples/busybox.yaml')); // warm-up: image unpack, JIT
  daemon.kts('rm', 'busybox-pod');
  await sleep(1000);
  const idle = memoryKb(daemon.pid);

  const samples = [];
  for (let i = 0; i < pods; i++) {
    const pod = path.join(daemon.root, `pod-${i}.yaml`);
    const container = path.join(daemon.root, `ctr-${i}.yaml`);
    writeFileSync(pod, `metadata:\n  name: bench-${i}\n  namespace: bench\n  uid: bench-${i}\n`);
    writeFileSync(container, 'metadata:\n  name: sleeper\nimage:\n  image: busybox:latest\ncommand: [sleep, "600"]\n');
    const started = startTimer();
    daemon.kts('run', pod, container);
    samples.push(elapsedMs(started));
  }
  await sleep(1000);
  const loaded = memoryKb(daemon.pid);
  const running = JSON.parse(daemon.kts('ps', '--json')).filter((c) => c.state === 'running').length;

  const latency = summarize(samples);
  const result = {
    pods, running,
    kts_run_ms: latency,
    daemon_rss_kb: { idle: idle.rss, [`with_${pods}_pods`]: loaded.rss },
    daemon_pss_kb: { idle: idle.pss, [`with_${pods}_pods`]: loaded.pss },
  };
  console.log(`kts run → container running (${pods} serial runs, CLI wall time incl. node start)`);
  console.log(`  p50 ${latency.p50.toFixed(1)} ms   p90 ${latency.p90.toFixed(1)} ms   min ${latency.min.toFixed(1)} ms   max ${latency.max.toFixed(1)} ms`);
  console.log(`daemon memory        RSS            PSS`);
  console.log(`  0 pods         ${(idle.rss / 1024).toFixed(1).padStart(7)} MiB   ${(idle.pss / 1024).toFixed(1).padStart(7)} MiB`);
  console.log(`  ${String(pods).padEnd(2)} pods        ${(loaded.rss / 1024).toFixed(1).padStart(7)} MiB   ${(loaded.pss / 1024).toFixed(1).padStart(7)} MiB   (${running} containers running)`);
  writeResult('pod-start', result);
} finally {
  await daemon.stop();
}
