#!/usr/bin/env node
// microVM pod start: a private daemon, an already-connected gRPC client (as containerd calls it),
// N serial Create+Start of a vmm sandbox. Reports the Start latency and how it splits into QEMU +
// guest boot (launch until the agent answers), the in-guest pod start, and our own code (the rest);
// then, in each VM, one container run (RunContainer with start: create + start by the guest's OCI
// runtime) and one exec (`true`), each timed at the API.
// Usage: node bench/vm-start.mjs [--runs 10] [--accelerator auto|kvm|tcg] [--guest-oci-runtime auto|crun|runc]
//        (root; after npm run build and scripts/build-guest.sh). Prints a table and writes bench/results/vm-start.json.
import { statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildTestImages, isMain, SLEEPER, startDaemon, writeResult } from './lib/daemon.mjs';
import { elapsedMs, median, startTimer } from './lib/stats.mjs';
import { hypervisorConfig, vmStartSplit } from './lib/vm.mjs';

export async function measureVmStart({ runs = 10, accelerator = 'auto', guestDir = '/var/lib/kts/guest', guestOciRuntime = 'auto' } = {}) {
  buildTestImages();
  const config = `${hypervisorConfig({ guestDir, accelerator })}guest_oci_runtime = "${guestOciRuntime}"\n`;
  const daemon = await startDaemon({ name: 'kts-bench-vm', config, stdio: 'inherit' });
  const { client } = daemon;
  try {
    const samples = [];
    for (let i = 0; i <= runs; i++) {
      const sandboxId = `bench-vm-${i}`;
      await client.controller.Create({ sandboxId, sandboxer: 'vmm' });
      const t0 = startTimer();
      await client.controller.Start({ sandboxId });
      const sample = await vmStartSplit(client, sandboxId, elapsedMs(t0));
      const t1 = startTimer();
      const { containerId } = await client.admin.RunContainer({ sandboxId, name: 'main', start: true, ...SLEEPER });
      sample.containerRunMs = elapsedMs(t1);
      const t2 = startTimer();
      const exec = await client.admin.Exec({ containerId, args: ['true'] });
      sample.execMs = elapsedMs(t2);
      if (exec.exitStatus !== 0) throw new Error(`exec of true in ${sandboxId} exited ${exec.exitStatus}: ${exec.stderr}`);
      // The first start of a daemon also decides the accelerator (a KVM trial under auto): reported apart.
      if (i === 0) console.log(`first start (accelerator decided: ${sample.accelerator}, ${sample.acceleratorReason}): ${sample.startMs.toFixed(0)} ms`);
      else samples.push(sample);
      await client.controller.Shutdown({ sandboxId });
    }
    const m = (key) => median(samples.map((s) => s[key]));
    return {
      runs, accelerator: samples[0]?.accelerator,
      oci_runtime: samples[0]?.ociRuntime,
      start_ms_median: m('startMs'), boot_to_agent_ready_ms_median: m('bootMs'), pod_start_in_guest_ms_median: m('podStartMs'), own_code_ms_median: m('ownMs'),
      own_code_share: m('ownMs') / m('startMs'),
      container_run_ms_median: m('containerRunMs'), exec_ms_median: m('execMs'),
      guest_image_bytes: Object.fromEntries(['vmlinux', 'initrd.img', 'rootfs.img'].map((f) => [f, statSync(path.join(guestDir, f)).size])),
      samples,
    };
  } finally {
    await daemon.stop();
  }
}

export function printVmStart(result) {
  console.log(`VM sandbox Start, ${result.runs} serial runs (${result.accelerator}), medians:`);
  console.log(`  Start (API)                     ${result.start_ms_median.toFixed(0).padStart(6)} ms`);
  console.log(`  QEMU + guest boot → agent ready ${result.boot_to_agent_ready_ms_median.toFixed(0).padStart(6)} ms`);
  console.log(`  pod start inside the guest      ${result.pod_start_in_guest_ms_median.toFixed(0).padStart(6)} ms`);
  console.log(`  our own code (the rest)         ${result.own_code_ms_median.toFixed(0).padStart(6)} ms  (${(result.own_code_share * 100).toFixed(1)}% of Start)`);
  console.log(`then in the guest (OCI runtime: ${result.oci_runtime ?? 'not recorded'}):`);
  console.log(`  container run (create + start)  ${result.container_run_ms_median.toFixed(0).padStart(6)} ms`);
  console.log(`  exec \`true\`                    ${result.exec_ms_median.toFixed(0).padStart(6)} ms`);
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({ options: {
    runs: { type: 'string', default: '10' }, accelerator: { type: 'string', default: 'auto' }, 'guest-dir': { type: 'string', default: '/var/lib/kts/guest' },
    'guest-oci-runtime': { type: 'string', default: 'auto' },
  } });
  const result = await measureVmStart({ runs: Number(values.runs), accelerator: values.accelerator, guestDir: values['guest-dir'], guestOciRuntime: values['guest-oci-runtime'] });
  printVmStart(result);
  writeResult('vm-start', result);
}
