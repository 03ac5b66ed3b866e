// The kts CLI as an operator meets it (issue 14): each bug seen gets its regression test here, run
// against a real daemon on a real socket.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, TestDaemon, canRunContainers, ktsInShell, until, writeYaml } from './helpers/daemon.js';
import { PROTO, controllerClient } from './helpers/protoClient.js';

const KTS = path.join(REPO, 'bin/kts.js');
const skip = canRunContainers();

/** Runs `kts` with `args`, its stdout piped into `head -<lines>`, as a shell would. */
function ktsIntoHead(socket: string, args: string[], lines: number): Promise<{ stdout: string; stderr: string; code: number | null }> {
  return ktsInShell(socket, `"${process.execPath}" "${KTS}" ${args.join(' ')} | head -${lines}`);
}

describe.skipIf(skip)(`the kts CLI${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let podId = '';
  let containerId = '';

  beforeAll(async () => {
    await daemon.start();
    const run = JSON.parse(daemon.ktsOk('run', '--json', path.join(REPO, 'examples/pod.yaml'), path.join(REPO, 'examples/busybox.yaml'))) as { podId: string; containerId: string };
    ({ podId, containerId } = run);
  }, 120_000);
  afterAll(() => daemon.cleanup(), 60_000);

  it('logs of an unknown container ends at once with one line naming it', async () => {
    const result = await daemon.ktsAsync('logs', 'no-such-container');
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe('kts: no pod or container "no-such-container"');
  });

  it('exec passes what is piped into it as the command\'s stdin', async () => {
    const result = await ktsInShell(daemon.socket, `printf 'hi\\nthere\\n' | "$KTS" exec ${containerId} cat`);
    expect(result).toMatchObject({ code: 0, stdout: 'hi\nthere\n', stderr: '' });
  });

  it('exec refuses stdin larger than 4 MiB with one line and exit 2, running nothing', async () => {
    const result = await ktsInShell(daemon.socket, `head -c 5000000 /dev/zero | "$KTS" exec ${containerId} -- sh -c 'echo ran'`);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr.trim().split('\n')).toEqual(['kts: stdin holds more than 4 MiB; kts exec passes at most that']);
  });

  it('events piped into head exits quietly', async () => {
    const piped = ktsIntoHead(daemon.socket, ['events'], 3);
    // As with any stream, kts learns that head has gone at its next write: the next event (an exec records some).
    await new Promise((resolve) => setTimeout(resolve, 1000));
    daemon.ktsOk('exec', containerId, '--', 'true');
    const result = await piped;
    expect(result.stdout.trim().split('\n')).toHaveLength(3);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
  });

  it('ps --pod takes the pod\'s name or a unique prefix of its id, and fails naming a pod it cannot find', () => {
    const byName = JSON.parse(daemon.ktsOk('ps', '--json', '--pod', 'busybox-pod')) as Array<{ id: string }>;
    expect(byName.map((c) => c.id)).toEqual([containerId]);
    const byPrefix = JSON.parse(daemon.ktsOk('ps', '--json', '--pod', podId.slice(0, 8))) as Array<{ id: string }>;
    expect(byPrefix.map((c) => c.id)).toEqual([containerId]);
    const unknown = daemon.kts('ps', '--pod', 'no-such-pod');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.trim()).toBe('kts: no pod or container "no-such-pod"');
  });

  it.each([
    [['events', '--after', 'abc'], '--after'],
    [['events', '--after', '-5'], '--after'],
    [['stop', '--timeout', 'abc', 'busybox-pod'], '--timeout'],
  ])('refuses a bad number: kts %j exits 2 with one line', (args, flag) => {
    const result = daemon.kts(...args);
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toContain(flag);
  });

  it('inspect of a container shows that container\'s own record', () => {
    const inspected = JSON.parse(daemon.ktsOk('inspect', containerId)) as { id: string; podId: string; state: string };
    expect(inspected).toMatchObject({ id: containerId, podId, state: 'running' });
  });

  it('--socket works before the command as well as after it', () => {
    const before = daemon.kts('--socket', daemon.socket, 'pods', '--json');
    expect(before.code).toBe(0);
    expect((JSON.parse(before.stdout) as Array<{ id: string }>).map((p) => p.id)).toContain(podId);
  });

  it('refuses a second pod with the same name, namespace, uid and attempt, naming the first', () => {
    const again = daemon.kts('run', path.join(REPO, 'examples/pod.yaml'), path.join(REPO, 'examples/busybox.yaml'));
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`already exists as pod ${podId}`);
    expect((JSON.parse(daemon.ktsOk('pods', '--json')) as unknown[]).length).toBe(1);
  });

  it('refuses the same second pod through the Sandbox API as containerd sends it: ALREADY_EXISTS naming the first', async () => {
    const root = await protobuf.load(path.join(PROTO, 'k8s/cri/runtime/v1/api.proto'));
    const PodSandboxConfig = root.lookupType('runtime.v1.PodSandboxConfig');
    const config = PodSandboxConfig.encode(PodSandboxConfig.fromObject({ metadata: { name: 'busybox-pod', namespace: 'default', uid: 'busybox-pod-uid-1', attempt: 0 } })).finish();
    const controller = controllerClient(daemon.socket);
    try {
      await expect(controller.Create!({ sandbox_id: 'twin-of-busybox-pod', options: { type_url: 'runtime.v1.PodSandboxConfig', value: Buffer.from(config) }, sandboxer: 'runc' }))
        .rejects.toMatchObject({ code: grpc.status.ALREADY_EXISTS, details: expect.stringContaining(`already exists as pod ${podId}`) });
    } finally {
      controller.close();
    }
  });
});

/** A pod config of its own: name, namespace and labels. */
function podYaml(dir: string, name: string, namespace: string, labels: Record<string, string>): string {
  return writeYaml(dir, `${name}.pod.yaml`, [
    `metadata: { name: ${name}, namespace: ${namespace}, uid: ${name}-uid, attempt: 0 }`, `hostname: ${name}`,
    `labels: ${JSON.stringify(labels)}`, 'linux: {}',
  ].join('\n'));
}

function containerYaml(dir: string, name: string, script: string, labels: Record<string, string> = {}): string {
  return writeYaml(dir, `${name}.yaml`, [`metadata: { name: ${name} }`, 'image: { image: busybox:latest }', 'command: [sh, -c]', `args: [${JSON.stringify(script)}]`, `labels: ${JSON.stringify(labels)}`].join('\n'));
}

describe.skipIf(skip)(`the kts CLI with crictl's habits${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  const dir = mkdtempSync(path.join(tmpdir(), 'kts-cli-'));
  let web = { podId: '', containerId: '' };
  let batch = { podId: '', containerId: '' };
  const ps = (...args: string[]) => JSON.parse(daemon.ktsOk('ps', '--json', ...args)) as Array<{ id: string; state: string; exitCode: number | null }>;

  beforeAll(async () => {
    await daemon.start();
    const run = (pod: string, container: string) => JSON.parse(daemon.ktsOk('run', '--json', pod, container)) as typeof web;
    web = run(podYaml(dir, 'web', 'shop', { tier: 'front' }), containerYaml(dir, 'job-web', 'for i in 1 2 3 4 5; do echo line $i; done; exec sleep 600', { app: 'shop', role: 'web' }));
    batch = run(podYaml(dir, 'batch', 'default', { tier: 'back' }), containerYaml(dir, 'job-batch', 'echo done; exit 3', { app: 'shop', role: 'batch' }));
    await until('the batch container to exit', () => ps('-a').find((c) => c.id === batch.containerId && c.state === 'stopped'));
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  afterAll(() => daemon.cleanup(), 60_000);

  it('ps lists what runs; -a adds exited containers; -q prints ids; --state and --name filter', () => {
    expect(ps().map((c) => c.id)).toEqual([web.containerId]);
    expect(ps('-a').map((c) => c.id).sort()).toEqual([web.containerId, batch.containerId].sort());
    expect(ps('-a').find((c) => c.id === batch.containerId)).toMatchObject({ state: 'stopped', exitCode: 3 });
    expect(daemon.ktsOk('ps', '-q')).toBe(`${web.containerId}\n`);
    expect(daemon.ktsOk('ps', '-q', '--state', 'exited')).toBe(`${batch.containerId}\n`);
    expect(daemon.ktsOk('ps', '-aq', '--name', 'batch$')).toBe(`${batch.containerId}\n`);
    expect(daemon.ktsOk('ps', '-aq', '--pod', 'shop/web')).toBe(`${web.containerId}\n`);
  });

  it('ps --label keeps containers with every label given (their container YAML\'s labels); --json shows them', () => {
    expect(daemon.ktsOk('ps', '-aq', '--label', 'role=batch')).toBe(`${batch.containerId}\n`);
    expect(daemon.ktsOk('ps', '-aq', '--label', 'app=shop').split('\n').filter(Boolean).sort()).toEqual([web.containerId, batch.containerId].sort());
    expect(daemon.ktsOk('ps', '-aq', '--label', 'app=shop', '--label', 'role=none')).toBe('');
    expect(ps().find((c) => c.id === web.containerId)).toMatchObject({ labels: { app: 'shop', role: 'web' } });
  });

  it('pods -q prints full ids, filtered by --namespace, --label and --state', () => {
    expect(daemon.ktsOk('pods', '-q', '--namespace', 'shop')).toBe(`${web.podId}\n`);
    expect(daemon.ktsOk('pods', '-q', '--label', 'tier=back')).toBe(`${batch.podId}\n`);
    expect(daemon.ktsOk('pods', '-q', '--state', 'notready')).toBe('');
    expect(daemon.ktsOk('pods', '-q', '--name', '^(web|batch)$').split('\n').filter(Boolean).sort()).toEqual([web.podId, batch.podId].sort());
  });

  it.each([
    [['pods', '--state', 'sleeping'], '--state'],
    [['pods', '--label', 'tier'], '--label'],
    [['ps', '--name', '('], '--name'],
    [['ps', '--label', 'role'], '--label'],
    [['logs', '--tail', 'abc', 'job-web'], '--tail'],
    [['stats', '--seconds', '0'], '--seconds'],
  ])('refuses a bad filter or number: kts %j exits 2 with one line', (args, flag) => {
    const result = daemon.kts(...args);
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toContain(flag);
  });

  it('logs, exec and inspect take a unique prefix of a container id; an ambiguous one is an error listing both', () => {
    const prefix = web.containerId.slice(0, 'job-web-'.length + 2);
    expect(daemon.ktsOk('logs', prefix)).toBe('line 1\nline 2\nline 3\nline 4\nline 5\n');
    expect(daemon.ktsOk('exec', prefix, '--', 'echo', 'in')).toBe('in\n');
    expect(JSON.parse(daemon.ktsOk('inspect', prefix))).toMatchObject({ id: web.containerId });
    const ambiguous = daemon.kts('logs', 'job-');
    expect(ambiguous.code).toBe(1);
    expect(ambiguous.stderr).toContain('ambiguous');
    expect(ambiguous.stderr).toContain(web.containerId);
    expect(ambiguous.stderr).toContain(batch.containerId);
  });

  it('logs --tail N prints the last N lines; --tail 0 nothing', () => {
    expect(daemon.ktsOk('logs', '--tail', '2', web.containerId)).toBe('line 4\nline 5\n');
    expect(daemon.ktsOk('logs', '--tail', '9', web.containerId)).toBe('line 1\nline 2\nline 3\nline 4\nline 5\n');
    expect(daemon.ktsOk('logs', '--tail', '0', web.containerId)).toBe('');
  });

  it('version, info and images answer, as text and as JSON', () => {
    expect(daemon.ktsOk('version')).toBe('Client version: 0.1.0\nDaemon version: 0.1.0\n');
    expect(JSON.parse(daemon.ktsOk('version', '--json'))).toEqual({ client: { version: '0.1.0' }, daemon: { version: '0.1.0' } });
    const info = JSON.parse(daemon.ktsOk('info', '--json')) as { kinds: string[]; defaultKind: string; pid: number; eventLog: { headSequence: number; headHash: string }; config: { listen: string } };
    expect(info).toMatchObject({ kinds: ['runc', 'vmm', 'wasm'], defaultKind: 'runc', pid: daemon.process!.pid, config: { listen: daemon.socket } });
    expect(info.eventLog.headSequence).toBeGreaterThan(0);
    expect(info.eventLog.headHash).toMatch(/^[0-9a-f]{64}$/);
    expect(daemon.ktsOk('info')).toContain(`Event log head: sequence ${info.eventLog.headSequence}`);
    // The OCI runtime runc pods run with, as `runc --version` names it; each pod's SandboxStarted records the same.
    const runcVersion = /runc version (\S+)/.exec(execFileSync('runc', ['--version'], { encoding: 'utf8' }))![1];
    expect(daemon.ktsOk('info')).toContain(`OCI runtime:    runc ${runcVersion} (runc pods); VM guests: crun where the guest image has it, else runc`);
    const started = (JSON.parse(daemon.ktsOk('history', '--json', web.podId)) as { events: Array<{ type: string; payload: { backend?: Record<string, unknown> } }> })
      .events.find((event) => event.type === 'SandboxStarted');
    expect(started?.payload.backend?.['oci.runtime']).toBe(`runc ${runcVersion}`);
    const images = JSON.parse(daemon.ktsOk('images', '--json')) as Array<{ name: string; tag: string; manifestDigest: string }>;
    expect(images).toContainEqual({ name: 'busybox', tag: 'latest', manifestDigest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) });
    expect(daemon.ktsOk('images')).toMatch(/^IMAGE\s+TAG\s+DIGEST\nbusybox\s+latest\s+sha256:/m);
  });

  it('stats and statsp show the memory and CPU of running containers and ready pods', () => {
    const stats = JSON.parse(daemon.ktsOk('stats', '--json')) as Array<{ id: string; podId: string; memoryUsageBytes: number; cpuUsageNanos: number; cpuPercent: number }>;
    expect(stats.map((s) => s.id)).toEqual([web.containerId]);
    expect(stats[0]).toMatchObject({ podId: web.podId, cpuPercent: expect.any(Number) });
    expect(stats[0]!.memoryUsageBytes).toBeGreaterThan(0);
    expect(stats[0]!.cpuUsageNanos).toBeGreaterThan(0);
    const pods = JSON.parse(daemon.ktsOk('statsp', '--json', 'web')) as Array<{ id: string; memoryUsageBytes: number }>;
    expect(pods).toEqual([expect.objectContaining({ id: web.podId })]);
    expect(pods[0]!.memoryUsageBytes).toBeGreaterThan(0);
    expect(daemon.ktsOk('stats')).toMatch(/^CONTAINER\s+NAME\s+POD ID\s+CPU %\s+MEM/);
  });

  it('stop and rm of one container leave its pod ready; rm of a running one needs -f', () => {
    const running = daemon.kts('rm', web.containerId);
    expect(running.code).toBe(1);
    expect(running.stderr).toContain('is running');
    expect(daemon.ktsOk('stop', '--timeout', '1', web.containerId.slice(0, 10))).toBe(`${web.containerId}\n`);
    const stopped = ps('-a').find((c) => c.id === web.containerId);
    expect(stopped?.state).toBe('stopped');
    expect([128 + 15, 128 + 9]).toContain(stopped?.exitCode);
    expect(daemon.ktsOk('rm', web.containerId)).toBe(`${web.containerId}\n`);
    expect(ps('-a').map((c) => c.id)).toEqual([batch.containerId]);
    expect(daemon.ktsOk('pods', '-q', '--state', 'ready').split('\n').filter(Boolean).sort()).toEqual([web.podId, batch.podId].sort());
  });
});

describe.skipIf(skip)(`a daemon told to stop${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  afterAll(async () => {
    await daemon.stop();
    await daemon.start();
    await daemon.cleanup();
  }, 60_000);

  it('ends open events and logs -f streams and exits soon after SIGTERM', async () => {
    await daemon.start();
    const { containerId } = JSON.parse(daemon.ktsOk('run', '--json', path.join(REPO, 'examples/pod.yaml'), path.join(REPO, 'examples/busybox.yaml'))) as { containerId: string };
    const events = daemon.ktsAsync('events');
    const logs = daemon.ktsAsync('logs', '-f', containerId);
    // Both streams are open once the daemon has sent what it holds; give them that long.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const signalled = Date.now();
    daemon.process!.kill('SIGTERM');
    await Promise.race([daemon.exited(), new Promise((resolve) => setTimeout(resolve, 15_000))]);
    const exitedAfterMs = Date.now() - signalled;
    expect(daemon.process!.exitCode).toBe(0);
    expect(exitedAfterMs).toBeLessThan(5000);
    expect(await events).toMatchObject({ code: 0 });
    expect(await logs).toMatchObject({ code: 0, stdout: expect.stringContaining('hello from') });
  }, 60_000);
});
