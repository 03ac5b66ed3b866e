// Bad input over the wire gets a gRPC status with a message naming the problem; the store stays
// consistent and the daemon keeps serving.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestDaemon, canRunContainers } from './helpers/daemon.js';
import { adminClient, controllerClient, taskClient, type ProtoClient } from './helpers/protoClient.js';

const skip = canRunContainers();

describe.skipIf(skip)(`bad input gets a clear gRPC error and the daemon keeps serving${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let controller: ProtoClient;
  let task: ProtoClient;
  let admin: ProtoClient;

  beforeAll(async () => {
    await daemon.start();
    controller = controllerClient(daemon.socket);
    task = taskClient(daemon.socket);
    admin = adminClient(daemon.socket);
  });
  afterAll(async () => {
    for (const c of [controller, task, admin]) c?.close();
    await daemon.cleanup();
  });

  const rejects = (call: Promise<unknown>, code: status, message: RegExp) => expect(call).rejects.toMatchObject({ code, details: expect.stringMatching(message) });

  it('answers NOT_FOUND for an unknown sandbox or task id', async () => {
    await rejects(controller.Status!({ sandbox_id: 'no-such-pod' }), status.NOT_FOUND, /sandbox no-such-pod not found/);
    await rejects(controller.Start!({ sandbox_id: 'no-such-pod' }), status.NOT_FOUND, /not found/);
    await rejects(task.State!({ id: 'no-such-container' }), status.NOT_FOUND, /container no-such-container not found/);
    await rejects(admin.History!({ ref: 'no-such-pod' }), status.NOT_FOUND, /no pod or container "no-such-pod"/);
  });

  it('answers INVALID_ARGUMENT for an empty id and for ids with "/" or ".."', async () => {
    await rejects(controller.Create!({ sandbox_id: '' }), status.INVALID_ARGUMENT, /sandbox id must not be empty/);
    await rejects(controller.Create!({ sandbox_id: '../../etc' }), status.INVALID_ARGUMENT, /must not contain "\/" or "\.\."/);
    await rejects(controller.Create!({ sandbox_id: 'a/b' }), status.INVALID_ARGUMENT, /must not contain/);
    await rejects(task.State!({ id: '..' }), status.INVALID_ARGUMENT, /container id/);
    expect(JSON.parse(daemon.ktsOk('pods', '--json'))).toEqual([]);
  });

  it('refuses a 1 MiB annotation without writing any record', async () => {
    const annotations = { 'example.com/huge': 'x'.repeat(1024 * 1024) };
    await rejects(controller.Create!({ sandbox_id: 'huge-annotation', annotations }), status.INVALID_ARGUMENT, /annotation "example.com\/huge" is 1048576 bytes; the limit is/);
    await rejects(controller.Status!({ sandbox_id: 'huge-annotation' }), status.NOT_FOUND, /not found/);
    expect(daemon.ktsOk('verify')).toMatch(/^ok: \d+ events, hash chain intact/);
  });

  it('answers ALREADY_EXISTS to a second Create and FAILED_PRECONDITION to a second Start', async () => {
    await controller.Create!({ sandbox_id: 'twice', sandboxer: 'runc' });
    await rejects(controller.Create!({ sandbox_id: 'twice', sandboxer: 'runc' }), status.ALREADY_EXISTS, /sandbox twice already exists/);
    await controller.Start!({ sandbox_id: 'twice' });
    await rejects(controller.Start!({ sandbox_id: 'twice' }), status.FAILED_PRECONDITION, /sandbox twice is ready; Start needs a created sandbox/);
    expect((await controller.Status!({ sandbox_id: 'twice' })).state).toBe('SANDBOX_READY');
  });

  it('answers INVALID_ARGUMENT for an unknown sandboxer', async () => {
    await rejects(controller.Create!({ sandbox_id: 'odd-kind', sandboxer: 'firecracker' }), status.INVALID_ARGUMENT, /sandboxer "firecracker" is not configured/);
  });

  it('refuses a malformed OCI spec in a Task Create, naming the file or the field', async () => {
    const bundle = path.join(daemon.root, 'bad-bundle');
    mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
    writeFileSync(path.join(bundle, 'config.json'), '{"ociVersion": "1.0.2", "process": ');
    await rejects(task.Create!({ id: 'broken', bundle }), status.INVALID_ARGUMENT, /config\.json is not valid JSON/);
    writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', process: { args: 'sh' }, root: { path: 'rootfs' } }));
    await rejects(task.Create!({ id: 'broken', bundle }), status.INVALID_ARGUMENT, /process\.args/);
    await rejects(task.Create!({ id: 'broken', bundle: 'relative/dir' }), status.INVALID_ARGUMENT, /bundle "relative\/dir" must be an absolute path/);
    await rejects(task.State!({ id: 'broken' }), status.NOT_FOUND, /not found/);
  });

  it('still serves afterwards: a pod runs and the hash chain verifies', async () => {
    const ran = JSON.parse(daemon.ktsOk('run', '--json', 'examples/pod.yaml', 'examples/busybox.yaml')) as { podId: string };
    const pods = JSON.parse(daemon.ktsOk('pods', '--json')) as Array<{ id: string; state: string }>;
    expect(pods.find((p) => p.id === ran.podId)?.state).toBe('ready');
    expect(daemon.process?.exitCode).toBeNull();
    expect(daemon.ktsOk('verify')).toMatch(/hash chain intact/);
  });

  it('gives the CLI one readable line and a non-zero exit for a bad reference', () => {
    const result = daemon.kts('history', 'no-such-pod');
    expect(result.code).not.toBe(0);
    expect(result.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^kts: .*no pod or container "no-such-pod"/)]);
  });

  it('tells a CLI user with no daemon at the socket which socket it tried, why, and how to point elsewhere', () => {
    const missing = path.join(daemon.root, 'no-daemon-here.sock');
    const result = daemon.kts('ps', '--socket', missing);
    expect(result.code).toBe(1);
    expect(result.stderr.trim().split('\n')).toEqual([
      `kts: cannot reach the kts daemon at ${missing} (connect ENOENT ${missing}); is "kts daemon" running? Use --socket or KTS_SOCKET to point elsewhere`,
    ]);
  });
});
