// One trace per request, from the CLI through the daemon and the hypervisor into the guest agent:
// spans exported over OTLP to a real TraceService receiver, checked as a tree.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KTS, REPO, TestDaemon, canRunContainers, until, writeYaml } from './helpers/daemon.js';
import { freshPodYaml } from './helpers/podYaml.js';
import { OtlpReceiver, type ReceivedSpan } from './helpers/otlpReceiver.js';
import { adminClient, controllerClient } from './helpers/protoClient.js';

const GUEST_DIR = process.env.KTS_GUEST_DIR ?? '/var/lib/kts/guest';
const skip = canRunContainers();
const skipVm = skip ?? (existsSync(path.join(GUEST_DIR, 'rootfs.img')) && existsSync(path.join(REPO, 'dist/agent/main.mjs')) ? undefined : `needs the guest image in ${GUEST_DIR}`);
const run = promisify(execFile);

/** Every span's parent is in the trace, but for the one root. */
function expectOneTree(spans: ReceivedSpan[], rootName = 'kts run'): ReceivedSpan {
  const ids = new Set(spans.map((span) => span.spanId));
  const roots = spans.filter((span) => !span.parentSpanId);
  expect(roots.map((span) => span.name)).toEqual([rootName]);
  expect(spans.filter((span) => span.parentSpanId && !ids.has(span.parentSpanId)).map((span) => span.name)).toEqual([]);
  return roots[0]!;
}

const byName = (spans: ReceivedSpan[], name: string) => spans.filter((span) => span.name === name);
const parentOf = (spans: ReceivedSpan[], span: ReceivedSpan) => spans.find((candidate) => candidate.spanId === span.parentSpanId);

describe.skipIf(skip)(`traces exported over OTLP${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const receiver = new OtlpReceiver();
  const daemon = new TestDaemon(`[hypervisor]\nguest_dir = "${GUEST_DIR}"\naccelerator = "tcg"\n`);

  beforeAll(async () => {
    await receiver.start();
    await daemon.start(receiver.env);
  });
  afterAll(async () => {
    await daemon.cleanup();
    await receiver.stop();
  });

  /** `cliExports`: kts exports its own span too; otherwise (the usual setup) only the daemon exports, the CLI's root included. */
  async function runPod(runtime: string, cliExports = true): Promise<{ podId: string; traceId: string }> {
    const { stdout } = await run(process.execPath, [KTS, 'run', '--json', '--runtime', runtime, freshPodYaml(), 'examples/busybox.yaml'], {
      env: { ...process.env, ...(cliExports ? receiver.env : {}), KTS_SOCKET: daemon.socket },
    });
    const { podId } = JSON.parse(stdout) as { podId: string };
    const history = JSON.parse(daemon.ktsOk('history', '--json', podId)) as { events: Array<{ traceId: string; spanId: string }> };
    const traceId = history.events[0]!.traceId;
    expect(history.events.every((event) => event.traceId === traceId && /^[0-9a-f]{16}$/.test(event.spanId))).toBe(true);
    return { podId, traceId };
  }

  it('given a runc pod started by `kts run`, then its spans form one tree: CLI → gRPC server → engine → backend', async () => {
    const { traceId } = await runPod('runc');
    const spans = await until('the daemon\'s spans', () => {
      const trace = receiver.trace(traceId);
      return trace.some((span) => span.name === 'sandboxer.start_container') && trace.some((span) => span.name === 'kts run') && trace;
    });
    expectOneTree(spans);
    const start = byName(spans, 'containerd.services.sandbox.v1.Controller/Start')[0]!;
    expect(start).toMatchObject({ kind: 'SPAN_KIND_SERVER', service: 'kts-daemon', attributes: { 'rpc.system': 'grpc', 'rpc.service': 'containerd.services.sandbox.v1.Controller', 'rpc.method': 'Start', 'rpc.grpc.status_code': 0 } });
    expect(parentOf(spans, byName(spans, 'sandboxer.start')[0]!)?.name).toBe('containerd.services.sandbox.v1.Controller/Start');
    expect(byName(spans, 'engine.SandboxStarted')).toHaveLength(1);
    // The image and bundle phase of `kts timeline` has spans of its own, inside RunContainer.
    for (const name of ['image.resolve', 'bundle.prepare']) expect(parentOf(spans, byName(spans, name)[0]!)?.name).toBe('kts.admin.v1.Admin/RunContainer');
    const create = byName(spans, 'runc.create')[0]!;
    expect(create.attributes['process.command_args']).toMatchObject({ values: expect.arrayContaining([expect.objectContaining({ string_value: 'create' })]) });
    // Who made each span: the daemon's version, process and host; the scope's version.
    const server = byName(spans, 'containerd.services.sandbox.v1.Controller/Start')[0]!;
    expect(server.resource).toMatchObject({ 'service.name': 'kts-daemon', 'service.version': expect.stringMatching(/^\d+\.\d+\.\d+/), 'service.instance.id': expect.stringMatching(/^[0-9a-f-]{36}$/), 'host.name': expect.any(String) });
    expect(server.scope.version).toBe(server.resource['service.version']);
  });

  it('given tracing on in the daemon only, when `kts run` and `kts rm` run, then each is one trace whose root is the CLI\'s span, exported by the daemon', async () => {
    const { podId, traceId } = await runPod('runc', false);
    const spans = await until('the CLI\'s root span', () => {
      const trace = receiver.trace(traceId);
      return trace.some((span) => span.name === 'kts run') && trace.some((span) => span.name === 'sandboxer.start_container') && trace;
    });
    const root = expectOneTree(spans);
    expect(root).toMatchObject({ service: 'kts-cli', status: { code: 'STATUS_CODE_UNSET' } });
    expect(byName(spans, 'kts.admin.v1.Admin/RecordClientSpan')).toEqual([]);
    const containerId = String(JSON.parse(daemon.ktsOk('ps', '-a', '--pod', podId, '--json'))[0].id);
    const before = Date.now();
    await run(process.execPath, [KTS, 'rm', '-f', containerId], { env: { ...process.env, KTS_SOCKET: daemon.socket } });
    const rm = await until('kts rm\'s trace', () => {
      const rootSpan = receiver.spans.find((span) => span.name === 'kts rm' && span.startMs >= before - 50);
      const trace = rootSpan && receiver.trace(rootSpan.traceId);
      return trace && trace.some((span) => span.name === 'kts.admin.v1.Admin/RemoveContainer') && trace;
    });
    expectOneTree(rm, 'kts rm');
  });

  it('given a `kts run` of an image that does not exist, then one trace: the CLI\'s root failed with the reason, the refusing call carries NOT_FOUND and is not itself in error', async () => {
    const container = writeYaml(daemon.root, 'missing-image.yaml', 'metadata: { name: ghost }\nimage: { image: "no-such-image:1" }\ncommand: ["true"]\n');
    const before = Date.now();
    const failed = await run(process.execPath, [KTS, 'run', freshPodYaml(), container], { env: { ...process.env, KTS_SOCKET: daemon.socket } }).then(() => undefined, (error: { code: number; stderr: string }) => error);
    expect(failed?.code).toBe(1);
    expect(failed?.stderr).toMatch(/no-such-image/);
    const spans = await until('the failed run\'s trace', () => {
      const root = receiver.spans.find((span) => span.name === 'kts run' && span.status.code === 'STATUS_CODE_ERROR' && span.startMs >= before - 50);
      const trace = root && receiver.trace(root.traceId);
      return trace && trace.some((span) => span.name === 'containerd.services.sandbox.v1.Controller/Shutdown') && trace;
    });
    const root = expectOneTree(spans);
    expect(root).toMatchObject({ service: 'kts-cli', status: { code: 'STATUS_CODE_ERROR', message: expect.stringMatching(/no-such-image/) }, attributes: { 'rpc.grpc.status_code': 5 } });
    const refused = byName(spans, 'kts.admin.v1.Admin/RunContainer')[0]!;
    expect(refused).toMatchObject({ attributes: { 'rpc.grpc.status_code': 5 }, status: { code: 'STATUS_CODE_UNSET' } });
  });

  it('given a daemon restart, then its recovery is one trace: daemon.recover over a span per sandbox and the orphan sweep', async () => {
    await runPod('runc', false);
    await daemon.stop();
    const restarted = Date.now();
    await daemon.start(receiver.env);
    const spans = await until('the recovery trace', () => {
      const root = receiver.spans.find((span) => span.name === 'daemon.recover' && span.startMs >= restarted - 1000);
      const trace = root && receiver.trace(root.traceId);
      return trace && trace.some((span) => span.name === 'recovery.sweep_orphans') && trace;
    });
    expectOneTree(spans, 'daemon.recover');
    expect(byName(spans, 'recovery.reconcile_sandbox').length).toBeGreaterThan(0);
  });

  it.skipIf(skipVm)(`given a VM pod, then the guest agent's spans are children of the host's, in the same trace${skipVm ? ` (skipped: ${skipVm})` : ''}`, async () => {
    const { traceId } = await runPod('vmm');
    const spans = await until('the guest\'s spans', () => {
      const trace = receiver.trace(traceId);
      return trace.some((span) => span.service === 'kts-agent' && span.name === 'kts.agent.v1.Agent/StartContainer') && trace.some((span) => span.name === 'kts run') && trace;
    }, 30_000);
    expectOneTree(spans);
    for (const name of ['qemu.launch', 'guest.wait_ready']) expect(parentOf(spans, byName(spans, name)[0]!)?.name).toBe('sandboxer.start');
    const guestStartPod = spans.find((span) => span.service === 'kts-agent' && span.name === 'kts.agent.v1.Agent/StartPod')!;
    expect(guestStartPod.kind).toBe('SPAN_KIND_SERVER');
    const clientStartPod = parentOf(spans, guestStartPod)!;
    expect(clientStartPod).toMatchObject({ name: 'kts.agent.v1.Agent/StartPod', kind: 'SPAN_KIND_CLIENT', service: 'kts-daemon', attributes: { 'rpc.grpc.status_code': 0 } });
    // The guest's clock is put onto the host's: every guest server span lies within its client span.
    for (const served of spans.filter((span) => span.service === 'kts-agent' && span.kind === 'SPAN_KIND_SERVER')) {
      const client = parentOf(spans, served)!;
      expect(served.startMs, served.name).toBeGreaterThanOrEqual(client.startMs);
      expect(served.endMs, served.name).toBeLessThanOrEqual(client.endMs);
    }
    // Two VMs' agents are told apart by their resource.
    expect(guestStartPod.resource['service.instance.id']).toMatch(/\S/);
    const guestCreate = spans.find((span) => span.service === 'kts-agent' && span.name === 'kts.agent.v1.Agent/CreateContainer')!;
    expect(spans.filter((span) => span.parentSpanId === guestCreate.spanId).map((span) => span.name)).toContain('runc.create');
    const guestStart = spans.find((span) => span.service === 'kts-agent' && span.name === 'kts.agent.v1.Agent/StartContainer')!;
    expect(spans.filter((span) => span.parentSpanId === guestStart.spanId).map((span) => span.name)).toContain('runc.start');
  });

  it.skipIf(skipVm)(`given a VM pod, then \`kts timeline\` lists phases adding up to within 5% of the measured start${skipVm ? ` (skipped: ${skipVm})` : ''}`, async () => {
    const controller = controllerClient(daemon.socket);
    const admin = adminClient(daemon.socket);
    try {
      const started = Date.now();
      await controller.Create!({ sandbox_id: 'timeline-vm', sandboxer: 'vmm' });
      await controller.Start!({ sandbox_id: 'timeline-vm' });
      await admin.RunContainer!({ sandbox_id: 'timeline-vm', name: 'sleeper', image: 'busybox:latest', command: ['sleep', '600'], start: true });
      const measuredMs = Date.now() - started;
      const timeline = JSON.parse(daemon.ktsOk('timeline', '--json', 'timeline-vm')) as { totalMs: number; phases: Array<{ name: string; durationMs: number; slowest: boolean }> };
      const sum = timeline.phases.reduce((total, phase) => total + phase.durationMs, 0);
      console.log(`VM pod start: measured ${measuredMs} ms, timeline phases add up to ${sum} ms`);
      expect(Math.abs(sum - measuredMs) / measuredMs).toBeLessThan(0.05);
      expect(timeline.phases.find((phase) => phase.slowest)?.name).toMatch(/QEMU \+ guest boot/);
      expect(daemon.ktsOk('timeline', 'timeline-vm')).toMatch(/QEMU \+ guest boot \(tcg\)\s+\d+ ms\s+ *█+ {2}◀ slowest/);
    } finally {
      controller.close();
      admin.close();
    }
  });
});
