#!/usr/bin/env node
// microVM pod start: a private daemon, an already-connected gRPC client (as containerd calls it),
// N serial Create+Start of a vmm sandbox. Reports the Start latency and how it splits into QEMU +
// guest boot (launch until the agent answers), the in-guest pod start, and our own code (the rest).
// Usage: node bench/vm-start.mjs [--runs 10] [--accelerator auto|kvm|tcg]   (root; after npm run build
// and scripts/build-guest.sh). Prints a table and writes bench/results/vm-start.json.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { runs: { type: 'string', default: '10' }, accelerator: { type: 'string', default: 'auto' }, 'guest-dir': { type: 'string', default: '/var/lib/kts/guest' } } });
const runs = Number(values.runs);
const root = mkdtempSync(path.join(tmpdir(), 'kts-bench-vm-'));
const socket = path.join(root, 'kts.sock');
writeFileSync(path.join(root, 'config.toml'), `listen = "${socket}"\nroot = "${root}"\nlog_level = "warn"\n[hypervisor]\nguest_dir = "${values['guest-dir']}"\naccelerator = "${values.accelerator}"\n`);

const loaderOptions = { keepCase: true, longs: Number, enums: String, defaults: true, includeDirs: [path.join(REPO, 'proto')] };
const load = (file) => grpc.loadPackageDefinition(protoLoader.loadSync(path.join(REPO, 'proto', file), loaderOptions));
const Controller = load('containerd/services/sandbox/v1/sandbox.proto').containerd.services.sandbox.v1.Controller;
const Admin = load('kts/admin/v1/admin.proto').kts.admin.v1.Admin;
const call = (client, method, request) => new Promise((resolve, reject) => client[method](request, (e, r) => (e ? reject(e) : resolve(r))));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const daemon = spawn(process.execPath, [path.join(REPO, 'bin/kts.js'), 'daemon', '--config', path.join(root, 'config.toml')], { stdio: 'inherit' });
const controller = new Controller(`unix://${socket}`, grpc.credentials.createInsecure());
const admin = new Admin(`unix://${socket}`, grpc.credentials.createInsecure());
try {
  await new Promise((resolve, reject) => controller.waitForReady(Date.now() + 20_000, (e) => (e ? reject(e) : resolve())));
  const samples = [];
  for (let i = 0; i <= runs; i++) {
    const sandboxId = `bench-vm-${i}`;
    await call(controller, 'Create', { sandbox_id: sandboxId, sandboxer: 'vmm' });
    const t0 = process.hrtime.bigint();
    await call(controller, 'Start', { sandbox_id: sandboxId });
    const startMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const history = await call(admin, 'History', { ref: sandboxId });
    const backend = JSON.parse(history.events.find((e) => e.type === 'SandboxStarted').payload_json).backend;
    const sample = { startMs, bootMs: backend['guest.boot_ms'], podStartMs: backend['guest.pod_start_ms'], accelerator: backend['hypervisor.accelerator'] };
    sample.ownMs = sample.startMs - sample.bootMs - sample.podStartMs;
    // The first start of a daemon also decides the accelerator (a KVM trial under auto): reported apart.
    if (i === 0) console.log(`first start (accelerator decided: ${sample.accelerator}, ${backend['hypervisor.accelerator_reason']}): ${startMs.toFixed(0)} ms`);
    else samples.push(sample);
    await call(controller, 'Shutdown', { sandbox_id: sandboxId });
  }
  const m = (key) => median(samples.map((s) => s[key]));
  const result = {
    runs, accelerator: samples[0]?.accelerator,
    start_ms_median: m('startMs'), boot_to_agent_ready_ms_median: m('bootMs'), pod_start_in_guest_ms_median: m('podStartMs'), own_code_ms_median: m('ownMs'),
    own_code_share: m('ownMs') / m('startMs'),
    guest_image_bytes: Object.fromEntries(['vmlinux', 'initrd.img', 'rootfs.img'].map((f) => [f, statSync(path.join(values['guest-dir'], f)).size])),
    samples,
  };
  console.log(`VM sandbox Start, ${runs} serial runs (${result.accelerator}), medians:`);
  console.log(`  Start (API)                     ${result.start_ms_median.toFixed(0).padStart(6)} ms`);
  console.log(`  QEMU + guest boot → agent ready ${result.boot_to_agent_ready_ms_median.toFixed(0).padStart(6)} ms`);
  console.log(`  pod start inside the guest      ${result.pod_start_in_guest_ms_median.toFixed(0).padStart(6)} ms`);
  console.log(`  our own code (the rest)         ${result.own_code_ms_median.toFixed(0).padStart(6)} ms  (${(result.own_code_share * 100).toFixed(1)}% of Start)`);
  mkdirSync(path.join(REPO, 'bench/results'), { recursive: true });
  writeFileSync(path.join(REPO, 'bench/results/vm-start.json'), JSON.stringify(result, null, 2) + '\n');
  console.log('wrote bench/results/vm-start.json');
} finally {
  controller.close();
  admin.close();
  daemon.kill('SIGTERM');
  await new Promise((resolve) => daemon.once('exit', resolve));
  await sleep(100);
  rmSync(root, { recursive: true, force: true });
}
