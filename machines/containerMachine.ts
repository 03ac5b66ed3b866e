/**
 * The life of one container (and its exec processes) as a pure state machine. Its events are the
 * domain events stored in the container's stream: the engine asks `snapshot.can(event)` before
 * appending one, then sends it; replaying a stream is sending its events in order to a fresh actor.
 * No I/O here.
 */
import { assertEvent, assign, setup } from 'xstate';
import type { StdioPaths } from '../src/core/sandboxer.js';

export type ContainerEvent =
  | {
      type: 'ContainerCreateRequested';
      containerId: string;
      sandboxId: string;
      name: string;
      bundleDir: string;
      image?: string;
      args: string[];
      logPath?: string;
      /** 'cri': logPath holds CRI log records (a time a line); absent in events recorded before, whose logs are raw bytes. */
      logFormat?: 'cri';
      /** CRI's container labels (kts run's container YAML); absent in events recorded before they were. */
      labels?: Record<string, string>;
      stdio: StdioPaths;
      /** ISO-8601 UTC. */
      createdAt: string;
    }
  | { type: 'ContainerCreated'; pid: number }
  | { type: 'ContainerCreateFailed'; reason: string }
  | { type: 'ContainerStartRequested' }
  | { type: 'ContainerStarted'; pid: number; startedAt: string }
  | { type: 'ContainerStartFailed'; reason: string }
  | { type: 'ContainerKillRequested'; signal: number; all: boolean }
  /** `reason`: what the backend knows beyond the status (e.g. a wasm trap or memory cap). */
  | { type: 'ContainerExited'; exitStatus: number; exitedAt: string; reason?: string }
  | { type: 'ContainerReattached'; pid: number }
  | { type: 'ContainerUpdated'; resources: Record<string, unknown> }
  | { type: 'ExecCreated'; execId: string; args: string[]; stdio: StdioPaths }
  | { type: 'ExecStartRequested'; execId: string }
  | { type: 'ExecStarted'; execId: string; pid: number }
  | { type: 'ExecStartFailed'; execId: string; reason: string }
  | { type: 'ExecExited'; execId: string; exitStatus: number; exitedAt: string; reason?: string }
  | { type: 'ExecDeleted'; execId: string }
  | { type: 'ContainerDeleteRequested' }
  | { type: 'ContainerDeleted' }
  | { type: 'ContainerDeleteFailed'; reason: string };

export type ContainerEventType = ContainerEvent['type'];

// A mapped object rather than a bare array so that adding an event type without listing it fails to compile.
const containerEventTypeSet: { [K in ContainerEventType]: true } = {
  ContainerCreateRequested: true,
  ContainerCreated: true,
  ContainerCreateFailed: true,
  ContainerStartRequested: true,
  ContainerStarted: true,
  ContainerStartFailed: true,
  ContainerKillRequested: true,
  ContainerExited: true,
  ContainerReattached: true,
  ContainerUpdated: true,
  ExecCreated: true,
  ExecStartRequested: true,
  ExecStarted: true,
  ExecStartFailed: true,
  ExecExited: true,
  ExecDeleted: true,
  ContainerDeleteRequested: true,
  ContainerDeleted: true,
  ContainerDeleteFailed: true,
};

export const CONTAINER_EVENT_TYPES = Object.keys(containerEventTypeSet) as readonly ContainerEventType[];

export const CONTAINER_STATES = [
  'absent',
  'creating',
  'created',
  'starting',
  'running',
  'stopped',
  'failed',
  'deleting',
  'deleted',
] as const;

export type ContainerStateValue = (typeof CONTAINER_STATES)[number];

/**
 * An exec process: created (pid null), its start decided (startRequested), started (pid set),
 * exited (exitStatus set) or failed to start (lastError set).
 */
export interface ExecProcessRecord {
  args: string[];
  stdio: StdioPaths;
  /** The write-ahead intent of the start; absent in logs written before it existed. */
  startRequested?: boolean;
  pid: number | null;
  exitStatus: number | null;
  exitedAt: string | null;
  lastError: string | null;
}

export interface ContainerContext {
  /** Empty until `ContainerCreateRequested`; likewise sandboxId, name, bundleDir and createdAt. */
  containerId: string;
  sandboxId: string;
  name: string;
  bundleDir: string;
  image: string | null;
  args: string[];
  logPath: string | null;
  /** How logPath is written: 'cri' records, or (null) the raw bytes of containers made before kts kept times. */
  logFormat: 'cri' | null;
  labels: Record<string, string>;
  stdio: StdioPaths;
  createdAt: string;
  /** The container's init process; kept after it exits. */
  pid: number | null;
  startedAt: string | null;
  exitStatus: number | null;
  exitedAt: string | null;
  lastError: string | null;
  resources: Record<string, unknown>;
  /** Keyed by execId; an exec leaves this map only by `ExecDeleted`. */
  execs: Record<string, ExecProcessRecord>;
}

const initialContainerContext: ContainerContext = {
  containerId: '',
  sandboxId: '',
  name: '',
  bundleDir: '',
  image: null,
  args: [],
  logPath: null,
  logFormat: null,
  labels: {},
  stdio: {},
  createdAt: '',
  pid: null,
  startedAt: null,
  exitStatus: null,
  exitedAt: null,
  lastError: null,
  resources: {},
  execs: {},
};

/** Own properties only: an execId such as `constructor` must not match something inherited. */
function findExec(context: ContainerContext, execId: string): ExecProcessRecord | undefined {
  return Object.hasOwn(context.execs, execId) ? context.execs[execId] : undefined;
}

function withExec(context: ContainerContext, execId: string, exec: ExecProcessRecord): Record<string, ExecProcessRecord> {
  return { ...context.execs, [execId]: exec };
}

export const containerMachine = setup({
  types: {
    context: {} as ContainerContext,
    events: {} as ContainerEvent,
  },
  guards: {
    execIdIsNew: ({ context, event }) => {
      assertEvent(event, 'ExecCreated');
      return findExec(context, event.execId) === undefined;
    },
    execIsKnown: ({ context, event }) => {
      assertEvent(event, 'ExecDeleted');
      return findExec(context, event.execId) !== undefined;
    },
    execCanStart: ({ context, event }) => {
      assertEvent(event, 'ExecStartRequested');
      const exec = findExec(context, event.execId);
      return exec !== undefined && exec.pid === null && exec.exitStatus === null && exec.lastError === null && exec.startRequested !== true;
    },
    execIsNotYetStarted: ({ context, event }) => {
      assertEvent(event, ['ExecStarted', 'ExecStartFailed']);
      const exec = findExec(context, event.execId);
      return exec !== undefined && exec.pid === null && exec.exitStatus === null && exec.lastError === null;
    },
    execIsRunning: ({ context, event }) => {
      assertEvent(event, 'ExecExited');
      const exec = findExec(context, event.execId);
      return exec !== undefined && exec.pid !== null && exec.exitStatus === null;
    },
    hasCreatedProcess: ({ context }) => context.pid !== null,
  },
  actions: {
    recordCreateRequest: assign(({ event }) => {
      assertEvent(event, 'ContainerCreateRequested');
      return {
        containerId: event.containerId,
        sandboxId: event.sandboxId,
        name: event.name,
        bundleDir: event.bundleDir,
        image: event.image ?? null,
        args: event.args,
        logPath: event.logPath ?? null,
        logFormat: event.logFormat ?? null,
        labels: event.labels ?? {},
        stdio: event.stdio,
        createdAt: event.createdAt,
      };
    }),
    recordPid: assign(({ event }) => {
      assertEvent(event, ['ContainerCreated', 'ContainerReattached']);
      return { pid: event.pid };
    }),
    recordStart: assign(({ event }) => {
      assertEvent(event, 'ContainerStarted');
      return { pid: event.pid, startedAt: event.startedAt };
    }),
    recordExit: assign(({ event }) => {
      assertEvent(event, 'ContainerExited');
      return { exitStatus: event.exitStatus, exitedAt: event.exitedAt };
    }),
    recordFailure: assign(({ event }) => {
      assertEvent(event, ['ContainerCreateFailed', 'ContainerStartFailed', 'ContainerDeleteFailed']);
      return { lastError: event.reason };
    }),
    recordResources: assign(({ event }) => {
      assertEvent(event, 'ContainerUpdated');
      return { resources: event.resources };
    }),
    addExec: assign(({ context, event }) => {
      assertEvent(event, 'ExecCreated');
      const exec: ExecProcessRecord = {
        args: event.args,
        stdio: event.stdio,
        pid: null,
        exitStatus: null,
        exitedAt: null,
        lastError: null,
      };
      return { execs: withExec(context, event.execId, exec) };
    }),
    recordExecStartRequest: assign(({ context, event }) => {
      assertEvent(event, 'ExecStartRequested');
      const exec = context.execs[event.execId]!; // the guard found it
      return { execs: withExec(context, event.execId, { ...exec, startRequested: true }) };
    }),
    recordExecStart: assign(({ context, event }) => {
      assertEvent(event, 'ExecStarted');
      const exec = context.execs[event.execId]!; // the guard found it
      return { execs: withExec(context, event.execId, { ...exec, pid: event.pid }) };
    }),
    recordExecStartFailure: assign(({ context, event }) => {
      assertEvent(event, 'ExecStartFailed');
      const exec = context.execs[event.execId]!; // the guard found it
      return { execs: withExec(context, event.execId, { ...exec, lastError: event.reason }) };
    }),
    recordExecExit: assign(({ context, event }) => {
      assertEvent(event, 'ExecExited');
      const exec = context.execs[event.execId]!; // the guard found it
      return { execs: withExec(context, event.execId, { ...exec, exitStatus: event.exitStatus, exitedAt: event.exitedAt }) };
    }),
    removeExec: assign(({ context, event }) => {
      assertEvent(event, 'ExecDeleted');
      return { execs: Object.fromEntries(Object.entries(context.execs).filter(([execId]) => execId !== event.execId)) };
    }),
  },
}).createMachine({
  id: 'container',
  initial: 'absent',
  context: initialContainerContext,
  states: {
    // Nothing is known of this container: no record, no bundle, no process.
    absent: {
      on: { ContainerCreateRequested: { target: 'creating', actions: 'recordCreateRequest' } },
    },
    // Creating the container (bundle, rootfs, runtime create) was decided; parts of it may exist.
    creating: {
      tags: ['active'],
      on: {
        ContainerCreated: { target: 'created', actions: 'recordPid' },
        ContainerCreateFailed: { target: 'failed', actions: 'recordFailure' },
      },
    },
    // The container's init process exists, paused before the user's program runs.
    created: {
      tags: ['live', 'active'],
      on: {
        ContainerStartRequested: { target: 'starting' },
        ContainerKillRequested: { target: 'created' },
        ContainerExited: { target: 'stopped', actions: 'recordExit' },
        ContainerDeleteRequested: { target: 'deleting' },
      },
    },
    // Starting the user's program was decided; it may or may not run yet.
    starting: {
      tags: ['active'],
      on: {
        ContainerStarted: { target: 'running', actions: 'recordStart' },
        ContainerStartFailed: { target: 'stopped', actions: 'recordFailure' },
      },
    },
    // The container's init process runs the user's program; exec processes may run beside it.
    running: {
      tags: ['live', 'active'],
      on: {
        ContainerExited: { target: 'stopped', actions: 'recordExit' },
        ContainerKillRequested: { target: 'running' },
        ContainerReattached: { target: 'running', actions: 'recordPid' },
        ContainerUpdated: { target: 'running', actions: 'recordResources' },
        ExecCreated: { target: 'running', guard: 'execIdIsNew', actions: 'addExec' },
        ExecStartRequested: { target: 'running', guard: 'execCanStart', actions: 'recordExecStartRequest' },
        ExecStarted: { target: 'running', guard: 'execIsNotYetStarted', actions: 'recordExecStart' },
        ExecStartFailed: { target: 'running', guard: 'execIsNotYetStarted', actions: 'recordExecStartFailure' },
        ExecExited: { target: 'running', guard: 'execIsRunning', actions: 'recordExecExit' },
        ExecDeleted: { target: 'running', guard: 'execIsKnown', actions: 'removeExec' },
      },
    },
    // The init process no longer runs (or never started); the bundle and runtime record remain.
    stopped: {
      on: {
        ContainerDeleteRequested: { target: 'deleting' },
        ExecExited: { target: 'stopped', guard: 'execIsRunning', actions: 'recordExecExit' },
        // An exec start in flight when the container ended (recovery finds no process of it).
        ExecStartFailed: { target: 'stopped', guard: 'execIsNotYetStarted', actions: 'recordExecStartFailure' },
        ExecDeleted: { target: 'stopped', guard: 'execIsKnown', actions: 'removeExec' },
        // Signalling a stopped container is harmless and still recorded.
        ContainerKillRequested: { target: 'stopped' },
      },
    },
    // Creating failed: no init process exists; leftovers of the attempt may remain.
    failed: {
      on: { ContainerDeleteRequested: { target: 'deleting' } },
    },
    // Removing the container from the runtime and its rootfs was decided; parts may remain.
    deleting: {
      on: {
        ContainerDeleted: { target: 'deleted' },
        // A container whose create failed has no process to have stopped, so a failed delete leaves it failed.
        ContainerDeleteFailed: [
          { guard: 'hasCreatedProcess', target: 'stopped', actions: 'recordFailure' },
          { target: 'failed', actions: 'recordFailure' },
        ],
      },
    },
    // Nothing of the container remains on the host but its event log.
    deleted: { type: 'final' },
  },
});
