import type { UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { invalidArgument } from '../core/errors.js';
import type { Engine } from '../engine/engine.js';
import { validatePodLinux } from '../oci/podLinux.js';
import { decodePodSandboxConfig, encodeCgroupV1Metrics } from '../grpc/protos.js';
import { unary } from '../grpc/rpc.js';
import { requireAbsolutePath, validateStringMap } from './validate.js';
import { jsonAny, toTimestamp, type AnyMessage } from '../grpc/wire.js';

/** Annotation a Create may carry to pick the sandbox kind when containerd's `sandboxer` field is empty. */
export const KIND_ANNOTATION = 'io.kts.sandbox-kind';
const SERVICE = 'containerd.services.sandbox.v1.Controller';
/** containerd's type URL for an OCI runtime spec (JSON-encoded, as its typeurl registers it). */
export const RUNTIME_SPEC_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Spec';

export interface ControllerOptions {
  engine: Engine;
  logger: Logger;
  defaultKind: string;
  /** containerd `sandboxer` names → sandbox kinds. */
  sandboxerKinds: Record<string, string>;
}

interface CreateRequest {
  sandboxId: string;
  options: AnyMessage | null;
  netnsPath: string;
  annotations: Record<string, string>;
  sandbox: { labels?: Record<string, string>; runtime?: { name?: string } } | null;
  sandboxer: string;
}

export function sandboxKindFor(request: { sandboxer: string; annotations: Record<string, string> }, options: ControllerOptions): string {
  const named = request.sandboxer || request.annotations[KIND_ANNOTATION];
  if (!named) return options.defaultKind;
  const kind = options.sandboxerKinds[named] ?? (options.engine.kinds.includes(named) ? named : undefined);
  if (!kind) throw invalidArgument(`sandboxer "${named}" is not configured (known: ${Object.keys(options.sandboxerKinds).join(', ')})`);
  return kind;
}

/** Maps `uname -m`-style Node arch names to OCI platform architecture and variant. */
export function hostPlatform(): { os: string; architecture: string; variant: string } {
  const arch: Record<string, [string, string]> = { x64: ['amd64', ''], arm64: ['arm64', 'v8'], arm: ['arm', 'v7'], ia32: ['386', ''], ppc64: ['ppc64le', ''], s390x: ['s390x', ''], riscv64: ['riscv64', ''] };
  const [architecture, variant] = arch[process.arch] ?? [process.arch, ''];
  return { os: process.platform, architecture, variant };
}

export function sandboxControllerService(options: ControllerOptions): UntypedServiceImplementation {
  const { engine, logger } = options;
  const rpc = <Req, Res>(method: string, handler: Parameters<typeof unary<Req, Res>>[2]) => unary<Req, Res>(`${SERVICE}/${method}`, logger, handler);
  return {
    Create: rpc<CreateRequest, object>('Create', async (request, { meta, namespace }) => {
      const annotations = validateStringMap('annotation', request.annotations);
      const pod = request.options?.type_url ? decodePodSandboxConfig(request.options) : undefined;
      const labels = validateStringMap('label', { ...(request.sandbox?.labels ?? {}), ...(pod?.labels ?? {}) });
      validateStringMap('pod annotation', pod?.annotations);
      const name = pod?.metadata?.name || request.sandboxId;
      await engine.createSandbox(
        {
          sandboxId: request.sandboxId,
          kind: sandboxKindFor({ sandboxer: request.sandboxer, annotations }, options),
          name,
          namespace: pod?.metadata?.namespace || namespace || 'default',
          uid: pod?.metadata?.uid || '',
          ...(pod?.metadata?.attempt ? { attempt: pod.metadata.attempt } : {}),
          hostname: pod?.hostname || name.slice(0, 63),
          // An absolute path: the pod's init opens it from its own working directory (fuzzing found a relative one reaching Start).
          netnsPath: request.netnsPath ? requireAbsolutePath('netns_path', request.netnsPath) : undefined,
          annotations: { ...(pod?.annotations ?? {}), ...annotations },
          labels,
          logDirectory: pod?.logDirectory || undefined,
          ...(pod && Object.keys(pod.podLinux).length > 0 ? { linux: validatePodLinux(pod.podLinux) } : {}),
        },
        meta,
      );
      return { sandboxId: request.sandboxId };
    }),
    Start: rpc<{ sandboxId: string }, object>('Start', async (request, { meta }) => {
      const started = await engine.startSandbox(request.sandboxId, meta);
      return {
        sandboxId: request.sandboxId,
        pid: started.pid,
        createdAt: toTimestamp(started.createdAt),
        labels: engine.sandbox(request.sandboxId).context.labels,
        address: started.taskAddress,
        version: 3,
        spec: sandboxRuntimeSpec(engine, request.sandboxId),
      };
    }),
    Platform: rpc<{ sandboxId: string }, object>('Platform', async (request) => {
      engine.sandbox(request.sandboxId);
      return { platform: hostPlatform() };
    }),
    Stop: rpc<{ sandboxId: string; timeoutSecs: number }, object>('Stop', async (request, { meta }) => {
      await engine.stopSandbox(request.sandboxId, request.timeoutSecs > 0 ? request.timeoutSecs * 1000 : undefined, meta);
      return {};
    }),
    Wait: rpc<{ sandboxId: string }, object>('Wait', async (request) => {
      const exit = await engine.waitSandbox(request.sandboxId);
      return { exitStatus: exit.exitStatus, exitedAt: toTimestamp(exit.exitedAt) };
    }),
    Status: rpc<{ sandboxId: string; verbose: boolean }, object>('Status', async (request) => statusOf(engine, request.sandboxId, request.verbose)),
    Shutdown: rpc<{ sandboxId: string }, object>('Shutdown', async (request, { meta }) => {
      await engine.shutdownSandbox(request.sandboxId, meta);
      return {};
    }),
    Metrics: rpc<{ sandboxId: string }, object>('Metrics', async (request) => {
      const stats = await engine.sandboxStats(request.sandboxId);
      return { metrics: { timestamp: toTimestamp(new Date()), id: request.sandboxId, data: encodeCgroupV1Metrics(stats) } };
    }),
    Update: rpc<{ sandboxId: string; sandbox: { labels?: Record<string, string> } | null; fields: string[] }, object>('Update', async (request, { meta }) => {
      const wants = (field: string) => request.fields.length === 0 || request.fields.includes(field);
      const labels = wants('labels') ? validateStringMap('label', request.sandbox?.labels) : undefined;
      await engine.updateSandbox(request.sandboxId, { labels }, meta);
      return {};
    }),
  };
}

/**
 * The pod as an OCI runtime spec: containerd stores Start's `spec` and decodes it for NRI and CRI's
 * inspectp, so an absent one is an error there ("type with url : not found") on every pod listing.
 */
export function sandboxRuntimeSpec(engine: Engine, sandboxId: string): AnyMessage {
  const c = engine.sandbox(sandboxId).context;
  // A namespace the pod shares with the host is absent, as in runc's spec.
  const namespaces = [
    ...(c.linux?.hostPid ? [] : [{ type: 'pid' }]),
    ...(c.linux?.hostIpc ? [] : [{ type: 'ipc' }]),
    { type: 'uts' }, { type: 'mount' },
    ...(c.linux?.hostNetwork ? [] : [c.netnsPath ? { type: 'network', path: c.netnsPath } : { type: 'network' }]),
  ];
  return jsonAny(RUNTIME_SPEC_TYPE_URL, {
    ociVersion: '1.1.0',
    hostname: c.hostname,
    annotations: c.annotations,
    linux: { namespaces },
  });
}

function statusOf(engine: Engine, sandboxId: string, verbose: boolean) {
  const sandbox = engine.sandbox(sandboxId);
  const c = sandbox.context;
  const info: Record<string, string> = {};
  if (verbose) {
    info.info = JSON.stringify({
      kind: c.kind, state: sandbox.state, name: c.name, namespace: c.namespace, uid: c.uid, hostname: c.hostname, pid: c.pid,
      netnsPath: c.netnsPath ?? null, taskAddress: c.taskAddress, startedAt: c.startedAt, lastError: c.lastError,
      containers: engine.containersOf(sandboxId).map((container) => ({ id: container.context.containerId, state: container.state })),
      streamVersion: sandbox.streamVersion,
    });
  }
  return {
    sandboxId,
    pid: c.pid ?? 0,
    state: sandbox.state === 'ready' ? 'SANDBOX_READY' : 'SANDBOX_NOTREADY',
    info,
    createdAt: toTimestamp(c.createdAt),
    exitedAt: toTimestamp(c.exitedAt),
    address: c.taskAddress ?? '',
    version: 3,
  };
}
