/** What the engine needs from a sandbox kind. Implementations live in src/backends/<kind>/. */
import type { KnownIds } from './sweep.js';

/** The sandbox kinds this daemon has a backend for (src/backends/<kind>/). */
export const SANDBOX_KINDS = ['runc', 'vmm', 'wasm'] as const;

/** The Linux options of a CRI PodSandboxConfig that shape a pod's namespaces (checked by src/oci/podLinux.ts). */
export interface PodLinuxOptions {
  /** CRI NamespaceMode NODE: the pod uses the host's network / IPC / pid namespace. */
  hostNetwork?: boolean;
  hostIpc?: boolean;
  hostPid?: boolean;
  /** Namespaced sysctls set in the pod's own network or IPC namespace, by dotted name. */
  sysctls?: Record<string, string>;
  /** The pod's resolver: written as the containers' /etc/resolv.conf. */
  dns?: { servers: string[]; searches: string[]; options: string[] };
}


export interface MountSpec {
  type: string;
  source: string;
  /** Relative to the container's rootfs directory; empty means the rootfs itself. */
  target?: string;
  options: string[];
}

export interface SandboxSpec {
  sandboxId: string;
  name: string;
  namespace: string;
  hostname: string;
  /** A network namespace prepared by someone else (CNI/containerd) to join instead of creating one. */
  netnsPath?: string;
  annotations: Record<string, string>;
  linux?: PodLinuxOptions;
}

export interface StdioPaths {
  /** Each is a host path: a FIFO (containerd) or a regular file (our own log). Absent means /dev/null. */
  stdin?: string;
  stdout?: string;
  stderr?: string;
}

export interface ContainerSpec {
  sandboxId: string;
  containerId: string;
  /** Host directory holding config.json; rootfs is mounted at `<bundleDir>/rootfs`. */
  bundleDir: string;
  rootfsMounts: MountSpec[];
  stdio: StdioPaths;
  /**
   * A regular file (created, 0600) kts keeps the container's stdout and stderr in, CRI's log format
   * (host/criLog.ts), as containerd's CRI keeps `log_path`; stdio.stdout and stdio.stderr are
   * then not given. Each backend writes it with a time a line; a runc container's even while no daemon runs.
   */
  logPath?: string;
}

export interface ProcessExit {
  /** The exit code, or 128 + signal number for a process killed by a signal. */
  exitStatus: number;
  exitedAt: Date;
  /** Why it ended, when the backend knows more than the status says (a wasm trap, a memory cap). */
  reason?: string;
}

export type ContainerRuntimeState = 'created' | 'running' | 'stopped' | 'absent';

export interface ContainerStatus {
  state: ContainerRuntimeState;
  pid?: number;
  /** Present when the exit was recorded (possibly while the daemon was down). */
  exit?: ProcessExit;
}

export interface ContainerStats {
  cpuUsageNanos: number;
  cpuUserNanos: number;
  cpuKernelNanos: number;
  memoryUsageBytes: number;
  memoryLimitBytes: number;
  pidsCurrent: number;
  pidsLimit: number;
  /** CFS bandwidth: periods elapsed, periods throttled, time throttled (absent where the backend cannot tell). */
  cpuPeriods?: number;
  cpuThrottledPeriods?: number;
  cpuThrottledNanos?: number;
  memoryKernelBytes?: number;
  memorySwapBytes?: number;
  /** Processes the kernel's OOM killer ended in the container's memory cgroup. */
  oomKills?: number;
}

/** An OCI runtime-spec Process, as JSON. */
export type OciProcess = Record<string, unknown>;

export interface StartedSandbox {
  /** The sandbox's host process: the namespace holder (runc) or the hypervisor (vmm). */
  pid: number;
  /** What the backend chose or measured (e.g. `hypervisor.accelerator`), recorded on the event and span. */
  details?: Record<string, string | number>;
}

/** Sandboxes and containers the store says exist (not removed / deleted). */
export interface KnownResources {
  sandboxIds: KnownIds;
  containerIds: KnownIds;
}

export interface Sandboxer {
  readonly kind: string;
  /** Its pods live in a network namespace, so the engine may give them one with CNI; absent means they have none (wasm). */
  readonly podNetwork?: boolean;
  /** Its container processes write containerd's stdout/stderr FIFOs themselves (no pump of ours in between): see OutputHolds. */
  readonly containersWriteStdio?: boolean;
  /** Start the sandbox's holder of namespaces (or its VM); resolves once it can take containers. */
  startSandbox(spec: SandboxSpec): Promise<StartedSandbox>;
  /** Kill every container and the holder; idempotent. */
  stopSandbox(sandboxId: string, options: { timeoutMs: number }): Promise<ProcessExit>;
  sandboxStatus(sandboxId: string): Promise<{ alive: boolean; pid?: number }>;
  /** Resolves when the sandbox's holder exits, whether or not this daemon started it. */
  waitSandboxExit(sandboxId: string): Promise<ProcessExit>;
  /** Remove every file, mount and process of the sandbox; idempotent. */
  removeSandbox(sandboxId: string): Promise<void>;

  createContainer(spec: ContainerSpec): Promise<{ pid: number }>;
  startContainer(sandboxId: string, containerId: string): Promise<{ pid: number }>;
  killContainer(sandboxId: string, containerId: string, signal: number, all: boolean): Promise<void>;
  /** Sets the size of an exec's terminal (an exec whose OCI process asked for `terminal`); absent: no terminals. */
  resizeTerminal?(sandboxId: string, containerId: string, execId: string, width: number, height: number): Promise<void>;
  /**
   * Called once a container's init (or, with `execId`, an exec) has exited, before its exit is
   * recorded: kill what it left behind, end the output it was writing.
   */
  processExited?(sandboxId: string, containerId: string, execId?: string): Promise<void>;
  /** runc delete (forced), unmount the rootfs; idempotent. */
  deleteContainer(sandboxId: string, containerId: string): Promise<void>;
  containerStatus(sandboxId: string, containerId: string): Promise<ContainerStatus>;
  execProcess(sandboxId: string, containerId: string, execId: string, process: OciProcess, stdio: StdioPaths): Promise<{ pid: number }>;
  /**
   * The pid of an exec whose start the daemon did not live to record, if its process was started
   * (running or since exited); undefined if it never was. Optional: without it, recovery records
   * such a start as failed.
   */
  startedExecPid?(sandboxId: string, containerId: string, execId: string): Promise<number | undefined>;
  /**
   * Signals one exec process. Optional: without it the engine signals the exec's pid on the host,
   * which is right only for a backend whose pids are host pids (runc).
   */
  killExec?(sandboxId: string, containerId: string, execId: string, signal: number, pid: number): Promise<void>;
  /**
   * Task CloseIO: ends the stdin of a container (or of an exec) once what was written is delivered.
   * Optional: where the process reads containerd's FIFO itself (runc), the FIFO's writer closing is the end.
   */
  closeStdin?(sandboxId: string, containerId: string, execId?: string): Promise<void>;
  /** Resolves with the exit of a container init or exec process of this sandbox, also one that exited while the daemon was down. */
  waitProcessExit(sandboxId: string, pid: number): Promise<ProcessExit>;
  pids(sandboxId: string, containerId: string): Promise<number[]>;
  stats(sandboxId: string, containerId: string): Promise<ContainerStats>;
  /**
   * Removes what this backend finds on the host that belongs to no known sandbox or container (a
   * directory, process, VM or runc container left by a crash or a lost database); returns one line
   * per thing removed, for the record.
   */
  sweepOrphans(known: KnownResources): Promise<string[]>;
  /**
   * Optional deeper check than process liveness (a VM whose guest stopped answering): undefined
   * when healthy, else why not. The engine polls it for ready sandboxes.
   */
  healthCheck?(sandboxId: string): Promise<string | undefined>;
  /** Stop watchers and timers; leaves sandboxes running. */
  close(): Promise<void>;
}

/**
 * Keeps a reader open on a container's stdout/stderr FIFOs while it runs, as containerd's own shim
 * does: a container writing into a FIFO whose reader (containerd) is restarting would otherwise get
 * SIGPIPE and die. Guarantee: held from create, or from recovery's reattach, until the exit is
 * recorded; lost with the daemon and taken again by the next daemon's recovery (a container that
 * writes while both are down still gets SIGPIPE).
 */
export interface OutputHolds {
  /** Opens a reader on each path that is a FIFO (others are ignored); idempotent per container. */
  hold(containerId: string, paths: string[]): Promise<void>;
  release(containerId: string): void;
  releaseAll(): void;
}
