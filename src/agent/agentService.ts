import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';
import { Metadata, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { unary } from '../grpc/rpc.js';
import { FileToFifoPump } from '../agentProtocol/fifoPump.js';
import { GUEST_SHARE_DIR, STDIN_END_MARKER } from '../agentProtocol/sharePaths.js';
import { alreadyExists, errorMessage, failedPrecondition, invalidArgument } from '../core/errors.js';
import { validateId } from '../core/ids.js';
import type { ContainerStatus, OciProcess, ProcessExit, Sandboxer, StdioPaths } from '../core/sandboxer.js';
import { isObject, isStringArray } from '../oci/json.js';
import { holderNamespaces, validateOciSpec, type OciNamespace, type OciSpec } from '../oci/containerSpec.js';
import { encodeSpans, GUEST_SPANS_TRAILER, type GuestSpanCollector } from '../telemetry/guestSpans.js';
import type { Logger } from '../telemetry/logger.js';
import {
  AGENT_SERVICE,
  type CheckResponse,
  type ConfigureNetworkRequest,
  type ContainerRequest,
  type ContainerStatusResponse,
  type CreateContainerRequest,
  type Empty,
  type ExecRequest,
  type ExitResponse,
  type KillProcessRequest,
  type KillRequest,
  type PidResponse,
  type PidsResponse,
  type StartPodRequest,
  type StatsResponse,
  type StopPodRequest,
  type ExecIdRequest,
  type WaitRequest,
  type WireStdio,
} from '../agentProtocol/agentProto.js';
import { applyGuestNetwork, validateGuestNetwork, type GuestNetwork } from './guestNetwork.js';

export interface AgentServiceOptions {
  logger: Logger;
  agentVersion: string;
  /** The OCI runtime containers run with, as Check reports it ("crun 1.8.1"). */
  ociRuntime?: () => string;
  /** The newest runtime-spec version the runtime takes (crun 1.8 refuses containerd 2.4's "1.2.1"); none: any. */
  ociVersionCeiling?: string;
  /** Guest-local directory for each container's rewritten config.json (`<bundlesDir>/<containerId>/`). */
  bundlesDir: string;
  /** Guest-local FIFOs feeding containers' stdin from the share (`<stdinDir>/<containerId>/`); default beside bundlesDir. */
  stdinDir?: string;
  /** Every path the host hands over must lie below this (the 9p share). */
  shareDir?: string;
  /**
   * The pod shares the guest's network namespace (the VM is the network boundary). Default: this
   * agent's own, which guest/init leaves in the root one; /proc/1's may be unreadable where the
   * agent runs outside a VM.
   */
  podNetnsPath?: string;
  /** Spans finished in the guest, sent back in each call's trailer (see src/telemetry/guestSpans.ts). */
  spans?: GuestSpanCollector;
  defaultStopTimeoutMs?: number;
  /** Applies a validated network to the guest; default: busybox `ip` on the VM's NICs (a test passes its own). */
  applyNetwork?: (network: GuestNetwork) => Promise<void>;
}

const MAX_CONFIG_BYTES = 1024 * 1024;
const MAX_PROCESS_JSON_BYTES = 1024 * 1024;
const MAX_PATH_CHARS = 1024;
/** The kernel's PID_MAX_LIMIT on 64-bit. */
const MAX_PID = 4_194_304;
/** Linux's PID_MAX_LIMIT. */
const MAX_GUEST_PID = 4_194_304;
const MAX_SIGNAL = 64;
const MAX_STOP_TIMEOUT_MS = 10 * 60_000;
const HOSTNAME_PATTERN = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/;

interface Pod {
  sandboxId: string;
  holderPid: number;
}

function spansTrailer(collector: GuestSpanCollector | undefined, traceId: string): Metadata | undefined {
  const spans = collector?.take(traceId) ?? [];
  if (spans.length === 0) return undefined;
  const trailer = new Metadata();
  trailer.set(GUEST_SPANS_TRAILER, encodeSpans(spans));
  return trailer;
}

/** kts.agent.v1.Agent over one Sandboxer (runc inside the guest) that holds the VM's single pod. */
export function agentService(sandboxer: Sandboxer, options: AgentServiceOptions): UntypedServiceImplementation {
  const agent = new GuestPodAgent(sandboxer, options);
  const rpc = <Req, Res>(method: string, handler: (request: Req) => Promise<Res>) =>
    unary<Req, Res>(`${AGENT_SERVICE}/${method}`, options.logger, (request) => handler(request), { trailer: (traceId) => spansTrailer(options.spans, traceId) });
  return {
    Check: rpc<Empty, CheckResponse>('Check', () => agent.check()),
    StartPod: rpc<StartPodRequest, PidResponse>('StartPod', (request) => agent.startPod(request)),
    CreateContainer: rpc<CreateContainerRequest, PidResponse>('CreateContainer', (request) => agent.createContainer(request)),
    StartContainer: rpc<ContainerRequest, PidResponse>('StartContainer', (request) => agent.startContainer(request)),
    KillContainer: rpc<KillRequest, Empty>('KillContainer', (request) => agent.killContainer(request)),
    KillProcess: rpc<KillProcessRequest, Empty>('KillProcess', (request) => agent.killProcess(request)),
    DeleteContainer: rpc<ContainerRequest, Empty>('DeleteContainer', (request) => agent.deleteContainer(request)),
    ContainerStatus: rpc<ContainerRequest, ContainerStatusResponse>('ContainerStatus', (request) => agent.containerStatus(request)),
    ExecProcess: rpc<ExecRequest, PidResponse>('ExecProcess', (request) => agent.execProcess(request)),
    StartedExecPid: rpc<ExecIdRequest, PidResponse>('StartedExecPid', (request) => agent.startedExecPid(request)),
    WaitProcess: rpc<WaitRequest, ExitResponse>('WaitProcess', (request) => agent.waitProcess(request)),
    Pids: rpc<ContainerRequest, PidsResponse>('Pids', (request) => agent.pids(request)),
    Stats: rpc<ContainerRequest, StatsResponse>('Stats', (request) => agent.stats(request)),
    StopPod: rpc<StopPodRequest, ExitResponse>('StopPod', (request) => agent.stopPod(request)),
    ConfigureNetwork: rpc<ConfigureNetworkRequest, Empty>('ConfigureNetwork', (request) => agent.configureNetwork(request)),
  };
}

class GuestPodAgent {
  private pod: Pod | undefined;
  private startingPodId: string | undefined;
  private networkConfigured = false;
  private readonly shareDir: string;

  constructor(
    private readonly sandboxer: Sandboxer,
    private readonly options: AgentServiceOptions,
  ) {
    this.shareDir = options.shareDir ?? GUEST_SHARE_DIR;
  }

  async check(): Promise<CheckResponse> {
    const pod = this.pod;
    const alive = pod ? (await this.sandboxer.sandboxStatus(pod.sandboxId)).alive : false;
    return {
      uptimeSeconds: await readUptimeSeconds(),
      agentVersion: this.options.agentVersion,
      podPid: pod?.holderPid ?? 0,
      sandboxId: pod?.sandboxId ?? '',
      podAlive: alive,
      ociRuntime: this.options.ociRuntime?.() ?? '',
      jitless: process.execArgv.includes('--jitless'),
    };
  }

  async startPod(request: StartPodRequest): Promise<PidResponse> {
    const sandboxId = validateId('sandbox id', request.sandboxId);
    const hostname = validateHostname(request.hostname, sandboxId);
    const current = this.pod?.sandboxId ?? this.startingPodId;
    if (current !== undefined && current !== sandboxId) throw failedPrecondition(`this guest already runs pod ${current}`);
    this.startingPodId = sandboxId;
    try {
      const { pid } = await this.sandboxer.startSandbox({
        sandboxId, name: sandboxId, namespace: '', hostname, annotations: {}, netnsPath: this.options.podNetnsPath ?? `/proc/${process.pid}/ns/net`,
      });
      this.pod = { sandboxId, holderPid: pid };
      return { pid };
    } finally {
      this.startingPodId = undefined;
    }
  }

  /** Once per guest, failed or not: a second attempt would meet the first one's addresses. */
  async configureNetwork(request: ConfigureNetworkRequest): Promise<Empty> {
    const network = validateGuestNetwork(request);
    if (this.networkConfigured) throw failedPrecondition('the guest network was configured already');
    this.networkConfigured = true;
    await (this.options.applyNetwork ?? applyGuestNetwork)(network);
    return {};
  }

  async createContainer(request: CreateContainerRequest): Promise<PidResponse> {
    const pod = this.requirePod();
    const containerId = validateId('container id', request.containerId);
    const bundle = this.sharePath('bundle', request.bundle);
    const stdio = await this.stdioPaths(request.stdio, containerId, 'init');
    const spec = guestContainerConfig(await readBundleConfig(bundle), pod.holderPid, bundle, this.shareDir, this.options.ociVersionCeiling);
    const localBundle = await this.writeLocalBundle(containerId, spec);
    try {
      return await this.sandboxer.createContainer({ sandboxId: pod.sandboxId, containerId, bundleDir: localBundle, rootfsMounts: [], stdio });
    } catch (error) {
      await rm(localBundle, { recursive: true, force: true });
      throw error;
    }
  }

  /** config.json is written guest-side rather than into the host's share, with root.path pointing back into the share. */
  private async writeLocalBundle(containerId: string, spec: OciSpec): Promise<string> {
    const localBundle = path.join(this.options.bundlesDir, containerId);
    await mkdir(this.options.bundlesDir, { recursive: true });
    await mkdir(localBundle).catch((error: NodeJS.ErrnoException) => {
      throw error.code === 'EEXIST' ? alreadyExists(`container ${containerId} already exists`) : error;
    });
    await writeFile(path.join(localBundle, 'config.json'), JSON.stringify(spec));
    return localBundle;
  }

  async startContainer(request: ContainerRequest): Promise<PidResponse> {
    return this.sandboxer.startContainer(this.requirePod().sandboxId, validateId('container id', request.containerId));
  }

  async killContainer(request: KillRequest): Promise<Empty> {
    const sandboxId = this.requirePod().sandboxId;
    if (!Number.isInteger(request.signal) || request.signal < 1 || request.signal > MAX_SIGNAL) {
      throw invalidArgument(`signal ${request.signal} must be 1-${MAX_SIGNAL}`);
    }
    await this.sandboxer.killContainer(sandboxId, validateId('container id', request.containerId), request.signal, request.all === true);
    return {};
  }

  /** An exec of the pod by its guest pid; a process already gone is not an error. */
  async killProcess(request: KillProcessRequest): Promise<Empty> {
    this.requirePod();
    if (!Number.isInteger(request.signal) || request.signal < 1 || request.signal > MAX_SIGNAL) throw invalidArgument(`signal ${request.signal} must be 1-${MAX_SIGNAL}`);
    if (!Number.isInteger(request.pid) || request.pid < 2 || request.pid > MAX_GUEST_PID) throw invalidArgument(`pid ${request.pid} must be 2-${MAX_GUEST_PID}`);
    try {
      process.kill(request.pid, request.signal);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
    return {};
  }

  async deleteContainer(request: ContainerRequest): Promise<Empty> {
    const containerId = validateId('container id', request.containerId);
    await this.sandboxer.deleteContainer(this.requirePod().sandboxId, containerId);
    await rm(path.join(this.options.bundlesDir, containerId), { recursive: true, force: true });
    await Promise.all([...this.stdinPumps].filter(([key]) => key.startsWith(`${containerId}/`)).map(([, pump]) => pump.stop()));
    await rm(path.join(this.stdinDir, containerId), { recursive: true, force: true });
    return {};
  }

  async containerStatus(request: ContainerRequest): Promise<ContainerStatusResponse> {
    return statusMessage(await this.sandboxer.containerStatus(this.requirePod().sandboxId, validateId('container id', request.containerId)));
  }

  async execProcess(request: ExecRequest): Promise<PidResponse> {
    const sandboxId = this.requirePod().sandboxId;
    const containerId = validateId('container id', request.containerId);
    const execId = validateId('exec id', request.execId);
    const process = parseProcess(request.processJson);
    return this.sandboxer.execProcess(sandboxId, containerId, execId, process, await this.stdioPaths(request.stdio, containerId, `exec-${execId}`));
  }

  /** For a daemon that did not live to record an exec start: 0 when its process was never started. */
  async startedExecPid(request: ExecIdRequest): Promise<PidResponse> {
    const sandboxId = this.requirePod().sandboxId;
    const containerId = validateId('container id', request.containerId);
    const execId = validateId('exec id', request.execId);
    return { pid: (await this.sandboxer.startedExecPid?.(sandboxId, containerId, execId)) ?? 0 };
  }

  async waitProcess(request: WaitRequest): Promise<ExitResponse> {
    const sandboxId = this.requirePod().sandboxId;
    if (!Number.isInteger(request.pid) || request.pid < 1 || request.pid > MAX_PID) throw invalidArgument(`pid ${request.pid} is not a process id`);
    return exitMessage(await this.sandboxer.waitProcessExit(sandboxId, request.pid));
  }

  async pids(request: ContainerRequest): Promise<PidsResponse> {
    return { pids: await this.sandboxer.pids(this.requirePod().sandboxId, validateId('container id', request.containerId)) };
  }

  async stats(request: ContainerRequest): Promise<StatsResponse> {
    return { ...(await this.sandboxer.stats(this.requirePod().sandboxId, validateId('container id', request.containerId))) };
  }

  async stopPod(request: StopPodRequest): Promise<ExitResponse> {
    const sandboxId = this.requirePod().sandboxId;
    const requested = request.timeoutMs;
    if (!Number.isInteger(requested) || requested < 0 || requested > MAX_STOP_TIMEOUT_MS) {
      throw invalidArgument(`timeout ${requested} ms must be 0-${MAX_STOP_TIMEOUT_MS} (0: the agent's default)`);
    }
    const timeoutMs = requested === 0 ? this.options.defaultStopTimeoutMs ?? 10_000 : requested;
    return exitMessage(await this.sandboxer.stopSandbox(sandboxId, { timeoutMs }));
  }

  private requirePod(): Pod {
    if (!this.pod) throw failedPrecondition('no pod has been started in this guest (StartPod first)');
    return this.pod;
  }

  /** A guest path the host named: normalized, absolute, below the share. */
  private sharePath(what: string, value: unknown): string {
    if (typeof value !== 'string' || value === '') throw invalidArgument(`${what} must not be empty`);
    const shown = JSON.stringify(value.slice(0, 80));
    if (value.length > MAX_PATH_CHARS || /[\0\t\n]/.test(value)) throw invalidArgument(`${what} ${shown} must be at most ${MAX_PATH_CHARS} characters without tab, newline or NUL`);
    if (!path.posix.isAbsolute(value) || path.posix.normalize(value) !== value) throw invalidArgument(`${what} ${shown} must be a normalized absolute path`);
    if (!value.startsWith(`${this.shareDir}/`)) throw invalidArgument(`${what} ${shown} must be below ${this.shareDir}`);
    return value;
  }

  private async stdioPaths(stdio: WireStdio | null | undefined, containerId: string, processName: string): Promise<StdioPaths> {
    const paths: StdioPaths = {};
    for (const stream of ['stdin', 'stdout', 'stderr'] as const) {
      const value = stdio?.[stream];
      if (value) paths[stream] = this.sharePath(stream, value);
    }
    if (paths.stdin) paths.stdin = await this.stdinFifo(paths.stdin, containerId, processName);
    return paths;
  }

  /** Keyed `<containerId>/<init | exec-<execId>>`: the pumps feeding containers' stdin. */
  private readonly stdinPumps = new Map<string, FileToFifoPump>();

  private get stdinDir(): string {
    return this.options.stdinDir ?? path.join(path.dirname(this.options.bundlesDir), 'stdin');
  }

  /**
   * The host appends a process's stdin to a file in the share (and creates STDIN_END_MARKER beside it
   * when it ends); the process reads a guest FIFO that a pump feeds from that file, so it blocks for
   * more input and sees end of file when the host's stdin ends.
   */
  private async stdinFifo(shareStdin: string, containerId: string, processName: string): Promise<string> {
    const key = `${containerId}/${processName}`;
    if (this.stdinPumps.has(key)) throw alreadyExists(`${key} already has a stdin`);
    const fifo = path.join(this.stdinDir, containerId, processName);
    await mkdir(path.dirname(fifo), { recursive: true });
    await rm(fifo, { force: true });
    await promisify(execFile)('mkfifo', ['-m', '600', fifo]);
    const pump = new FileToFifoPump(shareStdin, fifo, { endMarker: path.join(path.dirname(shareStdin), STDIN_END_MARKER) });
    this.stdinPumps.set(key, pump);
    void pump.done.finally(() => this.stdinPumps.get(key) === pump && this.stdinPumps.delete(key));
    return fifo;
  }
}

function validateHostname(hostname: unknown, sandboxId: string): string {
  if (hostname === undefined || hostname === '') return sandboxId.slice(0, 63).replace(/[^A-Za-z0-9.-]/g, '-');
  if (typeof hostname !== 'string' || !HOSTNAME_PATTERN.test(hostname)) {
    throw invalidArgument(`hostname ${JSON.stringify(String(hostname).slice(0, 80))} must be 1-63 characters of [A-Za-z0-9.-], starting with a letter or digit`);
  }
  return hostname;
}

async function readUptimeSeconds(): Promise<number> {
  const seconds = Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]);
  return Number.isFinite(seconds) ? seconds : 0;
}

async function readBundleConfig(bundle: string): Promise<OciSpec> {
  const file = path.join(bundle, 'config.json');
  const info = await stat(file).catch((error: NodeJS.ErrnoException) => {
    throw invalidArgument(`bundle ${bundle} has no config.json (${error.code ?? errorMessage(error)})`);
  });
  if (!info.isFile() || info.size > MAX_CONFIG_BYTES) throw invalidArgument(`${file} must be a regular file of at most ${MAX_CONFIG_BYTES} bytes`);
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    throw invalidArgument(`${file} is not JSON: ${errorMessage(error)}`);
  }
  return validateOciSpec(json, file);
}

/**
 * The host's config.json made to run inside this guest: the container joins the pod holder's
 * pid/net/ipc/uts namespaces with a mount namespace of its own; other namespaces lose any host
 * path (it means nothing here); the rootfs is the share's `<bundle>/rootfs` by absolute path.
 */
export function guestContainerConfig(spec: OciSpec, holderPid: number, bundle: string, shareDir: string, ociVersionCeiling?: string): OciSpec {
  const rootPath = path.posix.resolve(bundle, spec.root.path);
  if (!rootPath.startsWith(`${shareDir}/`)) throw invalidArgument(`root.path ${JSON.stringify(spec.root.path)} leaves ${shareDir}`);
  const linux = spec.linux ?? {};
  const config = { ...spec, root: { ...spec.root, path: rootPath }, linux: { ...linux, namespaces: podNamespaces(linux.namespaces, holderPid) } };
  if (!ociVersionCeiling || !newerMinor(spec.ociVersion, ociVersionCeiling)) return config;
  // Labelled down so the runtime takes it; what it does not know of the newer spec it leaves out
  // (the VM, not the runtime, is the boundary to the host). The version asked for stays on record.
  return { ...config, ociVersion: ociVersionCeiling, annotations: { ...spec.annotations, [REQUESTED_OCI_VERSION]: String(spec.ociVersion) } };
}

export const REQUESTED_OCI_VERSION = 'io.kuasar-ts.requested-oci-version';

/** Whether `version`'s major.minor is past `ceiling`'s ("1.2.1" past "1.1.0"); a version that does not parse is left as it is. */
function newerMinor(version: unknown, ceiling: string): boolean {
  const parse = (text: unknown) => (typeof text === 'string' ? /^(\d+)\.(\d+)/.exec(text)?.slice(1).map(Number) : undefined);
  const [asked, most] = [parse(version), parse(ceiling)];
  if (!asked || !most) return false;
  return asked[0]! > most[0]! || (asked[0] === most[0] && asked[1]! > most[1]!);
}

function podNamespaces(requested: unknown, holderPid: number): OciNamespace[] {
  if (requested !== undefined && !(Array.isArray(requested) && requested.every((entry) => isObject(entry) && typeof entry.type === 'string'))) {
    throw invalidArgument('linux.namespaces must be an array of {type, path?}');
  }
  const joined = holderNamespaces(holderPid);
  const handled = new Set<string>(joined.map((entry) => entry.type));
  const others = ((requested ?? []) as OciNamespace[]).filter((entry) => !handled.has(entry.type)).map((entry): OciNamespace => ({ type: entry.type }));
  return [...joined, ...others];
}

function parseProcess(processJson: unknown): OciProcess {
  if (typeof processJson !== 'string' || processJson === '') throw invalidArgument('process_json must not be empty');
  if (Buffer.byteLength(processJson) > MAX_PROCESS_JSON_BYTES) throw invalidArgument(`process_json exceeds ${MAX_PROCESS_JSON_BYTES} bytes`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(processJson);
  } catch (error) {
    throw invalidArgument(`process_json is not JSON: ${errorMessage(error)}`);
  }
  if (!isObject(parsed)) throw invalidArgument('process_json must be an OCI Process object');
  if (!isStringArray(parsed.args) || parsed.args.length === 0) throw invalidArgument('process_json: args must be a non-empty array of strings');
  return parsed;
}

function statusMessage(status: ContainerStatus): ContainerStatusResponse {
  return {
    state: status.state,
    pid: status.pid ?? 0,
    exited: status.exit !== undefined,
    exitStatus: status.exit?.exitStatus ?? 0,
    exitedAtMs: status.exit?.exitedAt.getTime() ?? 0,
  };
}

function exitMessage(exit: ProcessExit): ExitResponse {
  return { exitStatus: exit.exitStatus, exitedAtMs: exit.exitedAt.getTime() };
}
