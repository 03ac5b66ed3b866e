/**
 * The life of one sandbox as a pure state machine. Its events are the domain events stored in the
 * sandbox's stream: the engine asks `snapshot.can(event)` before appending one, then sends it;
 * replaying a stream is sending its events in order to a fresh actor. No I/O here.
 */
import { assertEvent, assign, setup } from 'xstate';
import type { PodNetworkStatus } from '../src/core/podNetwork.js';
import type { PodLinuxOptions } from '../src/core/sandboxer.js';

/** A network namespace kts made for the pod and the CNI network attached in it. */
export interface SandboxNetwork {
  netnsPath: string;
  /** The CNI network's name (its config's `name`). */
  network: string;
  /** CNI_IFNAME: the pod's interface, e.g. eth0. */
  interfaceName: string;
  /** Null between the intent and CNI ADD's result. */
  status: PodNetworkStatus | null;
}

export type SandboxEvent =
  | {
      type: 'SandboxCreated';
      sandboxId: string;
      kind: string;
      name: string;
      namespace: string;
      uid: string;
      /** CRI's metadata.attempt (absent: 0). */
      attempt?: number;
      hostname: string;
      netnsPath?: string;
      annotations: Record<string, string>;
      labels: Record<string, string>;
      logDirectory?: string;
      /** Host namespaces, sysctls and resolver asked for by CRI's PodSandboxConfig (absent: none). */
      linux?: PodLinuxOptions;
      /** ISO-8601 UTC. */
      createdAt: string;
    }
  | { type: 'SandboxStartRequested' }
  /** Write-ahead: kts is about to make this netns and run CNI ADD in it; recovery tears down what it finds. */
  | { type: 'SandboxNetworkRequested'; netnsPath: string; network: string; interfaceName: string }
  | { type: 'SandboxNetworkConfigured'; status: PodNetworkStatus }
  | {
      type: 'SandboxStarted';
      pid: number;
      taskAddress: string;
      startedAt: string;
      /** What the backend chose or measured, e.g. `hypervisor.accelerator`. */
      backend?: Record<string, string | number>;
    }
  | { type: 'SandboxUnhealthy'; reason: string }
  | { type: 'SandboxHealthy' }
  | { type: 'SandboxStartFailed'; reason: string }
  | {
      type: 'SandboxUpdated';
      annotations?: Record<string, string>;
      labels?: Record<string, string>;
      resources?: Record<string, unknown>;
    }
  | { type: 'SandboxReattached'; pid: number }
  | { type: 'SandboxExited'; exitStatus: number; exitedAt: string }
  | { type: 'SandboxStopRequested'; timeoutMs: number }
  | { type: 'SandboxStopped'; exitStatus: number; exitedAt: string }
  | { type: 'SandboxStopFailed'; reason: string }
  | { type: 'SandboxShutdownRequested' }
  | { type: 'SandboxRemoved' }
  | { type: 'SandboxShutdownFailed'; reason: string };

export type SandboxEventType = SandboxEvent['type'];

// A mapped object rather than a bare array so that adding an event type without listing it fails to compile.
const sandboxEventTypeSet: { [K in SandboxEventType]: true } = {
  SandboxCreated: true,
  SandboxStartRequested: true,
  SandboxNetworkRequested: true,
  SandboxNetworkConfigured: true,
  SandboxStarted: true,
  SandboxStartFailed: true,
  SandboxUnhealthy: true,
  SandboxHealthy: true,
  SandboxUpdated: true,
  SandboxReattached: true,
  SandboxExited: true,
  SandboxStopRequested: true,
  SandboxStopped: true,
  SandboxStopFailed: true,
  SandboxShutdownRequested: true,
  SandboxRemoved: true,
  SandboxShutdownFailed: true,
};

export const SANDBOX_EVENT_TYPES = Object.keys(sandboxEventTypeSet) as readonly SandboxEventType[];

export const SANDBOX_STATES = [
  'absent',
  'created',
  'starting',
  'ready',
  'unhealthy',
  'failed',
  'stopping',
  'stopped',
  'shuttingDown',
  'removed',
] as const;

export type SandboxStateValue = (typeof SANDBOX_STATES)[number];

export interface SandboxContext {
  /** Empty until `SandboxCreated`; likewise kind, name, namespace, uid, hostname and createdAt. */
  sandboxId: string;
  kind: string;
  name: string;
  namespace: string;
  uid: string;
  attempt: number;
  hostname: string;
  /** A netns given at creation (containerd's netns_path); null when kts makes one or the backend does. */
  netnsPath: string | null;
  /** The netns kts made for the pod and its CNI result; null when CNI did not run for it. */
  network: SandboxNetwork | null;
  annotations: Record<string, string>;
  labels: Record<string, string>;
  logDirectory: string | null;
  linux: PodLinuxOptions | null;
  createdAt: string;
  /** What the backend chose or measured at start (SandboxStarted's `backend`), e.g. the VM's guest interfaces. */
  backend: Record<string, string | number>;
  /** The process holding the sandbox's namespaces (hypervisor or sandbox init); kept after it exits. */
  pid: number | null;
  taskAddress: string | null;
  startedAt: string | null;
  exitStatus: number | null;
  exitedAt: string | null;
  lastError: string | null;
  resources: Record<string, unknown>;
}

const initialSandboxContext: SandboxContext = {
  sandboxId: '',
  kind: '',
  name: '',
  namespace: '',
  uid: '',
  attempt: 0,
  hostname: '',
  netnsPath: null,
  network: null,
  annotations: {},
  labels: {},
  logDirectory: null,
  linux: null,
  createdAt: '',
  backend: {},
  pid: null,
  taskAddress: null,
  startedAt: null,
  exitStatus: null,
  exitedAt: null,
  lastError: null,
  resources: {},
};

export const sandboxMachine = setup({
  types: {
    context: {} as SandboxContext,
    events: {} as SandboxEvent,
  },
  actions: {
    recordCreation: assign(({ event }) => {
      assertEvent(event, 'SandboxCreated');
      return {
        sandboxId: event.sandboxId,
        kind: event.kind,
        name: event.name,
        namespace: event.namespace,
        uid: event.uid,
        attempt: event.attempt ?? 0,
        hostname: event.hostname,
        netnsPath: event.netnsPath ?? null,
        annotations: event.annotations,
        labels: event.labels,
        logDirectory: event.logDirectory ?? null,
        linux: event.linux ?? null,
        createdAt: event.createdAt,
      };
    }),
    recordStart: assign(({ event }) => {
      assertEvent(event, 'SandboxStarted');
      return { pid: event.pid, taskAddress: event.taskAddress, startedAt: event.startedAt, lastError: null, backend: event.backend ?? {} };
    }),
    recordNetworkIntent: assign(({ event }) => {
      assertEvent(event, 'SandboxNetworkRequested');
      return { network: { netnsPath: event.netnsPath, network: event.network, interfaceName: event.interfaceName, status: null } };
    }),
    recordNetworkStatus: assign(({ context, event }) => {
      assertEvent(event, 'SandboxNetworkConfigured');
      return { network: context.network && { ...context.network, status: event.status } };
    }),
    recordUpdate: assign(({ context, event }) => {
      assertEvent(event, 'SandboxUpdated');
      // Each field given replaces the old one whole, as CRI updates do; absent fields are left alone.
      return {
        annotations: event.annotations ?? context.annotations,
        labels: event.labels ?? context.labels,
        resources: event.resources ?? context.resources,
      };
    }),
    recordReattach: assign(({ event }) => {
      assertEvent(event, 'SandboxReattached');
      return { pid: event.pid };
    }),
    recordExit: assign(({ event }) => {
      assertEvent(event, ['SandboxExited', 'SandboxStopped']);
      return { exitStatus: event.exitStatus, exitedAt: event.exitedAt };
    }),
    recordUnhealthy: assign(({ event }) => {
      assertEvent(event, 'SandboxUnhealthy');
      return { lastError: event.reason };
    }),
    clearError: assign({ lastError: null }),
    recordFailure: assign(({ event }) => {
      assertEvent(event, ['SandboxStartFailed', 'SandboxStopFailed', 'SandboxShutdownFailed']);
      return { lastError: event.reason };
    }),
  },
  guards: {
    hasStarted: ({ context }) => context.startedAt !== null,
    // Old snapshots predate `network`: undefined there means none.
    hasNoNetwork: ({ context }) => !context.network,
    awaitsNetworkResult: ({ context }) => Boolean(context.network) && context.network?.status === null,
    /** A start whose network was requested counts only once CNI's result is recorded. */
    networkSettled: ({ context }) => !context.network || context.network.status !== null,
  },
}).createMachine({
  id: 'sandbox',
  initial: 'absent',
  context: initialSandboxContext,
  states: {
    // Nothing is known of this sandbox: no record, no process, no files.
    absent: {
      on: { SandboxCreated: { target: 'created', actions: 'recordCreation' } },
    },
    // The sandbox is recorded with its metadata; no process has been launched for it.
    created: {
      on: {
        SandboxStartRequested: { target: 'starting' },
        SandboxStopRequested: { target: 'stopping' },
        SandboxShutdownRequested: { target: 'shuttingDown' },
        SandboxUpdated: { target: 'created', actions: 'recordUpdate' },
      },
    },
    // Launching the sandbox (VM / init process) was decided; it may be partly up (its netns, CNI, the process), not yet serving tasks.
    starting: {
      on: {
        SandboxNetworkRequested: { guard: 'hasNoNetwork', target: 'starting', actions: 'recordNetworkIntent' },
        SandboxNetworkConfigured: { guard: 'awaitsNetworkResult', target: 'starting', actions: 'recordNetworkStatus' },
        SandboxStarted: { guard: 'networkSettled', target: 'ready', actions: 'recordStart' },
        SandboxStartFailed: { target: 'failed', actions: 'recordFailure' },
      },
    },
    // The sandbox process runs and its task address accepts container calls.
    ready: {
      tags: ['running'],
      on: {
        SandboxStopRequested: { target: 'stopping' },
        SandboxExited: { target: 'stopped', actions: 'recordExit' },
        SandboxUpdated: { target: 'ready', actions: 'recordUpdate' },
        SandboxReattached: { target: 'ready', actions: 'recordReattach' },
        SandboxUnhealthy: { target: 'unhealthy', actions: 'recordUnhealthy' },
      },
    },
    // The sandbox process exists but fails its health check (guest paused, agent silent); NOTREADY.
    unhealthy: {
      tags: ['running'],
      on: {
        SandboxHealthy: { target: 'ready', actions: 'clearError' },
        SandboxStopRequested: { target: 'stopping' },
        SandboxExited: { target: 'stopped', actions: 'recordExit' },
        SandboxUpdated: { target: 'unhealthy', actions: 'recordUpdate' },
        SandboxReattached: { target: 'unhealthy', actions: 'recordReattach' },
      },
    },
    // A start (or a stop before any start) failed: no sandbox process serves; leftovers may remain.
    failed: {
      on: {
        SandboxStopRequested: { target: 'stopping' },
        SandboxShutdownRequested: { target: 'shuttingDown' },
      },
    },
    // Stopping the sandbox process was decided; it may still be running.
    stopping: {
      on: {
        SandboxStopped: { target: 'stopped', actions: 'recordExit' },
        // A sandbox that never started has no process to fall back to, so a failed stop leaves it failed.
        SandboxStopFailed: [
          { guard: 'hasStarted', target: 'ready', actions: 'recordFailure' },
          { target: 'failed', actions: 'recordFailure' },
        ],
      },
    },
    // No sandbox process runs; its files and record remain.
    stopped: {
      tags: ['exited'],
      on: { SandboxShutdownRequested: { target: 'shuttingDown' } },
    },
    // Removing the sandbox's processes, mounts and files was decided; some may remain.
    shuttingDown: {
      tags: ['exited'],
      on: {
        SandboxRemoved: { target: 'removed' },
        SandboxShutdownFailed: { target: 'stopped', actions: 'recordFailure' },
      },
    },
    // Nothing of the sandbox remains on the host but its event log.
    removed: { type: 'final', tags: ['exited'] },
  },
});
