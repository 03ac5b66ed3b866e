#!/usr/bin/env node
// The cost of tracing: the start latency of N runc pods (Create + Start + RunContainer through an
// already-connected gRPC client, serially) with tracing off (OTEL_SDK_DISABLED=true) and on at 100%
// sampling, exporting every span over OTLP/gRPC to a receiver in this process.
// Usage: node bench/tracing-overhead.mjs [--pods 20] [--rounds 3]   (root; after npm run build)
// Prints a table and writes bench/results/tracing-overhead.json.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { pods: { type: 'string', default: '20' }, rounds: { type: 'string', default: '3' } } });
const pods = Number(values.pods);
const rounds = Number(values.rounds);
const loaderOptions = { keepCase: true, longs: Number, enums: String, defaults: true, includeDirs: [path.join(REPO, 'proto')] };
const load = (file) => grpc.loadPackageDefinition(protoLoader.loadSync(path.join(REPO, 'proto', file), loaderOptions));
const Controller = load('containerd/services/sandbox/v1/sandbox.proto').containerd.services.sandbox.v1.Controller;
const Admin = load('kts/admin/v1/admin.proto').kts.admin.v1.Admin;
const TraceService = load('opentelemetry/proto/collector/trace/v1/trace_service.proto').opentelemetry.proto.collector.trace.v1.TraceService;
const call = (client, method, request) => new Promise((resolve, reject) => client[method](request, (e, r) => (e ? reject(e) : resolve(r))));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

let received = 0;
const receiver = new grpc.Server();
receiver.addService(TraceService.service, { Export: (c, cb) => { for (const r of c.request.resource_spans) for (const s of r.scope_spans) received += s.spans.length; cb(null, {}); } });
const port = await new Promise((resolve, reject) => receiver.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));

async function measure(env) {
  const root = mkdtempSync(path.join(tmpdir(), 'kts-bench-otel-'));
  const socket = path.join(root, 'kts.sock');
  writeFileSync(path.join(root, 'config.toml'), `listen = "${socket}"\nroot = "${root}"\nlog_level = "warn"\n[runc]\nroot = "${root}/runc"\n[images]\ndir = "${REPO}/.kts/test-images"\n`);
  const daemon = spawn(process.execPath, [path.join(REPO, 'bin/kts.js'), 'daemon', '--config', path.join(root, 'config.toml')], { stdio: 'inherit', env: { ...process.env, ...env } });
  const controller = new Controller(`unix://${socket}`, grpc.credentials.createInsecure());
  const admin = new Admin(`unix://${socket}`, grpc.credentials.createInsecure());
  try {
    await new Promise((resolve, reject) => controller.waitForReady(Date.now() + 20_000, (e) => (e ? reject(e) : resolve())));
    const samples = [];
    for (let i = -1; i < pods; i++) {
      const id = `otel-${i + 1}`;
      const t0 = process.hrtime.bigint();
      await call(controller, 'Create', { sandbox_id: id, sandboxer: 'runc' });
      await call(controller, 'Start', { sandbox_id: id });
      await call(admin, 'RunContainer', { sandbox_id: id, name: 'sleeper', image: 'busybox:latest', command: ['sleep', '600'], start: true });
      if (i >= 0) samples.push(Number(process.hrtime.bigint() - t0) / 1e6); // the first start warms up and is not counted
    }
    for (let i = 0; i <= pods; i++) await call(controller, 'Shutdown', { sandbox_id: `otel-${i}` });
    return samples;
  } finally {
    controller.close();
    admin.close();
    daemon.kill('SIGTERM');
    await new Promise((resolve) => daemon.once('exit', resolve));
    rmSync(root, { recursive: true, force: true });
  }
}

const off = [];
const unexported = [];
const on = [];
for (let round = 0; round < rounds; round++) {
  off.push(...(await measure({ OTEL_SDK_DISABLED: 'true' })));
  unexported.push(...(await measure({})));
  on.push(...(await measure({ OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`, OTEL_TRACES_SAMPLER: 'always_on' })));
}
receiver.forceShutdown();
const result = {
  pods, rounds, off_p50_ms: median(off), unexported_p50_ms: median(unexported), on_p50_ms: median(on),
  overhead: median(on) / median(off) - 1, spans_received: received, off, unexported, on,
};
console.log(`runc pod start (Create + Start + RunContainer), ${pods} pods × ${rounds} rounds, p50:`);
console.log(`  tracing off (OTEL_SDK_DISABLED)        ${result.off_p50_ms.toFixed(1)} ms`);
console.log(`  spans made, none exported (default)    ${result.unexported_p50_ms.toFixed(1)} ms`);
console.log(`  tracing on, 100% sampled, OTLP export  ${result.on_p50_ms.toFixed(1)} ms   (${received} spans received)`);
console.log(`  difference                             ${(result.overhead * 100).toFixed(1)}%`);
mkdirSync(path.join(REPO, 'bench/results'), { recursive: true });
writeFileSync(path.join(REPO, 'bench/results/tracing-overhead.json'), JSON.stringify(result, null, 2) + '\n');
console.log('wrote bench/results/tracing-overhead.json');
