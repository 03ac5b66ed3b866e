// A containerd-shaped client built from the .proto files alone (no TypeScript of ours): it drives
// the Sandbox Controller and then the Task v3 API at the address Start returns, as containerd 2.x does.
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestDaemon, canRunContainers, isAlive, mountsUnder } from './helpers/daemon.js';
import { busyboxRootfs, ociSpec } from './helpers/bundles.js';
import { PROTO, controllerClient, protoClient, type ProtoClient } from './helpers/protoClient.js';

const skip = canRunContainers();
function k8sMetadata(): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('containerd-namespace', 'k8s.io');
  md.set('traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
  return md;
}

describe.skipIf(skip)(`containerd 2.x talking to kts over the .proto files alone${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let controller: ProtoClient;
  const sandboxId = 'ctd-sandbox-1';

  beforeAll(async () => {
    await daemon.start();
    controller = controllerClient(daemon.socket);
  });
  afterAll(async () => {
    controller.close();
    await daemon.cleanup();
  });

  it('creates, starts, reports and stops a sandbox the way containerd expects', async () => {
    const root = await protobuf.load(path.join(PROTO, 'k8s/cri/runtime/v1/api.proto'));
    const PodSandboxConfig = root.lookupType('runtime.v1.PodSandboxConfig');
    const podConfig = PodSandboxConfig.encode(PodSandboxConfig.fromObject({
      metadata: { name: 'ctd-pod', namespace: 'team-a', uid: 'uid-1', attempt: 0 }, hostname: 'ctd-pod', log_directory: '/var/log/pods/x', labels: { tier: 'web' },
    })).finish();
    await controller.Create!({
      sandbox_id: sandboxId, options: { type_url: 'runtime.v1.PodSandboxConfig', value: Buffer.from(podConfig) }, sandboxer: 'runc',
      sandbox: { sandbox_id: sandboxId, runtime: { name: 'io.containerd.runc.v2' }, labels: {} },
    }, k8sMetadata());
    const started = await controller.Start!({ sandbox_id: sandboxId }, k8sMetadata());
    // ttrpc, beside the gRPC socket (containerd 2.4 takes a fresh grpc+ task connection for a dead shim).
    expect(started.address).toBe(`ttrpc+unix://${daemon.socket}.ttrpc`);
    expect(started.version).toBe(3);
    expect(started.pid).toBeGreaterThan(1);
    const status = await controller.Status!({ sandbox_id: sandboxId, verbose: true });
    expect(status.state).toBe('SANDBOX_READY');
    expect(status.pid).toBe(started.pid);
    expect(JSON.parse(status.info.info)).toMatchObject({ name: 'ctd-pod', namespace: 'team-a', kind: 'runc' });
    const platform = await controller.Platform!({ sandbox_id: sandboxId });
    expect(platform.platform.os).toBe('linux');
    expect(platform.platform.architecture).toBe(process.arch === 'x64' ? 'amd64' : process.arch);
  });

  it('runs a container through Task v3 at the returned address: bundle + overlay rootfs + FIFOs', async () => {
    const status = await controller.Status!({ sandbox_id: sandboxId });
    expect(status.address).toBe(`ttrpc+unix://${daemon.socket}.ttrpc`);
    // The same Task v3 service is served over gRPC on the daemon's socket.
    const task = protoClient('containerd/runtime/task/v3/shim.proto', 'containerd.task.v3.Task', `unix://${daemon.socket}`);
    try {
      const work = path.join(daemon.root, 'ctd');
      const bundle = path.join(work, 'bundle');
      mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
      mkdirSync(path.join(work, 'upper'));
      mkdirSync(path.join(work, 'work'));
      const lower = busyboxRootfs(work);
      writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(ociSpec(sandboxId, status.pid, ['sh', '-c', 'echo from-the-task; echo to-stderr >&2; exit 5'])));
      const stdout = path.join(work, 'stdout');
      const stderr = path.join(work, 'stderr');
      execFileSync('mkfifo', [stdout, stderr]);
      let out = '';
      createReadStream(stdout).on('data', (d) => (out += d));
      createReadStream(stderr).on('data', () => undefined);
      const created = await task.Create!({
        id: 'printer', bundle, stdout, stderr, terminal: false,
        rootfs: [{ type: 'overlay', source: 'overlay', target: '', options: [`lowerdir=${lower}`, `upperdir=${path.join(work, 'upper')}`, `workdir=${path.join(work, 'work')}`] }],
      }, k8sMetadata());
      expect(created.pid).toBeGreaterThan(1);
      expect((await task.State!({ id: 'printer' })).status).toBe('CREATED');
      await task.Start!({ id: 'printer' }, k8sMetadata());
      const waited = await task.Wait!({ id: 'printer' });
      expect(waited.exit_status).toBe(5);
      expect(Number(waited.exited_at.seconds)).toBeGreaterThan(0);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(out).toContain('from-the-task');
      const state = await task.State!({ id: 'printer' });
      expect(state).toMatchObject({ status: 'STOPPED', exit_status: 5, bundle });
      const deleted = await task.Delete!({ id: 'printer' }, k8sMetadata());
      expect(deleted.exit_status).toBe(5);
      await task.Shutdown!({ id: 'printer' }, k8sMetadata()); // containerd does this after every delete: the sandbox must live on
      expect((await controller.Status!({ sandbox_id: sandboxId })).state).toBe('SANDBOX_READY');
      expect(mountsUnder(bundle)).toEqual([]);
      await expect(task.State!({ id: 'printer' })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    } finally {
      task.close();
    }
  });

  it('stops, waits and shuts the sandbox down; afterwards it is NOT_FOUND', async () => {
    const { pid } = await controller.Status!({ sandbox_id: sandboxId });
    await controller.Stop!({ sandbox_id: sandboxId, timeout_secs: 2 }, k8sMetadata());
    const waited = await controller.Wait!({ sandbox_id: sandboxId });
    expect(waited.exited_at).not.toBeNull();
    expect((await controller.Status!({ sandbox_id: sandboxId })).state).toBe('SANDBOX_NOTREADY');
    await controller.Shutdown!({ sandbox_id: sandboxId }, k8sMetadata());
    expect(isAlive(pid)).toBe(false);
    await expect(controller.Status!({ sandbox_id: sandboxId })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    const history = JSON.parse(daemon.ktsOk('history', '--json', sandboxId)) as { events: Array<{ traceId: string; caller: string }> };
    expect(history.events[0]!.traceId).toBe('0af7651916cd43dd8448eb211c80319c');
    expect(history.events[0]!.caller).toContain('ns=k8s.io');
  });
});

describe.skipIf(skip)(`a daemon starting under containerd${skip ? ` (skipped: ${skip})` : ''}`, () => {
  // As scripts/containerd-node.sh runs it: the task connections go through the relay process.
  const daemon = new TestDaemon('', { topToml: 'task_relay = true' });
  afterAll(() => daemon.cleanup());

  // containerd calls the Sandbox API as soon as it answers, then dials the task address Start gave it:
  // a Sandbox API that answers before the ttrpc socket listens fails that pod's first container.
  it('given a daemon just started, when its Sandbox API first answers, then its task ttrpc socket already listens', async () => {
    const starting = daemon.start();
    // Dialled only once the socket is there: a refused dial puts the channel into a second of backoff.
    while (!existsSync(daemon.socket)) await new Promise((resolve) => setTimeout(resolve, 2));
    const controller = controllerClient(daemon.socket);
    try {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const code = await controller.Status!({ sandbox_id: 'not-there' }).then(() => grpc.status.OK, (error: grpc.ServiceError) => error.code);
        if (code !== grpc.status.UNAVAILABLE) {
          expect(code).toBe(grpc.status.NOT_FOUND);
          break;
        }
        if (Date.now() > deadline) throw new Error(`the Sandbox API never answered:\n${daemon.logs}`);
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      expect(existsSync(`${daemon.socket}.ttrpc`), 'the ttrpc socket exists when the Sandbox API answers').toBe(true);
      await starting;
    } finally {
      controller.close();
    }
  });
});
