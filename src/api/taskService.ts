import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { invalidArgument, unimplemented } from '../core/errors.js';
import { validateId } from '../core/ids.js';
import type { MountSpec, StdioPaths } from '../core/sandboxer.js';
import type { ContainerEntity, Engine } from '../engine/engine.js';
import { validateOciSpec } from '../oci/containerSpec.js';
import { encodeCgroupV1Metrics } from '../grpc/protos.js';
import { unary } from '../grpc/rpc.js';
import { requireAbsolutePath, validateMountSpec } from './validate.js';
import { toTimestamp, type AnyMessage } from '../grpc/wire.js';

export const SANDBOX_ID_ANNOTATIONS = ['io.kubernetes.cri.sandbox-id', 'io.kts.sandbox-id'];
const MAX_SPEC_BYTES = 1024 * 1024;

interface ProtoMount { type: string; source: string; target: string; options: string[] }
interface CreateTaskRequest { id: string; bundle: string; rootfs: ProtoMount[]; terminal: boolean; stdin: string; stdout: string; stderr: string }
interface ExecRequest { id: string; execId: string; terminal: boolean; stdin: string; stdout: string; stderr: string; spec: AnyMessage | null }
interface IdRequest { id: string; execId: string }

function stdioOf(request: { stdin: string; stdout: string; stderr: string }): StdioPaths {
  const stdio: StdioPaths = {};
  if (request.stdin) stdio.stdin = requireAbsolutePath('stdin', request.stdin);
  if (request.stdout) stdio.stdout = requireAbsolutePath('stdout', request.stdout);
  if (request.stderr) stdio.stderr = requireAbsolutePath('stderr', request.stderr);
  return stdio;
}

async function readBundleSpec(bundle: string) {
  const file = path.join(bundle, 'config.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw invalidArgument(`bundle ${bundle} has no readable config.json: ${(error as NodeJS.ErrnoException).code ?? error}`);
  }
  if (text.length > MAX_SPEC_BYTES) throw invalidArgument(`${file} is larger than ${MAX_SPEC_BYTES} bytes`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw invalidArgument(`${file} is not valid JSON: ${(error as Error).message}`);
  }
  return validateOciSpec(json);
}

function taskStatus(container: ContainerEntity, execId: string): string {
  if (execId) {
    const exec = container.context.execs[execId];
    if (!exec) return 'UNKNOWN';
    return exec.exitedAt !== null ? 'STOPPED' : exec.pid !== null ? 'RUNNING' : 'CREATED';
  }
  const byState: Record<string, string> = { creating: 'CREATED', created: 'CREATED', starting: 'CREATED', running: 'RUNNING', stopped: 'STOPPED', failed: 'STOPPED', deleting: 'STOPPED' };
  return byState[container.state] ?? 'UNKNOWN';
}

/** containerd's Task API (served as containerd.task.v3.Task and containerd.task.v2.Task) for every sandbox's containers. */
export function taskService(engine: Engine, logger: Logger, service: string): UntypedServiceImplementation {
  const rpc = <Req, Res>(method: string, handler: Parameters<typeof unary<Req, Res>>[2]) => unary<Req, Res>(`${service}/${method}`, logger, handler);
  return {
    Create: rpc<CreateTaskRequest, object>('Create', async (request, { meta }) => {
      validateId('task id', request.id);
      if (request.terminal) throw invalidArgument('terminal (tty) tasks are not supported yet: run without a tty');
      const bundle = requireAbsolutePath('bundle', request.bundle);
      const spec = await readBundleSpec(bundle);
      const annotations = spec.annotations ?? {};
      const sandboxId = SANDBOX_ID_ANNOTATIONS.map((key) => annotations[key]).find(Boolean);
      if (!sandboxId) throw invalidArgument(`${bundle}/config.json has no ${SANDBOX_ID_ANNOTATIONS[0]} annotation naming the sandbox`);
      const rootfsMounts: MountSpec[] = request.rootfs.map((m, i) => validateMountSpec(`rootfs[${i}]`, { type: m.type, source: m.source, target: m.target || undefined, options: m.options }));
      const { pid } = await engine.createContainer(
        {
          sandboxId, containerId: request.id, name: annotations['io.kubernetes.cri.container-name'] ?? request.id, bundleDir: bundle,
          rootfsMounts, stdio: stdioOf(request), args: spec.process.args, image: annotations['io.kubernetes.cri.image-name'],
        },
        meta,
      );
      return { pid };
    }),
    Start: rpc<IdRequest, object>('Start', async (request, { meta }) =>
      request.execId ? engine.startExec(request.id, request.execId, meta) : engine.startContainer(request.id, meta),
    ),
    State: rpc<IdRequest, object>('State', async (request) => {
      const container = engine.container(request.id);
      const c = container.context;
      const exec = request.execId ? c.execs[request.execId] : undefined;
      if (request.execId && !exec) throw invalidArgument(`exec ${request.execId} not found in container ${request.id}`);
      const stdio = exec?.stdio ?? c.stdio;
      return {
        id: request.id, bundle: c.bundleDir, pid: (exec ? exec.pid : c.pid) ?? 0, status: taskStatus(container, request.execId),
        stdin: stdio.stdin ?? '', stdout: stdio.stdout ?? '', stderr: stdio.stderr ?? '', terminal: false,
        exitStatus: (exec ? exec.exitStatus : c.exitStatus) ?? 0, exitedAt: toTimestamp(exec ? exec.exitedAt : c.exitedAt), execId: request.execId,
      };
    }),
    Kill: rpc<IdRequest & { signal: number; all: boolean }, object>('Kill', async (request, { meta }) => {
      if (request.execId) await engine.killExec(request.id, request.execId, request.signal);
      else await engine.killContainer(request.id, request.signal, request.all, meta);
      return {};
    }),
    Delete: rpc<IdRequest, object>('Delete', async (request, { meta }) => {
      const deleted = request.execId ? await engine.deleteExec(request.id, request.execId, meta) : await engine.deleteContainer(request.id, meta);
      return { pid: deleted.pid, exitStatus: deleted.exitStatus, exitedAt: toTimestamp(deleted.exitedAt) };
    }),
    Pids: rpc<{ id: string }, object>('Pids', async (request) => ({ processes: (await engine.containerPids(request.id)).map((pid) => ({ pid })) })),
    Exec: rpc<ExecRequest, object>('Exec', async (request, { meta }) => {
      if (!request.spec?.value?.length) throw invalidArgument('exec spec must be an OCI Process as JSON');
      let process: unknown;
      try {
        process = JSON.parse(request.spec.value.toString('utf8'));
      } catch (error) {
        throw invalidArgument(`exec spec is not valid JSON: ${(error as Error).message}`);
      }
      if (typeof process !== 'object' || process === null) throw invalidArgument('exec spec must be a JSON object (an OCI Process)');
      // The request's flag decides: a spec that asks for a terminal the caller did not is given none.
      const spec = { ...(process as Record<string, unknown>), terminal: request.terminal };
      await engine.createExec(request.id, request.execId, spec, stdioOf(request), meta);
      return {};
    }),
    Wait: rpc<IdRequest, object>('Wait', async (request) => {
      const exit = request.execId ? await engine.waitExec(request.id, request.execId) : await engine.waitContainer(request.id);
      return { exitStatus: exit.exitStatus, exitedAt: toTimestamp(exit.exitedAt) };
    }),
    Stats: rpc<{ id: string }, object>('Stats', async (request) => ({ stats: encodeCgroupV1Metrics(await engine.containerStats(request.id)) })),
    Connect: rpc<{ id: string }, object>('Connect', async (request) => ({ shimPid: process.pid, taskPid: engine.container(request.id).context.pid ?? 0, version: '3' })),
    // containerd calls Shutdown after every container delete; the sandbox lives on until the Controller's Shutdown.
    Shutdown: rpc<{ id: string }, object>('Shutdown', async () => ({})),
    ResizePty: rpc<IdRequest & { width: number; height: number }, object>('ResizePty', async (request) => {
      await engine.resizeTerminal(request.id, request.execId, request.width, request.height);
      return {};
    }),
    // runc containers read containerd's FIFO themselves; a VM's stdin is pumped by the daemon, which ends it here.
    CloseIO: rpc<IdRequest & { stdin: boolean }, object>('CloseIO', async (request) => {
      engine.container(request.id);
      if (request.stdin) await engine.closeStdin(request.id, request.execId);
      return {};
    }),
    Update: rpc<{ id: string }, object>('Update', async () => {
      throw unimplemented('Task Update (resizing a container) is not implemented yet');
    }),
    Pause: rpc<{ id: string }, object>('Pause', async () => {
      throw unimplemented('Pause is not implemented');
    }),
    Resume: rpc<{ id: string }, object>('Resume', async () => {
      throw unimplemented('Resume is not implemented');
    }),
    Checkpoint: rpc<{ id: string }, object>('Checkpoint', async () => {
      throw unimplemented('Checkpoint is not implemented');
    }),
  };
}
