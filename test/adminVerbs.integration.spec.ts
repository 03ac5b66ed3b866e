// Kuasar's Sandbox API verbs on the kts admin service: Prepare creates a container in a running
// sandbox (as Task Create does), UpdateResources records new resources, Purge removes it.
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxRootfs, ociSpec } from './helpers/bundles.js';
import { TestDaemon, canRunContainers, isAlive, until } from './helpers/daemon.js';
import { adminClient, controllerClient, taskClient, type ProtoClient } from './helpers/protoClient.js';

const skip = canRunContainers();

describe.skipIf(skip)(`Prepare, UpdateResources and Purge on the admin service${skip ? ` (skipped: ${skip})` : ''}`, () => {
  const daemon = new TestDaemon();
  let controller: ProtoClient;
  let admin: ProtoClient;
  let task: ProtoClient;
  const sandboxId = 'kuasar-verbs';

  beforeAll(async () => {
    await daemon.start();
    [controller, admin, task] = [controllerClient(daemon.socket), adminClient(daemon.socket), taskClient(daemon.socket)];
    await controller.Create!({ sandbox_id: sandboxId, sandboxer: 'runc' });
    await controller.Start!({ sandbox_id: sandboxId });
  });
  afterAll(async () => {
    for (const c of [controller, admin, task]) c?.close();
    await daemon.cleanup();
  });

  it('given a ready sandbox, when a container is prepared, then it is created and runs when started', async () => {
    const { pid } = await controller.Status!({ sandbox_id: sandboxId });
    const lower = busyboxRootfs(path.join(daemon.root, 'prepared'));
    const spec = ociSpec(sandboxId, pid, ['sh', '-c', 'echo prepared-and-running; exec sleep 600']);
    const prepared = await admin.Prepare!({
      sandbox_id: sandboxId, container_id: 'prepared', spec_json: JSON.stringify(spec),
      rootfs_json: [JSON.stringify({ type: 'bind', source: lower, options: ['rbind', 'ro'] })],
    });
    expect(prepared.bundle).toMatch(/\/bundle$/);
    expect((await task.State!({ id: 'prepared' })).status).toBe('CREATED');
    await task.Start!({ id: 'prepared' });
    await until('the line in kts logs', () => daemon.ktsOk('logs', 'prepared').includes('prepared-and-running'));
  });

  it('records UpdateResources as an event on the container, and refuses JSON that is not an object', async () => {
    await admin.UpdateResources!({ sandbox_id: sandboxId, container_id: 'prepared', resources_json: JSON.stringify({ memory: { limit: 64 << 20 } }) });
    const history = JSON.parse(daemon.ktsOk('history', '--json', sandboxId)) as { events: Array<{ type: string; payload: { resources?: unknown } }> };
    expect(history.events.find((e) => e.type === 'ContainerUpdated')?.payload.resources).toEqual({ memory: { limit: 64 << 20 } });
    await expect(admin.UpdateResources!({ sandbox_id: sandboxId, container_id: 'prepared', resources_json: '[1' })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
  });

  it('purges a stopped container: it is gone from the task API and its process is dead', async () => {
    const { pid } = await task.State!({ id: 'prepared' });
    await expect(admin.Purge!({ sandbox_id: sandboxId, container_id: 'prepared' })).rejects.toMatchObject({ code: status.FAILED_PRECONDITION });
    await task.Kill!({ id: 'prepared', signal: 9 });
    await task.Wait!({ id: 'prepared' });
    await admin.Purge!({ sandbox_id: sandboxId, container_id: 'prepared' });
    expect(isAlive(pid)).toBe(false);
    await expect(task.State!({ id: 'prepared' })).rejects.toMatchObject({ code: status.NOT_FOUND });
  });

  it('refuses a Prepare with a malformed spec or an unknown sandbox', async () => {
    await expect(admin.Prepare!({ sandbox_id: sandboxId, container_id: 'bad', spec_json: '{"ociVersion":"1"}' })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringMatching(/spec_json: process/) });
    await expect(admin.Prepare!({ sandbox_id: 'nope', container_id: 'bad', spec_json: '{}' })).rejects.toMatchObject({ code: status.NOT_FOUND });
  });
});
