import { rm } from 'node:fs/promises';
import { connect } from 'node:net';
import path from 'node:path';
import { Server } from '@grpc/grpc-js';
import { adminService } from './api/adminService.js';
import { listenWithPeerCredentials } from './api/grpcListener.js';
import type { PeerReader } from './grpc/caller.js';
import { loadGrpcDefinitions } from './grpc/protos.js';
import { setBeforeReply } from './grpc/rpc.js';
import { RecoveryGate } from './api/recoveryGate.js';
import { sandboxControllerService } from './api/sandboxController.js';
import { taskService } from './api/taskService.js';
import { ensureTaskRelay } from './api/taskRelay.js';
import { serveTtrpc, taskTtrpcSocket, type TtrpcServer, type TtrpcService } from './api/ttrpcServer.js';
import { describeOciRuntime } from './backends/runc/ociRuntime.js';
import { RuncSandboxer } from './backends/runc/runcSandboxer.js';
import { QemuHypervisor } from './backends/vmm/qemu/qemuHypervisor.js';
import { VmmSandboxer } from './backends/vmm/vmmSandboxer.js';
import { WasmSandboxer } from './backends/wasm/wasmSandboxer.js';
import { startLogRotation } from './host/logRotation.js';
import { FifoReaderHolds } from './host/fifoReaderHolds.js';
import { peerCredentialReader } from './host/peerCredentials.js';
import { ensurePrivateDir, restrictSocket, type PrivateDirOutcome } from './host/privateDirs.js';
import { DEFAULT_SOCKET, type DaemonConfig } from './config.js';
import { KTS_VERSION } from './version.js';
import { unavailable } from './core/errors.js';
import type { Sandboxer } from './core/sandboxer.js';
import { PriorityGate, withStartAdmission } from './engine/admission.js';
import { ContainerBundles, rotatableContainerLogs, sweepBundles } from './engine/bundles.js';
import { armCrashPointsFromEnv, crashPoint, withEffectCrashPoints, withNetworkCrashPoints } from './engine/crashPoints.js';
import { openDaemonEngine, type RecoveryReport } from './engine/recovery.js';
import { ImageStore } from './images/imageStore.js';
import { openPodNetworks } from './network/podNetworks.js';
import { withRedaction } from './store/redactingStore.js';
import { openSqliteStore } from './store/sqliteStore.js';
import { openAuditKey } from './audit/auditKey.js';
import { withSealedSnapshots, withUnsealedSnapshots } from './audit/sealedSnapshots.js';
import { startCheckpointWriter, type CheckpointWriter } from './audit/checkpointWriter.js';
import { headFileOf } from './audit/config.js';
import { startRetention } from './audit/retention.js';
import type { EventStore } from './core/store.js';
import { createLogger, type Logger } from './telemetry/logger.js';
import type { DaemonMetrics } from './telemetry/metrics.js';
import type { MetricsAddress } from './telemetry/metricsConfig.js';
import type { MetricsServer } from './telemetry/metricsServer.js';
import { initTracing, shutdownTracing } from './telemetry/tracing.js';

export interface RunningDaemon {
  socketPath: string;
  recovery: RecoveryReport;
  /** Stops serving and releases the store; sandboxes and containers keep running. */
  close(): Promise<void>;
}

/** Wires store, backends, engine and gRPC services together; the only place that knows them all. */
export async function startDaemon(config: DaemonConfig, logger: Logger = createLogger(config.logLevel)): Promise<RunningDaemon> {
  // Everything the daemon (and what it spawns) creates is private unless a mode says otherwise.
  process.umask(0o077);
  const privateDirs = await preparePrivateDirs(config);
  for (const outcome of [privateDirs.root, privateDirs.images, privateDirs.socketDir]) reportPrivateDir(outcome, logger);
  initTracing();
  await refuseIfServed(config.listen);
  // Loaded before anything is served: a daemon that cannot say who called it does not serve.
  const readPeer = peerCredentialReader();
  const metrics = config.metrics.listen ? await loadMetrics(config.db) : undefined;
  const auditKey = openAuditKey(config.audit.keyFile);
  const sqlite = openSqliteStore(config.db);
  // Snapshots sealed beneath redaction: the seal covers the state as stored.
  const sealed = withSealedSnapshots(sqlite, auditKey, (streamId, reason) =>
    logger.error({ stream_id: streamId, reason }, 'a saved snapshot was refused (edited, or not sealed by this daemon\'s key); the stream is replayed from its first event'));
  const opened = withRedaction(sealed, { annotations: config.audit.redactAnnotations, labels: config.audit.redactLabels });
  const store = metrics ? metrics.instrument(opened) : opened;
  const checkpoints = startCheckpointWriter({
    store, key: auditKey, every: config.audit.checkpointEvery, headFile: headFileOf(config.audit.keyFile), logger,
    observe: (checkpoint) => metrics?.recordCheckpoint(checkpoint),
  });
  // Served before recovery so a taken port fails the start before recovery touches the host.
  const metricsServer = metrics && config.metrics.listen ? await startMetricsServer(metrics, config.metrics.listen, logger) : undefined;
  const crashTesting = armCrashPointsFromEnv(process.env);
  if (crashTesting) setBeforeReply((fullMethod) => crashPoint('reply.before', fullMethod));
  if (crashTesting) logger.warn({ crash_at: process.env.KTS_CRASH_AT }, 'TEST ONLY: crash points armed; this daemon will SIGKILL itself');
  // Asked once (`runc --version`): kts info shows it, and each runc pod's SandboxStarted records it.
  const ociRuntime = describeOciRuntime(config.runc.binary);
  const runc = new RuncSandboxer({ rootDir: config.root, runcBinary: config.runc.binary, runcRoot: config.runc.root, ociRuntime, logger });
  const backends: Record<string, Sandboxer> = {
    runc: config.runc.maxConcurrentStarts > 0 ? withStartAdmission(runc, new PriorityGate(config.runc.maxConcurrentStarts)) : runc,
    vmm: new VmmSandboxer({ rootDir: config.root, config: config.hypervisor, hypervisor: new QemuHypervisor(config.hypervisor), logger }),
    wasm: new WasmSandboxer({ rootDir: config.root, logger }),
  };
  const sandboxers = crashTesting ? Object.fromEntries(Object.entries(backends).map(([kind, s]) => [kind, withEffectCrashPoints(s)])) : backends;
  // Made even when CNI is off: pods attached before a restart with `cni = false` are still torn down.
  const podNetworks = await openPodNetworks(config.network, path.join(config.root, 'network'), logger);
  const { engine, recovery: engineRecovery } = openDaemonEngine({
    store, sandboxers, logger, taskAddress: `ttrpc+unix://${taskTtrpcSocket(config.listen)}`, defaultStopTimeoutMs: config.stopTimeoutSeconds * 1000,
    networks: crashTesting ? withNetworkCrashPoints(podNetworks) : podNetworks, runCni: config.network.cni,
    execSpecDir: path.join(config.root, 'exec-specs'), outputHolds: new FifoReaderHolds(),
  });
  engineRecovery.addSweep('bundle', (known) => sweepBundles(store, config.root, known));
  const images = new ImageStore({
    imagesDir: config.images.dir, cacheDir: path.join(config.root, 'image-cache'),
    maxLayerBytes: config.images.maxLayerBytes, maxLayerEntries: config.images.maxLayerEntries,
  });
  const bundles = new ContainerBundles({ engine, images, rootDir: config.root, logger });
  const stopRemovingBundles = bundles.removeWhenDeleted();
  // Served while it recovers: each call is refused with UNAVAILABLE and a retry hint until recovery is done.
  const definitions = loadGrpcDefinitions();
  const server = new Server({ 'grpc.max_receive_message_length': 8 * 1024 * 1024 });
  const gate = new RecoveryGate(RECOVERY_RETRY_AFTER_MS);
  for (const definition of [definitions.sandboxController, definitions.taskV3, definitions.taskV2, definitions.admin]) server.addService(definition, gate.handlersFor(definition));
  const listener = await listenWithPeerCredentials(server, config.listen, readPeer, logger);
  // Bound under umask 077, so it was never open to others; this sets the final mode (and group).
  await restrictSocket(config.listen, config.socketGroup, { socketDirIsOurs: privateDirs.socketDirIsOurs });
  const recoveryStarted = performance.now();
  const recovery = await engineRecovery.recover().catch(async (error: unknown) => {
    await listener.close(async () => server.forceShutdown());
    await rm(config.listen, { force: true });
    throw error;
  });
  metrics?.recordRecovery((performance.now() - recoveryStarted) / 1000, recovery);
  logger.info({ ...recovery, db: config.db }, 'recovered state from the event log');

  const taskServices = [
    { definition: definitions.taskV3, implementation: taskService(engine, logger, 'containerd.task.v3.Task') },
    { definition: definitions.taskV2, implementation: taskService(engine, logger, 'containerd.task.v2.Task') },
  ];
  // The task API over ttrpc listens before any gate opens: a sandbox made through the gRPC API can at once get its tasks.
  const ttrpcServer = await serveTaskTtrpc(config, taskServices, logger, privateDirs.socketDirIsOurs, readPeer);
  gate.open(definitions.sandboxController, sandboxControllerService({ engine, logger, defaultKind: config.defaultSandboxKind, sandboxerKinds: config.sandboxerKinds }));
  for (const task of taskServices) gate.open(task.definition, task.implementation);
  const closing = new AbortController();
  gate.open(definitions.admin, adminService({
    engine, bundles, logger, images, closing: closing.signal, audit: { publicKey: auditKey.publicKey, headFile: headFileOf(config.audit.keyFile), asStored: withUnsealedSnapshots(sqlite) },
    daemonInfo: { version: KTS_VERSION, kinds: Object.keys(sandboxers), defaultKind: config.defaultSandboxKind, config, startedAt: new Date().toISOString(), ociRuntime: await ociRuntime },
  }));
  const logRotation = startLogRotation({
    intervalMs: config.logs.rotateIntervalSeconds * 1000, maxBytes: config.logs.maxBytes,
    files: () => rotatableContainerLogs(engine.store, config.root),
    onError: (file, error) => logger.warn({ file, err: error }, 'rotating a container log failed; the next pass retries'),
  });
  logger.info({ socket: config.listen, root: config.root, kinds: Object.keys(sandboxers) }, 'kts daemon serving');
  const healthTimer = setInterval(() => void engine.checkHealth(), config.hypervisor.healthIntervalSeconds * 1000);
  const stopSweeping = engineRecovery.sweepEvery(config.sweepIntervalSeconds * 1000);
  const { retainDays, retainEvents, archiveDir } = config.audit;
  const stopRetention = startRetention(store, { retainDays, retainEvents }, { archiveDir, signer: auditKey, intervalMs: config.sweepIntervalSeconds * 1000, logger });
  // The last guard of "never die of the host's state": a rejection nothing handled is a bug to log, not a node to take down.
  const keepServing = (reason: unknown) => logger.error({ err: reason }, 'unhandled rejection (a bug: please report it); the daemon keeps serving');
  process.on('unhandledRejection', keepServing);
  const chainCheck = checkChainInSlices(store, logger);

  return {
    socketPath: config.listen,
    recovery,
    async close() {
      clearInterval(healthTimer);
      stopRemovingBundles();
      process.off('unhandledRejection', keepServing);
      await stopSweeping();
      await stopRetention();
      logRotation.stop();
      chainCheck.stop();
      await metricsServer?.close();
      metrics?.close();
      // Open event and log streams end now; a request still running gets the grace period, then its call is cut.
      closing.abort();
      await listener.close(() => shutdownWithin(server, SHUTDOWN_GRACE_MS));
      await ttrpcServer.close();
      await engine.close();
      await Promise.all(Object.values(backends).map((sandboxer) => sandboxer.close()));
      // After the last append: the head the next start (and any auditor) finds is signed.
      checkpointAtShutdown(checkpoints, logger);
      store.close();
      await rm(config.listen, { force: true });
      await shutdownTracing();
    },
  };
}

// Metrics are off by default: only a daemon with `[metrics] listen` set loads prom-client and node:http.
async function loadMetrics(dbPath: string): Promise<DaemonMetrics> {
  const { DaemonMetrics } = await import('./telemetry/metrics.js');
  return new DaemonMetrics({ dbPath });
}

async function startMetricsServer(metrics: DaemonMetrics, address: MetricsAddress, logger: Logger): Promise<MetricsServer> {
  const { serveMetrics } = await import('./telemetry/metricsServer.js');
  return serveMetrics(metrics.registry, address, logger);
}

function checkpointAtShutdown(checkpoints: CheckpointWriter, logger: Logger): void {
  checkpoints.stop();
  try {
    checkpoints.checkpointHead();
  } catch (error) {
    logger.error({ err: error }, 'audit checkpoint at shutdown failed: the newest events are not signed');
  }
}

/** The retry hint (grpc-retry-pushback-ms) of a call refused while the daemon recovers. */
export const RECOVERY_RETRY_AFTER_MS = 250;

/** How long a stopping daemon lets requests in flight finish before it cuts them (README: Stopping the daemon). */
export const SHUTDOWN_GRACE_MS = 5000;

async function shutdownWithin(server: Server, graceMs: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const graceful = new Promise<boolean>((resolve) => server.tryShutdown(() => resolve(true)));
  const late = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), graceMs); });
  if (!(await Promise.race([graceful, late]).finally(() => clearTimeout(timer)))) server.forceShutdown();
}

/**
 * The Task API again, over ttrpc, at the address Start gives containerd (see ttrpcServer.ts for why):
 * served by the daemon itself, or with task_relay by a relay that outlives it (taskRelay.ts) in front
 * of the daemon's own `-direct` socket.
 */
async function serveTaskTtrpc(config: DaemonConfig, taskServices: TtrpcService[], logger: Logger, socketDirIsOurs: boolean, readPeer: PeerReader): Promise<TtrpcServer> {
  const taskSocket = taskTtrpcSocket(config.listen);
  const ownSocket = config.taskRelay ? `${taskSocket}-direct` : taskSocket;
  const server = await serveTtrpc(ownSocket, taskServices, logger, readPeer);
  await restrictSocket(ownSocket, config.socketGroup, { socketDirIsOurs });
  if (!config.taskRelay) return server;
  await ensureTaskRelay({
    listen: taskSocket, upstream: ownSocket, ktsCli: process.argv[1] ?? '', logger,
    pidFile: path.join(config.root, 'task-relay.pid'), logFile: path.join(config.root, 'task-relay.log'),
  });
  await restrictSocket(taskSocket, config.socketGroup, { socketDirIsOurs });
  return server;
}

/**
 * Walks the whole hash chain once after start, a slice per turn of the event loop, so requests are
 * served meanwhile; afterwards a history only re-hashes what was appended since. A break is logged
 * (`kts verify` names it too).
 */
function checkChainInSlices(store: EventStore, logger: Logger): { stop(): void } {
  let stopped = false;
  const slice = () => {
    if (stopped) return;
    const verification = store.verifyChain({ since: 'checkpoint', limit: CHAIN_CHECK_SLICE });
    if (!verification.ok) return void logger.error({ ...verification }, 'the event log\'s hash chain is broken; run kts verify');
    if (verification.eventCount < store.headSequence()) setImmediate(slice);
    else logger.info({ events: verification.eventCount }, 'hash chain verified');
  };
  setImmediate(slice);
  return { stop: () => void (stopped = true) };
}

const CHAIN_CHECK_SLICE = 2000;

/**
 * The state root, the image directory and the socket's directory are private to root (SECURITY.md):
 * created 0700, tightened if looser, refused if a symlink or someone else's. A socket directory that
 * is not ours (e.g. /run itself) is only checked; the socket's own 0600 guards it.
 */
async function preparePrivateDirs(config: DaemonConfig): Promise<{ root: PrivateDirOutcome; images: PrivateDirOutcome; socketDir: PrivateDirOutcome; socketDirIsOurs: boolean }> {
  const root = await ensurePrivateDir(config.root, 'state directory (root)');
  const images = await ensurePrivateDir(config.images.dir, '[images] dir');
  const dir = path.dirname(config.listen);
  const ours = dir === path.dirname(DEFAULT_SOCKET) || isWithin(dir, config.root);
  const socketDir = await ensurePrivateDir(dir, 'socket directory', { tighten: ours });
  // A socket directory under the root is the root: never opened to a group.
  return { root, images, socketDir, socketDirIsOurs: (ours || socketDir.created) && !isWithin(dir, config.root) };
}

function reportPrivateDir(outcome: PrivateDirOutcome, logger: Logger): void {
  if (outcome.tightenedFrom !== undefined) logger.warn({ dir: outcome.dir, mode: outcome.tightenedFrom.toString(8) }, 'tightened a directory other users could read to 0700');
  if (outcome.leftLoose !== undefined) logger.warn({ dir: outcome.dir, mode: outcome.leftLoose.toString(8) }, 'the socket\'s directory is not private to root; the socket itself is not open to others');
}

function isWithin(dir: string, root: string): boolean {
  const relative = path.relative(root, dir);
  return relative === '' || (!relative.startsWith('..') && !path.isAbsolute(relative));
}

/** A live daemon on the socket is an error; a stale socket file from a killed daemon is removed. */
async function refuseIfServed(socketPath: string): Promise<void> {
  const live = await new Promise<boolean>((resolve) => {
    const socket = connect(socketPath);
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
  if (live) throw unavailable(`another daemon is already serving ${socketPath}`);
  await rm(socketPath, { force: true });
}
