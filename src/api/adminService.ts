import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { chmod, mkdir, open, readdir, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ServerWritableStream, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from '../core/errors.js';
import { clientRootSpan, type ClientSpanRecord } from '../telemetry/clientSpans.js';
import { exportForeignSpans, withSpan } from '../telemetry/tracing.js';
import { validateId } from '../core/ids.js';
import type { ContainerRow, EventStore, SandboxRow, StoredEvent } from '../core/store.js';
import { rotatedPath } from '../host/logRotation.js';
import { parseRfc3339Nanos } from '../host/criLog.js';
import { CriLogView, RawLogView, type LogView } from './logView.js';
import { removeTree } from '../host/mounts.js';
import { sandboxMachine, type SandboxContext, type SandboxEvent } from '../../machines/sandboxMachine.js';
import { Entity } from '../engine/entity.js';
import { isStringArray } from '../oci/json.js';
import type { Engine } from '../engine/engine.js';
import { containerStream, isLive, sandboxStream } from '../engine/engine.js';
import type { ImageStore } from '../images/imageStore.js';
import { buildContainerSpec, overlayRootfsMount, validateOciSpec } from '../oci/containerSpec.js';
import type { ContainerMount, ContainerResources } from '../oci/podConfig.js';
import type { ContainerStats, KnownResources, MountSpec } from '../core/sandboxer.js';
import { Sweep } from '../core/sweep.js';
import { parseLinuxResources } from './linuxResources.js';
import { serverStream, unary } from '../grpc/rpc.js';
import { requireString, validateMountSpec, validateStringMap } from './validate.js';

const SERVICE = 'kts.admin.v1.Admin';
const LOG_POLL_MS = 200;

export interface AdminOptions {
  engine: Engine;
  logger: Logger;
  images: ImageStore;
  rootDir: string;
  /** What `kts info` and `kts version` show of the daemon. */
  daemonInfo?: { version: string; kinds: string[]; defaultKind: string; config: object; startedAt: string };
  /** Aborted when the daemon stops: open event and log streams end then (a shutdown must not wait for them). */
  closing?: AbortSignal;
}

/** Where a container made from a local image keeps its bundle, writable layer and log. */
export function imageContainerDir(rootDir: string, sandboxId: string, containerId: string): string {
  return path.join(rootDir, 'bundles', sandboxId, containerId);
}

/**
 * Removes a kts-made container's files once its ContainerDeleted event is committed. What cannot be
 * removed then (a busy mount), or was missed (the daemon died right then), is left to sweepBundles.
 */
export function removeBundlesOfDeletedContainers(engine: Engine, rootDir: string, logger: Logger): void {
  engine.store.onAppended((events) => {
    for (const event of events) {
      if (event.type !== 'ContainerDeleted') continue;
      const row = engine.store.getContainer(event.streamId.slice('container-'.length));
      if (row?.state !== 'deleted') continue;
      const dir = imageContainerDir(rootDir, row.sandboxId, row.id);
      removeTree(dir).then(() => rmdirIfEmpty(path.dirname(dir))).catch((error: unknown) =>
        logger.warn({ dir, err: error }, 'removing a deleted container\'s bundle failed; the next sweep tries again'));
    }
  });
}

/**
 * The daemon's sweep of `<root>/bundles`: a pod's directory once no live pod has its id, a container's
 * once its record says deleted (one being prepared has no record yet and stays). What it removed.
 */
export async function sweepBundles(store: EventStore, rootDir: string, known: KnownResources): Promise<string[]> {
  const bundles = path.join(rootDir, 'bundles');
  const sweep = new Sweep();
  for (const sandboxId of await readdir(bundles).catch(() => [] as string[])) {
    const podDir = path.join(bundles, sandboxId);
    if (!known.sandboxIds.has(sandboxId)) {
      await sweep.attempt(`bundles of pod ${sandboxId} (${podDir})`, () => removeTree(podDir));
      continue;
    }
    for (const containerId of await readdir(podDir).catch(() => [] as string[])) {
      if (store.getContainer(containerId)?.state !== 'deleted') continue;
      const dir = path.join(podDir, containerId);
      await sweep.attempt(`bundle of deleted container ${containerId} (${dir})`, () => removeTree(dir));
    }
  }
  return sweep.finish();
}

async function rmdirIfEmpty(dir: string): Promise<void> {
  await rmdir(dir).catch(() => undefined);
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

/** The pod as its stream leaves it, live or removed: replayed from the store, never from memory. */
function inspectSandbox(engine: Engine, ref: string) {
  const { sandbox: row, containerId } = resolveRef(engine, ref);
  const entity = Entity.load<SandboxContext, SandboxEvent>(sandboxStream(row.id), sandboxMachine, engine.store, () => undefined);
  try {
    const containers = engine.store.listContainers(row.id);
    const container = containerId === undefined ? undefined : containers.find((c) => c.id === containerId);
    return {
      sandbox: sandboxMessage(row),
      stateJson: JSON.stringify({ state: entity.state, ...entity.context }),
      containers: containers.map(containerMessage),
      // Asked by a container's id: that container's own record, beside its pod's.
      containerJson: container ? JSON.stringify({ ...containerMessage(container), podId: row.id, metadata: container.metadata }) : '',
    };
  } finally {
    entity.stop();
  }
}

/** Shortest id prefix accepted, as crictl takes them. */
const MIN_PREFIX = 3;

/** Finds a sandbox, live or removed, by id, `name`, `namespace/name`, or the id of one of its containers. */
export function resolveSandboxRef(engine: Engine, ref: string): SandboxRow {
  return resolveRef(engine, ref).sandbox;
}

/**
 * A sandbox by id, `name`, `namespace/name`, a container's id, or a unique prefix of a live pod's or
 * container's id (what `kts pods` and `kts ps` print); `containerId` when the ref named a container.
 */
export function resolveRef(engine: Engine, ref: string): { sandbox: SandboxRow; containerId?: string } {
  const sandbox = resolveByIdOrName(engine, ref);
  if (sandbox) return { sandbox };
  const rows = engine.store.listSandboxes();
  const container = engine.store.getContainer(ref);
  const owner = container && rows.find((row) => row.id === container.sandboxId);
  if (owner) return { sandbox: owner, containerId: container.id };
  if (ref.length >= MIN_PREFIX) {
    const pods: Array<{ sandbox: SandboxRow; containerId?: string }> = rows.filter((row) => row.state !== 'removed' && row.id.startsWith(ref)).map((row) => ({ sandbox: row }));
    const containers = engine.store.listContainers().filter((row) => row.state !== 'deleted' && row.id.startsWith(ref))
      .flatMap((row) => rows.filter((pod) => pod.id === row.sandboxId).map((pod) => ({ sandbox: pod, containerId: row.id })));
    const candidates = [...pods, ...containers];
    if (candidates.length === 1) return candidates[0]!;
    if (candidates.length > 1) {
      throw invalidArgument(`id prefix "${ref}" is ambiguous: ${candidates.map((c) => c.containerId ? `container ${c.containerId}` : `pod ${c.sandbox.id}`).join(', ')}`);
    }
  }
  throw notFound(`no pod or container "${ref}"`);
}

function resolveByIdOrName(engine: Engine, ref: string): SandboxRow | undefined {
  if (!ref) throw invalidArgument('a pod name or id is required');
  const rows = engine.store.listSandboxes();
  const byId = rows.find((row) => row.id === ref);
  if (byId) return byId;
  const [namespace, name] = ref.includes('/') ? ref.split('/', 2) : [undefined, ref];
  const byName = rows.filter((row) => row.name === name && (namespace === undefined || row.namespace === namespace));
  const live = byName.filter((row) => row.state !== 'removed');
  if (live.length === 1 || (live.length === 0 && byName.length >= 1)) return (live[0] ?? byName[byName.length - 1])!;
  if (live.length > 1) throw invalidArgument(`pod name "${ref}" is ambiguous: ${live.map((row) => row.id).join(', ')}; use an id`);
  return undefined;
}

export function adminService(options: AdminOptions): UntypedServiceImplementation {
  const { engine, logger } = options;
  removeBundlesOfDeletedContainers(engine, options.rootDir, options.logger);
  const rpc = <Req, Res>(method: string, handler: Parameters<typeof unary<Req, Res>>[2]) => unary<Req, Res>(`${SERVICE}/${method}`, logger, handler);
  const stream = <Req, Res>(method: string, handler: Parameters<typeof serverStream<Req, Res>>[2]) => serverStream<Req, Res>(`${SERVICE}/${method}`, logger, handler);
  return {
    ListSandboxes: rpc('ListSandboxes', async () => ({ sandboxes: engine.store.listSandboxes().filter((row) => row.state !== 'removed').map(sandboxMessage) })),
    ListContainers: rpc<{ sandboxId: string }, object>('ListContainers', async (request) => ({
      containers: engine.store.listContainers(request.sandboxId || undefined).filter((row) => row.state !== 'deleted').map(containerMessage),
    })),
    History: rpc<{ ref: string }, object>('History', async (request) => {
      const sandbox = resolveSandboxRef(engine, request.ref);
      const streams = [sandboxStream(sandbox.id), ...engine.store.listContainers(sandbox.id).map((row) => containerStream(row.id))];
      const events = streams.flatMap((streamId) => engine.store.readStream(streamId)).sort((a, b) => a.sequence - b.sequence);
      // The pod's own events in full, the rest of the log since the last check: `kts verify` re-hashes it all.
      const chain = engine.store.verifyChain({ since: 'checkpoint', streams });
      return { sandboxId: sandbox.id, events: events.map(eventMessage), chainOk: chain.ok, chainError: chain.ok ? '' : `broken at sequence ${chain.brokenAtSequence}: ${chain.reason}` };
    }),
    Inspect: rpc<{ ref: string }, object>('Inspect', async (request) => inspectSandbox(engine, request.ref)),
    Resolve: rpc<{ ref: string }, object>('Resolve', async (request) => {
      const { sandbox, containerId } = resolveRef(engine, request.ref);
      return { sandboxId: sandbox.id, containerId: containerId ?? '' };
    }),
    StopContainer: rpc<{ containerId: string; timeoutSecs: number }, object>('StopContainer', async (request, { meta }) =>
      ({ exitStatus: await stopContainer(engine, request.containerId, request.timeoutSecs, meta) })),
    RemoveContainer: rpc<{ containerId: string; force: boolean }, object>('RemoveContainer', async (request, { meta }) => {
      const container = engine.container(request.containerId);
      if (request.force && isLive(container)) await stopContainer(engine, request.containerId, 0, meta);
      await engine.deleteContainer(request.containerId, meta);
      return {};
    }),
    Info: rpc('Info', async () => daemonInfo(options)),
    ListImages: rpc('ListImages', async () => ({ images: await options.images.list() })),
    ContainerStats: rpc<{ sandboxId: string; containerId: string }, object>('ContainerStats', async (request) => ({ stats: await containerStats(engine, request) })),
    PodStats: rpc<{ sandboxId: string }, object>('PodStats', async (request) => ({ stats: await podStats(engine, request.sandboxId) })),
    RecordClientSpan: unary<ClientSpanRecord, object>(`${SERVICE}/RecordClientSpan`, logger, async (request) => {
      exportForeignSpans([clientRootSpan(request)]);
      return {};
    }, { untraced: true }),
    Verify: rpc('Verify', async () => {
      const chain = engine.store.verifyChain();
      if (chain.ok) return { ok: true, eventCount: chain.eventCount };
      const { eventCount, brokenAtSequence, reason, streamId, type, problem } = chain;
      return { ok: false, eventCount, brokenAtSequence, reason, brokenStreamId: streamId, brokenType: type, problem };
    }),
    WatchEvents: stream<{ afterSequence: number }, object>('WatchEvents', (call) => watchEvents(engine, call, options.closing)),
    RunContainer: rpc<RunContainerRequest, object>('RunContainer', async (request, { meta }) => runContainer(options, request, meta)),
    Exec: rpc<ExecRequest, object>('Exec', async (request, { meta }) => execAndCollect(options, request, meta)),
    Logs: stream<LogsRequest, object>('Logs', (call) => streamLogs(engine, call, options.closing)),
    Prepare: rpc<PrepareRequest, object>('Prepare', async (request, { meta }) => prepareContainer(options, request, meta)),
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

async function runMounts(mounts: RunContainerRequest['mounts']): Promise<ContainerMount[]> {
  return Promise.all(mounts.map(async (mount, index) => {
    for (const [field, value] of [['container_path', mount.containerPath], ['host_path', mount.hostPath]] as const) {
      if (!path.isAbsolute(value) || path.normalize(value) !== value) throw invalidArgument(`mounts[${index}].${field} ${JSON.stringify(value)} must be a normalized absolute path`);
    }
    if (!(await stat(mount.hostPath).catch(() => undefined))) throw invalidArgument(`mounts[${index}].host_path ${mount.hostPath} does not exist on the host`);
    return { containerPath: mount.containerPath, hostPath: mount.hostPath, readonly: mount.readonly };
  }));
}

async function runContainer(options: AdminOptions, request: RunContainerRequest, meta: { caller: string }) {
  const { engine } = options;
  const sandbox = engine.sandbox(request.sandboxId);
  if (sandbox.state !== 'ready' || sandbox.context.pid === null) throw failedPrecondition(`sandbox ${request.sandboxId} is ${sandbox.state}; containers need a ready sandbox`);
  if (!request.name) throw invalidArgument('container name must not be empty');
  validateStringMap('label', request.labels);
  validateStringMap('annotation', request.annotations);
  const resources = runResources(request.resources);
  const mounts = await runMounts(request.mounts);
  const image = await options.images.resolve(request.image || 'busybox');
  const containerId = `${validateId('container name', request.name).slice(0, 40)}-${randomBytes(6).toString('hex')}`;
  const dir = imageContainerDir(options.rootDir, request.sandboxId, containerId);
  const bundleDir = path.join(dir, 'bundle');
  const logPath = path.join(dir, 'container.log');
  const holderPid = sandbox.context.pid;
  const created = await withContainerDir(engine, dir, containerId, async () => {
    const spec = await withSpan('bundle.prepare', { attributes: { 'container.id': containerId } }, () => prepareImageBundle());
    return engine.createContainer(
      {
        sandboxId: request.sandboxId, containerId, name: request.name, bundleDir, image: request.image || 'busybox', logPath, labels: request.labels,
        rootfsMounts: [overlayRootfsMount(image.rootfsDir, path.join(dir, 'upper'), path.join(dir, 'work'))],
        stdio: {}, args: spec.process.args,
      },
      meta,
    );
  });
  const started = request.start ? await engine.startContainer(containerId, meta) : created;
  return { containerId, pid: started.pid, logPath };

  /** The container's directories, its OCI config.json and its empty log. */
  async function prepareImageBundle() {
    await mkdir(path.join(bundleDir, 'rootfs'), { recursive: true });
    await mkdir(path.join(dir, 'upper'), { recursive: true });
    // The upper dir's mode is the container's `/`; only the daemon's state around it is private.
    await chmod(path.join(dir, 'upper'), 0o755);
    await mkdir(path.join(dir, 'work'), { recursive: true });
    const spec = buildContainerSpec({
      containerId, sandboxId: request.sandboxId, holderPid, hostname: sandbox.context.hostname,
      cgroupsPath: `/kts/${request.sandboxId}/${containerId}`, image: image.config,
      container: {
        metadata: { name: request.name }, command: request.command, args: request.args,
        envs: Object.entries(request.env).map(([key, value]) => ({ key, value })), workingDir: request.workingDir || undefined,
        annotations: request.annotations, mounts, linux: { resources },
      },
    });
    await writeBundleFiles(bundleDir, spec, logPath);
    return spec;
  }
}

/** config.json holds the env (secrets, often) and the log holds the container's output: root only. */
async function writeBundleFiles(bundleDir: string, spec: object, logPath: string): Promise<void> {
  await writeFile(path.join(bundleDir, 'config.json'), JSON.stringify(spec, null, 2), { mode: 0o600 });
  await writeFile(logPath, '', { mode: 0o600 });
}

/**
 * The log files kts keeps for live containers it made (under `<root>/bundles`), which their writers
 * (kts-log-pump, the vmm pumps; before, the containers themselves) hold open O_APPEND, so copy-truncate rotation can bound them.
 */
export function rotatableContainerLogs(store: EventStore, rootDir: string): string[] {
  const kinds = new Map(store.listSandboxes().map((row) => [row.id, row.kind]));
  const bundles = path.join(rootDir, 'bundles') + path.sep;
  return store.listContainers()
    .filter((row) => LIVE_CONTAINER_STATES.includes(row.state) && ['runc', 'wasm', 'vmm'].includes(kinds.get(row.sandboxId) ?? ''))
    .map((row) => row.metadata.logPath)
    .filter((logPath): logPath is string => typeof logPath === 'string' && logPath.startsWith(bundles));
}

const LIVE_CONTAINER_STATES = ['created', 'running', 'starting', 'creating'];

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

/** Kuasar's Prepare: the container's bundle and rootfs are prepared in the sandbox (created, not started), as Task Create does. */
async function prepareContainer(options: AdminOptions, request: PrepareRequest, meta: { caller: string }) {
  const containerId = validateId('container id', request.containerId);
  options.engine.sandbox(request.sandboxId);
  const spec = validateOciSpec(parseJson('spec_json', request.specJson || ''), 'spec_json');
  const rootfsMounts = request.rootfsJson.map(parseRootfsMount);
  const dir = imageContainerDir(options.rootDir, request.sandboxId, containerId);
  const bundleDir = path.join(dir, 'bundle');
  const logPath = path.join(dir, 'container.log');
  await withContainerDir(options.engine, dir, containerId, async () => {
    await mkdir(path.join(bundleDir, 'rootfs'), { recursive: true });
    await writeBundleFiles(bundleDir, spec, logPath);
    await options.engine.createContainer(
      { sandboxId: request.sandboxId, containerId, name: containerId, bundleDir, logPath, rootfsMounts, stdio: {}, args: spec.process.args },
      meta,
    );
  });
  return { bundle: bundleDir };
}

/** Container directories a Prepare or RunContainer of this process is filling in (no record names them yet). */
const containerDirsInUse = new Set<string>();

/**
 * Runs `create` in a container directory under `<root>/bundles` made for it alone: one that a live
 * record or a request in flight holds is refused (a live container's bundle and log are never
 * overwritten); any other is a leftover (a deleted container's, or one a crash cut short) and is made
 * afresh. A create that fails removes it unless a live record points into it (a failed container keeps
 * its bundle until it is deleted); a record made by another (a Task Create of the same id) does not.
 */
async function withContainerDir<T>(engine: Engine, dir: string, containerId: string, create: () => Promise<T>): Promise<T> {
  const live = (row = engine.store.getContainer(containerId)) => row !== undefined && row.state !== 'deleted' && row.state !== 'absent';
  if (containerDirsInUse.has(dir) || live()) throw alreadyExists(`container ${containerId} already exists`);
  containerDirsInUse.add(dir);
  try {
    await removeTree(dir);
    await mkdir(dir, { recursive: true });
    return await create();
  } catch (error) {
    const row = engine.store.getContainer(containerId);
    const kept = live(row) && String(row!.metadata.bundleDir ?? '').startsWith(dir + path.sep);
    if (!kept) await removeTree(dir).then(() => rmdirIfEmpty(path.dirname(dir))).catch(() => undefined);
    throw error;
  } finally {
    containerDirsInUse.delete(dir);
  }
}

interface ExecRequest { containerId: string; args: string[]; env: Record<string, string>; stdin: Buffer }

async function execAndCollect(options: AdminOptions, request: ExecRequest, meta: { caller: string }) {
  const { engine } = options;
  if (request.args.length === 0) throw invalidArgument('exec needs a command');
  const container = engine.container(request.containerId);
  const execId = `kts-exec-${randomBytes(6).toString('hex')}`;
  const dir = path.join(options.rootDir, 'exec', execId);
  await mkdir(dir, { recursive: true });
  const stdout = path.join(dir, 'stdout');
  const stderr = path.join(dir, 'stderr');
  // The whole input as a file the process reads to its end; without one its stdin is /dev/null.
  const stdin = request.stdin?.length ? path.join(dir, 'stdin') : undefined;
  try {
    if (stdin) await writeFile(stdin, request.stdin, { mode: 0o600 });
    const env = Object.entries(request.env).map(([key, value]) => `${key}=${value}`);
    const process = { args: request.args, cwd: '/', env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...env], user: { uid: 0, gid: 0 }, terminal: false };
    await engine.createExec(container.context.containerId, execId, process, { stdout, stderr, ...(stdin && { stdin }) }, meta);
    await engine.startExec(container.context.containerId, execId, meta);
    const exit = await engine.waitExec(container.context.containerId, execId);
    await engine.deleteExec(container.context.containerId, execId, meta);
    return { exitStatus: exit.exitStatus, stdout: await readHead(stdout, MAX_EXEC_OUTPUT_BYTES), stderr: await readHead(stderr, MAX_EXEC_OUTPUT_BYTES) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Each stream of `kts exec` output is cut here: it is the container's, and the reply must fit a gRPC message. */
const MAX_EXEC_OUTPUT_BYTES = 1024 * 1024;

/** At most `maxBytes` from the start of a file the container wrote; nothing if it is missing. */
async function readHead(file: string, maxBytes: number): Promise<Buffer> {
  const handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK).catch(() => undefined);
  if (!handle) return Buffer.alloc(0);
  try {
    if (!(await handle.stat()).isFile()) return Buffer.alloc(0);
    const buffer = Buffer.alloc(maxBytes);
    const { bytesRead } = await handle.read(buffer, 0, maxBytes, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** Resolves when the client goes away or the daemon stops, whichever comes first. */
function streamEnded(call: ServerWritableStream<unknown, object>, closing: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    if (closing?.aborted) return resolve();
    // The daemon's signal outlives the call: its listener goes with the call.
    const ended = () => { closing?.removeEventListener('abort', ended); resolve(); };
    for (const event of ['cancelled', 'close', 'finish']) call.once(event, ended);
    closing?.addEventListener('abort', ended, { once: true });
  });
}

async function watchEvents(engine: Engine, call: ServerWritableStream<{ afterSequence: number }, object>, closing?: AbortSignal): Promise<void> {
  let last = call.request.afterSequence;
  const send = (event: StoredEvent) => {
    if (event.sequence <= last) return;
    last = event.sequence;
    call.write(eventMessage(event));
  };
  const unsubscribe = engine.store.onAppended((events) => events.forEach(send));
  try {
    for (const event of engine.store.readAll({ afterSequence: last })) send(event);
    await streamEnded(call, closing);
  } finally {
    unsubscribe();
  }
}

interface LogsRequest { containerId: string; follow: boolean; tail: boolean; tailLines: number; timestamps: boolean; since: string }

async function streamLogs(engine: Engine, call: ServerWritableStream<LogsRequest, object>, closing?: AbortSignal): Promise<void> {
  const row = engine.store.getContainer(validateId('container id', call.request.containerId));
  if (!row) throw notFound(`container ${call.request.containerId} not found`);
  const logPath = row.metadata.logPath;
  if (typeof logPath !== 'string' || !logPath) throw failedPrecondition(`container ${row.id} writes to its creator's FIFOs, not a log file kts keeps`);
  const { request } = call;
  const view = logView(row, request);
  let ended = false;
  if (request.follow) void streamEnded(call, closing).then(() => { ended = true; });
  // What rotation kept of older output comes first; container.log then starts where it ends.
  // (A CRI log has one record a line, so --tail counts records: a line longer than a record counts as several.)
  const tail = request.tail ? await tailStart(logPath, request.tailLines) : { offset: 0, missing: undefined };
  if (tail.missing !== 0) {
    await sendRange(call, view, rotatedPath(logPath), tail.missing === undefined ? 0 : (await tailStart(rotatedPath(logPath), tail.missing)).offset);
    sendShown(call, view.end());
  }
  let offset = tail.offset;
  for (;;) {
    const size = (await stat(logPath).catch(() => ({ size: offset }))).size;
    // Smaller than what was sent: rotated (copied to .1 and truncated) meanwhile; the new content starts at 0.
    if (size < offset) {
      offset = 0;
      sendShown(call, view.end());
    }
    if (size > offset) offset = await sendRange(call, view, logPath, offset, size);
    const live = engine.store.getContainer(row.id);
    if (!request.follow || ended || !live || !LIVE_CONTAINER_STATES.includes(live.state)) return sendShown(call, view.end());
    await new Promise((resolve) => setTimeout(resolve, LOG_POLL_MS));
  }
}

/**
 * How a container's log is shown: a CRI log (containers made since kts keeps times) as its lines,
 * optionally timed and only the recent ones; an older log's raw bytes as they are, which have no times.
 */
function logView(row: ContainerRow, request: LogsRequest): LogView {
  const sinceUnixNanos = request.since ? parseRfc3339Nanos(request.since) : undefined;
  if (request.since && sinceUnixNanos === undefined) throw invalidArgument(`since ${JSON.stringify(request.since)} is not an RFC3339 time`);
  if (row.metadata.logFormat === 'cri') return new CriLogView({ timestamps: request.timestamps, ...(sinceUnixNanos !== undefined && { sinceUnixNanos }) });
  if (request.timestamps || sinceUnixNanos !== undefined) {
    throw failedPrecondition(`container ${row.id} was made before kts kept times in its log (raw bytes): --timestamps and --since need a newer container`);
  }
  return new RawLogView();
}

function sendShown(call: ServerWritableStream<LogsRequest, object>, shown: Buffer): void {
  if (shown.length > 0) call.write({ data: shown });
}

const TAIL_BLOCK_BYTES = 64 * 1024;

/**
 * Where the last `lines` lines of `file` start, read backwards in blocks (a last line's own newline
 * ends it); `missing`: how many lines short the file is (wanted from the one rotation kept before it).
 */
export async function tailStart(file: string, lines: number): Promise<{ offset: number; missing: number }> {
  const handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK).catch(() => undefined);
  if (!handle) return { offset: 0, missing: lines };
  try {
    const { size } = await handle.stat();
    if (lines === 0) return { offset: size, missing: 0 };
    const block = Buffer.alloc(TAIL_BLOCK_BYTES);
    let newlines = 0;
    let end = size;
    while (end > 0) {
      const start = Math.max(0, end - TAIL_BLOCK_BYTES);
      const { bytesRead } = await handle.read(block, 0, end - start, start);
      for (let i = bytesRead - 1; i >= 0; i--) {
        const newline = block[i] === 0x0a && start + i !== size - 1;
        if (newline && ++newlines === lines) return { offset: start + i + 1, missing: 0 };
      }
      end = start;
    }
    return { offset: 0, missing: lines - (size > 0 ? newlines + 1 : 0) };
  } finally {
    await handle.close();
  }
}

/** Sends what `view` shows of `file` from `start` to `end` (its current end if not given); returns where it stopped. */
async function sendRange(call: ServerWritableStream<LogsRequest, object>, view: LogView, file: string, start: number, end?: number): Promise<number> {
  const last = end ?? (await stat(file).catch(() => ({ size: 0 }))).size;
  if (last <= start) return start;
  const handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK).catch(() => undefined);
  if (!handle) return start;
  let position = start;
  // The stream owns the handle and closes it when it ends.
  for await (const chunk of handle.createReadStream({ start, end: last - 1 })) {
    sendShown(call, view.push(chunk as Buffer));
    position += (chunk as Buffer).length;
  }
  return position;
}

const SIGTERM = 15;
const SIGKILL = 9;

/** crictl's stop of one container: SIGTERM, SIGKILL when it has not exited after `timeoutSecs` (0: at once); its exit status. */
async function stopContainer(engine: Engine, containerId: string, timeoutSecs: number, meta: { caller: string }): Promise<number> {
  const container = engine.container(containerId);
  if (!isLive(container)) return container.context.exitStatus ?? 0;
  const exited = engine.waitContainer(containerId);
  exited.catch(() => undefined); // awaited below unless a kill fails first
  if (timeoutSecs > 0) {
    await engine.killContainer(containerId, SIGTERM, false, meta);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<undefined>((resolve) => { timer = setTimeout(() => resolve(undefined), timeoutSecs * 1000); });
    const exit = await Promise.race([exited, deadline]).finally(() => clearTimeout(timer));
    if (exit) return exit.exitStatus;
  }
  await engine.killContainer(containerId, SIGKILL, true, meta);
  return (await exited).exitStatus;
}

function daemonInfo(options: AdminOptions) {
  const store = options.engine.store;
  const headSequence = store.headSequence();
  const head = headSequence > 0 ? store.readAll({ afterSequence: headSequence - 1, limit: 1 })[0] : undefined;
  const info = options.daemonInfo;
  return {
    version: info?.version ?? '', kinds: info?.kinds ?? [], defaultKind: info?.defaultKind ?? '', configJson: JSON.stringify(info?.config ?? {}),
    headSequence, headHash: head?.hash ?? '', headTime: head?.time ?? '', startedAt: info?.startedAt ?? '', pid: process.pid,
  };
}

function statsMessage(id: string, sandboxId: string, name: string, stats: ContainerStats) {
  return {
    id, sandboxId, name, cpuUsageNanos: stats.cpuUsageNanos, memoryUsageBytes: stats.memoryUsageBytes, memoryLimitBytes: stats.memoryLimitBytes,
    pidsCurrent: stats.pidsCurrent, time: new Date().toISOString(),
  };
}

/** One container's stats, or those of every running container (of one pod); one that ends meanwhile is left out. */
async function containerStats(engine: Engine, request: { sandboxId: string; containerId: string }) {
  if (request.containerId) {
    const row = engine.store.getContainer(validateId('container id', request.containerId));
    if (!row || row.state === 'deleted') throw notFound(`container ${request.containerId} not found`);
    return [statsMessage(row.id, row.sandboxId, row.name, await engine.containerStats(row.id))];
  }
  const rows = engine.store.listContainers(request.sandboxId || undefined).filter((row) => row.state === 'running');
  const stats = await Promise.all(rows.map((row) => engine.containerStats(row.id).then((s) => statsMessage(row.id, row.sandboxId, row.name, s), () => undefined)));
  return stats.filter((s) => s !== undefined);
}

/** Each ready pod's containers summed (or one pod's). */
async function podStats(engine: Engine, sandboxId: string) {
  const rows = engine.store.listSandboxes().filter((row) => (sandboxId ? row.id === sandboxId : row.state === 'ready'));
  if (sandboxId && rows.length === 0) throw notFound(`pod ${sandboxId} not found`);
  return Promise.all(rows.map(async (row) => statsMessage(row.id, row.id, row.name, await engine.sandboxStats(row.id))));
}
