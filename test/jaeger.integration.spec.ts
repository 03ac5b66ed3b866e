// Traces as a user inspects them (issue 16): exported to a real Jaeger (v1.75, scripts/build-peers.sh) and
// read back through Jaeger's own query API. Each request is one trace whose every parent is there, with no
// warning from Jaeger (it reports invalid parents and the clock-skew adjustments it had to make), from the
// services that took part. The last part puts containerd 2.4 and crictl in front: one trace per crictl
// command from crictl through containerd, kts, QEMU and the guest agent down to the guest's runc.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IMAGES_DIR, KTS, REPO, TestDaemon, canRunContainers, canRunVms, until, writeYaml } from './helpers/daemon.js';
import { freshPodYaml } from './helpers/podYaml.js';
import { startJaeger, type Jaeger, type JaegerSpan, type JaegerTrace } from './helpers/jaeger.js';
import { PEERS_BIN } from './helpers/peers.js';

const GUEST_DIR = process.env.KTS_GUEST_DIR ?? '/var/lib/kts/guest';
const skip = canRunContainers() ?? (existsSync(path.join(PEERS_BIN, 'jaeger')) ? undefined : `needs jaeger in ${PEERS_BIN} (bash scripts/build-peers.sh)`);
const skipVm = skip ?? canRunVms() ?? (existsSync(path.join(GUEST_DIR, 'rootfs.img')) ? undefined : `needs the guest image in ${GUEST_DIR} (scripts/setup.sh builds it)`);
const skipNode = skipVm ?? (['containerd', 'ctr', 'crictl'].every((binary) => existsSync(path.join(PEERS_BIN, binary))) && existsSync('/usr/lib/cni/bridge')
  ? undefined : `needs containerd, crictl (scripts/build-peers.sh) and the CNI plugins`);
const run = promisify(execFile);

const tag = (span: JaegerSpan, key: string) => span.tags.find((t) => t.key === key)?.value;
const serviceOf = (trace: JaegerTrace, span: JaegerSpan) => trace.processes[span.processID]?.serviceName;
const named = (trace: JaegerTrace, name: string) => trace.spans.filter((span) => span.operationName === name);
/** Every span's parent has arrived (several processes export in batches of their own). */
const complete = (trace: JaegerTrace) => trace.spans.every((span) => span.references.every((r) => r.refType !== 'CHILD_OF' || trace.spans.some((s) => s.spanID === r.spanID)));
const parentOf = (trace: JaegerTrace, span: JaegerSpan) => trace.spans.find((candidate) => candidate.spanID === span.references.find((r) => r.refType === 'CHILD_OF')?.spanID);

/** What a user would find wrong in Jaeger: warnings on the trace or a span, a missing parent, more than one root, services other than `services`. */
function expectClean(trace: JaegerTrace, services: string[]): JaegerSpan {
  const ids = new Set(trace.spans.map((span) => span.spanID));
  const warnings = [...(trace.warnings ?? []), ...trace.spans.flatMap((span) => ((span as { warnings?: string[] | null }).warnings ?? []).map((w) => `${span.operationName}: ${w}`))];
  expect(warnings, 'Jaeger\'s warnings').toEqual([]);
  expect(trace.spans.filter((span) => span.references.some((r) => r.refType === 'CHILD_OF' && !ids.has(r.spanID))).map((span) => span.operationName), 'spans whose parent is missing').toEqual([]);
  const roots = trace.spans.filter((span) => !span.references.some((r) => r.refType === 'CHILD_OF'));
  expect(roots.map((span) => `${serviceOf(trace, span)} ${span.operationName}`), 'roots').toHaveLength(1);
  expect([...new Set(Object.values(trace.processes).map((p) => p.serviceName))].sort()).toEqual([...services].sort());
  return roots[0]!;
}

describe.skipIf(skip)(`traces in a real Jaeger${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let jaeger: Jaeger;
  const daemon = new TestDaemon(`[hypervisor]\nguest_dir = "${GUEST_DIR}"\naccelerator = "auto"\nboot_deadline_seconds = 120\n`);
  let exportEnv: Record<string, string>;
  /** `kts` as users run it: tracing is on in the daemon only. */
  const kts = (...args: string[]) => run(process.execPath, [KTS, ...args], { env: { ...process.env, KTS_SOCKET: daemon.socket } });

  /** The trace once `ready` holds of it (spans arrive in batches from several processes). */
  const traceWhen = (traceId: string, what: string, ready: (trace: JaegerTrace) => boolean, timeoutMs = 30_000) =>
    until(what, async () => {
      const trace = await jaeger.getTrace(traceId, { timeoutMs: 2_000 }).catch(() => undefined);
      return trace && ready(trace) ? trace : undefined;
    }, timeoutMs);

  async function runPod(runtime: string): Promise<{ podId: string; traceId: string }> {
    const { stdout } = await kts('run', '--json', '--runtime', runtime, freshPodYaml(), 'examples/busybox.yaml');
    const { podId } = JSON.parse(stdout) as { podId: string };
    const history = JSON.parse(daemon.ktsOk('history', '--json', podId)) as { events: Array<{ traceId: string }> };
    return { podId, traceId: history.events[0]!.traceId };
  }

  beforeAll(async () => {
    jaeger = await startJaeger();
    exportEnv = { OTEL_EXPORTER_OTLP_ENDPOINT: jaeger.otlpGrpcEndpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_BSP_SCHEDULE_DELAY: '100' };
    await daemon.start(exportEnv);
  }, 60_000);
  afterAll(async () => {
    await daemon.cleanup();
    await jaeger?.stop();
  });

  it('given `kts run` of a runc pod, then Jaeger holds one trace from kts-cli through kts-daemon, with no warning and every parent present', async () => {
    const { traceId } = await runPod('runc');
    const trace = await traceWhen(traceId, 'the runc pod\'s trace', (t) => named(t, 'kts run').length === 1 && named(t, 'sandboxer.start_container').length === 1);
    const root = expectClean(trace, ['kts-cli', 'kts-daemon']);
    expect(root.operationName).toBe('kts run');
    for (const name of ['image.resolve', 'bundle.prepare', 'runc.create', 'runc.start']) expect(named(trace, name), name).toHaveLength(1);
    expect(trace.processes[named(trace, 'runc.create')[0]!.processID]!.tags.map((t) => t.key)).toEqual(expect.arrayContaining(['service.version', 'service.instance.id', 'host.name']));
  });

  it.skipIf(skipVm)(`given \`kts run\` of a VM pod, then one trace from kts-cli through kts-daemon to kts-agent, the guest's spans inside their host calls, no clock-skew warning${skipVm ? ` (skipped: ${skipVm})` : ''}`, async () => {
    const { podId, traceId } = await runPod('vmm');
    const trace = await traceWhen(traceId, 'the VM pod\'s trace', (t) => named(t, 'kts run').length === 1 && t.spans.some((span) => serviceOf(t, span) === 'kts-agent' && span.operationName === 'kts.agent.v1.Agent/StartContainer'), 60_000);
    expectClean(trace, ['kts-cli', 'kts-daemon', 'kts-agent']);
    const agent = Object.values(trace.processes).find((p) => p.serviceName === 'kts-agent')!;
    expect(agent.tags).toEqual(expect.arrayContaining([expect.objectContaining({ key: 'service.instance.id', value: podId })]));
    for (const served of trace.spans.filter((span) => serviceOf(trace, span) === 'kts-agent' && tag(span, 'span.kind') === 'server')) {
      const client = parentOf(trace, served)!;
      expect(served.startTime, served.operationName).toBeGreaterThanOrEqual(client.startTime);
      expect(served.startTime + served.duration, served.operationName).toBeLessThanOrEqual(client.startTime + client.duration);
    }
    expect(named(trace, 'runc.create').some((span) => serviceOf(trace, span) === 'kts-agent')).toBe(true);
  }, 120_000);

  it('given a `kts run` that fails (no such image), then one trace whose root is in error with the reason, and the refusing call carries NOT_FOUND', async () => {
    const container = writeYaml(daemon.root, 'ghost.yaml', 'metadata: { name: ghost }\nimage: { image: "no-such-image:1" }\ncommand: ["true"]\n');
    const failed = await kts('run', freshPodYaml(), container).then(() => undefined, (error: { code: number; stderr: string }) => error);
    expect(failed?.code).toBe(1);
    const trace = await until('the failed run in Jaeger', async () => {
      const traces = await jaeger.findTraces('kts-cli', { operation: 'kts run' });
      return traces.find((t) => named(t, 'kts run').some((span) => tag(span, 'error') === true) && named(t, 'containerd.services.sandbox.v1.Controller/Shutdown').length === 1);
    }, 30_000);
    const root = expectClean(trace, ['kts-cli', 'kts-daemon']);
    expect(tag(root, 'otel.status_description')).toMatch(/no-such-image/);
    expect(tag(root, 'rpc.grpc.status_code')).toBe(5);
    const refused = named(trace, 'kts.admin.v1.Admin/RunContainer')[0]!;
    expect(tag(refused, 'rpc.grpc.status_code')).toBe(5);
    expect(tag(refused, 'error')).toBeUndefined();
  });

  describe.skipIf(skipNode)(`behind containerd 2.4 and crictl${skipNode ? ` (skipped: ${skipNode})` : ''}`, () => {
    const nodeDir = mkdtempSync(path.join(tmpdir(), 'kts-ctd-jaeger-'));
    const specDir = path.join(nodeDir, 'specs');
    const nodeEnv: Record<string, string> = {
      KTS_CTD_DIR: nodeDir, KTS_CTD_START_KTS: '0', KTS_CTD_IMAGES_DIR: IMAGES_DIR, KTS_CTD_HANDLERS: 'kts-vmm', KTS_PEERS_DIR: path.dirname(PEERS_BIN),
      KTS_CTD_BRIDGE: 'ktsjgr0', KTS_CTD_SUBNET: '10.88.215.0/24',
    };
    const node = async (command: string) => run('bash', [path.join(REPO, 'scripts/containerd-node.sh'), command], { env: { ...process.env, ...nodeEnv }, timeout: 600_000 });
    /** crictl with its own tracing on (service cri-tools), to the same Jaeger: its spans are the roots. */
    const crictl = async (...args: string[]) => (await run(path.join(PEERS_BIN, 'crictl'), [
      '--config', path.join(nodeDir, 'crictl.yaml'), '--enable-tracing', '--tracing-endpoint', jaeger.otlpGrpcEndpoint.replace('http://', ''), '--tracing-sampling-rate-per-million', '1000000', ...args,
    ], { timeout: 180_000 })).stdout.trim();

    beforeAll(async () => {
      mkdirSync(specDir, { recursive: true });
      Object.assign(nodeEnv, { KTS_CTD_KTS_SOCKET: daemon.socket, OTEL_SERVICE_NAME: 'containerd', OTEL_EXPORTER_OTLP_ENDPOINT: jaeger.otlpGrpcEndpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_INSECURE: 'true', OTEL_BSP_SCHEDULE_DELAY: '100' });
      await node('up');
    }, 600_000);
    afterAll(async () => {
      await node('clean').catch(() => undefined);
      await rm(nodeDir, { recursive: true, force: true });
    }, 120_000);

    it('given crictl runp, create and start of a VM pod, then each is one trace: crictl → containerd → kts daemon → QEMU and the guest agent → the guest\'s runc', async () => {
      const pod = path.join(specDir, 'pod.json');
      writeFileSync(pod, JSON.stringify({ metadata: { name: 'traced-vm', namespace: 'jaeger-test', uid: 'uid-traced-vm', attempt: 0 }, log_directory: path.join(nodeDir, 'logs'), linux: {} }));
      const ctr = path.join(specDir, 'ctr.json');
      writeFileSync(ctr, JSON.stringify({ metadata: { name: 'sleeper' }, image: { image: 'docker.io/library/busybox:latest' }, command: ['sleep', '3600'], log_path: 'sleeper.log', linux: {} }));
      const podId = await crictl('runp', '--runtime', 'kts-vmm', pod);
      const containerId = await crictl('create', podId, ctr, pod);
      await crictl('start', containerId);

      const history = JSON.parse(daemon.ktsOk('history', '--json', podId)) as { events: Array<{ type: string; traceId: string }> };
      const traceOf = (type: string) => history.events.find((e) => e.type === type)!.traceId;
      // containerd's CRI creates the task when the container starts: Task Create and Start are both in `crictl start`'s trace.
      const expectations: Array<[string, string[]]> = [
        ['SandboxStarted', ['qemu.launch', 'guest.wait_ready', 'kts.agent.v1.Agent/StartPod']],
        ['ContainerCreated', ['kts.agent.v1.Agent/CreateContainer', 'runc.create']],
        ['ContainerStarted', ['kts.agent.v1.Agent/StartContainer', 'runc.start']],
      ];
      for (const [event, spans] of expectations) {
        const trace = await traceWhen(traceOf(event), `the trace of ${event}`, (t) => spans.every((name) => named(t, name).length > 0) && Object.values(t.processes).some((p) => p.serviceName === 'cri-tools') && complete(t), 60_000);
        const services = [...new Set(Object.values(trace.processes).map((p) => p.serviceName))];
        const root = expectClean(trace, services);
        expect(serviceOf(trace, root), `${event}: the root`).toBe('cri-tools');
        expect(services.sort(), event).toEqual(['containerd', 'cri-tools', 'kts-agent', 'kts-daemon']);
        // The guest's runc ran inside the agent's call, inside kts's, inside containerd's.
        const guestRunc = trace.spans.find((span) => /^runc\./.test(span.operationName) && serviceOf(trace, span) === 'kts-agent');
        if (event !== 'SandboxStarted') expect(guestRunc, `${event}: the guest's runc`).toBeDefined();
      }
      await crictl('rmp', '-f', podId);
    }, 300_000);
  });
});
