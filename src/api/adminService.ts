import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import { once } from 'node:events';
import type { ServerWritableStream, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { checkAudit, withDerived, type AuditReport } from '../audit/auditCheck.js';
import { readHeadFile } from '../audit/checkpoints.js';
import { exportTrailer } from '../audit/exportSlice.js';
import { eventLine } from '../audit/records.js';
import { invalidArgument } from '../core/errors.js';
import type { MountSpec } from '../core/sandboxer.js';
import type { ContainerRow, EventStore, SandboxRow, StoredEvent } from '../core/store.js';
import type { ContainerBundles, RunContainerInput } from '../engine/bundles.js';
import { checkDerivedState } from '../engine/derivedState.js';
import type { Engine } from '../engine/engine.js';
import { containerStats, eventMatcher, history, inspect, liveContainers, liveSandboxes, logHead, podStats, resolveRef, type Inspection, type StatsOf } from '../engine/queries.js';
import { serverStream, streamEnded, unary } from '../grpc/rpc.js';
import type { ImageStore } from '../images/imageStore.js';
import { validateOciSpec } from '../oci/containerSpec.js';
import { isStringArray } from '../oci/json.js';
import type { ContainerMount, ContainerResources } from '../oci/podConfig.js';
import { clientRootSpan, type ClientSpanRecord } from '../telemetry/clientSpans.js';
import { exportForeignSpans } from '../telemetry/tracing.js';
import { parseLinuxResources } from './linuxResources.js';
import { streamLogs, type LogsRequest } from './logStream.js';
import { requireString, validateMountSpec, validateStringMap } from './validate.js';

const SERVICE = 'kts.admin.v1.Admin';

/** kts's own API (the CLI's): each call mapped from protobuf to the engine, its queries and the containers kts makes. */
export interface AdminOptions {
  engine: Engine;
  /** The containers kts makes itself (kts run, Prepare, kts exec). */
  bundles: ContainerBundles;
  logger: Logger;
  images: ImageStore;
  /** What `kts info` and `kts version` show of the daemon. */
  daemonInfo?: { version: string; kinds: string[]; defaultKind: string; config: object; startedAt: string; ociRuntime?: string };
  /** Aborted when the daemon stops: open event and log streams end then (a shutdown must not wait for them). */
  closing?: AbortSignal;
  /** What Verify checks the checkpoints against: the audit public key and the head file. */
  audit?: {
    publicKey: KeyObject;
    headFile: string;
    /** The log as stored, snapshots unchecked: what Verify replays every stream against (the engine's store refuses bad snapshots instead). */
    asStored: EventStore;
  };
}

function eventMessage(event: StoredEvent) {
  return {
    sequence: event.sequence, streamId: event.streamId, streamVersion: event.streamVersion, type: event.type,
    payloadJson: JSON.stringify(event.payload), stateBefore: event.stateBefore, stateAfter: event.stateAfter,
    traceId: event.traceId ?? '', spanId: event.spanId ?? '', caller: event.caller ?? '', time: event.time, prevHash: event.prevHash, hash: event.hash,
  };
}

function sandboxMessage(row: SandboxRow) {
  const ips = row.metadata.ips;
  return {
    id: row.id, name: row.name, namespace: row.namespace, kind: row.kind, state: row.state, pid: row.pid ?? 0,
    taskAddress: row.taskAddress ?? '', createdAt: row.createdAt, updatedAt: row.updatedAt, metadataJson: JSON.stringify(row.metadata),
    ips: isStringArray(ips) ? ips : [], netnsPath: typeof row.metadata.netnsPath === 'string' ? row.metadata.netnsPath : '',
  };
}

function containerMessage(row: ContainerRow) {
  return {
    id: row.id, sandboxId: row.sandboxId, name: row.name, state: row.state, pid: row.pid ?? 0, exitStatus: row.exitStatus ?? 0,
    exited: row.exitedAt !== null, exitedAt: row.exitedAt ?? '', createdAt: row.createdAt, image: String(row.metadata.image ?? ''),
    logPath: String(row.metadata.logPath ?? ''), metadataJson: JSON.stringify(row.metadata),
  };
}

function inspectMessage(found: Inspection) {
  const { sandbox, container } = found;
  return {
    sandbox: sandboxMessage(sandbox),
    stateJson: JSON.stringify({ state: found.state, ...found.context }),
    containers: found.containers.map(containerMessage),
    // Asked by a container's id: that container's own record, beside its pod's.
    containerJson: container ? JSON.stringify({ ...containerMessage(container), podId: sandbox.id, metadata: container.metadata }) : '',
  };
}

function statsMessage({ id, sandboxId, name, stats }: StatsOf) {
  return {
    id, sandboxId, name, cpuUsageNanos: stats.cpuUsageNanos, memoryUsageBytes: stats.memoryUsageBytes, memoryLimitBytes: stats.memoryLimitBytes,
    pidsCurrent: stats.pidsCurrent, time: new Date().toISOString(),
  };
}

export function adminService(options: AdminOptions): UntypedServiceImplementation {
  const { engine, bundles, logger } = options;
  const { store } = engine;
  const rpc = <Req, Res>(method: string, handler: Parameters<typeof unary<Req, Res>>[2]) => unary<Req, Res>(`${SERVICE}/${method}`, logger, handler);
  const stream = <Req, Res>(method: string, handler: Parameters<typeof serverStream<Req, Res>>[2]) => serverStream<Req, Res>(`${SERVICE}/${method}`, logger, handler);
  return {
    ListSandboxes: rpc('ListSandboxes', async () => ({ sandboxes: liveSandboxes(store).map(sandboxMessage) })),
    ListContainers: rpc<{ sandboxId: string }, object>('ListContainers', async (request) => ({
      containers: liveContainers(store, request.sandboxId || undefined).map(containerMessage),
    })),
    History: rpc<{ ref: string; types: string[]; since: string }, object>('History', async (request) => {
      const { sandboxId, events, chain } = history(store, request.ref);
      const shown = eventMatcher(store, { types: request.types, since: request.since }, engine.kinds);
      return { sandboxId, events: events.filter(shown).map(eventMessage), chainOk: chain.ok, chainError: chain.ok ? '' : `broken at sequence ${chain.brokenAtSequence}: ${chain.reason}` };
    }),
    Inspect: rpc<{ ref: string }, object>('Inspect', async (request) => inspectMessage(inspect(store, request.ref))),
    Resolve: rpc<{ ref: string }, object>('Resolve', async (request) => {
      const { sandbox, containerId } = resolveRef(store, request.ref);
      return { sandboxId: sandbox.id, containerId: containerId ?? '' };
    }),
    StopContainer: rpc<{ containerId: string; timeoutSecs: number }, object>('StopContainer', async (request, { meta }) =>
      ({ exitStatus: await bundles.stop(request.containerId, request.timeoutSecs, meta) })),
    RemoveContainer: rpc<{ containerId: string; force: boolean }, object>('RemoveContainer', async (request, { meta }) => {
      await bundles.remove(request.containerId, request.force, meta);
      return {};
    }),
    Info: rpc('Info', async () => daemonInfo(options)),
    ListImages: rpc('ListImages', async () => ({ images: await options.images.list() })),
    ContainerStats: rpc<{ sandboxId: string; containerId: string }, object>('ContainerStats', async (request) => ({ stats: (await containerStats(engine, request)).map(statsMessage) })),
    PodStats: rpc<{ sandboxId: string }, object>('PodStats', async (request) => ({ stats: (await podStats(engine, request.sandboxId)).map(statsMessage) })),
    RecordClientSpan: unary<ClientSpanRecord, object>(`${SERVICE}/RecordClientSpan`, logger, async (request) => {
      exportForeignSpans([clientRootSpan(request)]);
      return {};
    }, { untraced: true }),
    // The chain and its checkpoints, then every snapshot and read-model row against a replay of the chain.
    Verify: rpc('Verify', async () => verifyMessage(withDerived(checkAudit(store, {
      publicKey: options.audit?.publicKey, noKeyReason: 'the daemon has no audit key',
      ...(options.audit && { headFile: { path: options.audit.headFile, checkpoint: readHeadFile(options.audit.headFile, false) } }),
    }), checkDerivedState(options.audit?.asStored ?? store)))),
    Export: stream<ExportRequest, object>('Export', async (call) => exportEvents(store, call, eventMatcher(store, call.request, engine.kinds))),
    WatchEvents: stream<WatchEventsRequest, object>('WatchEvents', (call) => watchEvents(store, call, eventMatcher(store, call.request, engine.kinds), options.closing)),
    RunContainer: rpc<RunContainerRequest, object>('RunContainer', async (request, { meta }) => bundles.run(runContainerInput(request), meta)),
    Exec: rpc<ExecRequest, object>('Exec', async (request, { meta }) => bundles.exec(request, meta)),
    Logs: stream<LogsRequest, object>('Logs', (call) => streamLogs(store, call, options.closing)),
    Prepare: rpc<PrepareRequest, object>('Prepare', async (request, { meta }) => {
      // An unknown pod is NOT_FOUND before its body is looked at.
      engine.sandbox(request.sandboxId);
      return bundles.prepare({
        sandboxId: request.sandboxId, containerId: request.containerId,
        spec: validateOciSpec(parseJson('spec_json', request.specJson || ''), 'spec_json'), rootfsMounts: request.rootfsJson.map(parseRootfsMount),
      }, meta);
    }),
    Purge: rpc<{ sandboxId: string; containerId: string }, object>('Purge', async (request, { meta }) => {
      engine.sandbox(request.sandboxId);
      await engine.deleteContainer(request.containerId, meta);
      return {};
    }),
    UpdateResources: rpc<{ sandboxId: string; containerId: string; resourcesJson: string }, object>('UpdateResources', async (request, { meta }) => {
      // Checked before anything is recorded: a refused body leaves no event.
      const resources = { ...parseLinuxResources(request.resourcesJson) };
      if (request.containerId) await engine.updateContainer(request.containerId, resources, meta);
      else await engine.updateSandbox(request.sandboxId, { resources }, meta);
      return {};
    }),
  };
}

interface RunContainerRequest {
  sandboxId: string; name: string; image: string; command: string[]; args: string[]; env: Record<string, string>;
  workingDir: string; labels: Record<string, string>; start: boolean;
  resources: { cpuPeriod: number; cpuQuota: number; cpuShares: number; memoryLimitInBytes: number } | null;
  mounts: Array<{ containerPath: string; hostPath: string; readonly: boolean }>;
  annotations: Record<string, string>;
}

/** The request's maps, resources and mounts checked and in the engine's terms. */
function runContainerInput(request: RunContainerRequest): RunContainerInput {
  validateStringMap('label', request.labels);
  validateStringMap('annotation', request.annotations);
  const { sandboxId, name, image, command, args, env, workingDir, labels, annotations, start } = request;
  return { sandboxId, name, image, command, args, env, workingDir, labels, annotations, start, resources: runResources(request.resources), mounts: runMounts(request.mounts) };
}

/** CRI's resources: 0 is not set; anything else must be a positive whole number. */
function runResources(resources: RunContainerRequest['resources']): ContainerResources {
  const result: ContainerResources = {};
  for (const key of ['cpuPeriod', 'cpuQuota', 'cpuShares', 'memoryLimitInBytes'] as const) {
    const value = resources?.[key] ?? 0;
    if (!Number.isSafeInteger(value) || value < 0) throw invalidArgument(`resources.${key} must be a positive whole number (0: not set), not ${value}`);
    if (value !== 0) result[key] = value;
  }
  return result;
}

function runMounts(mounts: RunContainerRequest['mounts']): ContainerMount[] {
  return mounts.map((mount, index) => {
    for (const [field, value] of [['container_path', mount.containerPath], ['host_path', mount.hostPath]] as const) {
      if (!path.isAbsolute(value) || path.normalize(value) !== value) throw invalidArgument(`mounts[${index}].${field} ${JSON.stringify(value)} must be a normalized absolute path`);
    }
    return { containerPath: mount.containerPath, hostPath: mount.hostPath, readonly: mount.readonly };
  });
}

interface PrepareRequest { sandboxId: string; containerId: string; specJson: string; rootfsJson: string[] }

function parseJson(what: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw invalidArgument(`${what} is not valid JSON: ${(error as Error).message}`);
  }
}

function parseRootfsMount(text: string, index: number): MountSpec {
  const mount = parseJson(`rootfs_json[${index}]`, text) as Partial<Record<'type' | 'source' | 'target', unknown>> & { options?: unknown };
  if (typeof mount !== 'object' || mount === null) throw invalidArgument(`rootfs_json[${index}] must be a JSON object (a containerd Mount)`);
  const options = mount.options ?? [];
  if (!Array.isArray(options) || !options.every((o) => typeof o === 'string')) throw invalidArgument(`rootfs_json[${index}].options must be an array of strings`);
  return validateMountSpec(`rootfs_json[${index}]`, {
    type: requireString(`rootfs_json[${index}].type`, mount.type), source: requireString(`rootfs_json[${index}].source`, mount.source),
    target: typeof mount.target === 'string' && mount.target ? mount.target : undefined, options,
  });
}

interface ExecRequest { containerId: string; args: string[]; env: Record<string, string>; stdin: Buffer }

/** The chain's own fields as before; with the chain intact but a checkpoint broken, that checkpoint's. */
function verifyMessage(report: AuditReport) {
  const auditJson = JSON.stringify(report);
  const { chain, broken } = report;
  if (!chain.ok) {
    const { eventCount, brokenAtSequence, reason, streamId, type, problem } = chain;
    return { ok: false, eventCount, brokenAtSequence, reason, brokenStreamId: streamId, brokenType: type, problem, auditJson };
  }
  if (broken) return { ok: false, eventCount: chain.eventCount, brokenAtSequence: broken.sequence, reason: broken.reason, problem: broken.problem, auditJson };
  return { ok: true, eventCount: chain.eventCount, auditJson };
}

interface ExportRequest { pod: string; types: string[]; since: string }

/** The matching events, read in batches, then the trailer naming the checkpoint that covers the last one. */
async function exportEvents(store: EventStore, call: ServerWritableStream<ExportRequest, object>, shown: (event: StoredEvent) => boolean): Promise<void> {
  let last = 0;
  for (let after = 0; ;) {
    const batch = store.readAll({ afterSequence: after, limit: 1000 });
    for (const event of batch.filter(shown)) {
      // Waits for the client: a whole log is never buffered in the daemon; a client gone ends the export.
      if (!call.write({ json: eventLine(event) })) await Promise.race([once(call, 'drain'), once(call, 'cancelled'), once(call, 'close')]);
      if (call.cancelled) return;
      last = event.sequence;
    }
    if (batch.length < 1000) break;
    after = batch.at(-1)!.sequence;
  }
  call.write({ json: JSON.stringify(exportTrailer(last, store.listCheckpoints())) });
}

interface WatchEventsRequest { afterSequence: number; pod: string; types: string[]; kind: string }

async function watchEvents(store: EventStore, call: ServerWritableStream<WatchEventsRequest, object>, shown: (event: StoredEvent) => boolean, closing?: AbortSignal): Promise<void> {
  let last = call.request.afterSequence;
  const send = (event: StoredEvent) => {
    if (event.sequence <= last) return;
    last = event.sequence;
    if (shown(event)) call.write(eventMessage(event));
  };
  const unsubscribe = store.onAppended((events) => events.forEach(send));
  try {
    for (const event of store.readAll({ afterSequence: last })) send(event);
    await streamEnded(call, closing);
  } finally {
    unsubscribe();
  }
}

function daemonInfo(options: AdminOptions) {
  const head = logHead(options.engine.store);
  const info = options.daemonInfo;
  return {
    version: info?.version ?? '', kinds: info?.kinds ?? [], defaultKind: info?.defaultKind ?? '', configJson: JSON.stringify(info?.config ?? {}),
    headSequence: head.sequence, headHash: head.event?.hash ?? '', headTime: head.event?.time ?? '', startedAt: info?.startedAt ?? '', pid: process.pid,
    ociRuntime: info?.ociRuntime ?? '',
  };
}
