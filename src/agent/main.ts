// The microVM guest's task agent. scripts/build-agent.sh bundles it into dist/agent/main.mjs, next
// to agent.proto, kts-sandbox-init and runc (crun, where the guest image has it, is preferred); guest/init runs it as /kts/agent/main.mjs with
// KTS_AGENT_PORT set to the virtio-serial port named kts.agent.
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { chooseOciRuntime, describeOciRuntime, type ChosenOciRuntime } from '../backends/runc/ociRuntime.js';
import { RuncSandboxer } from '../backends/runc/runcSandboxer.js';
import { GUEST_SHARE_DIR } from '../agentProtocol/sharePaths.js';
import { errorMessage } from '../core/errors.js';
import { createLogger, type Logger } from '../telemetry/logger.js';
import { GuestSpanCollector } from '../telemetry/guestSpans.js';
import { initTracing, shutdownTracing } from '../telemetry/tracing.js';
import { loadAgentDefinition } from '../agentProtocol/agentProto.js';
import { agentService } from './agentService.js';
import { findVirtioPort, PortBridge } from './portBridge.js';

const AGENT_PORT_NAME = 'kts.agent';
/** Debian 12's crun (1.8.1) takes runtime-spec 1.0 and 1.1 and refuses "1.2.x", which containerd 2.4 writes. */
const CRUN_OCI_VERSION_CEILING = '1.1.0';
/** Requests come from the host daemon, which bounds its own; this only stops a runaway. */
const MAX_REQUEST_BYTES = 4 * 1024 * 1024;

interface AgentConfig {
  /** Absent: found by name under /sys/class/virtio-ports. */
  portPath: string | undefined;
  agentSocket: string;
  rootDir: string;
  runcRoot: string;
  shareDir: string;
  initBinary: string;
  ociRuntime: ChosenOciRuntime;
  protoFile: string;
  version: string;
}

/** Guest defaults; the KTS_* overrides let the same bundle run on a host for testing. */
function agentConfig(env: NodeJS.ProcessEnv): AgentConfig {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const bundledRunc = path.join(here, 'runc');
  return {
    portPath: env.KTS_AGENT_PORT || undefined,
    agentSocket: env.KTS_AGENT_SOCKET ?? '/run/kts/agent.sock',
    rootDir: env.KTS_AGENT_ROOT ?? '/run/kts/agent',
    runcRoot: env.KTS_RUNC_ROOT ?? '/run/runc',
    shareDir: env.KTS_SHARE_DIR ?? GUEST_SHARE_DIR,
    initBinary: path.join(here, 'kts-sandbox-init'),
    // guest/init passes the host's [hypervisor] guest_oci_runtime (kts.oci_runtime= on the kernel command line).
    ociRuntime: chooseOciRuntime(env.KTS_OCI_RUNTIME, { crun: env.KTS_CRUN_BINARY ?? '/usr/bin/crun', runc: existsSync(bundledRunc) ? bundledRunc : 'runc' }),
    protoFile: path.join(here, 'agent.proto'),
    // Replaced at bundle time (esbuild --define); "dev" when run unbundled.
    version: process.env.KTS_AGENT_VERSION ?? 'dev',
  };
}

async function serve(config: AgentConfig, server: Server): Promise<void> {
  await mkdir(path.dirname(config.agentSocket), { recursive: true });
  await rm(config.agentSocket, { force: true });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix:${config.agentSocket}`, ServerCredentials.createInsecure(), (error) => (error ? reject(error) : resolve())),
  );
}

async function main(): Promise<void> {
  // The port read holds a libuv pool thread while a host is connected; keep room for runc's file work.
  process.env.UV_THREADPOOL_SIZE ??= '8';
  const spans = new GuestSpanCollector();
  initTracing('kts-agent', [spans]);
  const logger = createLogger().child({ component: 'agent' });
  const config = agentConfig(process.env);
  const { ociRuntime } = config;
  if (ociRuntime.fallback) logger.warn({ oci_runtime: ociRuntime.name, reason: ociRuntime.fallback }, 'running containers with runc');
  // Reported by Check once known: `runc --version` alone takes a second under TCG, so it is not awaited.
  let ociRuntimeDescribed: string = ociRuntime.name;
  void describeOciRuntime(ociRuntime.binary).then((described) => (ociRuntimeDescribed = described));
  const sandboxer = new RuncSandboxer({
    rootDir: config.rootDir, runcRoot: config.runcRoot, initBinary: config.initBinary, runcBinary: ociRuntime.binary, logger,
  });
  const server = new Server({ 'grpc.max_receive_message_length': MAX_REQUEST_BYTES });
  server.addService(loadAgentDefinition(config.protoFile), agentService(sandboxer, {
    logger, agentVersion: config.version, ociRuntime: () => ociRuntimeDescribed, ociVersionCeiling: ociRuntime.name === 'crun' ? CRUN_OCI_VERSION_CEILING : undefined, shareDir: config.shareDir, bundlesDir: path.join(config.rootDir, 'bundles'), spans,
  }));
  await serve(config, server);
  const portPath = config.portPath ?? (await findVirtioPort(AGENT_PORT_NAME));
  const bridge = new PortBridge({ portPath, agentSocket: config.agentSocket, logger });
  logger.info({ version: config.version, port: portPath, socket: config.agentSocket, oci_runtime: ociRuntime.binary }, 'kts agent serving');
  stopOnSignals(logger, async () => {
    await bridge.close();
    server.forceShutdown();
    await sandboxer.close();
    await rm(config.agentSocket, { force: true });
    await shutdownTracing();
  });
}

/** Stops serving on SIGTERM/SIGINT; pods keep running (in a guest, the VM ends them). */
function stopOnSignals(logger: Logger, stop: () => Promise<void>): void {
  const onSignal = (signal: NodeJS.Signals) => {
    logger.info({ signal }, 'kts agent stopping');
    stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ error: errorMessage(error) }, 'kts agent stopped uncleanly');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
}

main().catch((error: unknown) => {
  process.stderr.write(`kts agent: ${errorMessage(error)}\n`);
  process.exit(1);
});
