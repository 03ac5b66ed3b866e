#!/usr/bin/env node
// The cost of tracing: the start latency of N runc pods (Create + Start + RunContainer through an
// already-connected gRPC client, serially) with tracing off (OTEL_SDK_DISABLED=true) and on at 100%
// sampling, exporting every span over OTLP/gRPC to a receiver in this process.
// Usage: node bench/tracing-overhead.mjs [--pods 20] [--rounds 3]   (root; after npm run build)
// Prints a table and writes bench/results/tracing-overhead.json.
import { parseArgs } from 'node:util';
import { apiPodStart, buildTestImages, SLEEPER, startDaemon, writeResult } from './lib/daemon.mjs';
import { elapsedMs, median, startTimer } from './lib/stats.mjs';
import { startSpanReceiver } from './lib/traces.mjs';

const { values } = parseArgs({ options: { pods: { type: 'string', default: '20' }, rounds: { type: 'string', default: '3' } } });
const pods = Number(values.pods);
const rounds = Number(values.rounds);

async function measure(env) {
  const daemon = await startDaemon({ name: 'kts-bench-otel', env, stdio: 'inherit' });
  try {
    const samples = [];
    for (let i = -1; i < pods; i++) {
      const started = startTimer();
      await apiPodStart(daemon.client, `otel-${i + 1}`, 'runc', SLEEPER);
      if (i >= 0) samples.push(elapsedMs(started)); // the first start warms up and is not counted
    }
    return samples;
  } finally {
    await daemon.stop();
  }
}

buildTestImages();
const receiver = await startSpanReceiver();
const off = [];
const unexported = [];
const on = [];
for (let round = 0; round < rounds; round++) {
  off.push(...(await measure({ OTEL_SDK_DISABLED: 'true' })));
  unexported.push(...(await measure({})));
  on.push(...(await measure(receiver.env)));
}
receiver.stop();
const received = receiver.spans.length;
const result = {
  pods, rounds, off_p50_ms: median(off), unexported_p50_ms: median(unexported), on_p50_ms: median(on),
  overhead: median(on) / median(off) - 1, spans_received: received, off, unexported, on,
};
console.log(`runc pod start (Create + Start + RunContainer), ${pods} pods × ${rounds} rounds, p50:`);
console.log(`  tracing off (OTEL_SDK_DISABLED)        ${result.off_p50_ms.toFixed(1)} ms`);
console.log(`  spans made, none exported (default)    ${result.unexported_p50_ms.toFixed(1)} ms`);
console.log(`  tracing on, 100% sampled, OTLP export  ${result.on_p50_ms.toFixed(1)} ms   (${received} spans received)`);
console.log(`  difference                             ${(result.overhead * 100).toFixed(1)}%`);
writeResult('tracing-overhead', result);
